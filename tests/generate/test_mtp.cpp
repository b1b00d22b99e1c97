// MTP module and speculative decoding (spec §6).
//  - nn::Mtp / models::MtpHead against the PyTorch reference of tests/reference/make_mtp_fixtures.py:
//    block output and logits for every pair (h_i, x_{i+1}), within 1e-4 relative (same tolerance
//    argument as tests/models/test_deepseek_v3.cpp: f32 math on the stored values in another order
//    moves results by ~1e-6; a wrong concat order, norm or position moves them by > 1e-1).
//  - Speculative greedy == plain greedy on the MTP fixtures, and with toy drafts that are always
//    wrong (every draft rejected) or exact (every draft accepted).
//  - Speculative sampling has the main model's distribution: toy 5-token models, 20,000 runs,
//    empirical distribution of the first three tokens vs the exact one.
#include "../models/reference_fixture.hpp"

#include <deepseek/generate/generator.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/io/safetensors.hpp>
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/models/mtp_head.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

using namespace deepseek;
using deepseek::test::ids_of;
using deepseek::test::kModels;
using deepseek::test::rel_diff;

namespace {

const char* kMtpVariants[] = {"v3_mtp", "v3_mtp_shared"};

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// ---- toy models for the generic loop -------------------------------------------------------------
// ToyMain keeps each position's token in a one-value cache row. Its logits depend on the whole prefix
// (a 20-bit hash, exact in a float, which it also returns as the 1-wide "hidden state"), so a cache
// that is not rolled back, or a wrong position, changes everything after it. With `table` set, the
// logits depend on the last token only (table[last][next]) - what the sampling test can compute exactly.
struct ToyMain {
  io::ModelConfig c;
  const std::vector<float>* table = nullptr;
  explicit ToyMain(int64_t vocab) {
    c.vocab_size = vocab;
    c.hidden_size = 1;
    c.max_position_embeddings = 1 << 20;
  }
  const io::ModelConfig& config() const { return c; }
  nn::KvCache make_cache(int64_t n) const { return nn::KvCache(1, 1, n); }

  static uint32_t extend(uint32_t hash, int32_t id) {
    return uint32_t(splitmix(uint64_t(hash) * 1000003u + uint64_t(id) + 1) & 0xfffff);
  }
  void logits_of(uint32_t hash, int32_t last, float* out) const {
    for (int64_t j = 0; j < c.vocab_size; ++j)
      out[j] = table ? (*table)[size_t(last * c.vocab_size + j)]
                     : float(double(splitmix(uint64_t(hash) * 7919u + uint64_t(j)) >> 11) * 0x1.0p-53 * 8.0);
  }
  void forward(const int32_t* ids, int64_t n, nn::KvCache& cache, float* logits, bool all_logits = false,
               float* hidden = nullptr) const {
    const int64_t p0 = cache.size(), V = c.vocab_size;
    auto view = cache.view(0);
    for (int64_t i = 0; i < n; ++i) *view.row(p0 + i) = float(ids[i]);
    cache.resize(p0 + n);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t h = 0;
      for (int64_t t = 0; t <= p0 + i; ++t) h = extend(h, int32_t(*view.row(t)));
      if (hidden) hidden[i] = float(h);
      if (logits && (all_logits || i == n - 1)) logits_of(h, ids[i], logits + (all_logits ? i : 0) * V);
    }
  }
};

// Drafts for ToyMain. exact: the main model's own next-next distribution (from h_i and x_{i+1});
// wrong: argmax of that + 1 (always rejected under greedy); table: q[x_{i+1}][next].
// Each call checks the bookkeeping: after it, the draft cache holds as many positions as the main cache.
struct ToyDraft {
  enum Kind { exact, wrong, table } kind;
  const ToyMain& main;
  const nn::KvCache* main_cache;
  const std::vector<float>* q_table = nullptr;
  mutable int64_t calls = 0, mismatches = 0;
  nn::KvCache make_cache(int64_t n) const { return nn::KvCache(1, 1, n); }
  void forward(const float* hidden, const int32_t* next_ids, int64_t n, nn::KvCache& cache, float* logits) const {
    const int64_t V = main.c.vocab_size;
    for (int64_t i = 0; i < n; ++i) *cache.view(0).row(cache.size() + i) = hidden[i];
    cache.resize(cache.size() + n);
    ++calls;
    if (cache.size() != main_cache->size()) ++mismatches;
    const int32_t x = next_ids[n - 1];
    if (kind == table) {
      for (int64_t j = 0; j < V; ++j) logits[j] = (*q_table)[size_t(x * V + j)];
      return;
    }
    main.logits_of(ToyMain::extend(uint32_t(hidden[n - 1]), x), x, logits);
    if (kind == wrong) {
      const int32_t a = generate::argmax(logits, V);
      std::fill(logits, logits + V, 0.0f);
      logits[(a + 1) % V] = 1.0f;
    }
  }
};

