// generate::Scheduler: continuous batching over a shared KV pool gives each request what it gets
// decoded alone (models::DeepSeekV3::forward, one token per forward, its own f32 cache): the same
// greedy ids and logits within 1e-5, with requests waiting for a batch slot, joining mid-run,
// prompts split into chunks mixed with decode tokens, and a pool small enough to force preemption.
// forward() itself is checked against transformers in test_deepseek_v3.cpp.
//
// Well-posed: the alone run records the margin between the two largest logits at every greedy
// step and the test requires it to exceed 1e-4, a hundred times what the batched and alone logits
// differ by (~1e-6), so no id below is decided by summation order.
#include "../models/reference_fixture.hpp"

#include <deepseek/generate/scheduler.hpp>
#include <deepseek/tokenizer.hpp>

#include <catch2/catch.hpp>

#include <cstdio>

using namespace deepseek;
using namespace deepseek::test;
using deepseek::cpu;
using Model = models::DeepSeekV3<cpu>;

namespace {

struct Job {
  int64_t prompt;   // ids[0, prompt) of the fixture
  int64_t max_new;
  int submit_step;  // the scheduler step before which it is submitted
};

struct Alone {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;
  double min_margin = 1e30;
};

Alone decode_alone(const Model& model, const std::vector<int32_t>& prompt, int64_t n) {
  const int64_t V = model.config().vocab_size;
  auto cache = model.make_cache(models::CacheOptions::exact(int64_t(prompt.size()) + n));
  Alone a;
  std::vector<float> lg(static_cast<size_t>(V));
  model.forward(prompt.data(), int64_t(prompt.size()), cache, lg.data());
  for (int64_t k = 0; k < n; ++k) {
    std::vector<float> sorted = lg;
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    a.min_margin = std::min(a.min_margin, double(sorted[0] - sorted[1]));
    a.logits.push_back(lg);
    const int32_t next = argmax(lg.data(), V);
    a.ids.push_back(next);
    if (k + 1 < n) model.forward(&next, 1, cache, lg.data());
  }
  return a;
}

struct Run {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<std::vector<float>>> logits;
  std::vector<generate::FinishOutput> finish;
  generate::SchedulerStats stats;
};

Run run_scheduled(const Model& model, const std::vector<int32_t>& ref, const std::vector<Job>& jobs, generate::SchedulerOptions so) {
  so.cache_dtype = nn::CacheDType::f32;
  generate::Scheduler<Model> sched(model, so);
  Run r;
  r.ids.resize(jobs.size());
  r.logits.resize(jobs.size());
  r.finish.resize(jobs.size());
  size_t submitted = 0;
  for (int step = 0;; ++step) {
    for (; submitted < jobs.size() && jobs[submitted].submit_step <= step; ++submitted) {
      const size_t j = submitted;
      generate::Request q;
      q.prompt.assign(ref.begin(), ref.begin() + jobs[j].prompt);
      q.options.max_new_tokens = jobs[j].max_new;
      q.options.stop_at_eos = false;
      q.on_token = [&r, j](const generate::TokenOutput& t) {
        r.ids[j].push_back(t.id);
        return true;
      };
      q.on_logits = [&r, j](const float* lg, int64_t V) { r.logits[j].emplace_back(lg, lg + V); };
      q.on_finish = [&r, j](const generate::FinishOutput& f) { r.finish[j] = f; };
      sched.submit(std::move(q));
    }
    if (!sched.step() && submitted == jobs.size()) break;
    REQUIRE(step < 1000);
  }
  r.stats = sched.stats();
  REQUIRE(sched.idle());
  REQUIRE(sched.pool()->free_blocks() == sched.pool()->num_blocks());  // every block came back
  return r;
}

std::vector<std::string> scheduler_variants() {
  auto v = kCacheVariants;
  v.push_back("v3_mtp");
  return v;
}

}  // namespace

