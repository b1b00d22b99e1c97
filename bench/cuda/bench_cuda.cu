// The CUDA backend on the GPU, against the limits measured in the same run (#16):
//   BM_CopyBandwidth     device-to-device copy: bytes read + written per second (the memory limit)
//   BM_CublasBf16Gemm    cuBLAS bf16 GEMM, f32 accumulation, 8192^3 (the tensor-core limit)
//   BM_Linear            Ops<cuda>::linear over bf16 / FP8 weights at DeepSeek shapes, 1-32 tokens:
//                        weight bytes per second (decode GEMV streams each weight once)
//   BM_Fp8PrefillGemm    Ops<cuda>::linear, FP8 weights with bf16 activations at 64-4096 tokens (the
//                        tensor-core prefill GEMM): FLOP per second
//   BM_MlaDecode         Ops<cuda>::mla_latent_attention, V3 shapes (128 heads, 512 + 64), one decoded
//                        token at 4K-64K context, bf16 and FP8 cache rows: cache bytes per second
//   BM_MoeExperts        Ops<cuda>::moe_experts at V3 shapes (256 FP8 experts, top-8, 7168 -> 2048):
//                        routed FLOP per second at 1-4096 tokens
// Every rate is a counter (bytes_per_second / FLOP_per_second); divide by BM_CopyBandwidth's or
// BM_CublasBf16Gemm's to get the share of the limit. Times are CUDA-event times of the stream.
#include <deepseek/cuda.hpp>
#include <deepseek/nn/kv_cache.hpp>

#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace {

using namespace deepseek;
namespace dc = deepseek::backend::cuda;
using Ops = backend::Ops<cuda>;

// Times `body` on the context's stream with CUDA events, one manual-time iteration each.
template <class Body>
void run_timed(benchmark::State& state, Body&& body) {
  cudaStream_t s = dc::Context::current().stream();
  cudaEvent_t a, b;
  DEEPSEEK_CUDA_CHECK(cudaEventCreate(&a));
  DEEPSEEK_CUDA_CHECK(cudaEventCreate(&b));
  body();  // warm-up (first-touch, pool growth, cuBLAS heuristics)
  DEEPSEEK_CUDA_CHECK(cudaStreamSynchronize(s));
  for (auto _ : state) {
    DEEPSEEK_CUDA_CHECK(cudaEventRecord(a, s));
    body();
    DEEPSEEK_CUDA_CHECK(cudaEventRecord(b, s));
    DEEPSEEK_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DEEPSEEK_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    state.SetIterationTime(double(ms) / 1e3);
  }
  DEEPSEEK_CUDA_CHECK(cudaEventDestroy(a));
  DEEPSEEK_CUDA_CHECK(cudaEventDestroy(b));
}

// Pseudo-random values written on the device (an 11 GB expert set drawn on the host would take
// minutes): bf16 and f32 in [-1, 1), e4m3 bytes with the top exponent bit clear (finite, |v| < 2).
__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return uint32_t(z ^ (z >> 31));
}
__global__ void fill_random(void* p, int64_t n, int kind, uint32_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(uint64_t(i), seed);
    const float u = float(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    if (kind == 0) static_cast<float*>(p)[i] = u;
    else if (kind == 1) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(u);
    else static_cast<uint8_t*>(p)[i] = uint8_t(h & 0xBF);
  }
}
Tensor random_device(DType dtype, Shape shape, uint32_t seed) {
  Tensor t = Tensor::empty(dtype, shape, Device::cuda);
  const int kind = dtype == DType::f32 ? 0 : dtype == DType::bf16 ? 1 : 2;
  fill_random<<<1024, 256, 0, dc::Context::current().stream()>>>(t.data(), t.view().numel(), kind, seed);
  DEEPSEEK_CUDA_CHECK_LAUNCH("fill_random");
  return t;
}

// A [rows, cols] weight on the device; FP8 with 128 x 128 block scales near 1/64.
struct DeviceMatrix {
  Tensor w, s;
  BlockQuantMatrix m;
  DeviceMatrix(int64_t rows, int64_t cols, DType dtype, uint32_t seed) {
    w = random_device(dtype, Shape{rows, cols}, seed);
    m.weight = w.view();
    if (dtype == DType::f8_e4m3) {
      Tensor hs = Tensor::empty(DType::f32, Shape{(rows + 127) / 128, (cols + 127) / 128});
      std::fill(hs.view().data_as<float>(), hs.view().data_as<float>() + hs.view().numel(), 1.0f / 64);
      s = Tensor::copy_to(hs.view(), Device::cuda);
      m.scale_inv = s.view();
    }
  }
};

