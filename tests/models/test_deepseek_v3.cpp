// models::DeepSeekV3<cpu> against HF transformers (tests/reference/make_model_fixtures.py):
// logits of a full forward within 1e-4 relative, greedy continuations identical, routing
// identical; and the properties that make decode trustworthy: cached decode == full recompute,
// absorbed MLA == naive MLA, paged cache == contiguous cache.
//
// Tolerance: the reference runs float32 math on the stored weight values; we do the same math in
// another order (blocked dot products, FP8 scales applied per 128-column partial sum), which
// moves results by ~1e-6 relative. 1e-4 of the largest logit leaves room for that and nothing
// more: a wrong rope layout, scale or routing decision moves logits by > 1e-2.
#include "reference_fixture.hpp"

#include <deepseek/models/deepseek_v3.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <unistd.h>
#include <cmath>
#include <string>
#include <vector>

using namespace deepseek;
using namespace deepseek::test;

namespace {

// v2_mha_ocr_decoder: use_mla false (the DeepSeek-OCR decoder's plain multi-head attention), from
// transformers' DeepseekOcr2TextModel (tests/reference/make_mha_model_fixture.py).
const char* kVariants[] = {"v3_yarn_qlora_bf16", "v3_noqlora_f32",     "v3_fp8",
                           "v2_softmax_group_limited", "v2_lite_greedy", "v2_mha_ocr_decoder"};

}  // namespace

TEST_CASE("logits match transformers", "[model][reference]") {
  for (const char* variant : kVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    REQUIRE(ref.logits.shape() == Shape{T, V});
    for (auto mode : {nn::MlaMode::naive, nn::MlaMode::tiled, nn::MlaMode::absorbed}) {
      auto cache = model.make_cache(models::CacheOptions::exact(256));
      std::vector<float> logits(size_t(T * V));
      model.forward(ref.ids.data(), T, cache, logits.data(), true, nullptr, mode);
      for (int64_t t = 0; t < T; ++t) {
        INFO("row " << t << " mode " << int(mode));
        REQUIRE(rel_diff(logits.data() + t * V, ref.logits.data_as<float>() + t * V, V) < 1e-4);
      }
    }
  }
}

TEST_CASE("routing matches transformers", "[model][reference][moe]") {
  for (const char* variant : kVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    auto ref = load_reference(variant);
    // Run layer by layer to get each MoE layer's input, then compare its routing.
    const auto& c = model.config();
    const int64_t T = int64_t(ref.ids.size()), d = c.hidden_size;
    auto cache = model.make_cache(models::CacheOptions::exact(256));
    std::vector<float> h(size_t(T * d)), a(size_t(T * d));
    for (int64_t i = 0; i < T; ++i) backend::cpu::to_f32(model.embedding().slice_rows(ref.ids[size_t(i)], ref.ids[size_t(i)] + 1), h.data() + i * d);
    int checked = 0;
    const int K = c.num_experts_per_tok;
    for (int l = 0; l < model.num_layers(); ++l) {
      const auto& layer = model.layer(l);
      layer.attend(h.data(), T, 0, cache.view(l));
      if (layer.is_moe()) {
        INFO("layer " << l);
        auto ref_idx = ref.file->view("topk_idx_layer" + std::to_string(l));
        auto ref_w = ref.file->view("topk_weight_layer" + std::to_string(l));
        REQUIRE(ref_idx.shape() == Shape{T, K});
        layer.ffn_input(h.data(), T, a.data());
        std::vector<int> idx(static_cast<size_t>(T * K));
        std::vector<float> w(static_cast<size_t>(T * K));
        layer.moe()->route(a.data(), T, idx.data(), w.data());
        for (int64_t t = 0; t < T; ++t) {
          // The reference lists experts in ascending order; sort ours the same way with their weights.
          std::vector<std::pair<int, float>> ours;
          for (int k = 0; k < K; ++k) ours.push_back({idx[size_t(t * K + k)], w[size_t(t * K + k)]});
          std::sort(ours.begin(), ours.end());
          for (int k = 0; k < K; ++k) {
            INFO("token " << t << " slot " << k);
            REQUIRE(ours[size_t(k)].first == ref_idx.data_as<int64_t>()[t * K + k]);
            REQUIRE(ours[size_t(k)].second == Approx(ref_w.data_as<float>()[t * K + k]).epsilon(1e-5));
          }
        }
        ++checked;
      }
      layer.feed_forward(h.data(), T);
    }
    REQUIRE(checked == model.num_layers() - c.first_k_dense_replace);
  }
}

