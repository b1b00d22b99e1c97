// Next-token sampling from a row of logits.
//
//   greedy        argmax (ties: lowest id)
//   otherwise     p = softmax(logits / temperature), restricted to the top_k most likely ids
//                 (top_k > 0) and to the smallest set whose probability reaches top_p
//                 (top_p < 1, as transformers' TopPLogitsWarper), renormalised, then one draw
//                 from a std::mt19937_64 seeded with `seed` (same seed, same output).
// `distribution()` exposes the final p so speculative sampling can compare draft and target.
#pragma once

#include "deepseek/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace deepseek::generate {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  int top_k = 0;       // 0: off
  float top_p = 1.0f;  // 1: off
  uint64_t seed = 0;
};

inline int32_t argmax(const float* logits, int64_t n) {
  return int32_t(std::max_element(logits, logits + n) - logits);
}

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o = {}) : o_(o), rng_(o.seed) {
    if (!o.greedy) {
      if (!(o.temperature > 0) || !std::isfinite(o.temperature))
        throw Error("temperature must be > 0 (use greedy decoding for 0), got " + std::to_string(o.temperature));
      if (!(o.top_p > 0 && o.top_p <= 1)) throw Error("top_p must be in (0, 1], got " + std::to_string(o.top_p));
      if (o.top_k < 0) throw Error("top_k must be >= 0");
    }
  }
  const SamplingOptions& options() const { return o_; }

  // The distribution tokens are drawn from (probabilities over the whole vocabulary).
  void distribution(const float* logits, int64_t n, std::vector<float>& p) const {
    p.assign(size_t(n), 0.0f);
    if (o_.greedy) {
      p[size_t(argmax(logits, n))] = 1.0f;
      return;
    }
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    int64_t keep = n;
    if (o_.top_k > 0 && o_.top_k < n) keep = o_.top_k;
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    const float inv_t = 1.0f / o_.temperature;
    double total = 0;  // top-p without top-k: the softmax denominator over all n ids
    // Only top-k and top-p need the order; plain temperature sampling needs just the maximum.
    if (keep < n) {
      std::nth_element(order.begin(), order.begin() + keep, order.end(), by_logit);
      std::sort(order.begin(), order.begin() + keep, by_logit);
    } else if (o_.top_p < 1.0f) {
      keep = top_p_prefix(logits, n, inv_t, order, by_logit, total);
    } else {
      std::swap(order[0], order[size_t(argmax(logits, n))]);
    }
    const double mx = double(logits[order[0]]) * inv_t;
    double sum = 0;
    std::vector<double> e(static_cast<size_t>(keep));
    for (int64_t i = 0; i < keep; ++i) sum += (e[size_t(i)] = std::exp(double(logits[order[size_t(i)]]) * inv_t - mx));
    if (o_.top_p < 1.0f) {
      if (total > 0) sum = total;  // `keep` is only the prefix top_p_prefix sorted
      double cum = 0;
      int64_t cut = keep;
      for (int64_t i = 0; i < keep; ++i) {
        cum += e[size_t(i)] / sum;
        if (cum >= o_.top_p) {
          cut = i + 1;
          break;
        }
      }
      keep = cut;
      sum = std::accumulate(e.begin(), e.begin() + keep, 0.0);
    }
    for (int64_t i = 0; i < keep; ++i) p[size_t(order[size_t(i)])] = float(e[size_t(i)] / sum);
  }

  int32_t sample(const float* logits, int64_t n) {
    if (o_.greedy) return argmax(logits, n);
    distribution(logits, n, scratch_);
    return draw(scratch_);
  }

  // One draw from a probability vector.
  int32_t draw(const std::vector<float>& p) {
    double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    int32_t last = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] <= 0) continue;
      last = int32_t(i);
      u -= p[i];
      if (u < 0) return int32_t(i);
    }
    return last;  // rounding left u slightly positive: the last token with mass
  }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  // Top-p without top-k: sorts only a prefix of `order` long enough to hold the nucleus, found by
  // doubling (x4) a partial selection from 64 ids. A full sort of the vocabulary costs 0.6 ms a
  // token at 8K ids and ~10 ms at V3's 129K, several times the demo model's forward. Returns the
  // prefix length; `total` gets the softmax denominator over all n ids.
  template <class Less>
  int64_t top_p_prefix(const float* logits, int64_t n, float inv_t, std::vector<int32_t>& order, Less by_logit,
                       double& total) const {
    const double mx = double(*std::max_element(logits, logits + n)) * inv_t;
    total = 0;
    for (int64_t i = 0; i < n; ++i) total += std::exp(double(logits[i]) * inv_t - mx);
    for (int64_t k = std::min<int64_t>(n, 64);; k = std::min<int64_t>(n, 4 * k)) {
      if (k < n) std::nth_element(order.begin(), order.begin() + k, order.end(), by_logit);
      std::sort(order.begin(), order.begin() + k, by_logit);
      double cum = 0;
      for (int64_t i = 0; i < k; ++i) cum += std::exp(double(logits[order[size_t(i)]]) * inv_t - mx) / total;
      if (cum >= o_.top_p || k == n) return k;
    }
  }

  SamplingOptions o_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;
};

}  // namespace deepseek::generate
