// Generation speed with and without MTP speculative decoding (spec §6.2) on one checkpoint that has
// an MTP module, greedy, same prompt. BM_decode alternates a plain run and a speculative run in
// one loop (the VM's speed drifts by tens of percent within minutes; alternating makes both see
// the same drift), asserts that both generate the same tokens, and reports plain_tok_s, mtp_tok_s
// and their ratio speedup, with acceptance_rate and tokens_per_forward. tok_s = new tokens / wall
// time of the whole run() (prefill included, identical in both; drafting and acceptance included).
//
// BM_forward_cost/n says why the speed-up is what it is. Along the plain greedy continuation, one
// main forward of n tokens (the verify of n - 1 drafts that are all right) costs cost_vs_one times
// a one-token step (V_n / P), and a draft call draft_vs_one times (D_1 / P; over the 2 pairs that
// follow an acceptance draft2_vs_one, D_2 / P). These forwards alternate inside one loop too.
// After BM_decode has measured the acceptance a, it also reports
//   free_draft_bound = (1 - a^n) / (1 - a) / (V_n / P)   speed-up with n - 1 drafted tokens accepted
//                                                         at rate a each and a draft that costs nothing
//   bound            = (1 + a) / (V_2 / P + (a D_2 + (1 - a) D_1) / P)
//                                                         (n = 2) the same with the draft's real cost
// A checkpoint without an MTP module (DEEPSEEK_MTP_MODEL pointing at a bench_model checkpoint, say)
// runs the plain half of BM_decode and BM_forward_cost without the draft.
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
#include <cmath>
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
  double acceptance = -1;  // measured by BM_decode

  static Setup& get() {
    static Setup s = [] {
      Setup s;
      const std::string demo = DEEPSEEK_FIXTURES_DIR "/../../examples/models/deepseek-v3-demo";
      const std::string dir = env_or("DEEPSEEK_MTP_MODEL", std::filesystem::exists(demo + "/model.safetensors")
                                                               ? demo
                                                               : std::string(DEEPSEEK_FIXTURES_DIR "/models/v3_mtp"));
      s.ckpt = io::Checkpoint::open(dir);
      s.model = std::make_unique<models::DeepSeekV3<cpu>>(s.ckpt);
      if (s.ckpt->config().num_nextn_predict_layers > 0)
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

// One iteration = one plain run and one speculative run of the same prompt, back to back.
void BM_decode(benchmark::State& state) {
  auto& s = Setup::get();
  using clock = std::chrono::steady_clock;
  double plain_wall = 0, mtp_wall = 0, tok = 0, drafted = 0, accepted = 0, forwards = 0;
  for (auto _ : state) {
    auto cache = s.model->make_cache({s.context()});
    generate::Generator<models::DeepSeekV3<cpu>> plain(*s.model, cache, s.o);
    auto t0 = clock::now();
    const auto plain_out = plain.run(s.prompt);
    plain_wall += std::chrono::duration<double>(clock::now() - t0).count();
    if (!s.mtp) continue;
    cache.clear();
    generate::SpeculativeGenerator<models::DeepSeekV3<cpu>, models::MtpHead<cpu>> gen(*s.model, *s.mtp, cache, s.o);
    t0 = clock::now();
    const auto out = gen.run(s.prompt);
    mtp_wall += std::chrono::duration<double>(clock::now() - t0).count();
    if (out != plain_out) state.SkipWithError("speculative greedy output differs from plain greedy");
    const auto& st = gen.stats();
    tok += double(st.generated_tokens - 1);
    drafted += double(st.drafted);
    accepted += double(st.accepted);
    forwards += double(st.main_forwards);
  }
  const double generated = double(state.iterations()) * double(s.o.max_new_tokens);
  state.counters["plain_tok_s"] = generated / plain_wall;
  if (!s.mtp) return;
  state.counters["mtp_tok_s"] = generated / mtp_wall;
  state.counters["speedup"] = plain_wall / mtp_wall;
  state.counters["acceptance_rate"] = accepted / drafted;
  state.counters["tokens_per_forward"] = tok / forwards;
  s.acceptance = accepted / drafted;
}

// Walks the plain greedy continuation x_0 x_1 .. (what a draft that is always right would propose):
// at each position t it times a forward of x_t .. x_{t+n-1} (then drops it from the cache), the
// draft over 2 pairs (dropped too) and over 1 pair, and the one-token step of x_t that it keeps.
void BM_forward_cost(benchmark::State& state) {
  auto& s = Setup::get();
  using clock = std::chrono::steady_clock;
  const auto& c = s.model->config();
  const int64_t n = state.range(0), V = c.vocab_size, d = c.hidden_size, p = int64_t(s.prompt.size());
  std::vector<int32_t> text = s.prompt;
  {
    auto cache = s.model->make_cache({s.context()});
    generate::Generator<models::DeepSeekV3<cpu>> plain(*s.model, cache, s.o);
    const auto out = plain.run(s.prompt);
    text.insert(text.end(), out.begin(), out.end());
  }
  const int64_t steps = int64_t(text.size()) - p - n;  // positions t = p .. p + steps - 1
  if (steps < 1) {
    state.SkipWithError("DEEPSEEK_MTP_NEW is too small for this n");
    return;
  }
  std::vector<float> logits(size_t(n * V)), hidden(size_t(std::max(p, n) * d));
  double one = 0, many = 0, draft1 = 0, draft2 = 0;
  auto seconds = [](clock::time_point a) { return std::chrono::duration<double>(clock::now() - a).count(); };
  for (auto _ : state) {
    auto cache = s.model->make_cache({int64_t(text.size())});
    nn::KvCache draft_cache;
    s.model->forward(text.data(), p, cache, logits.data(), false, hidden.data());
    const float* h = hidden.data() + (p - 1) * d;  // h_{t-1}: the draft pairs it with x_t
    std::vector<float> h_prev(h, h + d), h_two(size_t(2 * d));
    if (s.mtp) {
      draft_cache = s.mtp->make_cache(int64_t(text.size()));
      s.mtp->forward(hidden.data(), text.data() + 1, p - 1, draft_cache, logits.data());
    }
    for (int64_t t = p; t < p + steps; ++t) {
      auto a = clock::now();
      s.model->forward(text.data() + t, n, cache, logits.data(), true, hidden.data());
      many += seconds(a);
      cache.resize(t);
      if (s.mtp) {  // pairs (h_{t-1}, x_t), (h_t, x_{t+1}) as after an acceptance; then (h_{t-1}, x_t) alone
        std::copy(h_prev.begin(), h_prev.end(), h_two.begin());
        std::copy(hidden.begin(), hidden.begin() + d, h_two.begin() + d);
        a = clock::now();
        s.mtp->forward(h_two.data(), text.data() + t, 2, draft_cache, logits.data());
        draft2 += seconds(a);
        draft_cache.resize(t - 1);
        a = clock::now();
        s.mtp->forward(h_prev.data(), text.data() + t, 1, draft_cache, logits.data());
        draft1 += seconds(a);
      }
      a = clock::now();
      s.model->forward(text.data() + t, 1, cache, logits.data(), false, hidden.data());
      one += seconds(a);
      std::copy(hidden.begin(), hidden.begin() + d, h_prev.begin());
    }
  }
  const double cost = many / one, a = s.acceptance;
  state.counters["plain_us"] = one / double(state.iterations() * steps) * 1e6;
  state.counters["cost_vs_one"] = cost;
  if (s.mtp) {
    state.counters["draft_vs_one"] = draft1 / one;
    state.counters["draft2_vs_one"] = draft2 / one;
  }
  if (a >= 0 && a < 1) {
    state.counters["free_draft_bound"] = (1 - std::pow(a, double(n))) / (1 - a) / cost;
    if (s.mtp && n == 2) state.counters["bound"] = (1 + a) / (cost + (a * draft2 + (1 - a) * draft1) / one);
  }
}

}  // namespace

BENCHMARK(BM_decode)->Unit(benchmark::kMillisecond)->MinTime(4.0);
BENCHMARK(BM_forward_cost)->DenseRange(2, 4)->Unit(benchmark::kMillisecond)->MinTime(4.0);
BENCHMARK_MAIN();
