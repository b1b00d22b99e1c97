// One DeepSeek-V3.2 attention layer at its real shapes (hidden 7168, 128 heads, q_lora 1536,
// kv_lora 512, rope 64, v 128; indexer 64 heads x 128, index_topk 2048), random bf16 weights:
// dense absorbed MLA vs DSA (indexer + sparse absorbed MLA) over a filled cache of L tokens.
//   BM_decode/<mode>/L      one query at position L-1 (batch-1 decode)
//   BM_prefill/<mode>/L     a chunk of 16 queries at positions L-16 .. L-1
//   mode 0 dense MLA, 1 DSA, 2 the DSA indexer alone (its share of mode 1); last argument: 0 f32 cache, 1 bf16
//   cache, 2 bf16 cache with bf16 activations (LoadOptions::activations: linears on AVX512-BF16, attention's
//   q~ and p rounded so the cached rows multiply natively)
//   BM_attention/L/c/H      the dense decode attention alone, H heads (128: V3; 16: V2-Lite), cache c = 0 f32,
//                           1 bf16, 2 bf16 multiplied natively (bf16_products, AVX512-BF16); cache GB/s against
//                           BM_MemoryBandwidth's triad, GFLOP/s against bench_linear's BM_PeakFlops
//   BM_chunk_order/o/n      a chunk of n queries at 4K context, tiled (o = 0) vs absorbed (1): mla.hpp's cost rule
// Counters: tokens/s (Time is per call: 1 token for decode, 16 for prefill). Cost model per query: projections
// (L-independent, ~0.4 GB of bf16 weights: o_proj 235 MB dominates), dense attention 128 * L * (576 + 512) FMAs, DSA
// attention 128 * min(L, 2048) * (576 + 512) FMAs + indexer 64 * 128 * L FMAs. The cache rows are filled with random
// values directly (no 128K-token prefill). The checkpoint (config.json + model.safetensors, ~0.4 GB) is written once to
// $TMPDIR/deepseek_bench_dsa.
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/nn/dsa.hpp>
#include <deepseek/nn/mla.hpp>

#include <benchmark/benchmark.h>

#include "memory_bandwidth.hpp"
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace deepseek;

constexpr int64_t kHidden = 7168, kHeads = 128, kQLora = 1536, kKvLora = 512, kNope = 128, kRope = 64, kV = 128;
constexpr int64_t kIndexHeads = 64, kIndexDim = 128, kTopk = 2048, kMaxContext = 131072, kChunk = 16;