dc::Buffer random_buffer(size_t n, uint32_t seed) {
  dc::Buffer b(n);
  fill_random<<<1024, 256, 0, dc::Context::current().stream()>>>(b.data(), int64_t(n), 0, seed);
  DEEPSEEK_CUDA_CHECK_LAUNCH("fill_random");
  return b;
}

bool skip_without_gpu(benchmark::State& state) {
  if (dc::device_count() > 0) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

void BM_CopyBandwidth(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const size_t bytes = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  DEEPSEEK_CUDA_CHECK(cudaMalloc(&a, bytes));
  DEEPSEEK_CUDA_CHECK(cudaMalloc(&b, bytes));
  DEEPSEEK_CUDA_CHECK(cudaMemset(a, 1, bytes));
  cudaStream_t s = dc::Context::current().stream();
  run_timed(state, [&] { DEEPSEEK_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s)); });
  state.counters["bytes_per_second"] = benchmark::Counter(double(2 * bytes), benchmark::Counter::kIsIterationInvariantRate);
  DEEPSEEK_CUDA_CHECK(cudaFree(a));
  DEEPSEEK_CUDA_CHECK(cudaFree(b));
}
BENCHMARK(BM_CopyBandwidth)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);

void BM_CublasBf16Gemm(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int n = 8192;
  Tensor A = random_device(DType::bf16, Shape{n, n}, 1), Bm = random_device(DType::bf16, Shape{n, n}, 2);
  Tensor C = Tensor::empty(DType::bf16, Shape{n, n}, Device::cuda);
  cublasHandle_t h = dc::Context::current().cublas();
  DEEPSEEK_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));  // tensor cores (the context's default is pedantic)
  const float one = 1.0f, zero = 0.0f;
  run_timed(state, [&] {
    DEEPSEEK_CUDA_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A.data(), CUDA_R_16BF, n, Bm.data(), CUDA_R_16BF, n,
                                     &zero, C.data(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  DEEPSEEK_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  state.counters["FLOP_per_second"] = benchmark::Counter(2.0 * n * double(n) * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CublasBf16Gemm)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);

// args: rows, cols, dtype (1 bf16, 2 FP8), tokens
void BM_Linear(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(3);
  const DType dt = state.range(2) == 1 ? DType::bf16 : DType::f8_e4m3;
  DeviceMatrix W(rows, cols, dt, 3);
  dc::Buffer x = random_buffer(size_t(n * cols), 4), y(size_t(n * rows));
  run_timed(state, [&] { Ops::linear(W.m, x.data(), n, y.data()); });
  state.counters["bytes_per_second"] =
      benchmark::Counter(double(W.w.view().nbytes()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"rows", "cols", "dtype", "n"})
    ->Args({102400, 2048, 1, 1})   // V2-Lite's lm_head, bf16
    ->Args({129280, 7168, 1, 1})   // V3's lm_head, bf16 (1.85 GB)
    ->Args({18432, 7168, 2, 1})    // V3's dense MLP up, FP8
    ->Args({18432, 7168, 2, 8})
    ->Args({18432, 7168, 2, 32})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.3);

// args: rows, cols, tokens. Prefill with FP8 weights and bf16 activations (fp8_gemm.cuh's tensor-core
// GEMM, e4m3 x bf16(x * s) per 128 x 128 block): FLOP per second against BM_CublasBf16Gemm's.
void BM_Fp8PrefillGemm(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(2);
  DeviceMatrix W(rows, cols, DType::f8_e4m3, 5);
  W.m.activations = ActivationDType::bf16;
  dc::Buffer x = random_buffer(size_t(n * cols), 6), y(size_t(n * rows));
  run_timed(state, [&] { Ops::linear(W.m, x.data(), n, y.data()); });
  state.counters["FLOP_per_second"] = benchmark::Counter(2.0 * double(rows) * double(cols) * double(n),
                                                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Fp8PrefillGemm)
    ->ArgNames({"rows", "cols", "n"})
    ->Args({18432, 7168, 64})    // V3's dense MLP up
    ->Args({18432, 7168, 512})
    ->Args({18432, 7168, 4096})
    ->Args({7168, 18432, 4096})  // its down projection
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

// args: context, cache dtype (0 bf16, 1 FP8), decoded tokens n
void BM_MlaDecode(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int64_t ctx = state.range(0), n = state.range(2);
  const CacheDType dtype = state.range(1) == 0 ? CacheDType::bf16 : CacheDType::fp8_e4m3;
  backend::MlaDims m;
  m.num_heads = 128;
  m.qk_nope_head_dim = 128;
  m.qk_rope_head_dim = 64;
  m.kv_lora_rank = 512;
  m.v_head_dim = 128;
  const int64_t W = m.kv_lora_rank + m.qk_rope_head_dim, fp8 = dtype == CacheDType::fp8_e4m3 ? m.kv_lora_rank : 0;
  nn::KvCache cache(1, W, ctx + n, nn::CacheLayout::paged, 64, dtype, fp8, 0, Device::cuda);
  {  // real rows (not the storage's uninitialised bytes): random latents written through store_rows
    dc::Buffer rows = random_buffer(size_t(std::min<int64_t>(ctx + n, 4096) * W), 5);
    for (int64_t p = 0; p < ctx + n; p += 4096) {
      const int64_t k = std::min<int64_t>(4096, ctx + n - p);
      Ops::store_rows(cache.view(0), p, 0, rows.data(), k, W, W);
    }
  }
  dc::Buffer qa = random_buffer(size_t(n * m.num_heads * W), 6), ot(size_t(n * m.num_heads * m.kv_lora_rank));
  const float scale = 1.0f / 13.86f;
  run_timed(state, [&] {
    Ops::mla_latent_attention(m, scale, qa.data(), n, ctx, cache.view(0), nullptr, nullptr, 0, false, ot.data());
  });
  state.counters["bytes_per_second"] =
      benchmark::Counter(double(ctx + n) * double(cache.row_bytes()), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MlaDecode)
    ->ArgNames({"ctx", "fp8", "n"})
    ->ArgsProduct({{4096, 16384, 65536}, {0, 1}, {1}})
    ->Args({65536, 0, 2})  // MTP verify: two queries
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.3);

// args: tokens. V3's routed experts (FP8, 256 x [2048, 7168] gate / up, [7168, 2048] down), top-8,
// routing drawn uniformly (each token's 8 experts distinct), no shared expert.
void BM_MoeExperts(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
  const int E = 256, K = 8;
  const int64_t d = 7168, inter = 2048, n = state.range(0);
  static std::vector<DeviceMatrix>* mats = nullptr;  // 11 GB: made once for every token count
  static std::vector<backend::ExpertFfn> ffn;
  if (!mats) {
    mats = new std::vector<DeviceMatrix>();
    mats->reserve(size_t(3 * E));
    for (int e = 0; e < E; ++e) {
      mats->emplace_back(inter, d, DType::f8_e4m3, uint32_t(10 + 3 * e));
      mats->emplace_back(inter, d, DType::f8_e4m3, uint32_t(11 + 3 * e));
      mats->emplace_back(d, inter, DType::f8_e4m3, uint32_t(12 + 3 * e));
    }
    for (int e = 0; e < E; ++e) ffn.push_back({&(*mats)[size_t(3 * e)].m, &(*mats)[size_t(3 * e + 1)].m, &(*mats)[size_t(3 * e + 2)].m});
  }
  std::mt19937 rng(7);
  std::vector<int32_t> idx(size_t(n * K));
  std::vector<float> wt(size_t(n * K), 1.0f / K);
  std::vector<int> perm(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    for (int e = 0; e < E; ++e) perm[size_t(e)] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int k = 0; k < K; ++k) idx[size_t(t * K + k)] = perm[size_t(k)];
  }
  dc::IndexBuffer di(idx.size());
  DEEPSEEK_CUDA_CHECK(cudaMemcpy(di.data(), idx.data(), idx.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  dc::Buffer dw(wt.size());
  DEEPSEEK_CUDA_CHECK(cudaMemcpy(dw.data(), wt.data(), wt.size() * sizeof(float), cudaMemcpyHostToDevice));
  dc::Buffer x = random_buffer(size_t(n * d), 8), y(size_t(n * d));
  run_timed(state, [&] { Ops::moe_experts(ffn.data(), E, nullptr, x.data(), n, d, di.data(), dw.data(), K, y.data()); });
  state.counters["FLOP_per_second"] =
      benchmark::Counter(double(n) * K * 3.0 * 2.0 * double(d) * double(inter), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MoeExperts)
    ->ArgName("tokens")
    ->Arg(1)
    ->Arg(16)
    ->Arg(256)
    ->Arg(4096)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.3);

}  // namespace

BENCHMARK_MAIN();
