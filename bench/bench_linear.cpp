// The linear kernels alone: GEMV (decode) and small-batch / prefill GEMM over f32, bf16 and FP8
// weights, reported as achieved weight bandwidth (GB/s) and GFLOP/s. First argument: 0 f32, 1 bf16,
// 2 FP8 (f32 activations), 3 bf16 weights with bf16 activations, 4 FP8 with bf16 activations
// (the AVX-512 kernels where the CPU has them; the label says which ran).
// BM_MemoryBandwidth: a STREAM triad over the thread pool, run first; each BM_Linear then reports
// of_triad, its weight bandwidth as a share of the triad measured in the same run (the VM's
// bandwidth moves between runs). DEEPSEEK_NUM_THREADS=1 measures one core (both sides).
// BM_PeakFlops: the core's multiply ceiling, the yardstick for prefill (compute bound): 12
// independent accumulator chains of f32 FMA (0) or VDPBF16PS (1) on 512-bit registers, per
// thread; run with --benchmark_filter=PeakFlops, the threads/2 line is both cores.
#include <deepseek/backend/cpu/linear.hpp>

#include <benchmark/benchmark.h>

#include "memory_bandwidth.hpp"

#include <chrono>
#include <map>
#include <random>
#include <tuple>
#include <vector>

using namespace deepseek;

