// The shipped demo model (examples/models/deepseek-v3-demo: a small trained DeepSeek-V3-architecture
// checkpoint in the released FP8 layout, with its own ~8k byte-level BPE) against transformers
// (tests/reference/make_demo_fixtures.py -> tests/fixtures/demo/):
//   - our tokenizer gives HF `tokenizers`' ids for the prompts (with BOS) and the held-out text,
//   - logits of every prompt row within 1e-4 relative (naive and absorbed MLA),
//   - 16 greedy tokens per prompt identical (cached decode),
//   - held-out perplexity (512 tokens, windows of 128, each as [BOS] + window) within 1e-4 relative.
// Tolerance as in test_deepseek_v3.cpp: same math on the same stored values, in another order.
#include "reference_fixture.hpp"

#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/tokenizer.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace deepseek;
using deepseek::test::ids_of;
using deepseek::test::kDemoModel;
using deepseek::test::kModels;
using deepseek::test::rel_diff;

namespace {

const std::string kDemoFixtures = DEEPSEEK_FIXTURES_DIR "/demo/";

std::vector<int32_t> to_i32(const std::vector<tokenizer::TokenId>& v) { return std::vector<int32_t>(v.begin(), v.end()); }

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

struct Demo {
  std::shared_ptr<io::SafetensorsFile> ref = io::SafetensorsFile::open(kDemoFixtures + "reference.safetensors");
  nlohmann::json summary = nlohmann::json::parse(read_text(kDemoFixtures + "summary.json"));
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(kDemoModel);
  models::DeepSeekV3<cpu> model{io::Checkpoint::open(kDemoModel)};
};

Demo& demo() {
  static Demo d;
  return d;
}

}  // namespace

TEST_CASE("demo model: the tokenizer matches HF tokenizers", "[demo][tokenizer]") {
  auto& d = demo();
  REQUIRE(d.tok.add_bos_token());
  REQUIRE(d.tok.bos_id().has_value());
  REQUIRE(*d.tok.bos_id() == 0);
  const auto& prompts = d.summary.at("prompts");
  REQUIRE(prompts.size() == 3);
  for (size_t k = 0; k < prompts.size(); ++k) {
    INFO("prompt " << k);
    tokenizer::EncodeOptions opts;
    opts.add_bos = true;
    const auto ours = to_i32(d.tok.encode(prompts[k].at("prompt").get<std::string>(), opts));
    REQUIRE(ours == ids_of(d.ref->view("prompt" + std::to_string(k) + "_ids")));
  }
  const auto held = ids_of(d.ref->view("heldout_ids"));
  auto ours = to_i32(d.tok.encode(read_text(kDemoFixtures + "heldout.txt")));
  REQUIRE(ours.size() >= held.size());
  ours.resize(held.size());
  REQUIRE(ours == held);
}

TEST_CASE("demo model: logits and greedy tokens match transformers", "[demo][model][reference]") {
  auto& d = demo();
  const int64_t V = d.model.config().vocab_size;
  REQUIRE(d.model.config().num_nextn_predict_layers == 1);
  for (int k = 0; k < 3; ++k) {
    INFO("prompt " << k);
    const std::string p = "prompt" + std::to_string(k);
    const auto ids = ids_of(d.ref->view(p + "_ids"));
    const int64_t T = int64_t(ids.size());
    const TensorView ref_logits = d.ref->view(p + "_logits");
    REQUIRE(ref_logits.shape() == Shape{T, V});
    for (auto mode : {nn::MlaMode::naive, nn::MlaMode::tiled, nn::MlaMode::absorbed}) {
      auto cache = d.model.make_cache(models::CacheOptions::exact(T));
      std::vector<float> logits(size_t(T * V));
      d.model.forward(ids.data(), T, cache, logits.data(), true, nullptr, mode);
      for (int64_t t = 0; t < T; ++t) {
        INFO("row " << t << " mode " << int(mode));
        REQUIRE(rel_diff(logits.data() + t * V, ref_logits.data_as<float>() + t * V, V) < 1e-4);
      }
    }
    const auto greedy = ids_of(d.ref->view(p + "_greedy"));
    auto cache = d.model.make_cache(models::CacheOptions::exact(T + int64_t(greedy.size())));
    std::vector<float> logits(static_cast<size_t>(V));
    d.model.forward(ids.data(), T, cache, logits.data());
    std::vector<int32_t> out;
    for (size_t i = 0; i < greedy.size(); ++i) {
      const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(next);
      d.model.forward(&next, 1, cache, logits.data());
    }
    REQUIRE(out == greedy);
  }
}