TEST_CASE("greedy continuation matches transformers", "[model][reference][generate]") {
  for (const char* variant : kVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    auto ref = load_reference(variant);
    REQUIRE(greedy_continuation(model, ref.ids, ref.greedy.size()) == ref.greedy);
  }
}

TEST_CASE("cached decode equals full recompute; paged equals contiguous", "[model][cache]") {
  for (const char* variant : kVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    std::vector<float> full(size_t(T * V));
    auto c0 = model.make_cache(models::CacheOptions::exact(64));
    model.forward(ref.ids.data(), T, c0, full.data(), true, nullptr, nn::MlaMode::naive);
    for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
      auto cache = model.make_cache(models::CacheOptions::exact(64, layout, 4));
      std::vector<float> row(static_cast<size_t>(V));
      // A prefill of 5, then one token at a time, then a chunk of 3, then the rest one by one.
      int64_t t = 0;
      auto step = [&](int64_t k) {
        std::vector<float> out(size_t(k * V));
        model.forward(ref.ids.data() + t, k, cache, out.data(), true);
        for (int64_t i = 0; i < k; ++i) {
          INFO("position " << t + i << " layout " << int(layout));
          REQUIRE(rel_diff(out.data() + i * V, full.data() + (t + i) * V, V) < 1e-5);
        }
        t += k;
      };
      step(5);
      step(1);
      step(3);
      while (t < T) step(1);
      REQUIRE(cache.size() == T);
    }
  }
}

TEST_CASE("bad input gives clear errors", "[model][malformed]") {
  auto ckpt = io::Checkpoint::open(kModels + "v3_noqlora_f32");
  models::DeepSeekV3<cpu> model(ckpt);
  const int64_t V = model.config().vocab_size;
  auto cache = model.make_cache(models::CacheOptions::exact(8));
  std::vector<float> logits(static_cast<size_t>(V));
  int32_t bad = int32_t(V);
  REQUIRE_THROWS_WITH(model.forward(&bad, 1, cache, logits.data()), Catch::Contains("outside the vocabulary"));
  int32_t neg = -1;
  REQUIRE_THROWS_WITH(model.forward(&neg, 1, cache, logits.data()), Catch::Contains("token id -1"));
  std::vector<int32_t> many(9, 3);
  REQUIRE_THROWS_WITH(model.forward(many.data(), 9, cache, logits.data()), Catch::Contains("exceeds the KV cache capacity"));
  REQUIRE(cache.size() == 0);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(DEEPSEEK_FIXTURES_DIR "/configs/deepseek-v3")),
                      Catch::Contains("no weights"));
}

namespace {
// A copy of a fixture whose config.json is edited to contradict its weights.
std::string with_config_edit(const std::string& variant, const std::string& key, const io::Json& value) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("deepseek-mismatch-" + key + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy(kModels + variant + "/model.safetensors", dir / "model.safetensors");
  const std::string cfg = kModels + variant + "/config.json";
  io::Json j = io::parse_json(io::read_text_file(cfg), cfg);
  j[key] = value;
  std::ofstream(dir / "config.json") << j.dump();
  return dir.string();
}
}  // namespace

TEST_CASE("config and weights that disagree give errors naming the tensor", "[model][malformed]") {
  const std::string wide = with_config_edit("v3_noqlora_f32", "hidden_size", 80);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(wide)),
                      Catch::Contains("model.embed_tokens.weight") && Catch::Contains("expected shape [320, 80]") &&
                          Catch::Contains("[320, 64]"));
  const std::string experts = with_config_edit("v3_noqlora_f32", "n_routed_experts", 10);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(experts)),
                      Catch::Contains("model.layers.1.mlp.gate.weight") && Catch::Contains("expected shape [10, 64]"));
  const std::string more = with_config_edit("v3_noqlora_f32", "num_hidden_layers", 4);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(more)),
                      Catch::Contains("missing tensor") && Catch::Contains("model.layers.3.") &&
                          Catch::Contains("nearest existing name: model.layers.") && Catch::Contains("input_layernorm.weight"));
  const std::string dense = with_config_edit("v3_noqlora_f32", "first_k_dense_replace", 2);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(dense)),
                      Catch::Contains("model.layers.1.mlp.gate_proj.weight"));
  std::filesystem::remove_all(wide);
  std::filesystem::remove_all(more);
  std::filesystem::remove_all(experts);
  std::filesystem::remove_all(dense);
}

