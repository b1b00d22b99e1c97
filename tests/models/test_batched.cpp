// models::DeepSeekV3::forward_batch: several sequences in one step, each at its own position with
// its own cache, equal to each sequence run alone through forward(). The alone runs are the
// reference here; forward() itself is checked against transformers in test_deepseek_v3.cpp.
//
// Well-posed: every sequence is a prefix of its fixture's reference ids, continued with the next
// reference ids (teacher forcing), so every position is one whose top-k selections (V3.2) and
// routing the fixture scripts checked for margin; the batched and alone runs then differ only in
// the summation order of the feed-forward GEMMs over more tokens (~1e-7).
#include "reference_fixture.hpp"

#include <catch2/catch.hpp>

#include <cstdio>

using namespace deepseek;
using namespace deepseek::test;
using deepseek::cpu;

namespace {

// kCacheVariants (MLA, MHA, V3.2 with small and large top-k, FP8) and an MTP checkpoint's main model.
std::vector<std::string> batch_variants() {
  auto v = kCacheVariants;
  v.push_back("v3_mtp");
  return v;
}

constexpr double kBatchTol = 1e-5;

struct Plan {
  int64_t prompt;  // prompt length: ids[0, prompt)
  int joins;       // the step at which the sequence joins
  int tokens;      // decode tokens after the prompt (it leaves after them)
  bool paged;
};

}  // namespace

TEST_CASE("forward_batch equals each sequence alone, with sequences joining and leaving", "[model][batch]") {
  for (const std::string& variant : batch_variants()) {
    DYNAMIC_SECTION(variant) {
      auto ckpt = io::Checkpoint::open(kModels + variant);
      models::DeepSeekV3<cpu> model(ckpt);
      const auto ref = load_reference(variant);
      const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
      // Five sequences of different lengths, joining at steps 0, 0, 0, 1, 2; the second leaves early;
      // two use paged caches (blocks of 4 rows).
      std::vector<Plan> plans = {{5, 0, 4, false}, {2, 0, 2, true}, {1, 0, 4, false}, {7, 1, 4, true}, {3, 2, 4, false}};
      for (auto& p : plans) REQUIRE(p.prompt + p.tokens <= T);
      const int S = int(plans.size());
      auto make_cache = [&](const Plan& p) {
        return model.make_cache(models::CacheOptions::exact(p.prompt + p.tokens, p.paged ? nn::CacheLayout::paged : nn::CacheLayout::contiguous, 4));
      };
      // Alone: the prompt in one forward, then one token per forward; logits after each.
      std::vector<std::vector<std::vector<float>>> alone(static_cast<size_t>(S));
      for (int s = 0; s < S; ++s) {
        const Plan& p = plans[size_t(s)];
        auto cache = make_cache(p);
        std::vector<float> lg(static_cast<size_t>(V));
        model.forward(ref.ids.data(), p.prompt, cache, lg.data());
        alone[size_t(s)].push_back(lg);
        for (int k = 0; k < p.tokens; ++k) {
          model.forward(&ref.ids[size_t(p.prompt + k)], 1, cache, lg.data());
          alone[size_t(s)].push_back(lg);
        }
      }
      // Batched: at each step every live sequence contributes its prompt (the step it joins) or its
      // next token.
      std::vector<nn::KvCache> caches;
      for (const auto& p : plans) caches.push_back(make_cache(p));
      std::vector<std::vector<float>> lg(static_cast<size_t>(S), std::vector<float>(static_cast<size_t>(V)));
      std::vector<int> done(static_cast<size_t>(S), -1);  // forwards run per sequence, minus one
      double worst = 0;
      int checked = 0, argmax_checked = 0;
      for (int step = 0;; ++step) {
        std::vector<models::DeepSeekV3<cpu>::BatchSequence> batch;
        std::vector<int> who;
        for (int s = 0; s < S; ++s) {
          const Plan& p = plans[size_t(s)];
          if (step < p.joins || done[size_t(s)] >= p.tokens) continue;
          const int k = done[size_t(s)];  // -1: the prompt
          batch.push_back({k < 0 ? ref.ids.data() : &ref.ids[size_t(p.prompt + k)], k < 0 ? p.prompt : 1, &caches[size_t(s)],
                           lg[size_t(s)].data()});
          who.push_back(s);
        }
        if (batch.empty()) break;
        model.forward_batch(batch);
        for (int s : who) {
          const auto& want = alone[size_t(s)][size_t(++done[size_t(s)])];  // 0: after the prompt
          const double diff = rel_diff(lg[size_t(s)].data(), want.data(), V);
          worst = std::max(worst, diff);
          INFO("step " << step << ", sequence " << s);
          CHECK(diff <= kBatchTol);
          ++checked;
          // Greedy ids wherever the alone run's top-2 margin exceeds the difference's bound.
          std::vector<float> sorted(want);
          std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
          const double scale = std::max(1.0, double(std::max(std::fabs(sorted[0]), std::fabs(sorted.back()))));
          if (sorted[0] - sorted[1] > 10 * kBatchTol * scale) {
            CHECK(argmax(lg[size_t(s)].data(), V) == argmax(want.data(), V));
            ++argmax_checked;
          }
        }
      }
      int expected = 0;
      for (const auto& p : plans) expected += 1 + p.tokens;  // every sequence's prompt and tokens
      CHECK(checked == expected);
      for (int s = 0; s < S; ++s) CHECK(caches[size_t(s)].size() == plans[size_t(s)].prompt + plans[size_t(s)].tokens);
      char worst_text[32];
      std::snprintf(worst_text, sizeof worst_text, "%.2e", worst);
      WARN(variant << ": forward_batch vs alone, worst relative logit difference " << worst_text << " over " << checked
                   << " steps; greedy ids compared at " << argmax_checked);
    }
  }
}

