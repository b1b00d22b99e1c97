// DeepSeek-V3.2 sparse attention (nn/dsa.hpp + the sparse orders of nn/mla.hpp) against
// transformers' DeepseekV32ForCausalLM (tests/reference/make_dsa_fixtures.py):
//   v32_dsa_topk_small   index_topk 5 < T = 20: the selection changes the logits by > 1e-2
//   v32_dsa_topk_large   index_topk 64 >= every context: DSA == dense MLA
//   v32_dsa_fp8_indexer  index_head_dim 128: the FP8 + Hadamard indexer against a PyTorch reference of
//                        the official FP8 path (DeepSeek-V3.2-Exp inference code) run in transformers
//   v32_dsa_long         192 prompt + 16 decode rows, index_topk 144: selected sets span several row
//                        blocks of the sparse kernel; v3_dense_long (V3, no indexer): 300 + 20 rows of
//                        dense absorbed attention, YaRN past original_max_position_embeddings
// logits within 1e-4 relative (same tolerance argument as test_deepseek_v3.cpp), the indexer's
// selection identical to transformers' per layer and row, greedy identical, cached decode ==
// full recompute, paged == contiguous, and unselected latent rows are never read.
#include "reference_fixture.hpp"

#include <deepseek/models/deepseek_v3.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace deepseek;
using namespace deepseek::test;

namespace {

const char* kDsaVariants[] = {"v32_dsa_topk_small", "v32_dsa_topk_large"};

bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// Per layer, the selection of every prompt row, by running the layers one at a time.
std::vector<nn::Selection> prompt_selections(const models::DeepSeekV3<cpu>& model, const std::vector<int32_t>& ids,
                                             nn::MlaMode mode = nn::MlaMode::absorbed) {
  const int64_t T = int64_t(ids.size()), d = model.config().hidden_size;
  auto cache = model.make_cache(models::CacheOptions::exact(std::max<int64_t>(T, 64)));
  std::vector<float> h(size_t(T * d));
  for (int64_t i = 0; i < T; ++i)
    backend::cpu::to_f32(model.embedding().slice_rows(ids[size_t(i)], ids[size_t(i)] + 1), h.data() + i * d);
  std::vector<nn::Selection> out(size_t(model.num_layers()));
  for (int l = 0; l < model.num_layers(); ++l)
    model.layer(l).forward(h.data(), T, 0, cache.view(l), mode, &out[size_t(l)]);
  return out;
}

// Reference selection rows [r0, r0 + n) of `name` (I64 [rows, k], -1 padded) as sorted lists.
std::vector<std::vector<int32_t>> ref_rows(const Reference& ref, const std::string& name) {
  const auto r = ref.file->view(name);
  const int64_t k = r.shape()[1];
  std::vector<std::vector<int32_t>> out(size_t(r.shape()[0]));
  for (int64_t s = 0; s < r.shape()[0]; ++s)
    for (int64_t j = 0; j < k; ++j)
      if (r.data_as<int64_t>()[s * k + j] >= 0) out[size_t(s)].push_back(int32_t(r.data_as<int64_t>()[s * k + j]));
  return out;
}

std::vector<int32_t> row_of(const nn::Selection& sel, int64_t s) {
  return std::vector<int32_t>(sel.row(s), sel.row(s) + sel.count[size_t(s)]);
}

}  // namespace

TEST_CASE("V3.2 checkpoints load with their indexer", "[model][dsa]") {
  auto ckpt = io::Checkpoint::open(kModels + "v32_dsa_topk_small");
  models::DeepSeekV3<cpu> model(ckpt);
  const auto& c = model.config();
  REQUIRE(c.has_indexer());
  REQUIRE(model.layer(0).self_attention().indexer() != nullptr);
  REQUIRE(model.layer(0).self_attention().indexer()->config().topk == 5);
  auto cache = model.make_cache(models::CacheOptions::exact(8));
  REQUIRE(cache.width() == c.kv_lora_rank + c.qk_rope_head_dim + c.index_head_dim);
}