std::vector<int32_t> plain_greedy(const ToyMain& m, const std::vector<int32_t>& prompt, int64_t max_new) {
  auto cache = m.make_cache(int64_t(prompt.size()) + max_new);
  generate::GenerateOptions o;
  o.max_new_tokens = max_new;
  generate::Generator<ToyMain> g(m, cache, o);
  return g.run(prompt);
}

}  // namespace

TEST_CASE("MTP module matches the PyTorch reference", "[mtp][reference]") {
  for (const char* variant : kMtpVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    models::MtpHead<cpu> mtp(ckpt, model);
    const auto& c = model.config();
    const bool copies = std::string(variant) == "v3_mtp";
    REQUIRE(mtp.num_modules() == 1);
    CHECK(mtp.module(0).layer_index() == c.num_hidden_layers);
    CHECK(mtp.module(0).has_own_embedding() == copies);
    CHECK(mtp.module(0).has_own_head() == copies);
    CHECK(mtp.module(0).block().is_moe());

    auto ref = io::SafetensorsFile::open(kModels + variant + "/reference.safetensors");
    const auto ids = ids_of(ref->view("input_ids"));
    const int64_t T = int64_t(ids.size()), V = c.vocab_size, d = c.hidden_size;
    REQUIRE(ref->view("mtp_logits").shape() == Shape{T - 1, V});
    REQUIRE(ref->view("mtp_hidden").shape() == Shape{T - 1, d});
    const float* ref_h = ref->view("final_hidden").data_as<float>();
    const float* ref_z = ref->view("mtp_hidden").data_as<float>();
    const float* ref_l = ref->view("mtp_logits").data_as<float>();

    auto cache = model.make_cache(models::CacheOptions::exact(64));
    std::vector<float> hidden(size_t(T * d));
    model.forward(ids.data(), T, cache, nullptr, false, hidden.data());
    for (int64_t t = 0; t < T; ++t) REQUIRE(rel_diff(hidden.data() + t * d, ref_h + t * d, d) < 1e-4);

    // All pairs in one call (prefill), and one pair per call (decode), naive and absorbed attention.
    for (auto mode : {nn::MlaMode::naive, nn::MlaMode::absorbed}) {
      for (bool one_by_one : {false, true}) {
        INFO("mode " << int(mode) << " one_by_one " << one_by_one);
        auto mc = mtp.make_cache(64);
        std::vector<float> z(size_t((T - 1) * d)), logits(size_t((T - 1) * V));
        if (one_by_one) {
          for (int64_t i = 0; i + 1 < T; ++i)
            mtp.module(0).forward(hidden.data() + i * d, &ids[size_t(i + 1)], 1, mc, z.data() + i * d, mode);
        } else {
          mtp.module(0).forward(hidden.data(), ids.data() + 1, T - 1, mc, z.data(), mode);
        }
        CHECK(mc.size() == T - 1);
        mtp.module(0).logits(z.data(), T - 1, logits.data());
        for (int64_t i = 0; i + 1 < T; ++i) {
          INFO("pair " << i);
          REQUIRE(rel_diff(z.data() + i * d, ref_z + i * d, d) < 1e-4);
          REQUIRE(rel_diff(logits.data() + i * V, ref_l + i * V, V) < 1e-4);
        }
      }
    }
    // The draft interface returns the last pair's logits.
    auto mc = mtp.make_cache(64);
    std::vector<float> last(static_cast<size_t>(V));
    mtp.forward(hidden.data(), ids.data() + 1, T - 1, mc, last.data());
    REQUIRE(rel_diff(last.data(), ref_l + (T - 2) * V, V) < 1e-4);
  }
}

TEST_CASE("MTP loader errors", "[mtp]") {
  auto ckpt = io::Checkpoint::open(kModels + "v3_noqlora_f32");
  models::DeepSeekV3<cpu> model(ckpt);
  REQUIRE_THROWS_WITH(models::MtpHead<cpu>(ckpt, model), Catch::Contains("no MTP module"));
}