namespace {

struct Matrix {
  Tensor w, s;
  BlockQuantMatrix m;
};

Matrix make(DType dt, int64_t rows, int64_t cols) {
  Matrix o;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  o.w = Tensor::empty(dt, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = nd(rng);
    if (dt == DType::f32) o.w.data_as<float>()[i] = v;
    if (dt == DType::bf16) o.w.data_as<uint16_t>()[i] = f32_to_bf16(v);
    if (dt == DType::f8_e4m3) o.w.data_as<uint8_t>()[i] = f32_to_f8_e4m3(v * 100.0f);
  }
  o.m.weight = o.w.view();
  if (dt == DType::f8_e4m3) {
    o.s = Tensor::empty(DType::f32, {(rows + 127) / 128, (cols + 127) / 128});
    for (int64_t i = 0; i < o.s.numel(); ++i) o.s.data_as<float>()[i] = 0.01f;
    o.m.scale_inv = o.s.view();
  }
  return o;
}

using deepseek::bench::BM_MemoryBandwidth;
using deepseek::bench::triad_gbs;

// One matrix per dtype and shape for the whole run (filling V3's 132M weights takes seconds, and
// --benchmark_repetitions reruns the setup).
Matrix& cached(DType dt, int64_t rows, int64_t cols) {
  static std::map<std::tuple<DType, int64_t, int64_t>, Matrix> cache;
  auto it = cache.find({dt, rows, cols});
  if (it == cache.end()) it = cache.emplace(std::make_tuple(dt, rows, cols), make(dt, rows, cols)).first;
  return it->second;
}

void BM_Linear(benchmark::State& state) {
  const int64_t kind = state.range(0);
  const DType dt = kind == 0 ? DType::f32 : (kind == 2 || kind == 4) ? DType::f8_e4m3 : DType::bf16;
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  Matrix& m = cached(dt, rows, cols);
  m.m.activations = kind >= 3 ? ActivationDType::bf16 : ActivationDType::f32;
  std::vector<float> x(static_cast<size_t>(n * cols), 0.5f), y(static_cast<size_t>(n * rows));
  backend::cpu::linear(m.m, x.data(), n, y.data());  // warm the thread pool and the scratch buffers
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    backend::cpu::linear(m.m, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double bytes = double(m.w.nbytes()) + (m.s.empty() ? 0.0 : double(m.s.nbytes()));
  if (triad_gbs() > 0) state.counters["of_triad"] = bytes * double(state.iterations()) / sec / 1e9 / triad_gbs();
  state.counters["weight_GB/s"] = benchmark::Counter(bytes * double(state.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(rows * cols * n) * double(state.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  // Which kernel linear_rows picks (linear.hpp).
  const bool avx512 = dt == DType::f8_e4m3 ? (kind == 4 ? backend::cpu::has_avx512bf16() : backend::cpu::has_avx512())
                      : dt == DType::bf16  ? (kind == 3 ? backend::cpu::has_avx512bf16() : backend::cpu::has_avx512())
                                           : false;
  state.SetLabel(std::string(dtype_name(dt)) + (kind >= 3 ? " x bf16" : " x f32") + (avx512 ? " (avx512)" : " (avx2)"));
}

}  // namespace

BENCHMARK(BM_MemoryBandwidth)->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();

// V2-Lite / V3 shapes: expert 1408x2048, dense 10944x2048, V3 expert 2048x7168; n = 1 (decode),
// 12 (tokens per expert in a 128-token prefill), 128 (dense prefill).
#if DEEPSEEK_CPU_AVX512_KERNELS
DEEPSEEK_TARGET_AVX512 float peak_chains(int kind, int64_t iters) {
  __m512 acc[12];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 a = _mm512_set1_ps(1.0001f), b = _mm512_set1_ps(0.9999f);
  for (int64_t k = 0; k < iters; ++k) {
    if (kind == 0) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(a, b, acc[i]);
    } else {
#pragma GCC unroll 12
      for (int i = 0; i < 12; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_castps_si512(a), (__m512bh)_mm512_castps_si512(b));
    }
    asm volatile("" : "+v"(a));  // keeps the loop from being folded
  }
  alignas(64) float lanes[16];
  float s = 0;
  for (auto& x : acc) {
    _mm512_store_ps(lanes, x);
    for (float v : lanes) s += v;
  }
  return s;
}

void BM_PeakFlops(benchmark::State& state) {
  const int kind = int(state.range(0));
  if (kind == 0 ? !backend::cpu::has_avx512() : !backend::cpu::has_avx512bf16()) {
    state.SkipWithError("the CPU lacks the instructions");
    return;
  }
  const int64_t iters = 1 << 20;
  for (auto _ : state) benchmark::DoNotOptimize(peak_chains(kind, iters));
  // flops per instruction: 16 lanes x 2 (FMA) or 16 lanes x 2 pairs x 2 (VDPBF16PS)
  state.counters["GFLOP/s"] = benchmark::Counter(double(state.iterations()) * double(iters) * 12 * (kind == 0 ? 32 : 64),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);  // summed over threads
  state.SetLabel(kind == 0 ? "f32 FMA" : "bf16 VDPBF16PS");
}
BENCHMARK(BM_PeakFlops)->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();
#endif

BENCHMARK(BM_Linear)
    ->ArgsProduct({{1, 2, 3, 4}, {1408}, {2048}, {1, 4, 12, 128}})
    ->ArgsProduct({{1, 2, 3, 4}, {2048}, {7168}, {1}})
    ->ArgsProduct({{0}, {1408}, {2048}, {1, 12}})
    // Decode and MTP verify (n = 1, 2, 4), the dense MLP and the V3 MLP in both orientations (gate /
    // up: rows x hidden, down: hidden x rows), the V2-Lite expert's down projection: f32 against
    // bf16 activations, bf16 and FP8 weights.
    ->ArgsProduct({{1, 3, 2, 4}, {10944}, {2048}, {1, 2, 4}})
    ->ArgsProduct({{1, 3, 2, 4}, {2048}, {10944}, {1, 2, 4}})
    ->ArgsProduct({{1, 3, 2, 4}, {18432}, {7168}, {1, 2, 4}})
    ->ArgsProduct({{1, 3, 2, 4}, {7168}, {18432}, {1, 2, 4}})
    ->ArgsProduct({{1, 3}, {2048}, {1408}, {1, 2, 4}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK_MAIN();