TEST_CASE("DSA logits match transformers", "[model][dsa][reference]") {
  for (const char* variant : kDsaVariants) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    REQUIRE(ref.logits.shape() == Shape{T, V});
    for (auto mode : {nn::MlaMode::automatic, nn::MlaMode::naive, nn::MlaMode::absorbed}) {
      for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
        auto cache = model.make_cache(models::CacheOptions::exact(64, layout, 4));
        std::vector<float> logits(size_t(T * V));
        model.forward(ref.ids.data(), T, cache, logits.data(), true, nullptr, mode);
        for (int64_t t = 0; t < T; ++t) {
          INFO("row " << t << " mode " << int(mode) << " layout " << int(layout));
          REQUIRE(rel_diff(logits.data() + t * V, ref.logits.data_as<float>() + t * V, V) < 1e-4);
        }
      }
    }
  }
}

TEST_CASE("indexer selection matches transformers", "[model][dsa][reference]") {
  for (const char* variant : kDsaVariants) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size());
    for (auto mode : {nn::MlaMode::naive, nn::MlaMode::absorbed}) {
      auto sel = prompt_selections(model, ref.ids, mode);
      for (int l = 0; l < model.num_layers(); ++l) {
        auto r = ref.file->view("index_topk_layer" + std::to_string(l));
        const int64_t k = r.shape()[1];
        REQUIRE(r.shape()[0] == T);
        for (int64_t s = 0; s < T; ++s) {
          INFO("layer " << l << " row " << s);
          std::vector<int32_t> want,
              got(sel[size_t(l)].row(s), sel[size_t(l)].row(s) + sel[size_t(l)].count[size_t(s)]);
          for (int64_t j = 0; j < k; ++j)
            if (r.data_as<int64_t>()[s * k + j] >= 0) want.push_back(int32_t(r.data_as<int64_t>()[s * k + j]));
          REQUIRE(got == want);
        }
      }
    }
  }
}

TEST_CASE("DSA greedy continuation matches transformers", "[model][dsa][generate]") {
  for (const char* variant : kDsaVariants) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    REQUIRE(greedy_continuation(model, ref.ids, ref.greedy.size()) == ref.greedy);
  }
}

TEST_CASE("DSA cached decode equals full recompute; paged equals contiguous", "[model][dsa][cache]") {
  for (const char* variant : kDsaVariants) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    // The prompt plus its greedy continuation: the decode steps past index_topk select.
    std::vector<int32_t> ids = ref.ids;
    ids.insert(ids.end(), ref.greedy.begin(), ref.greedy.end());
    const int64_t T = int64_t(ids.size()), V = model.config().vocab_size;
    std::vector<float> full(size_t(T * V));
    auto c0 = model.make_cache(models::CacheOptions::exact(64));
    model.forward(ids.data(), T, c0, full.data(), true, nullptr, nn::MlaMode::naive);
    for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
      for (int chunked = 0; chunked < 2; ++chunked) {
        auto cache = model.make_cache(models::CacheOptions::exact(64, layout, 4));
        int64_t t = 0;
        auto step = [&](int64_t k) {
          std::vector<float> out(size_t(k * V));
          model.forward(ids.data() + t, k, cache, out.data(), true);
          for (int64_t i = 0; i < k; ++i) {
            INFO("position " << t + i << " layout " << int(layout) << " chunked " << chunked);
            REQUIRE(rel_diff(out.data() + i * V, full.data() + (t + i) * V, V) < 1e-5);
          }
          t += k;
        };
        if (chunked) {
          step(7);
          step(3);
          step(1);
          step(9);
          while (t < T) step(std::min<int64_t>(5, T - t));
        } else {
          while (t < T) step(1);
        }
        REQUIRE(cache.size() == T);
      }
    }
  }
}