uint64_t g_state = 0x9E3779B97F4A7C15ull;
float uniform() {  // xorshift64*, uniform in [-1, 1)
  g_state ^= g_state >> 12;
  g_state ^= g_state << 25;
  g_state ^= g_state >> 27;
  return float(((g_state * 2685821657736338717ull) >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

std::string checkpoint_dir() {
  namespace fs = std::filesystem;
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/deepseek_bench_dsa";
  fs::create_directories(dir);
  nlohmann::ordered_json c = {{"architectures", {"DeepseekV32ForCausalLM"}},
                              {"model_type", "deepseek_v32"},
                              {"vocab_size", 1024},
                              {"first_k_dense_replace", 1},
                              {"hidden_size", kHidden},
                              {"num_hidden_layers", 1},
                              {"num_attention_heads", kHeads},
                              {"q_lora_rank", kQLora},
                              {"kv_lora_rank", kKvLora},
                              {"qk_nope_head_dim", kNope},
                              {"qk_rope_head_dim", kRope},
                              {"v_head_dim", kV},
                              {"index_n_heads", kIndexHeads},
                              {"index_head_dim", kIndexDim},
                              {"index_topk", kTopk},
                              {"max_position_embeddings", 163840},
                              {"rope_theta", 10000},
                              {"rope_scaling",
                               {{"type", "yarn"},
                                {"factor", 40},
                                {"original_max_position_embeddings", 4096},
                                {"beta_fast", 32},
                                {"beta_slow", 1},
                                {"mscale", 1.0},
                                {"mscale_all_dim", 1.0}}}};
  std::ofstream(fs::path(dir) / "config.json") << c.dump(2);
  if (fs::exists(fs::path(dir) / "model.safetensors")) return dir;
  struct T {
    std::string name;
    std::vector<int64_t> shape;
    DType dt;
  };
  const std::string p = "model.layers.0.self_attn.";
  const std::vector<T> ts = {{p + "q_a_layernorm.weight", {kQLora}, DType::f32},
                             {p + "kv_a_layernorm.weight", {kKvLora}, DType::f32},
                             {p + "indexer.k_norm.weight", {kIndexDim}, DType::f32},
                             {p + "indexer.k_norm.bias", {kIndexDim}, DType::f32},
                             {p + "indexer.weights_proj.weight", {kIndexHeads, kHidden}, DType::f32},
                             {p + "q_a_proj.weight", {kQLora, kHidden}, DType::bf16},
                             {p + "q_b_proj.weight", {kHeads * (kNope + kRope), kQLora}, DType::bf16},
                             {p + "kv_a_proj_with_mqa.weight", {kKvLora + kRope, kHidden}, DType::bf16},
                             {p + "kv_b_proj.weight", {kHeads * (kNope + kV), kKvLora}, DType::bf16},
                             {p + "o_proj.weight", {kHidden, kHeads * kV}, DType::bf16},
                             {p + "indexer.wq_b.weight", {kIndexHeads * kIndexDim, kQLora}, DType::bf16},
                             {p + "indexer.wk.weight", {kIndexDim, kHidden}, DType::bf16}};
  nlohmann::ordered_json h;
  uint64_t off = 0;
  for (const auto& t : ts) {
    uint64_t n = 1;
    for (auto d : t.shape) n *= uint64_t(d);
    h[t.name] = {{"dtype", dtype_info(t.dt).safetensors},
                 {"shape", t.shape},
                 {"data_offsets", {off, off + n * dtype_size(t.dt)}}};
    off += n * dtype_size(t.dt);
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  std::ofstream f(fs::path(dir) / "model.safetensors.tmp", std::ios::binary);
  const uint64_t hl = hs.size();
  f.write(reinterpret_cast<const char*>(&hl), 8);
  f << hs;
  for (const auto& t : ts) {
    uint64_t n = 1;
    for (auto d : t.shape) n *= uint64_t(d);
    const float std = t.shape.size() == 2 ? 1.7f / std::sqrt(float(t.shape[1])) : 0.1f;
    std::vector<char> buf(size_t(n * dtype_size(t.dt)));
    for (uint64_t i = 0; i < n; ++i) {
      const float u = uniform() * std;
      if (t.dt == DType::bf16) {
        const uint16_t b = f32_to_bf16(u);
        std::memcpy(buf.data() + 2 * i, &b, 2);
      } else {
        const float v = t.name.find("norm.weight") != std::string::npos ? 1.0f + u : u;
        std::memcpy(buf.data() + 4 * i, &v, 4);
      }
    }
    f.write(buf.data(), std::streamsize(buf.size()));
  }
  f.close();
  fs::rename(fs::path(dir) / "model.safetensors.tmp", fs::path(dir) / "model.safetensors");
  return dir;
}

struct Layer {
  std::shared_ptr<io::Checkpoint> ckpt;
  nn::Mla<cpu> dense, dsa, dense16, dsa16;  // ...16: bf16 activations
  nn::Indexer<cpu> indexer, indexer16;
  nn::KvCache cache, cache16;  // the same rows in f32 and in bf16
  std::vector<float> x, cq;
};

Layer& layer() {
  static Layer L = [] {
    Layer l;
    l.ckpt = io::Checkpoint::open(checkpoint_dir());
    const auto& c = l.ckpt->config();
    const io::Weights w = io::Weights(l.ckpt).sub("model.layers.0.self_attn");
    const nn::Rope rope(c, c.qk_rope_head_dim, nn::RopeLayout::interleaved);
    const nn::Rope index_rope(c, c.qk_rope_head_dim, nn::RopeLayout::half_split);
    const float scale = float(nn::mla_softmax_scale(c));
    const auto mc = nn::MlaConfig::from(c);
    l.indexer = nn::Indexer<cpu>(w.sub("indexer"), nn::IndexerConfig::from(c), index_rope);
    l.dense = nn::Mla<cpu>(w, mc, rope, scale);
    l.dsa = nn::Mla<cpu>(w, mc, rope, scale, l.indexer);
    const auto w16 = w.with_activations(ActivationDType::bf16);
    l.indexer16 = nn::Indexer<cpu>(w16.sub("indexer"), nn::IndexerConfig::from(c), index_rope);
    l.dense16 = nn::Mla<cpu>(w16, mc, rope, scale);
    l.dsa16 = nn::Mla<cpu>(w16, mc, rope, scale, l.indexer16);
    // One cache whose rows hold [c_kv ; k_pe ; index key]; the dense layer reads the first 576.
    l.cache = nn::KvCache(1, mc.row_width(), kMaxContext);
    l.cache16 = nn::KvCache(1, mc.row_width(), kMaxContext, nn::CacheLayout::contiguous, 16, nn::CacheDType::bf16);
    const auto v = l.cache.view(0), v16 = l.cache16.view(0);
    for (int64_t t = 0; t < kMaxContext; ++t) {
      float* r = v.row(t);
      for (int64_t i = 0; i < mc.row_width(); ++i) r[i] = uniform();
      v16.store(t, 0, r, mc.row_width());
    }
    l.x.resize(size_t(kChunk * kHidden));
    l.cq.resize(size_t(kChunk * kQLora));
    for (auto& e : l.x) e = uniform();
    for (auto& e : l.cq) e = uniform();
    return l;
  }();
  return L;
}

void run(benchmark::State& state, int64_t n) {
  Layer& l = layer();
  const int mode = int(state.range(0));
  const int64_t L = state.range(1), p0 = L - n;
  const bool bf16 = state.range(2) != 0, act16 = state.range(2) == 2;
  const nn::CacheView view = (bf16 ? l.cache16 : l.cache).view(0);
  std::vector<float> y(size_t(n * kHidden));
  nn::Selection sel;
  for (auto _ : state) {
    if (mode == 0)
      (act16 ? l.dense16 : l.dense).forward(l.x.data(), n, p0, view, y.data(), nn::MlaMode::absorbed);
    else if (mode == 1)
      (act16 ? l.dsa16 : l.dsa).forward(l.x.data(), n, p0, view, y.data(), nn::MlaMode::absorbed);
    else
      (act16 ? l.indexer16 : l.indexer).forward(l.x.data(), l.cq.data(), n, p0, view, kKvLora + kRope, sel);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(state.iterations()) * double(n), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(mode == 0 ? "dense" : mode == 1 ? "dsa" : "indexer") +
                 (act16 ? ", bf16 cache, bf16 activations" : bf16 ? ", bf16 cache" : ", f32 cache"));
}

using deepseek::bench::BM_MemoryBandwidth;
using deepseek::bench::triad_gbs;

// The dense decode attention alone (Ops::latent_attention: one query, 128 heads, every cached
// row): cache GB/s (576 values a row) against the triad, and GFLOP/s (2 x 128 x (2 x 512 + 64) a row).
void BM_attention(benchmark::State& state) {
  Layer& l = layer();
  const int64_t L = state.range(0), H = state.range(2);
  const bool bf16 = state.range(1) != 0, native = state.range(1) == 2;
  if (native && !backend::cpu::has_avx512bf16()) {
    state.SkipWithError("no AVX512-BF16 on this CPU");
    return;
  }
  const nn::CacheView view = (bf16 ? l.cache16 : l.cache).view(0);
  std::vector<float> qa(size_t(H * (kKvLora + kRope))), o(size_t(H * kKvLora));
  for (auto& e : qa) e = uniform();
  std::vector<const void*> rows(static_cast<size_t>(L));
  for (int64_t t = 0; t < L; ++t) rows[size_t(t)] = view.row_data(t);
  const int32_t len = int32_t(L);
  const backend::cpu::LatentRows r{rows.data(), 0, &len, bf16 ? backend::cpu::RowFormat::bf16 : backend::cpu::RowFormat::f32, 0,
                                   native};
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    backend::cpu::latent_attention(qa.data(), 1, H, kKvLora, kRope, 0.07f, r, o.data());
    benchmark::DoNotOptimize(o.data());
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(state.iterations());
  const double bytes = double(L) * double(kKvLora + kRope) * (bf16 ? 2 : 4);
  state.counters["cache_GB/s"] = bytes / sec / 1e9;
  if (triad_gbs() > 0) state.counters["of_triad"] = bytes / sec / 1e9 / triad_gbs();
  state.counters["GFLOP/s"] = double(L) * double(H) * double(2 * kKvLora + kRope) * 2 / sec / 1e9;
  state.SetLabel(native ? "bf16 cache, bf16 products" : bf16 ? "bf16 cache" : "f32 cache");
}

// The cost rule of nn/mla.hpp checked by measurement: a chunk of n queries at the end of a 4K
// context, dense MLA, tiled (mode 0) vs absorbed (1); the rule predicts tiled from n ~ 170 on.
void BM_chunk_order(benchmark::State& state) {
  Layer& l = layer();
  const bool tiled = state.range(0) == 0;
  const int64_t n = state.range(1), L = 4096, p0 = L - n;
  std::vector<float> x(size_t(n * kHidden)), y(size_t(n * kHidden));
  for (auto& e : x) e = uniform();
  for (auto _ : state) {
    l.dense.forward(x.data(), n, p0, l.cache16.view(0), y.data(), tiled ? nn::MlaMode::tiled : nn::MlaMode::absorbed);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(state.iterations()) * double(n), benchmark::Counter::kIsRate);
  state.SetLabel(tiled ? "tiled" : "absorbed");
}

void BM_decode(benchmark::State& s) { run(s, 1); }
void BM_prefill(benchmark::State& s) { run(s, kChunk); }

// Iterations fixed so the whole sweep takes a few minutes on 2 cores.
void decode_sweep(benchmark::internal::Benchmark* b) {
  for (int bf16 : {0, 1, 2})
    for (int mode : {0, 1, 2})
      for (int64_t L : {1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072}) b->Args({mode, L, bf16});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
}
void prefill_sweep(benchmark::internal::Benchmark* b) {
  for (int mode : {0, 1, 2})
    for (int64_t L : {1024, 4096, 16384, 65536}) b->Args({mode, L, 1});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
}
void attention_sweep(benchmark::internal::Benchmark* b) {
  for (int64_t H : {128, 16})
    for (int c : {0, 1, 2})
      for (int64_t L : {1024, 4096, 16384, 65536, 131072}) b->Args({L, c, H});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(4);
}

}  // namespace

BENCHMARK(BM_MemoryBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(BM_attention)->Apply(attention_sweep);
BENCHMARK(BM_chunk_order)->ArgsProduct({{0, 1}, {64, 128, 256, 512}})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_decode)->Apply(decode_sweep);
BENCHMARK(BM_prefill)->Apply(prefill_sweep);

BENCHMARK_MAIN();
