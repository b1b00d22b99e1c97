// Decode speed at a long context, measured in short bursts that a side-by-side script can interleave
// with a peer's (bench/decode_vs_llama_cpp.py): this machine's memory bandwidth drifts by tens of
// percent within minutes, so runs of one side after the other compare the drift, not the code.
//
//   decode_bursts MODEL_DIR IDS_FILE [--threads N] [--prefill f32|bf16|both]
//
// Loads the checkpoint twice over one mapping, with exact f32 activations and with bf16 activations
// (LoadOptions::activations), each with its own default (bf16) cache, and fills the caches with the
// prompt's ids (IDS_FILE: ids separated by spaces, commas or newlines). --prefill both (default)
// runs each model's own prefill and reports both rates; f32 or bf16 prefills with that model once
// and copies its cache to the other (the rows then differ by the activations' rounding, which does
// not change what decode costs). Prints one JSON line per prefill, then answers commands on stdin:
//   f32 K | bf16 K   roll that model's cache back to the prompt and decode K tokens greedily from the
//                    prompt's last logits; prints {"mode", "decode_tok_s", "ids"}
//   read K           the speed of light of K - 1 decode steps: each thread reads its share of every
//                    weight one step reads (attention, dense MLP or shared experts, num_experts_per_tok
//                    routed experts chosen afresh per step, lm_head) from the same mapping, a plain
//                    sequential sum, no products; prints {"mode": "read", "decode_tok_s", "GB_s",
//                    "bytes_per_token"}: decode_tok_s is the rate a model streaming its weights at
//                    this bandwidth would reach, the limit each side's rate is a share of
//   quit
#include <deepseek/core/checked.hpp>
#include <deepseek/core/file.hpp>
#include <deepseek/core/limits.hpp>
#include <deepseek/deepseek.hpp>

#include "decode_weights.hpp"

#include <chrono>
#include <cstring>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace deepseek;

