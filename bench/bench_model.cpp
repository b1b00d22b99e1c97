// Prefill and decode speed of models::DeepSeekV3<cpu> at DeepSeek-V2-Lite's real layer shapes
// (hidden 2048, 64 routed experts of 1408, top-6, 2 shared, kv_lora 512, vocab 102400), with as
// many layers as this machine holds, in bf16 and in FP8 (e4m3 + 128x128 scales). Decode is
// reported as tokens/s and as achieved weight bandwidth (bytes of the weights one token reads /
// time), beside the machine's memory bandwidth measured here with a STREAM triad, and as a share
// of it (of_triad; BM_MemoryBandwidth must run first, as it does unfiltered or when the filter
// keeps it).
//
//   DEEPSEEK_BENCH_DIR          where the synthetic checkpoints are written (default /tmp/deepseek-bench)
//   DEEPSEEK_BENCH_LAYERS_BF16  layers of the bf16 model (default 12: 13.4 GB)
//   DEEPSEEK_BENCH_LAYERS_FP8   layers of the FP8 model (default 24: 14.9 GB)
// BM_DecodeContext/a/L: decode at L cached tokens (a: activations as below).
// BM_Decode/BM_Prefill's last argument: 0 = f32 activations (exact), 1 = bf16 activations
// (LoadOptions::activations; the AVX512-BF16 kernel for the bf16 model where the CPU has it).
// bench/model_vs_transformers.py runs transformers on the same bf16 checkpoint for the ratio.
#include "synthetic_checkpoint.hpp"

#include <deepseek/deepseek.hpp>

#include <benchmark/benchmark.h>

#include "decode_weights.hpp"
#include "memory_bandwidth.hpp"

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

using namespace deepseek;

