// examples/compose/composed_model.hpp, a model composed by hand from nn:: blocks, against
// models::DeepSeekV3 on the same checkpoint:
//   - every layer in order: the logits of a prefill and of cached greedy decode steps equal
//     DeepSeekV3's, with an f32 and a bf16 cache, on the demo model (V3, FP8, MTP weights left
//     unread) and the V2 / V3 fixtures (softmax and sigmoid routing, group-limited and greedy,
//     q_proj without q_lora, a dense layer 0, FP8 in two shards);
//   - the demo model's greedy tokens are transformers' (tests/fixtures/demo);
//   - a subset of layers runs, its cached decode agrees with a full recompute;
//   - bad layer indices, token ids, caches and out-of-scope checkpoints are clear errors.
// Tolerance: both run the same blocks and kernels on the same values in the same order (the
// composition only spells out DecoderLayer's residual adds through Ops::add), so the logits are
// bit-identical (measured max difference 0); 1e-6 relative would still catch any real divergence
// (a wrong norm, rope or routing moves them by > 1e-2).
#include "reference_fixture.hpp"

#include "compose/composed_model.hpp"

#include <deepseek/models/deepseek_v3.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace deepseek;
using deepseek::test::argmax;
using deepseek::test::ids_of;
using deepseek::test::kDemoModel;
using deepseek::test::kModels;
using deepseek::test::rel_diff;