namespace {

std::vector<int32_t> read_ids(const std::string& path) {
  std::string text = read_regular_file(path, uint64_t(12) * uint64_t(kMaxPositions), "12 bytes per id of kMaxPositions");
  for (char& c : text)
    if (c == ',' || c == '\n' || c == '\r' || c == '\t') c = ' ';
  std::vector<int32_t> ids;
  std::istringstream in(text);
  long long v;
  while (in >> v) {
    if (v < 0 || v > INT32_MAX) throw Error("token id out of range in " + path);
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) throw Error("no ids", in_file(path));
  return ids;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Thread t of T XORs its share [t/T, (t+1)/T) of every part into four 256-bit chains, 128 bytes
// per step (a plain stream: no products, nothing the prefetcher has to guess); returns the result
// so that the reads cannot be dropped.
uint64_t read_share(const std::vector<std::pair<const uint8_t*, size_t>>& parts, int t, int T) {
  uint64_t out = 0;
  for (const auto& [p, bytes] : parts) {
    const size_t steps = bytes / 128, b = steps * size_t(t) / size_t(T), e = steps * size_t(t + 1) / size_t(T);
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = b; i < e; ++i) {
      const auto* q = reinterpret_cast<const __m256i*>(p + i * 128);
      a0 = _mm256_xor_si256(a0, _mm256_loadu_si256(q));
      a1 = _mm256_xor_si256(a1, _mm256_loadu_si256(q + 1));
      a2 = _mm256_xor_si256(a2, _mm256_loadu_si256(q + 2));
      a3 = _mm256_xor_si256(a3, _mm256_loadu_si256(q + 3));
    }
    const __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    out ^= uint64_t(_mm256_extract_epi64(a, 0)) ^ uint64_t(_mm256_extract_epi64(a, 3));
#else
    uint64_t v[16], acc[16] = {};
    for (size_t i = b; i < e; ++i) {
      std::memcpy(v, p + i * 128, sizeof v);
      for (int j = 0; j < 16; ++j) acc[j] ^= v[j];
    }
    for (uint64_t x : acc) out ^= x;
#endif
  }
  return out;
}

struct Side {
  std::shared_ptr<models::DeepSeekV3<cpu>> model;
  nn::KvCache cache;
  int32_t first = 0;  // the greedy token after the prompt
};

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR IDS_FILE [--threads N] [--prefill f32|bf16|both]\n", argv[0]);
    return 2;
  }
  std::string prefill = "both";
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--threads")
      set_num_threads(int(parse_integer(argv[i + 1], 1, kMaxThreads, "--threads")));
    else if (a == "--prefill")
      prefill = argv[i + 1];
    else
      throw Error("unknown argument " + a);
  }
  if (prefill != "f32" && prefill != "bf16" && prefill != "both") throw Error("--prefill must be f32, bf16 or both");
  const auto ids = read_ids(argv[2]);
  const int64_t T = int64_t(ids.size());
  auto ckpt = io::Checkpoint::open(argv[1]);
  ckpt->populate();
  Side side[2];  // 0: f32 activations, 1: bf16
  for (int k = 0; k < 2; ++k) {
    models::LoadOptions o;
    o.activations = k == 0 ? ActivationDType::f32 : ActivationDType::bf16;
    side[k].model = std::make_shared<models::DeepSeekV3<cpu>>(ckpt, o);
    side[k].cache = side[k].model->make_cache({T + 4096});
  }
  const int64_t V = side[0].model->config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(V));
  for (int k = 0; k < 2; ++k) {
    const char* name = k == 0 ? "f32" : "bf16";
    if (prefill != "both" && prefill != name) continue;
    const auto t0 = std::chrono::steady_clock::now();
    side[k].model->forward(ids.data(), T, side[k].cache, logits.data());
    const double s = seconds_since(t0);
    side[k].first = generate::argmax(logits.data(), V);
    std::printf("{\"prefill\":\"%s\",\"prompt_tokens\":%lld,\"prefill_tok_s\":%.3f}\n", name, (long long)T, double(T) / s);
    std::fflush(stdout);
  }
  if (prefill != "both") {  // the other side decodes from a copy of this cache
    const int from = prefill == "f32" ? 0 : 1;
    side[1 - from].cache = side[from].cache.clone();
    side[1 - from].first = side[from].first;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string mode;
    long long k = 0;
    in >> mode >> k;
    if (mode == "quit") break;
    if ((mode != "f32" && mode != "bf16" && mode != "read") || k < 1 || k > 4096) throw Error("bad command: " + line);
    if (mode == "read") {
      std::vector<std::vector<std::pair<const uint8_t*, size_t>>> steps;
      for (long long i = 1; i < k; ++i) steps.push_back(bench::decode_step_weights(*ckpt, i));
      const int T = num_threads();
      double bytes = 0;
      for (const auto& [p, b] : steps.empty() ? decltype(steps)::value_type{} : steps[0]) bytes += double(b);
      std::vector<uint64_t> sums(size_t(T), 0);
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& parts : steps) {
        std::vector<std::thread> threads;
        for (int t = 1; t < T; ++t) threads.emplace_back([&, t] { sums[size_t(t)] ^= read_share(parts, t, T); });
        sums[0] ^= read_share(parts, 0, T);
        for (auto& th : threads) th.join();
      }
      const double sec = seconds_since(t0);
      uint64_t all = 0;
      for (uint64_t v : sums) all ^= v;
      std::printf("{\"mode\":\"read\",\"decode_tok_s\":%.4f,\"GB_s\":%.3f,\"bytes_per_token\":%.0f,\"check\":%llu}\n",
                  double(k - 1) / sec, bytes * double(k - 1) / sec / 1e9, bytes, (unsigned long long)(all & 0xff));
      std::fflush(stdout);
      continue;
    }
    Side& s = side[mode == "f32" ? 0 : 1];
    s.cache.resize(T);
    std::vector<int32_t> out{s.first};
    const auto t0 = std::chrono::steady_clock::now();
    for (long long i = 1; i < k; ++i) {
      s.model->forward(&out.back(), 1, s.cache, logits.data());
      out.push_back(generate::argmax(logits.data(), V));
    }
    const double sec = seconds_since(t0);
    std::printf("{\"mode\":\"%s\",\"decode_tok_s\":%.4f,\"ids\":[", mode.c_str(), double(k - 1) / sec);
    for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
    std::printf("]}\n");
    std::fflush(stdout);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