// Poison the latent part (c_kv ; k_pe) of every cached row no query of the step selected with NaN:
// a kernel that read a dense row (even to give it weight 0) would produce NaN. The indexer keys
// (the row's last index_head_dim values) stay intact, so the selection itself is unchanged.
TEST_CASE("sparse attention never reads unselected rows", "[model][dsa][sparse]") {
  const std::string variant = "v32_dsa_topk_small";
  models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
  auto ref = load_reference(variant);
  const auto& c = model.config();
  const int64_t T = int64_t(ref.ids.size()), V = c.vocab_size, W = c.kv_lora_rank + c.qk_rope_head_dim;
  const auto sel = prompt_selections(model, ref.ids);
  for (int64_t chunk : {1, 3}) {
    for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
      INFO("chunk " << chunk << " layout " << int(layout));
      const int64_t P = T - chunk;
      auto cache = model.make_cache(models::CacheOptions::exact(64, layout, 4));
      model.forward(ref.ids.data(), P, cache, nullptr);
      int64_t poisoned = 0;
      for (int l = 0; l < model.num_layers(); ++l) {
        std::set<int32_t> keep;
        for (int64_t s = P; s < T; ++s)
          keep.insert(sel[size_t(l)].row(s), sel[size_t(l)].row(s) + sel[size_t(l)].count[size_t(s)]);
        for (int64_t t = 0; t < P; ++t)
          if (!keep.count(int32_t(t))) {
            float* row = cache.view(l).row(t);
            std::fill(row, row + W, std::numeric_limits<float>::quiet_NaN());
            ++poisoned;
          }
      }
      REQUIRE(poisoned >= (P - chunk * c.index_topk) * model.num_layers());  // at least the rows no query can select
      std::vector<float> out(size_t(chunk * V));
      model.forward(ref.ids.data() + P, chunk, cache, out.data(), true, nullptr, nn::MlaMode::absorbed);
      REQUIRE(all_finite(out));
      for (int64_t i = 0; i < chunk; ++i)
        REQUIRE(rel_diff(out.data() + i * V, ref.logits.data_as<float>() + (P + i) * V, V) < 1e-4);
      // Control: poisoning one selected row as well reaches the output, so a read of any
      // poisoned row would have shown (the forward stops at the first non-finite layer output).
      auto cache2 = model.make_cache(models::CacheOptions::exact(64, layout, 4));
      model.forward(ref.ids.data(), P, cache2, nullptr);
      float* row = cache2.view(0).row(sel[0].row(P)[0]);
      std::fill(row, row + W, std::numeric_limits<float>::quiet_NaN());
      REQUIRE_THROWS_WITH(
          model.forward(ref.ids.data() + P, chunk, cache2, out.data(), true, nullptr, nn::MlaMode::absorbed),
          Catch::Contains("non-finite value (NaN) first appears in the output of decoder layer 0"));
    }
  }
}

