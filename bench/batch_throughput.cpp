// Aggregate generation throughput of the scheduler (generate::Scheduler, continuous batching) at
// S concurrent sequences, for bench/batched_vs_transformers.py to set beside transformers' batched
// generate() on the same checkpoint and threads.
//
//   batch_throughput MODEL_DIR [--sequences 1,4,16,64] [--prompt 32] [--new 32] [--threads N]
//                    [--activations f32|bf16] [--cache-dtype bf16|f32]
//
// For each S: S requests of --prompt distinct token ids each (1000 + 37 i + 101 s, as
// bench_model), submitted at once, greedy, exactly --new tokens each (EOS ignored, as
// min_new_tokens on the other side). One JSON line per S: the wall time from submission to the
// last token (prefill included, as generate()'s), generated tokens / that time, and the decode-only
// rate (tokens after each sequence's first, over the time after the last prefill). First, one line
// with a 2-thread STREAM triad measured in the same process (the bandwidth the rates are read
// against) and the checkpoint's bytes; then an unreported S = 1 run warms the weights up.
#include <deepseek/deepseek.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

using namespace deepseek;
using Model = models::DeepSeekV3<cpu>;

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: batch_throughput MODEL_DIR [--sequences 1,4,16,64] [--prompt 32] [--new 32] [--threads N] "
                         "[--activations f32|bf16] [--cache-dtype bf16|f32]\n");
    return 2;
  }
  std::string seqs = "1,4,16,64", act = "f32", cache = "bf16";
  int64_t P = 32, N = 32;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--sequences") seqs = v;
    else if (k == "--prompt") P = parse_integer(v, 1, 1 << 20, k);
    else if (k == "--new") N = parse_integer(v, 2, 1 << 20, k);
    else if (k == "--threads") set_num_threads(int(parse_integer(v, 1, kMaxThreads, k)));
    else if (k == "--activations") act = v;
    else if (k == "--cache-dtype") cache = v;
    else throw Error("unknown option " + k);
  }
  auto ckpt = io::Checkpoint::open(argv[1]);
  ckpt->populate();
  models::LoadOptions lo;
  lo.activations = act == "bf16" ? ActivationDType::bf16 : ActivationDType::f32;
  Model model(ckpt, lo);
  {
    // STREAM triad a = b + s c over 3 x 256 MiB, split across the pool like the kernels.
    const int64_t n = int64_t(64) << 20;
    std::vector<float> a(static_cast<size_t>(n), 0.0f), b(static_cast<size_t>(n), 1.0f), c(static_cast<size_t>(n), 2.0f);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      parallel_for(n, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
      });
      best = std::max(best, double(3 * n * 4) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9);
    }
    std::printf("{\"triad_gb_s\":%.2f,\"checkpoint_bytes\":%lld}\n", best, static_cast<long long>(ckpt->file_bytes()));
  }
  auto run_once = [&](int64_t S, bool report) {
    generate::SchedulerOptions so;
    so.max_batch = int(S);
    so.max_waiting = S;
    so.pool_tokens = S * (P + N);
    so.max_step_tokens = S * P;  // every prompt in the first step
    so.cache_dtype = nn::parse_cache_dtype(cache, "--cache-dtype");
    generate::Scheduler<Model> sched(model, so);
    int64_t generated = 0;
    using clock = std::chrono::steady_clock;
    clock::time_point last_first;
    for (int64_t s = 0; s < S; ++s) {
      generate::Request q;
      for (int64_t i = 0; i < P; ++i) q.prompt.push_back(int32_t((1000 + 37 * i + 101 * s) % model.config().vocab_size));
      q.options.max_new_tokens = N;
      q.options.stop_at_eos = false;
      q.on_token = [&generated, &last_first, first = true](const generate::TokenOutput&) mutable {
        ++generated;
        if (first) last_first = clock::now();  // the last sequence's first token ends the prefills
        first = false;
        return true;
      };
      sched.submit(std::move(q));
    }
    const auto t0 = clock::now();
    sched.run();
    const auto t1 = clock::now();
    if (!report) return;
    const double wall = std::chrono::duration<double>(t1 - t0).count(), decode = std::chrono::duration<double>(t1 - last_first).count();
    std::printf("{\"sequences\":%lld,\"prompt\":%lld,\"new\":%lld,\"generated\":%lld,\"seconds\":%.3f,\"tok_s\":%.2f,\"decode_tok_s\":%.2f,"
                "\"steps\":%lld,\"activations\":\"%s\",\"threads\":%d}\n",
                static_cast<long long>(S), static_cast<long long>(P), static_cast<long long>(N), static_cast<long long>(generated), wall,
                double(generated) / wall, double(generated - S) / decode, static_cast<long long>(sched.stats().steps), act.c_str(),
                num_threads());
    std::fflush(stdout);
  };
  run_once(1, false);
  std::stringstream list(seqs);
  for (std::string item; std::getline(list, item, ',');) run_once(parse_integer(item, 1, 4096, "--sequences"), true);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "batch_throughput: %s\n", e.what());
  return 1;
}
