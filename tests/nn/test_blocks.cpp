// Blocks against numbers derived independently in the spec (from DeepSeek's official code), and
// the sampler against its definition.
#include <deepseek/generate/sampler.hpp>
#include <deepseek/io/config.hpp>
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/io/weights.hpp>
#include <deepseek/nn/rope.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

using namespace deepseek;

namespace {
io::ModelConfig fixture(const std::string& name) {
  return io::load_config(DEEPSEEK_FIXTURES_DIR "/configs/" + name + "/config.json");
}
}  // namespace

TEST_CASE("YaRN frequencies and softmax scale of the released configs", "[rope]") {
  auto v3 = fixture("deepseek-v3");
  nn::Rope rope(v3, 64, nn::RopeLayout::interleaved);
  const auto& f = rope.inv_freq();
  // spec §2.2: f'_i = f_i for i <= 10, f_i / 40 for i >= 23
  REQUIRE(f[9] == Approx(0.0749894).epsilon(1e-5));
  REQUIRE(f[10] == Approx(0.0562341).epsilon(1e-5));
  REQUIRE(f[11] == Approx(0.0390069).epsilon(1e-5));
  REQUIRE(f[31] == Approx(3.3338e-6).epsilon(1e-4));
  REQUIRE(f[0] == 1.0);
  REQUIRE(rope.attention_factor() == 1.0);
  // spec §2.3
  REQUIRE(nn::mla_softmax_scale(v3) == Approx(0.1352338).epsilon(1e-6));
  REQUIRE(nn::mla_softmax_scale(fixture("deepseek-v2-lite")) == Approx(0.1147214).epsilon(1e-6));
}

TEST_CASE("RoPE layouts rotate the right pairs", "[rope]") {
  auto c = fixture("deepseek-v3");
  c.rope_scaling = {};
  nn::Rope inter(c, 8, nn::RopeLayout::interleaved), half(c, 8, nn::RopeLayout::half_split);
  const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  float a[8], b[8];
  std::copy(x, x + 8, a);
  std::copy(x, x + 8, b);
  backend::Ops<cpu>::rope(a, 1, 1, 8, 0, 3, inter.params());  // one vector at position 3
  backend::Ops<cpu>::rope(b, 1, 1, 8, 0, 3, half.params());
  for (int i = 0; i < 4; ++i) {
    const double phi = 3.0 * std::pow(10000.0, -2.0 * i / 8.0);
    REQUIRE(a[2 * i] == Approx(x[2 * i] * std::cos(phi) - x[2 * i + 1] * std::sin(phi)));
    REQUIRE(a[2 * i + 1] == Approx(x[2 * i] * std::sin(phi) + x[2 * i + 1] * std::cos(phi)));
    REQUIRE(b[i] == Approx(x[i] * std::cos(phi) - x[i + 4] * std::sin(phi)));
    REQUIRE(b[i + 4] == Approx(x[i] * std::sin(phi) + x[i + 4] * std::cos(phi)));
  }
}

TEST_CASE("sampler: greedy, top-k, top-p, temperature, seed", "[sampler]") {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  generate::Sampler greedy;
  REQUIRE(greedy.sample(logits.data(), 5) == 1);  // tie between 1 and 3: lowest id

  generate::SamplingOptions o;
  o.greedy = false;
  o.temperature = 0.5f;
  o.top_k = 3;
  generate::Sampler s(o);
  std::vector<float> p;
  s.distribution(logits.data(), 5, p);
  // top-3 of (1,3,2,3,-1) = ids 1,3,2; softmax of (3,3,2)/0.5
  const double e3 = std::exp(0.0), e2 = std::exp(-2.0), z = 2 * e3 + e2;
  REQUIRE(p[1] == Approx(e3 / z));
  REQUIRE(p[3] == Approx(e3 / z));
  REQUIRE(p[2] == Approx(e2 / z));
  REQUIRE(p[0] == 0.0f);
  REQUIRE(p[4] == 0.0f);

  o.top_k = 0;
  o.top_p = 0.8f;  // ids 1 and 3 hold 2*e3/z' of the mass
  generate::Sampler sp(o);
  sp.distribution(logits.data(), 5, p);
  REQUIRE(p[1] == Approx(0.5));
  REQUIRE(p[3] == Approx(0.5));
  REQUIRE(p[2] == 0.0f);

  // Same seed, same draws; the empirical distribution follows p.
  o.top_p = 1.0f;
  o.temperature = 1.0f;
  o.seed = 42;
  generate::Sampler a(o), b(o);
  std::map<int, int> counts;
  const int N = 20000;
  for (int i = 0; i < N; ++i) {
    const int x = a.sample(logits.data(), 5);
    REQUIRE(x == b.sample(logits.data(), 5));
    counts[x]++;
  }
  a.distribution(logits.data(), 5, p);
  for (int id = 0; id < 5; ++id) REQUIRE(double(counts[id]) / N == Approx(p[size_t(id)]).margin(0.015));
  o.temperature = 0.0f;
  REQUIRE_THROWS_AS(generate::Sampler(o), Error);
}

