// Generation speed with and without MTP speculative decoding (spec §6.2) on one checkpoint that has
// an MTP module, greedy, same prompt: both benchmarks generate the same tokens (asserted), so the
// ratio of their tok_s counters is the speed-up. tok_s = new tokens / wall time of the whole run()
// (prefill included, identical in both), measured the same way for both: GenerateStats' decode time
// leaves out the plain loop's sampling but SpeculativeStats' includes drafting and acceptance, so
// decode_tok_s is reported too but is not the comparison. For MTP also acceptance_rate and
// tokens_per_forward.
//
//   DEEPSEEK_MTP_MODEL   checkpoint directory (default examples/models/deepseek-v3-demo when present,
//                        else tests/fixtures/models/v3_mtp)
//   DEEPSEEK_MTP_PROMPT  text prompt, encoded with the directory's tokenizer.json when it has one
//                        (default "The Python tutorial explains how to"; without a tokenizer ids 2..9)
//   DEEPSEEK_MTP_NEW     tokens to generate (default 128)
// Threads: set_num_threads as the rest of the library (DEEPSEEK_NUM_THREADS or the default).
#include <deepseek/deepseek.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/models/mtp_head.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <vector>

using namespace deepseek;

namespace {

std::string env_or(const char* k, const std::string& d) {
  const char* v = std::getenv(k);
  return v && *v ? v : d;
}

struct Setup {
  std::shared_ptr<io::Checkpoint> ckpt;
  std::unique_ptr<models::DeepSeekV3<cpu>> model;
  std::unique_ptr<models::MtpHead<cpu>> mtp;
  std::vector<int32_t> prompt;
  generate::GenerateOptions o;
  std::vector<int32_t> plain_out;

  static Setup& get() {
    static Setup s = [] {
      Setup s;
      const std::string demo = DEEPSEEK_FIXTURES_DIR "/../../examples/models/deepseek-v3-demo";
      const std::string dir = env_or("DEEPSEEK_MTP_MODEL", std::filesystem::exists(demo + "/model.safetensors")
                                                               ? demo
                                                               : std::string(DEEPSEEK_FIXTURES_DIR "/models/v3_mtp"));
      s.ckpt = io::Checkpoint::open(dir);
      s.model = std::make_unique<models::DeepSeekV3<cpu>>(s.ckpt);
      s.mtp = std::make_unique<models::MtpHead<cpu>>(s.ckpt, *s.model);
      const std::string text = env_or("DEEPSEEK_MTP_PROMPT", "The Python tutorial explains how to");
      if (std::filesystem::exists(dir + "/tokenizer.json")) {
        auto tok = tokenizer::Tokenizer::from_file(dir);
        for (auto id : tok.encode(text, tok.add_bos_token())) s.prompt.push_back(int32_t(id));
      } else {
        for (int32_t i = 2; i < 10; ++i) s.prompt.push_back(i);
      }
      s.o.max_new_tokens = std::atoi(env_or("DEEPSEEK_MTP_NEW", "128").c_str());
      s.o.stop_at_eos = false;
      return s;
    }();
    return s;
  }
  int64_t context() const { return int64_t(prompt.size()) + o.max_new_tokens; }
};

void BM_decode_plain(benchmark::State& state) {
  auto& s = Setup::get();
  double tok = 0, sec = 0, wall = 0;
  for (auto _ : state) {
    auto cache = s.model->make_cache({s.context()});
    generate::Generator<models::DeepSeekV3<cpu>> gen(*s.model, cache, s.o);
    const auto t0 = std::chrono::steady_clock::now();
    s.plain_out = gen.run(s.prompt);
    wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tok += double(gen.stats().generated_tokens - 1);
    sec += gen.stats().decode_seconds;
  }
  state.counters["tok_s"] = double(state.iterations()) * double(s.o.max_new_tokens) / wall;
  state.counters["decode_tok_s"] = tok / sec;
}

void BM_decode_mtp(benchmark::State& state) {
  auto& s = Setup::get();
  double tok = 0, sec = 0, wall = 0, drafted = 0, accepted = 0, forwards = 0;
  for (auto _ : state) {
    auto cache = s.model->make_cache({s.context()});
    generate::SpeculativeGenerator<models::DeepSeekV3<cpu>, models::MtpHead<cpu>> gen(*s.model, *s.mtp, cache, s.o);
    const auto t0 = std::chrono::steady_clock::now();
    const auto out = gen.run(s.prompt);
    wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!s.plain_out.empty() && out != s.plain_out)
      state.SkipWithError("speculative greedy output differs from plain greedy");
    const auto& st = gen.stats();
    tok += double(st.generated_tokens - 1);
    sec += st.decode_seconds;
    drafted += double(st.drafted);
    accepted += double(st.accepted);
    forwards += double(st.main_forwards);
  }
  state.counters["tok_s"] = double(state.iterations()) * double(s.o.max_new_tokens) / wall;
  state.counters["decode_tok_s"] = tok / sec;
  state.counters["acceptance_rate"] = accepted / drafted;
  state.counters["tokens_per_forward"] = tok / forwards;
}

}  // namespace

BENCHMARK(BM_decode_plain)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_decode_mtp)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_MAIN();