TEST_CASE("use_mla false: plain multi-head attention layers and their cache", "[model][mha]") {
  auto ckpt = io::Checkpoint::open(kModels + "v2_mha_ocr_decoder");
  models::DeepSeekV3<cpu> model(ckpt);
  const auto& c = model.config();
  REQUIRE_FALSE(c.use_mla);
  REQUIRE(c.head_dim == 32);
  REQUIRE_FALSE(model.layer(0).is_mla());
  // K then V of the 2 KV heads, not a latent: 2 * 2 * 32 values per token and layer.
  REQUIRE(model.make_cache(models::CacheOptions::exact(8)).width() == 128);
  REQUIRE_THROWS_WITH(model.layer(0).self_attention(), Catch::Contains("use_mla: false"));
  // The MLA fixtures still have MLA layers.
  models::DeepSeekV3<cpu> mla(io::Checkpoint::open(kModels + "v2_lite_greedy"));
  REQUIRE(mla.layer(0).is_mla());
  REQUIRE(mla.make_cache(models::CacheOptions::exact(8)).width() == mla.config().kv_lora_rank + mla.config().qk_rope_head_dim);
}

TEST_CASE("use_mla false with what plain attention does not have gives errors", "[model][mha][malformed]") {
  const std::string bias = with_config_edit("v2_mha_ocr_decoder", "attention_bias", true);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(bias)),
                      Catch::Contains("attention_bias") && Catch::Contains("use_mla: false"));
  std::filesystem::remove_all(bias);
  // A head count that does not divide hidden_size into the stored q_proj rows: the error names the tensor.
  const std::string heads = with_config_edit("v2_mha_ocr_decoder", "num_attention_heads", 8);
  REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(heads)), Catch::Contains("self_attn"));
  std::filesystem::remove_all(heads);
}

TEST_CASE("prefill and decode give the same logits for any thread count (experts run one per thread)", "[model][parallel]") {
  // With several threads whole experts run on separate threads (a 48-token prefill activates all
  // experts; a decode step top-k of them); each token still sums its experts in ascending order,
  // so the bits agree.
  for (const char* variant : {"v3_yarn_qlora_bf16", "v2_softmax_group_limited", "v3_fp8"}) {
    INFO("variant " << variant);
    models::DeepSeekV3<cpu> model(io::Checkpoint::open(kModels + variant));
    auto ref = load_reference(variant);
    std::vector<int32_t> ids;
    while (ids.size() < 48) ids.insert(ids.end(), ref.ids.begin(), ref.ids.end());
    ids.resize(48);
    const int64_t T = int64_t(ids.size()), V = model.config().vocab_size;
    const int before = num_threads();
    std::vector<std::vector<float>> runs, steps;
    for (int threads : {1, 2, 3}) {
      set_num_threads(threads);
      auto cache = model.make_cache(models::CacheOptions::exact(64));
      runs.emplace_back(size_t(T * V));
      model.forward(ids.data(), T, cache, runs.back().data(), true);
      steps.emplace_back(size_t(V));
      model.forward(ids.data() + 5, 1, cache, steps.back().data());  // one decode step after the prompt
    }
    set_num_threads(before);
    REQUIRE(runs[1] == runs[0]);
    REQUIRE(runs[2] == runs[0]);
    REQUIRE(steps[1] == steps[0]);
    REQUIRE(steps[2] == steps[0]);
    // And the first rows are the reference's: the longer prompt starts with it.
    const int64_t n = int64_t(ref.ids.size());
    for (int64_t t = 0; t < n; ++t) REQUIRE(rel_diff(runs[0].data() + t * V, ref.logits.data_as<float>() + t * V, V) < 1e-4);
  }
}