// fp8_hadamard against the official FP8 path (make_dsa_fixtures.py fp8_*: rotate_activation,
// act_quant with ue8m0 scales per 128 values, fp8_index), run inside transformers' model so that
// each layer sees the hidden states the FP8 selections of the layers before produce. The reference
// moves 26 of 640 selected entries (17 rows) from the f32 selection, each FP8 cut has a relative
// margin >= 1.1e-3, and 1e-5 relative noise on q and k changes none: a wrong rotation, block, scale
// rule or rounding moves other entries, and an identity transform moves none.
TEST_CASE("FP8 indexer selections match the official FP8 path", "[model][dsa][fp8]") {
  const std::string variant = "v32_dsa_fp8_indexer";
  auto ckpt = io::Checkpoint::open(kModels + variant);
  models::DeepSeekV3<cpu> exact(ckpt);
  models::LoadOptions o;
  o.indexer_precision = nn::IndexerPrecision::fp8_hadamard;
  models::DeepSeekV3<cpu> fp8(ckpt, o);
  REQUIRE(fp8.layer(0).self_attention().indexer()->precision() == nn::IndexerPrecision::fp8_hadamard);
  REQUIRE(fp8.config().index_head_dim == 128);
  auto ref = load_reference(variant);
  const auto ids = ids_of(ref.file->view("fp8_ids"));  // prompt + greedy continuation
  const int64_t T = int64_t(ids.size()), V = fp8.config().vocab_size, k = fp8.config().index_topk;
  const auto a = prompt_selections(exact, ids), b = prompt_selections(fp8, ids);
  int64_t total = 0, differ = 0;
  for (int l = 0; l < fp8.num_layers(); ++l) {
    const auto want8 = ref_rows(ref, "fp8_index_topk_layer" + std::to_string(l));
    const auto want32 = ref_rows(ref, "f32_index_topk_layer" + std::to_string(l));
    REQUIRE(int64_t(want8.size()) == T);
    for (int64_t s = 0; s < T; ++s) {
      INFO("layer " << l << " row " << s);
      REQUIRE(row_of(a[size_t(l)], s) == want32[size_t(s)]);
      REQUIRE(row_of(b[size_t(l)], s) == want8[size_t(s)]);
      if (s < k) continue;  // rows that choose
      const std::set<int32_t> x(want32[size_t(s)].begin(), want32[size_t(s)].end());
      for (int32_t t : row_of(b[size_t(l)], s)) differ += !x.count(t);
      total += int64_t(x.size());
    }
  }
  WARN(variant << ": the FP8 + Hadamard indexer moves " << differ << " of " << total
               << " selected entries from the f32 selection (as the official FP8 path does)");
  REQUIRE(differ > 0);
  // The FP8 model end to end, full forward and cached decode, against the reference's FP8 logits.
  const auto want = ref.file->view("fp8_logits");
  REQUIRE(want.shape() == Shape{T, V});
  std::vector<float> logits(size_t(T * V));
  auto cache = fp8.make_cache(models::CacheOptions::exact(T));
  fp8.forward(ids.data(), T, cache, logits.data(), true);
  for (int64_t t = 0; t < T; ++t) {
    INFO("row " << t);
    REQUIRE(rel_diff(logits.data() + t * V, want.data_as<float>() + t * V, V) < 1e-4);
  }
  const int64_t P = int64_t(ref.ids.size());
  auto c2 = fp8.make_cache(models::CacheOptions::exact(T, nn::CacheLayout::paged, 4));
  fp8.forward(ids.data(), P, c2, logits.data(), true);
  for (int64_t t = P; t < T; ++t) {
    INFO("decode position " << t);
    fp8.forward(ids.data() + t, 1, c2, logits.data());
    REQUIRE(rel_diff(logits.data(), want.data_as<float>() + t * V, V) < 1e-4);
  }
  // The small fixtures (index_head_dim 16: one block) still run end to end in FP8.
  for (const char* v : kDsaVariants) {
    INFO("variant " << v);
    models::DeepSeekV3<cpu> m(io::Checkpoint::open(kModels + v), o);
    auto r = load_reference(v);
    auto c = m.make_cache(models::CacheOptions::exact(64));
    std::vector<float> out(size_t(m.config().vocab_size));
    m.forward(r.ids.data(), int64_t(r.ids.size()), c, out.data());
    REQUIRE(all_finite(out));
  }
}

// Under the FP8 indexer an FP8 cache keeps the index key as e4m3 + its scale (kv_cache.hpp): the
// keys read back equal, bit for bit, what an f32 cache holds, and so do the selections. The
// indexer of v32_dsa_fp8_indexer (index_head_dim 128) runs on random inputs over rows whose
// latent part (128 values, FP8 in blocks of 128) is unused here (tests/nn/test_kv_cache.cpp covers
// keys under act_quant's 1e-4 floor, which LayerNorm'd keys never reach).
TEST_CASE("FP8 indexer: an FP8 cache stores its index keys exactly", "[model][dsa][fp8][cache]") {
  models::LoadOptions o;
  o.indexer_precision = nn::IndexerPrecision::fp8_hadamard;
  models::DeepSeekV3<cpu> fp8(io::Checkpoint::open(kModels + "v32_dsa_fp8_indexer"), o);
  const auto* indexer = fp8.layer(0).self_attention().indexer();
  REQUIRE(indexer != nullptr);
  const auto& c = fp8.config();
  const int64_t n = 40, D = c.index_head_dim, lora = 128, W = lora + D;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(n * c.hidden_size)), cq(size_t(n * c.q_lora_rank));
  for (auto& v : x) v = nd(rng);
  for (auto& v : cq) v = nd(rng);
  nn::KvCache c32(1, W, n), c8(1, W, n, nn::CacheLayout::paged, 4, nn::CacheDType::fp8_e4m3, lora, D);
  REQUIRE(c8.row_bytes() == lora + 4 + D + 4);
  nn::Selection s32, s8;
  indexer->forward(x.data(), cq.data(), n, 0, c32.view(0), lora, s32);
  indexer->forward(x.data(), cq.data(), n, 0, c8.view(0), lora, s8);
  std::vector<float> k32(static_cast<size_t>(D)), k8(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    INFO("position " << t);
    c32.view(0).load(t, lora, k32.data(), D);
    c8.view(0).load(t, lora, k8.data(), D);
    REQUIRE(k8 == k32);
  }
  REQUIRE(s8.idx == s32.idx);
  REQUIRE(s8.count == s32.count);
  // The V3.2 row: 656 bytes of FlashMLA's layout + 128 e4m3 + one scale, against 912 with a bf16 key.
  REQUIRE(nn::cache_row_bytes(nn::CacheDType::fp8_e4m3, 512 + 64 + 128, 512, 128) == 788);
  REQUIRE(nn::cache_row_bytes(nn::CacheDType::fp8_e4m3, 512 + 64 + 128, 512) == 912);
}