namespace {


struct Case {
  std::string dir;
  std::vector<int32_t> prompt;
};

std::vector<Case> compose_cases() {
  std::vector<Case> out;
  for (const auto& k : {"prompt0_ids", "prompt2_ids"})
    out.push_back(
        {kDemoModel, ids_of(io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/demo/reference.safetensors")->view(k))});
  for (const char* v : {"v2_softmax_group_limited", "v2_lite_greedy", "v3_yarn_qlora_bf16", "v3_noqlora_f32", "v3_fp8"})
    out.push_back({kModels + v, test::load_reference(v).ids});
  return out;
}

constexpr int kDecodeSteps = 4;

}  // namespace

TEST_CASE("compose: every layer in order equals models::DeepSeekV3", "[compose][model]") {
  for (const Case& c : compose_cases()) {
    auto ckpt = io::Checkpoint::open(c.dir);
    const models::DeepSeekV3<cpu> reference(ckpt);
    const examples::ComposedModel<cpu> composed(ckpt);
    REQUIRE(composed.layers() == examples::ComposedModel<cpu>::all_layers(ckpt->config()));
    const int64_t V = ckpt->config().vocab_size, T = int64_t(c.prompt.size()) + kDecodeSteps;
    for (const nn::CacheDType dtype : {nn::CacheDType::f32, nn::CacheDType::bf16}) {
      INFO(c.dir << " cache " << nn::cache_dtype_name(dtype));
      auto ref_cache = reference.make_cache({T, nn::CacheLayout::contiguous, 16, dtype});
      auto cache = composed.make_cache(T, dtype);
      std::vector<float> want(static_cast<size_t>(V)), got(static_cast<size_t>(V));
      reference.forward(c.prompt.data(), int64_t(c.prompt.size()), ref_cache, want.data());
      composed.forward(c.prompt.data(), int64_t(c.prompt.size()), cache, got.data());
      for (int step = 0;; ++step) {
        INFO("decode step " << step);
        REQUIRE(rel_diff(got.data(), want.data(), V) <= 1e-6);
        if (step == kDecodeSteps) break;
        int32_t next = argmax(want.data(), V);
        reference.forward(&next, 1, ref_cache, want.data());
        composed.forward(&next, 1, cache, got.data());
      }
      REQUIRE(cache.size() == ref_cache.size());
    }
  }
}

TEST_CASE("compose: the demo model's greedy tokens are transformers'", "[compose][demo]") {
  auto ref = io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/demo/reference.safetensors");
  const std::vector<int32_t> prompt = ids_of(ref->view("prompt0_ids")), greedy = ids_of(ref->view("prompt0_greedy"));
  const examples::ComposedModel<cpu> model(io::Checkpoint::open(kDemoModel));
  const int64_t V = model.config().vocab_size;
  auto cache = model.make_cache(int64_t(prompt.size() + greedy.size()), nn::CacheDType::f32);
  std::vector<float> logits(static_cast<size_t>(V));
  model.forward(prompt.data(), int64_t(prompt.size()), cache, logits.data());
  std::vector<int32_t> ours;
  for (size_t i = 0; i < greedy.size(); ++i) {
    int32_t next = argmax(logits.data(), V);
    ours.push_back(next);
    model.forward(&next, 1, cache, logits.data());
  }
  REQUIRE(ours == greedy);
}

TEST_CASE("compose: a subset of layers", "[compose][model]") {
  // Layers 1 and 0 of v3_fp8 (MoE, then dense), and the demo model's layer 2 twice: models of their
  // own, so only self-consistency is checked: a cached decode step equals a full recompute of the
  // sequence up to the attention order (absorbed vs tiled), ~1e-6.
  const std::vector<std::pair<std::string, std::vector<int>>> subsets = {{kModels + "v3_fp8", {1, 0}},
                                                                         {kDemoModel, {2, 2}}};
  for (const auto& [dir, layers] : subsets) {
    INFO(dir);
    auto ckpt = io::Checkpoint::open(dir);
    const examples::ComposedModel<cpu> model(ckpt, layers);
    REQUIRE(model.layers() == layers);
    const int64_t V = model.config().vocab_size;
    std::vector<int32_t> ids = {0, 5, 17, 3, 42, 9};
    auto cache = model.make_cache(int64_t(ids.size()) + 1, nn::CacheDType::f32);
    REQUIRE(cache.num_layers() == int(layers.size()));
    std::vector<float> decoded(static_cast<size_t>(V)), full(static_cast<size_t>(V));
    model.forward(ids.data(), int64_t(ids.size()), cache, decoded.data());
    ids.push_back(argmax(decoded.data(), V));
    model.forward(&ids.back(), 1, cache, decoded.data());
    auto fresh = model.make_cache(int64_t(ids.size()), nn::CacheDType::f32);
    model.forward(ids.data(), int64_t(ids.size()), fresh, full.data());
    REQUIRE(std::all_of(decoded.begin(), decoded.end(), [](float x) { return std::isfinite(x); }));
    REQUIRE(rel_diff(decoded.data(), full.data(), V) < 1e-4);
  }
}

TEST_CASE("compose: clear errors", "[compose][errors]") {
  auto ckpt = io::Checkpoint::open(kModels + "v3_fp8");  // 2 layers, vocab 300
  using Composed = examples::ComposedModel<cpu>;
  REQUIRE_THROWS_WITH(Composed(ckpt, {0, 2}),
                      Catch::Contains("decoder layer 2 is outside the checkpoint's layers [0, 2)"));
  REQUIRE_THROWS_WITH(Composed(ckpt, {-1}), Catch::Contains("decoder layer -1 is outside"));
  REQUIRE_THROWS_WITH(
      Composed(io::Checkpoint::open(kModels + "v32_dsa_topk_small")),
      Catch::Contains("DSA indexer (index_n_heads > 0) is not composed here") && Catch::Contains("index_n_heads"));
  REQUIRE_THROWS_WITH(Composed(io::Checkpoint::open(kModels + "v2_mha_ocr_decoder")),
                      Catch::Contains("plain multi-head attention (use_mla: false) is not composed here"));

  const Composed model(ckpt, {1});
  auto cache = model.make_cache(4);
  std::vector<float> logits(300);
  const std::vector<int32_t> bad = {3, 300};
  REQUIRE_THROWS_WITH(model.forward(bad.data(), 2, cache, logits.data()),
                      Catch::Contains("token id 300 at index 1 is outside the vocabulary [0, 300)"));
  const int32_t negative = -1;
  REQUIRE_THROWS_WITH(model.forward(&negative, 1, cache, logits.data()), Catch::Contains("token id -1 at index 0"));
  const std::vector<int32_t> five = {1, 2, 3, 4, 5};
  REQUIRE_THROWS_WITH(model.forward(five.data(), 5, cache, logits.data()),
                      Catch::Contains("context of 5 tokens exceeds the KV cache capacity (4)"));
  auto other = Composed(ckpt).make_cache(4);  // 2 layers, not 1
  REQUIRE_THROWS_WITH(model.forward(five.data(), 1, other, logits.data()), Catch::Contains("not made for this model"));
  REQUIRE(cache.size() == 0);
}