TEST_CASE("Scheduler: each request decodes as it would alone, through waiting, chunking and preemption", "[model][scheduler]") {
  // Five requests of different lengths; two submitted after the run has started.
  const std::vector<Job> jobs = {{5, 6, 0}, {2, 3, 0}, {1, 8, 0}, {7, 5, 1}, {3, 6, 3}};
  for (const std::string& variant : scheduler_variants()) {
    DYNAMIC_SECTION(variant) {
      auto ckpt = io::Checkpoint::open(kModels + variant);
      Model model(ckpt);
      const auto ref = load_reference(variant);
      const int64_t V = model.config().vocab_size;
      std::vector<Alone> alone;
      double margin = 1e30;
      for (const Job& j : jobs) {
        REQUIRE(j.prompt <= int64_t(ref.ids.size()));
        alone.push_back(decode_alone(model, std::vector<int32_t>(ref.ids.begin(), ref.ids.begin() + j.prompt), j.max_new));
        margin = std::min(margin, alone.back().min_margin);
      }
      INFO("smallest top-2 logit margin of the alone runs: " << margin);
      REQUIRE(margin > 1e-4);

      struct Setup {
        const char* name;
        generate::SchedulerOptions o;
        bool expect_preemption;
      };
      generate::SchedulerOptions roomy;  // three at a time: two requests wait for a slot
      roomy.max_batch = 3;
      roomy.pool_tokens = 64;
      roomy.block_size = 4;
      roomy.max_step_tokens = 4;  // prompts of 5 and 7 tokens run in chunks beside decode tokens
      generate::SchedulerOptions tight = roomy;  // 16 rows in blocks of 2: the largest request alone needs 12
      tight.max_batch = 5;
      tight.pool_tokens = 16;
      tight.block_size = 2;
      tight.max_step_tokens = 16;
      for (const Setup& setup : {Setup{"roomy", roomy, false}, Setup{"tight", tight, true}}) {
        const Run r = run_scheduled(model, ref.ids, jobs, setup.o);
        double worst = 0;
        for (size_t j = 0; j < jobs.size(); ++j) {
          INFO(setup.name << " request " << j);
          REQUIRE(r.ids[j] == alone[j].ids);
          REQUIRE(r.finish[j].reason == generate::FinishReason::length);
          REQUIRE(r.finish[j].completion_tokens == jobs[j].max_new);
          REQUIRE(r.finish[j].prompt_tokens == jobs[j].prompt);
          REQUIRE(r.logits[j].size() == alone[j].logits.size());
          for (size_t k = 0; k < r.logits[j].size(); ++k)
            worst = std::max(worst, rel_diff(r.logits[j][k].data(), alone[j].logits[k].data(), V));
        }
        std::printf("scheduler %-26s %-5s steps %3lld preemptions %2lld max rel diff %.2e (margin %.2e)\n", variant.c_str(), setup.name,
                    static_cast<long long>(r.stats.steps), static_cast<long long>(r.stats.preemptions), worst, margin);
        REQUIRE(worst < 1e-5);
        if (setup.expect_preemption) REQUIRE(r.stats.preemptions > 0);
        else REQUIRE(r.stats.preemptions == 0);
      }
    }
  }
}

namespace {


struct Demo {
  std::shared_ptr<io::Checkpoint> ckpt = io::Checkpoint::open(kDemoModel);
  Model model{ckpt};
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(kDemoModel);
  std::vector<int32_t> encode(const std::string& s) const {
    std::vector<int32_t> ids;
    for (auto id : tok.encode(s, tok.add_bos_token())) ids.push_back(int32_t(id));
    return ids;
  }
};

Demo& demo() {
  static Demo d;
  return d;
}

struct Collected {
  std::string text;
  std::vector<int32_t> ids;
  std::optional<generate::FinishOutput> finish;
};

generate::Request collect(Collected& c, std::vector<int32_t> prompt, int64_t max_new, std::vector<std::string> stop = {}) {
  generate::Request q;
  q.prompt = std::move(prompt);
  q.options.max_new_tokens = max_new;
  q.options.stop = std::move(stop);
  q.on_token = [&c](const generate::TokenOutput& t) {
    c.text += t.text;
    c.ids.push_back(t.id);
    return true;
  };
  q.on_finish = [&c](const generate::FinishOutput& f) {
    c.text += f.text;
    c.finish = f;
  };
  return q;
}

}  // namespace

