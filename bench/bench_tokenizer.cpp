// Tokenizer throughput on the parity corpus (tests/fixtures/tokenizer/corpus.bin, >= 5 MB of
// licences, package docs, gettext catalogues in many scripts, C++/Python sources).
//   BM_encode_corpus           single thread, one encode() per document; MB/s of UTF-8 input
//   BM_encode_batch/threads:N  encode_batch over all documents on N threads (scaling)
//   BM_pre_tokenize            the hand-written Split matchers alone
//   BM_decode_corpus           ids -> text
// bench/tokenizer_vs_hf.py runs this and HF `tokenizers` on the same documents and prints the ratio.
#include <deepseek/tokenizer.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

using deepseek::tokenizer::Tokenizer;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw deepseek::Error("cannot open", deepseek::in_file(path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Tokenizer& tok() {
  static const Tokenizer t = Tokenizer::from_file(std::string(DEEPSEEK_ASSETS_DIR) + "/tokenizers/deepseek-v3");
  return t;
}

const std::vector<std::string>& docs() {
  static const std::vector<std::string> d = [] {
    const std::string dir = std::string(DEEPSEEK_FIXTURES_DIR) + "/tokenizer/";
    const std::string text = slurp(dir + "corpus.bin");
    const auto index = nlohmann::json::parse(slurp(dir + "corpus_index.json"));
    std::vector<std::string> out;
    for (const auto& e : index["docs"]) out.push_back(text.substr(e["text_offset"].get<size_t>(), e["text_len"].get<size_t>()));
    return out;
  }();
  return d;
}

int64_t corpus_bytes() {
  int64_t n = 0;
  for (const auto& d : docs()) n += static_cast<int64_t>(d.size());
  return n;
}

void BM_encode_corpus(benchmark::State& state) {
  const Tokenizer& t = tok();
  size_t ids = 0;
  for (auto _ : state) {
    for (const auto& d : docs()) {
      auto v = t.encode(d);
      ids += v.size();
      benchmark::DoNotOptimize(v.data());
    }
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(ids), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_encode_corpus)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_encode_batch(benchmark::State& state) {
  const Tokenizer& t = tok();
  const unsigned threads = static_cast<unsigned>(state.range(0));
  for (auto _ : state) {
    auto v = t.encode_batch(docs(), {}, threads);
    benchmark::DoNotOptimize(v.data());
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
}
BENCHMARK(BM_encode_batch)->ArgName("threads")->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_pre_tokenize(benchmark::State& state) {
  const auto& pre = tok().pre_tokenizer();
  deepseek::tokenizer::PreTokenizerScratch scratch;
  size_t pieces = 0;
  for (auto _ : state) {
    for (const auto& d : docs()) pre.split(d, scratch, [&](std::string_view) { ++pieces; });
  }
  benchmark::DoNotOptimize(pieces);
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
}
BENCHMARK(BM_pre_tokenize)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_decode_corpus(benchmark::State& state) {
  const Tokenizer& t = tok();
  std::vector<std::vector<deepseek::tokenizer::TokenId>> ids;
  for (const auto& d : docs()) ids.push_back(t.encode(d));
  for (auto _ : state) {
    for (const auto& v : ids) {
      auto s = t.decode(v);
      benchmark::DoNotOptimize(s.data());
    }
  }
  state.SetBytesProcessed(state.iterations() * corpus_bytes());
}
BENCHMARK(BM_decode_corpus)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