TEST_CASE("sampler: top-p over a large vocabulary keeps the same nucleus as a full sort", "[sampler]") {
  // The sampler sorts only a growing prefix; the reference here sorts everything (transformers'
  // TopPLogitsWarper: smallest set of most likely ids whose probability reaches top_p).
  std::mt19937 rng(7);
  for (float spread : {0.05f, 1.0f, 8.0f})  // nearly flat (nucleus of thousands) to peaked (a few ids)
    for (float top_p : {0.3f, 0.9f, 0.999f})
      for (float temperature : {0.7f, 1.3f}) {
        INFO("spread " << spread << " top_p " << top_p << " temperature " << temperature);
        const int64_t n = 20000;
        std::normal_distribution<float> nd(0.0f, spread);
        std::vector<float> logits(static_cast<size_t>(n));
        for (auto& l : logits) l = nd(rng);
        logits[123] = logits[456];  // a tie: the lower id comes first
        generate::SamplingOptions o;
        o.greedy = false;
        o.top_p = top_p;
        o.temperature = temperature;
        std::vector<float> p;
        generate::Sampler(o).distribution(logits.data(), n, p);

        std::vector<int32_t> order(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
          return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
        });
        std::vector<double> e(static_cast<size_t>(n));
        double z = 0;
        for (int64_t i = 0; i < n; ++i)
          z += (e[size_t(i)] = std::exp(double(logits[size_t(order[size_t(i)])] - logits[size_t(order[0])]) / temperature));
        int64_t cut = n;
        double cum = 0;
        for (int64_t i = 0; i < n; ++i)
          if ((cum += e[size_t(i)] / z) >= top_p) {
            cut = i + 1;
            break;
          }
        const double kept = std::accumulate(e.begin(), e.begin() + cut, 0.0);
        int64_t support = 0;
        for (float v : p) support += v > 0;
        REQUIRE(support == cut);
        for (int64_t i = 0; i < cut; ++i) REQUIRE(p[size_t(order[size_t(i)])] == Approx(e[size_t(i)] / kept).epsilon(1e-5));
      }
}

TEST_CASE("sampler: sample_on (the backend's sampling primitives) draws what sample() draws on the host", "[sampler]") {
  // sample() builds the whole distribution on the host; sample_on<cpu> goes through
  // Ops::top_logits / softmax_sum / sample_softmax as a GPU does. Same seed: the same ids, every
  // draw, for every mode (top-k, top-p with its doubling prefix, both, plain temperature).
  std::mt19937 rng(11);
  int64_t configs = 0, varied = 0;  // varied: configurations whose 60 draws are not all one id
  for (int64_t n : {5, 1000, 20000})
    for (float spread : {0.3f, 4.0f}) {
      std::normal_distribution<float> nd(0.0f, spread);
      std::vector<float> logits(static_cast<size_t>(n));
      for (auto& l : logits) l = nd(rng);
      logits[size_t(n - 1)] = logits[0];  // ties: the lower id first in every order
      if (n > 3) logits[2] = logits[1];
      for (int top_k : {0, 1, 3, 50})
        for (float top_p : {1.0f, 0.9f, 0.3f})
          for (float temperature : {0.6f, 1.4f}) {
            INFO("n " << n << " spread " << spread << " top_k " << top_k << " top_p " << top_p << " temperature " << temperature);
            generate::SamplingOptions o;
            o.greedy = false;
            o.top_k = top_k;
            o.top_p = top_p;
            o.temperature = temperature;
            o.seed = uint64_t(n + top_k);
            generate::Sampler host(o), on(o);
            std::map<int32_t, int> seen;
            for (int i = 0; i < 60; ++i) {
              const int32_t a = host.sample(logits.data(), n), b = on.sample_on<cpu>(logits.data(), n);
              REQUIRE(a == b);
              ++seen[a];
            }
            ++configs;
            varied += seen.size() > 1;
          }
    }
  INFO(varied << " of " << configs << " configurations drew more than one id");
  REQUIRE(varied * 2 > configs);  // mostly real draws, not one forced id (then the comparison could not fail)
  generate::Sampler greedy;
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 3.0f};
  REQUIRE(greedy.sample_on<cpu>(l.data(), 4) == 1);
}