TEST_CASE("speculative greedy equals plain greedy on MTP checkpoints", "[mtp][speculative]") {
  for (const char* variant : kMtpVariants) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    models::DeepSeekV3<cpu> model(ckpt);
    models::MtpHead<cpu> mtp(ckpt, model);
    auto ref = io::SafetensorsFile::open(kModels + variant + "/reference.safetensors");
    const auto ids = ids_of(ref->view("input_ids"));
    const auto greedy = ids_of(ref->view("greedy_ids"));
    const int64_t V = model.config().vocab_size;
    std::vector<std::vector<int32_t>> prompts = {ids, {ids.begin(), ids.begin() + 1}, {ids.begin(), ids.begin() + 5}};
    for (int s = 0; s < 3; ++s) {
      std::vector<int32_t> p;
      for (int i = 0; i < 3 + 4 * s; ++i) p.push_back(int32_t(2 + splitmix(uint64_t(s * 100 + i)) % uint64_t(V - 2)));
      prompts.push_back(p);
    }
    for (size_t k = 0; k < prompts.size(); ++k) {
      INFO("prompt " << k);
      generate::GenerateOptions o;
      o.max_new_tokens = 24;
      o.stop_at_eos = false;
      auto c1 = model.make_cache(models::CacheOptions::exact(64));
      generate::Generator<models::DeepSeekV3<cpu>> plain(model, c1, o);
      const auto want = plain.run(prompts[k]);
      auto c2 = model.make_cache(models::CacheOptions::exact(64));
      generate::SpeculativeGenerator<models::DeepSeekV3<cpu>, models::MtpHead<cpu>> spec(model, mtp, c2, o);
      const auto got = spec.run(prompts[k]);
      REQUIRE(got == want);
      if (k == 0) REQUIRE(std::vector<int32_t>(got.begin(), got.begin() + int64_t(greedy.size())) == greedy);
      const auto& s = spec.stats();
      CHECK(s.generated_tokens == 24);
      CHECK(s.drafted >= s.main_forwards - 1);  // every verify forward checks one draft; a last single step may not
      CHECK(s.drafted <= s.main_forwards);
      CHECK(s.accepted <= s.drafted);
      CHECK(s.tokens_per_forward() == Approx(1.0 + s.acceptance_rate()).margin(0.1));
    }
  }
}

TEST_CASE("speculative greedy with drafts that are always wrong or always right", "[speculative]") {
  ToyMain m(11);
  for (auto kind : {ToyDraft::wrong, ToyDraft::exact}) {
    for (int64_t max_new : {1, 2, 3, 17, 40}) {
      for (int s = 0; s < 4; ++s) {
        INFO("kind " << int(kind) << " max_new " << max_new << " prompt " << s);
        std::vector<int32_t> prompt;
        for (int i = 0; i <= s * 2; ++i) prompt.push_back(int32_t(splitmix(uint64_t(1000 + s * 10 + i)) % 11));
        const auto want = plain_greedy(m, prompt, max_new);
        auto cache = m.make_cache(int64_t(prompt.size()) + max_new);
        ToyDraft draft{kind, m, &cache};
        generate::GenerateOptions o;
        o.max_new_tokens = max_new;
        generate::SpeculativeGenerator<ToyMain, ToyDraft> spec(m, draft, cache, o);
        REQUIRE(spec.run(prompt) == want);
        CHECK(draft.mismatches == 0);
        const auto& st = spec.stats();
        if (kind == ToyDraft::wrong) {
          CHECK(st.accepted == 0);
          CHECK(st.main_forwards == max_new - 1);
        } else {
          CHECK(st.accepted == st.drafted);
          CHECK(st.main_forwards == max_new / 2);  // 2 tokens per verify forward
        }
      }
    }
  }
}