TEST_CASE("Scheduler: stop strings end the text before them; held-back text comes out at the end", "[model][scheduler]") {
  Demo& d = demo();
  const auto prompt = d.encode("The Python interpreter");
  generate::SchedulerOptions so;
  so.pool_tokens = 512;
  // The whole greedy continuation, then the same with a stop string taken from its middle.
  Collected full;
  {
    generate::Scheduler<Model> s(d.model, so, &d.tok);
    s.submit(collect(full, prompt, 40));
    s.run();
  }
  REQUIRE(full.finish);
  const std::string expected_text = d.tok.decode(std::vector<tokenizer::TokenId>(full.ids.begin(), full.ids.end()));
  if (full.finish->reason == generate::FinishReason::length) REQUIRE(full.text == expected_text);
  REQUIRE(full.text.size() > 30);
  const std::string stop = full.text.substr(20, 5);
  const size_t at = full.text.find(stop);
  Collected cut, never;
  {
    generate::Scheduler<Model> s(d.model, so, &d.tok);
    s.submit(collect(cut, prompt, 40, {stop, "\x01never"}));
    // A stop string that never matches but whose first characters keep appearing is still returned
    // in full: the text held back for it comes out with the finish.
    s.submit(collect(never, prompt, 40, {full.text.substr(at, 1) + "\x01"}));
    s.run();
  }
  REQUIRE(cut.finish->reason == generate::FinishReason::stop);
  REQUIRE(cut.text == full.text.substr(0, at));
  REQUIRE(never.text == full.text);
  REQUIRE(never.finish->reason == full.finish->reason);
}

TEST_CASE("Scheduler: cancel, on_token stopping, a full queue and requests that can never run", "[model][scheduler]") {
  Demo& d = demo();
  const auto prompt = d.encode("The Python interpreter");
  generate::SchedulerOptions so;
  so.pool_tokens = 256;
  so.max_batch = 1;
  so.max_waiting = 1;
  generate::Scheduler<Model> s(d.model, so, &d.tok);
  Collected a, b, c;
  auto qa = collect(a, prompt, 50);
  qa.options.stop_at_eos = false;
  auto on = qa.on_token;
  qa.on_token = [&a, on](const generate::TokenOutput& t) { return on(t) && a.ids.size() < 3; };
  s.submit(std::move(qa));
  const uint64_t idb = s.submit(collect(b, prompt, 50));
  // One running slot (free until the first step) and one waiting place: the third is refused.
  REQUIRE_THROWS_AS(s.submit(collect(c, prompt, 50)), generate::QueueFull);
  s.cancel(idb);
  s.run();
  REQUIRE(a.finish->reason == generate::FinishReason::cancelled);
  REQUIRE(a.finish->completion_tokens == 3);
  REQUIRE(b.finish->reason == generate::FinishReason::cancelled);
  REQUIRE(b.finish->completion_tokens == 0);
  REQUIRE(s.pool()->free_blocks() == s.pool()->num_blocks());

  const int64_t ctx = d.model.config().max_position_embeddings;
  auto refused = [&](std::vector<int32_t> p, int64_t max_new, const std::string& what) {
    Collected x;
    REQUIRE_THROWS_WITH(s.submit(collect(x, std::move(p), max_new)), Catch::Contains(what));
  };
  refused({}, 4, "the prompt is empty");
  refused(prompt, 0, "max_new_tokens must be at least 1");
  refused(prompt, ctx, "exceeds the context of " + std::to_string(ctx));
  refused(prompt, int64_t(256 - prompt.size() + 1), "needs more than the KV pool's 256 rows");
  refused({1, int32_t(d.model.config().vocab_size)}, 4, "prompt token 1 is 8064, outside [0, 8064)");
  Collected x;
  auto bad = collect(x, prompt, 4);
  bad.options.sampling.greedy = false;
  bad.options.sampling.temperature = 0;
  REQUIRE_THROWS_WITH(s.submit(std::move(bad)), Catch::Contains("temperature must be > 0"));
  generate::Scheduler<Model> no_tok(d.model, so);
  REQUIRE_THROWS_WITH(no_tok.submit(collect(x, prompt, 4, {"x"})), Catch::Contains("stop strings need a tokenizer"));
}