TEST_CASE("sampling primitives: top_logits is the sorted prefix of a full sort; sample_softmax walks p in id order", "[sampler]") {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> coarse(-20, 20);  // many exact ties
  const int64_t n = 3000;
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = 0.25f * float(coarse(rng));
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return x[size_t(a)] > x[size_t(b)] || (x[size_t(a)] == x[size_t(b)] && a < b); });
  for (int64_t k : {int64_t(1), int64_t(17), int64_t(500), n}) {
    std::vector<float> v(static_cast<size_t>(k));
    std::vector<int32_t> ids(static_cast<size_t>(k));
    backend::Ops<cpu>::top_logits(x.data(), n, k, v.data(), ids.data());
    for (int64_t j = 0; j < k; ++j) {
      REQUIRE(ids[size_t(j)] == order[size_t(j)]);
      REQUIRE(v[size_t(j)] == x[size_t(order[size_t(j)])]);
    }
  }
  // u just below / above the cumulative mass after id 7: the draw is 7, then the next id.
  const float inv_t = 0.8f;
  const double z = backend::Ops<cpu>::softmax_sum(x.data(), n, inv_t), m = double(*std::max_element(x.begin(), x.end())) * inv_t;
  double P = 0;
  for (int64_t i = 0; i <= 7; ++i) P += float(std::exp(double(x[size_t(i)]) * inv_t - m) / z);
  REQUIRE(backend::Ops<cpu>::sample_softmax(x.data(), n, inv_t, P * (1 - 1e-9)) == 7);
  REQUIRE(backend::Ops<cpu>::sample_softmax(x.data(), n, inv_t, P * (1 + 1e-9)) == 8);
  REQUIRE(backend::Ops<cpu>::sample_softmax(x.data(), n, inv_t, 1.5) == int32_t(n - 1));  // u past the mass: the last id
}

#include <deepseek/nn/attention.hpp>

TEST_CASE("plain multi-head attention (use_mla: false) matches transformers' LlamaAttention", "[attention][reference]") {
  // tests/reference/make_mha_fixture.py: GQA (4 heads, 2 KV heads), head_dim 24, half-split RoPE.
  const std::string dir = DEEPSEEK_FIXTURES_DIR "/blocks/mha";
  auto ckpt = io::Checkpoint::open(dir);
  const auto& c = ckpt->config();
  REQUIRE_FALSE(c.use_mla);
  nn::Rope rope(c, c.head_dim, nn::RopeLayout::half_split);
  nn::Attention<cpu> attn(io::Weights(ckpt, "model.layers.0.self_attn."), nn::AttentionConfig::from(c), rope);
  auto ref = io::SafetensorsFile::open(dir + "/reference.safetensors");
  auto x = ref->view("x"), y = ref->view("y");
  const int64_t T = x.dim(0), d = x.dim(1);
  for (auto layout : {nn::CacheLayout::contiguous, nn::CacheLayout::paged}) {
    nn::KvCache cache(1, attn.config().cache_width(), T, layout, 4);
    std::vector<float> out(static_cast<size_t>(T * d));
    // Prefill 4 tokens, then decode the rest one at a time: every row must match the full causal reference.
    attn.forward(x.data_as<float>(), 4, 0, cache.view(0), out.data());
    for (int64_t t = 4; t < T; ++t) attn.forward(x.data_as<float>() + t * d, 1, t, cache.view(0), out.data() + t * d);
    for (int64_t i = 0; i < T * d; ++i) REQUIRE(out[size_t(i)] == Approx(y.data_as<float>()[i]).margin(1e-4).epsilon(1e-4));
  }
}