TEST_CASE("speculative sampling has the main model's distribution", "[speculative][statistics]") {
  // Main p(next | last) and draft q(next | last): fixed random logit tables over 5 tokens, far apart
  // (accepting every draft would give x2 ~ q, off by > 10 sigma in several cells, checked below).
  constexpr int64_t V = 5, kRuns = 20000;
  std::vector<float> P(V * V), Q(V * V);
  for (int64_t i = 0; i < V * V; ++i) {
    P[size_t(i)] = float(double(splitmix(uint64_t(i)) >> 11) * 0x1.0p-53 * 4.0);
    Q[size_t(i)] = float(double(splitmix(uint64_t(i + 777)) >> 11) * 0x1.0p-53 * 4.0);
  }
  ToyMain m(V);
  m.table = &P;
  const std::vector<int32_t> prompt = {2};

  for (int variant = 0; variant < 2; ++variant) {
    generate::SamplingOptions so;
    so.greedy = false;
    if (variant == 1) {  // top-k and temperature: p and q both truncated, through the same Sampler options
      so.temperature = 0.7f;
      so.top_k = 3;
    }
    INFO("options variant " << variant);
    // Exact distribution of (x1, x2, x3) under the main model, and under accept-every-draft.
    generate::Sampler dist(so);
    std::vector<std::vector<float>> p(V), q(V);
    for (int64_t a = 0; a < V; ++a) {
      dist.distribution(P.data() + a * V, V, p[size_t(a)]);
      dist.distribution(Q.data() + a * V, V, q[size_t(a)]);
    }
    std::vector<double> exact(V * V * V), accept_all(V * V * V), seen(V * V * V, 0);
    for (int64_t a = 0; a < V; ++a)
      for (int64_t b = 0; b < V; ++b)
        for (int64_t e = 0; e < V; ++e) {
          const double pa = p[size_t(prompt[0])][size_t(a)];
          exact[size_t((a * V + b) * V + e)] = pa * p[size_t(a)][size_t(b)] * p[size_t(b)][size_t(e)];
          accept_all[size_t((a * V + b) * V + e)] = pa * q[size_t(a)][size_t(b)] * p[size_t(b)][size_t(e)];
        }
    int64_t drafted = 0, accepted = 0;
    for (int64_t r = 0; r < kRuns; ++r) {
      auto cache = m.make_cache(8);
      ToyDraft draft{ToyDraft::table, m, &cache, &Q};
      generate::GenerateOptions o;
      o.max_new_tokens = 3;
      o.sampling = so;
      o.sampling.seed = uint64_t(r) * 7 + 1;
      generate::SpeculativeGenerator<ToyMain, ToyDraft> spec(m, draft, cache, o);
      const auto out = spec.run(prompt);
      REQUIRE(out.size() == 3);
      seen[size_t((out[0] * V + out[1]) * V + out[2])] += 1;
      drafted += spec.stats().drafted;
      accepted += spec.stats().accepted;
    }
    INFO("acceptance " << double(accepted) / double(drafted));
    CHECK(accepted > 0);
    CHECK(accepted < drafted);
    double worst = 0, accept_all_worst = 0;
    for (size_t k = 0; k < exact.size(); ++k) {
      const double f = seen[k] / kRuns;
      const double sigma = std::sqrt(std::max(exact[k] * (1 - exact[k]), 1e-12) / kRuns);
      worst = std::max(worst, std::fabs(f - exact[k]) / sigma);
      if (exact[k] > 0) accept_all_worst = std::max(accept_all_worst, std::fabs(accept_all[k] - exact[k]) / sigma);
      if (exact[k] == 0) REQUIRE(seen[k] == 0);  // top-k: tokens outside p's support never appear
    }
    INFO("worst deviation " << worst << " sigma; accept-every-draft would be off by " << accept_all_worst << " sigma");
    CHECK(worst < 4.0);  // 125 cells: P(max |z| > 4) ~ 125 * 6e-5 < 1%
    CHECK(accept_all_worst > 10.0);
  }
}

TEST_CASE("speculative greedy on the demo model", "[mtp][speculative][demo]") {
  // examples/models/deepseek-v3-demo (tests/reference/train_demo.py): FP8, byte-identical embedding
  // and head copies under layers.L, which MtpHead must share with the main model.
  const std::string dir = DEEPSEEK_FIXTURES_DIR "/../../examples/models/deepseek-v3-demo";
  // Committed with the repository (as test_demo_model.cpp uses it): a missing file is a broken
  // checkout and fails here, never a silent pass.
  INFO("demo model: " << dir << "/model.safetensors");
  REQUIRE(std::filesystem::exists(dir + "/model.safetensors"));
  auto ckpt = io::Checkpoint::open(dir);
  models::DeepSeekV3<cpu> model(ckpt);
  models::MtpHead<cpu> mtp(ckpt, model);
  CHECK_FALSE(mtp.module(0).has_own_head());
  CHECK_FALSE(mtp.module(0).has_own_embedding());
  const std::vector<int32_t> prompt = {477, 513, 6876, 1613, 4129, 1110, 305};
  generate::GenerateOptions o;
  o.max_new_tokens = 48;
  o.stop_at_eos = false;
  auto c1 = model.make_cache(models::CacheOptions::exact(64));
  generate::Generator<models::DeepSeekV3<cpu>> plain(model, c1, o);
  auto c2 = model.make_cache(models::CacheOptions::exact(64));
  generate::SpeculativeGenerator<models::DeepSeekV3<cpu>, models::MtpHead<cpu>> spec(model, mtp, c2, o);
  REQUIRE(spec.run(prompt) == plain.run(prompt));
}