// Long contexts: the prompt in every order and layout, then the greedy tokens decoded one at a time
// through the cache, every row's logits within 1e-4 of transformers' full forward over prompt +
// continuation. v32_dsa_long: each choosing row selects 144 of up to 208 rows (several 64- or 128-row
// blocks of the sparse kernel, split across threads at decode), its selections equal to
// transformers' (cut margins >= 7.1e-5 relative, 22x the measured f32 rounding of the scores).
TEST_CASE("long context: multi-block sparse and dense attention match transformers", "[model][dsa][long]") {
  for (const char* variant : {"v32_dsa_long", "v3_dense_long"}) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    const auto& c = model.config();
    const int64_t P = int64_t(ref.ids.size()), G = int64_t(ref.greedy.size()), V = c.vocab_size;
    std::vector<int32_t> ids = ref.ids;
    ids.insert(ids.end(), ref.greedy.begin(), ref.greedy.end());
    const int64_t T = int64_t(ids.size());
    REQUIRE(P >= 192);
    const auto decode = ref.file->view("decode_logits");
    REQUIRE(decode.shape() == Shape{G, V});
    if (c.has_indexer()) {
      REQUIRE(c.index_topk > 2 * 64);
      REQUIRE(c.index_topk < P);
      for (auto mode : {nn::MlaMode::naive, nn::MlaMode::absorbed}) {
        const auto sel = prompt_selections(model, ids, mode);
        for (int l = 0; l < model.num_layers(); ++l) {
          const auto want = ref_rows(ref, "index_topk_layer" + std::to_string(l));
          const auto want_d = ref_rows(ref, "decode_index_topk_layer" + std::to_string(l));
          REQUIRE(int64_t(want.size()) == P);
          REQUIRE(int64_t(want_d.size()) == G);
          for (int64_t s = 0; s < T; ++s) {
            INFO("layer " << l << " row " << s << " mode " << int(mode));
            REQUIRE(row_of(sel[size_t(l)], s) == (s < P ? want[size_t(s)] : want_d[size_t(s - P)]));
          }
        }
      }
    }
    for (auto mode : {nn::MlaMode::automatic, nn::MlaMode::naive, nn::MlaMode::absorbed}) {
      for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
        if (mode == nn::MlaMode::naive && layout == nn::CacheLayout::paged) continue;
        auto cache = model.make_cache(models::CacheOptions::exact(T, layout, 16));
        std::vector<float> logits(size_t(P * V));
        model.forward(ids.data(), P, cache, logits.data(), true, nullptr, mode);
        for (int64_t t = 0; t < P; ++t) {
          INFO("row " << t << " mode " << int(mode) << " layout " << int(layout));
          REQUIRE(rel_diff(logits.data() + t * V, ref.logits.data_as<float>() + t * V, V) < 1e-4);
        }
        for (int64_t t = P; t < T; ++t) {
          INFO("decode position " << t << " mode " << int(mode) << " layout " << int(layout));
          model.forward(ids.data() + t, 1, cache, logits.data(), false, nullptr, mode);
          REQUIRE(rel_diff(logits.data(), decode.data_as<float>() + (t - P) * V, V) < 1e-4);
        }
      }
    }
    REQUIRE(greedy_continuation(model, ref.ids, size_t(G)) == ref.greedy);
  }
}
