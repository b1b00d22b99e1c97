// generate/no_repeat_ngram.hpp against transformers' NoRepeatNGramLogitsProcessor
// (tests/reference/make_no_repeat_ngram_fixtures.py: 326 random and edge-case sequences, n = 1 .. 6,
// 20 and 35), and its use in the Generator.
#include <deepseek/generate/generator.hpp>
#include <deepseek/generate/no_repeat_ngram.hpp>
#include <deepseek/io/config.hpp>
#include <deepseek/io/json.hpp>
#include <deepseek/nn/kv_cache.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

using namespace deepseek;

namespace {

io::Json load_cases() {
  const std::string path = std::string(DEEPSEEK_FIXTURES_DIR) + "/generate/no_repeat_ngram.json";
  std::ifstream f(path);
  REQUIRE(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return io::parse_json(ss.str(), path);
}

// A model whose logits prefer token 0, then 1, ... (logit -id): plain greedy repeats 0 forever.
struct CountingModel {
  io::ModelConfig c;
  CountingModel() {
    c.vocab_size = 6;
    c.hidden_size = 1;
    c.max_position_embeddings = 1000;
    c.eos_token_ids = {-1};
  }
  const io::ModelConfig& config() const { return c; }
  void forward(const int32_t*, int64_t n, nn::KvCache& cache, float* logits) const {
    cache.resize(cache.size() + n);
    for (int64_t t = 0; t < c.vocab_size; ++t) logits[t] = -float(t);
  }
};

}  // namespace

TEST_CASE("no-repeat n-gram bans what transformers bans", "[generate][ngram]") {
  const io::Json j = load_cases();
  int with_bans = 0;
  for (const auto& c : j.at("cases")) {
    const int n = c.at("n").get<int>();
    const int64_t V = c.at("vocab").get<int64_t>();
    const auto seq = c.at("seq").get<std::vector<int32_t>>();
    const auto expected = c.at("banned").get<std::vector<int32_t>>();
    generate::NoRepeatNGram ng(n);
    ng.extend(seq);
    std::vector<float> logits(size_t(V), 0.0f);
    ng.apply(logits.data(), V);
    std::vector<int32_t> got;
    for (int64_t t = 0; t < V; ++t)
      if (std::isinf(logits[size_t(t)])) got.push_back(int32_t(t));
    INFO("n = " << n << ", length " << seq.size());
    CHECK(got == expected);
    with_bans += !expected.empty();
  }
  CHECK(with_bans > 100);
}

TEST_CASE("no-repeat n-gram edge cases", "[generate][ngram]") {
  CHECK_THROWS_WITH(generate::NoRepeatNGram(0), Catch::Contains("no_repeat_ngram_size must be >= 1"));
  generate::NoRepeatNGram one(1);
  one.extend({3, 1, 3});
  const auto b1 = one.banned();
  CHECK(std::set<int32_t>(b1.begin(), b1.end()) == std::set<int32_t>{1, 3});
  generate::NoRepeatNGram three(3);
  three.extend({5, 6});
  CHECK(three.banned().empty());  // no 3-gram yet
  three.extend({7, 5, 6});         // 5 6 7 seen; the sequence ends in 5 6
  CHECK(three.banned() == std::vector<int32_t>{7});
  std::vector<float> logits = {0, 0, 0};  // an id beyond the logits row is skipped, not written
  three.apply(logits.data(), 3);
  CHECK(logits == std::vector<float>{0, 0, 0});
}

TEST_CASE("Generator applies no_repeat_ngram_size over prompt and output", "[generate][ngram]") {
  CountingModel m;
  nn::KvCache cache(1, 1, 64);
  generate::GenerateOptions o;
  o.max_new_tokens = 5;
  o.no_repeat_ngram_size = 1;  // every token at most once, the prompt's included
  generate::Generator<CountingModel> gen(m, cache, o);
  CHECK(gen.run({0, 2}) == std::vector<int32_t>{1, 3, 4, 5, 0});  // all 6 ids used: argmax of -inf row
  nn::KvCache cache2(1, 1, 64);
  o.no_repeat_ngram_size = 2;
  generate::Generator<CountingModel> gen2(m, cache2, o);
  // 0 0 (bigram 0 0 is new), then 0 0 is banned: 1; 1 0 is new: 0; after 0, 0 0 and 0 1 are banned: 2; 2 0 is new: 0
  CHECK(gen2.run({0}) == std::vector<int32_t>{0, 1, 0, 2, 0});
  o.no_repeat_ngram_size = -1;
  nn::KvCache cache3(1, 1, 64);
  generate::Generator<CountingModel> gen3(m, cache3, o);
  CHECK_THROWS_WITH(gen3.run({0}), Catch::Contains("no_repeat_ngram_size"));
}