namespace {

// Same definition as deepseek-cli perplexity and make_demo_fixtures.py: windows of 128 ids, each
// evaluated from an empty cache as [BOS] + window, every window id predicted.
double heldout_perplexity(const models::DeepSeekV3<cpu>& model, const std::vector<int32_t>& ids, int32_t bos, int64_t* count) {
  const int64_t V = model.config().vocab_size, window = 128;
  double nll = 0;
  int64_t n = 0;
  for (size_t s = 0; s < ids.size(); s += size_t(window)) {
    std::vector<int32_t> seq{bos};
    seq.insert(seq.end(), ids.begin() + long(s), ids.begin() + long(std::min(ids.size(), s + size_t(window))));
    const int64_t T = int64_t(seq.size());
    auto cache = model.make_cache(models::CacheOptions::exact(T));
    std::vector<float> logits(size_t(T * V));
    model.forward(seq.data(), T, cache, logits.data(), true);
    for (int64_t t = 0; t + 1 < T; ++t) {
      const float* row = logits.data() + t * V;
      const double mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      nll += mx + std::log(sum) - double(row[seq[size_t(t + 1)]]);
      ++n;
    }
  }
  if (count) *count = n;
  return std::exp(nll / double(n));
}

}  // namespace

TEST_CASE("demo model: held-out perplexity matches transformers", "[demo][model][perplexity]") {
  auto& d = demo();
  int64_t n = 0;
  const double ppl = heldout_perplexity(d.model, ids_of(d.ref->view("heldout_ids")), int32_t(*d.tok.bos_id()), &n);
  REQUIRE(n == d.ref->view("heldout_tokens").data_as<int64_t>()[0]);
  const double ref_ppl = d.ref->view("heldout_perplexity").data_as<double>()[0];
  INFO("ours " << ppl << " transformers " << ref_ppl);
  REQUIRE(std::fabs(ppl - ref_ppl) <= 1e-4 * ref_ppl);
}

// LoadOptions::activations = bf16 rounds every linear layer's input to bf16 (what transformers
// does in bf16). On a trained model that must cost next to nothing: logits within 2e-2 relative
// of transformers' float32 logits, the same argmax on every prompt row, held-out perplexity within
// 0.1% (measured: 68.3479 against 68.3529 in f32). Routing is in f32 either way.
TEST_CASE("demo model: bf16 activations stay close to transformers' float32", "[demo][model][bf16]") {
  auto& d = demo();
  models::LoadOptions o;
  o.activations = ActivationDType::bf16;
  const models::DeepSeekV3<cpu> model(io::Checkpoint::open(kDemoModel), o);
  const int64_t V = model.config().vocab_size;
  double worst = 0, worst_f32 = 0;
  for (int k = 0; k < 3; ++k) {
    const std::string p = "prompt" + std::to_string(k);
    const auto ids = ids_of(d.ref->view(p + "_ids"));
    const int64_t T = int64_t(ids.size());
    const float* ref = d.ref->view(p + "_logits").data_as<float>();
    std::vector<float> logits(size_t(T * V)), exact(size_t(T * V));
    auto cache = model.make_cache(models::CacheOptions::exact(T));
    model.forward(ids.data(), T, cache, logits.data(), true);
    auto cache_f32 = d.model.make_cache(models::CacheOptions::exact(T));
    d.model.forward(ids.data(), T, cache_f32, exact.data(), true);
    for (int64_t t = 0; t < T; ++t) {
      INFO("prompt " << k << " row " << t);
      const float* row = logits.data() + t * V;
      worst = std::max(worst, rel_diff(row, ref + t * V, V));
      worst_f32 = std::max(worst_f32, rel_diff(exact.data() + t * V, ref + t * V, V));
      REQUIRE(std::max_element(row, row + V) - row == std::max_element(ref + t * V, ref + (t + 1) * V) - (ref + t * V));
    }
  }
  INFO("worst relative logit difference: bf16 activations " << worst << ", f32 " << worst_f32);
  REQUIRE(worst < 2e-2);
  REQUIRE(worst > 10 * worst_f32);  // the option took effect
  const double ppl = heldout_perplexity(model, ids_of(d.ref->view("heldout_ids")), int32_t(*d.tok.bos_id()), nullptr);
  const double ref_ppl = d.ref->view("heldout_perplexity").data_as<double>()[0];
  INFO("bf16 activations " << ppl << " transformers float32 " << ref_ppl);
  REQUIRE(std::fabs(ppl - ref_ppl) <= 1e-3 * ref_ppl);
}