TEST_CASE("forward_batch of one sequence is forward", "[model][batch]") {
  auto ckpt = io::Checkpoint::open(kModels + "v3_fp8");
  models::DeepSeekV3<cpu> model(ckpt);
  const auto ref = load_reference("v3_fp8");
  const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
  auto a = model.make_cache(), b = model.make_cache();
  std::vector<float> la(static_cast<size_t>(V)), lb(static_cast<size_t>(V));
  model.forward(ref.ids.data(), T - 1, a, la.data());
  model.forward_batch({{ref.ids.data(), T - 1, &b, lb.data()}});
  CHECK(la == lb);  // the same computation, bit for bit
  model.forward(&ref.ids[size_t(T - 1)], 1, a, la.data());
  model.forward_batch({{&ref.ids[size_t(T - 1)], 1, &b, lb.data()}});
  CHECK(la == lb);
}

TEST_CASE("forward_batch refuses bad steps by sequence", "[model][batch][hostile]") {
  using Catch::Matchers::Contains;
  auto ckpt = io::Checkpoint::open(kModels + "v3_fp8");
  models::DeepSeekV3<cpu> model(ckpt);
  const int64_t V = model.config().vocab_size;
  auto a = model.make_cache(models::CacheOptions::exact(4)), b = model.make_cache(models::CacheOptions::exact(4));
  const int32_t ids[] = {1, 2, 3, 4, 5};
  const int32_t bad[] = {1, int32_t(V)};
  std::vector<float> lg(static_cast<size_t>(V));
  CHECK_THROWS_WITH(model.forward_batch({}), Contains("at least one sequence"));
  CHECK_THROWS_WITH(model.forward_batch({{ids, 2, &a, nullptr}, {ids, 2, &a, nullptr}}), Contains("sequence 1 shares its cache with sequence 0"));
  CHECK_THROWS_WITH(model.forward_batch({{ids, 2, &a, nullptr}, {bad, 2, &b, nullptr}}),
                    Contains("sequence 1: token id " + std::to_string(V) + " at index 1"));
  CHECK_THROWS_WITH(model.forward_batch({{ids, 5, &a, nullptr}}), Contains("sequence 0: context of 5 tokens exceeds the KV cache capacity (4)"));
  CHECK_THROWS_WITH(model.forward_batch({{ids, 0, &a, nullptr}}), Contains("n >= 1"));
  // A cache made for another model is refused.
  auto other = models::DeepSeekV3<cpu>(io::Checkpoint::open(kModels + "v3_noqlora_f32"));
  auto foreign = other.make_cache(models::CacheOptions::exact(4));
  if (foreign.width() != a.width() || foreign.num_layers() != a.num_layers())
    CHECK_THROWS_WITH(model.forward_batch({{ids, 2, &foreign, nullptr}}), Contains("not made for this model"));
  CHECK(a.size() == 0);  // nothing was appended by the refused steps
  model.forward_batch({{ids, 2, &a, lg.data()}, {ids, 3, &b, nullptr}});
  CHECK(a.size() == 2);
  CHECK(b.size() == 3);
}