namespace {

std::string env_or(const char* k, const std::string& d) {
  const char* v = std::getenv(k);
  return v && *v ? v : d;
}

struct Loaded {
  std::shared_ptr<models::DeepSeekV3<cpu>> model;
  double bytes_per_token = 0;  // weight bytes one decode step reads
};

Loaded& load(bool fp8, bool bf16_activations) {
  static std::map<std::pair<bool, bool>, Loaded> cache;
  auto it = cache.find({fp8, bf16_activations});
  if (it != cache.end()) return it->second;
  const std::string base = env_or("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench");
  const int layers = std::atoi(env_or(fp8 ? "DEEPSEEK_BENCH_LAYERS_FP8" : "DEEPSEEK_BENCH_LAYERS_BF16", fp8 ? "24" : "12").c_str());
  const std::string dir = base + (fp8 ? "/v2-lite-fp8" : "/v2-lite-bf16");
  bench::make_v2_lite_checkpoint(dir, layers, fp8);
  Loaded l;
  auto ck = io::Checkpoint::open(dir);
  l.bytes_per_token = bench::decode_step_bytes(*ck);
  models::LoadOptions o;
  o.activations = bf16_activations ? ActivationDType::bf16 : ActivationDType::f32;
  l.model = std::make_shared<models::DeepSeekV3<cpu>>(ck, o);
  return cache[{fp8, bf16_activations}] = l;
}

std::string label(bool fp8, bool bf16_act) {
  std::string s = fp8 ? "fp8" : "bf16";
  if (!bf16_act) return s + ", f32 activations";
  return s + ", bf16 activations" + (!fp8 && backend::cpu::has_avx512bf16() ? " (avx512bf16)" : "");
}

using deepseek::bench::BM_MemoryBandwidth;
using deepseek::bench::triad_gbs;

void BM_Decode(benchmark::State& state) {
  const bool fp8 = state.range(0) != 0, bf16_act = state.range(1) != 0;
  auto& l = load(fp8, bf16_act);
  const int64_t prompt = 32;
  auto cache = l.model->make_cache({prompt + 256});
  std::vector<int32_t> ids(static_cast<size_t>(prompt));
  for (int64_t i = 0; i < prompt; ++i) ids[size_t(i)] = int32_t(1000 + 37 * i);
  std::vector<float> logits(static_cast<size_t>(l.model->config().vocab_size));
  l.model->forward(ids.data(), prompt, cache, logits.data());
  int32_t next = generate::argmax(logits.data(), l.model->config().vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    if (cache.size() == cache.capacity()) cache.resize(prompt);
    l.model->forward(&next, 1, cache, logits.data());
    next = generate::argmax(logits.data(), l.model->config().vocab_size);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Weight bandwidth as a share of the STREAM triad measured in this run (the roofline; this
  // machine's bandwidth can move between runs, so the share is the comparable number).
  if (triad_gbs() > 0) state.counters["of_triad"] = l.bytes_per_token * double(state.iterations()) / sec / 1e9 / triad_gbs();
  state.counters["tok/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["weight_GB/s"] = benchmark::Counter(l.bytes_per_token * double(state.iterations()), benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
  state.counters["GB/token"] = l.bytes_per_token / 1e9;
  state.counters["layers"] = l.model->config().num_hidden_layers;
  state.SetLabel(label(fp8, bf16_act));
}

// Decode at a context of L cached tokens (bf16 model, default bf16 cache): the cache rows are
// left zero (attention's cost does not depend on their values), so no L-token prefill is needed.
// range: (activations 0 f32 / 1 bf16, L). time_per_token - BM_DecodeContext at L = 0 is what
// attention over L rows adds.
void BM_DecodeContext(benchmark::State& state) {
  const bool bf16_act = state.range(0) != 0;
  const int64_t L = state.range(1);
  auto& l = load(false, bf16_act);
  auto cache = l.model->make_cache({L + 1});
  std::vector<float> logits(static_cast<size_t>(l.model->config().vocab_size));
  int32_t next = 1000;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    cache.resize(L);
    l.model->forward(&next, 1, cache, logits.data());
    next = generate::argmax(logits.data(), l.model->config().vocab_size);
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (triad_gbs() > 0) state.counters["of_triad"] = l.bytes_per_token * double(state.iterations()) / sec / 1e9 / triad_gbs();
  state.counters["tok/s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(label(false, bf16_act) + ", bf16 cache");
}

// Batched decode (forward_batch): S sequences, each with its own cache after a 32-token prompt,
// advance one token per step together. range: (activations 0 f32 / 1 bf16, S). tok/s counts the
// tokens of all sequences; the experts' weights are read once per step for all S, so it grows with S
// until the step stops being bound by the weights.
void BM_DecodeBatch(benchmark::State& state) {
  const bool bf16_act = state.range(0) != 0;
  const int64_t S = state.range(1), prompt = 32;
  auto& l = load(false, bf16_act);
  const int64_t V = l.model->config().vocab_size;
  std::vector<nn::KvCache> caches;
  std::vector<std::vector<float>> logits(static_cast<size_t>(S), std::vector<float>(static_cast<size_t>(V)));
  std::vector<int32_t> next(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    caches.push_back(l.model->make_cache({prompt + 256}));
    std::vector<int32_t> ids(static_cast<size_t>(prompt));
    for (int64_t i = 0; i < prompt; ++i) ids[size_t(i)] = int32_t(1000 + 37 * i + 101 * s);
    l.model->forward(ids.data(), prompt, caches.back(), logits[size_t(s)].data());
    next[size_t(s)] = generate::argmax(logits[size_t(s)].data(), V);
  }
  std::vector<models::DeepSeekV3<cpu>::BatchSequence> step(static_cast<size_t>(S));
  for (auto _ : state) {
    for (int64_t s = 0; s < S; ++s) {
      if (caches[size_t(s)].size() == caches[size_t(s)].capacity()) caches[size_t(s)].resize(prompt);
      step[size_t(s)] = {&next[size_t(s)], 1, &caches[size_t(s)], logits[size_t(s)].data()};
    }
    l.model->forward_batch(step);
    for (int64_t s = 0; s < S; ++s) next[size_t(s)] = generate::argmax(logits[size_t(s)].data(), V);
  }
  state.counters["tok/s"] = benchmark::Counter(double(S) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["sequences"] = double(S);
  state.SetLabel(label(false, bf16_act));
}

void BM_Prefill(benchmark::State& state) {
  const bool fp8 = state.range(0) != 0, bf16_act = state.range(2) != 0;
  const int64_t n = state.range(1);
  auto& l = load(fp8, bf16_act);
  auto cache = l.model->make_cache({n});
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t(1000 + 37 * i);
  std::vector<float> logits(static_cast<size_t>(l.model->config().vocab_size));
  for (auto _ : state) {
    cache.clear();
    l.model->forward(ids.data(), n, cache, logits.data());
  }
  state.counters["tok/s"] = benchmark::Counter(double(n) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(label(fp8, bf16_act));
}

}  // namespace

BENCHMARK(BM_MemoryBandwidth)->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();
BENCHMARK(BM_Decode)->Args({0, 0})->Args({0, 1})->Args({1, 0})->Args({1, 1})->Unit(benchmark::kMillisecond)->MinTime(5.0)->UseRealTime();
BENCHMARK(BM_DecodeContext)->ArgsProduct({{0, 1}, {0, 1024, 8192, 32768}})->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();
BENCHMARK(BM_DecodeBatch)->ArgsProduct({{0, 1}, {1, 4, 16, 64}})->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();
BENCHMARK(BM_Prefill)->Args({0, 128, 0})->Args({0, 128, 1})->Args({1, 128, 0})->Args({1, 128, 1})->Unit(benchmark::kMillisecond)->MinTime(5.0)->UseRealTime();
BENCHMARK_MAIN();
