// Next-token sampling from a row of logits.
//
//   greedy        argmax (ties: lowest id)
//   otherwise     p = softmax(logits / temperature), restricted to the top_k most likely ids
//                 (top_k > 0) and to the smallest set whose probability reaches top_p
//                 (top_p < 1, as transformers' TopPLogitsWarper), renormalised, then one draw
//                 from a std::mt19937_64 seeded with `seed` (same seed, same output).
// `distribution()` exposes the final p so speculative sampling can compare draft and target;
// `sample_on<B>()` makes the same draw from a row on backend B's device (the generation loops).
#pragma once

#include "deepseek/backend/ops.hpp"
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
    const float inv_t = 1.0f / o_.temperature;
    if (!truncated(n)) {  // plain temperature sampling needs no order, just the maximum
      const double mx = double(logits[argmax(logits, n)]) * inv_t;
      double sum = 0;
      std::vector<double> e(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) sum += (e[size_t(i)] = std::exp(double(logits[i]) * inv_t - mx));
      for (int64_t i = 0; i < n; ++i) p[size_t(i)] = float(e[size_t(i)] / sum);
      return;
    }
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    int64_t keep;
    double total = 0;  // top-p without top-k: the softmax denominator over all n ids
    if (o_.top_k > 0 && o_.top_k < n) {
      keep = o_.top_k;
      std::nth_element(order.begin(), order.begin() + keep, order.end(), by_logit);
      std::sort(order.begin(), order.begin() + keep, by_logit);
    } else {
      keep = top_p_prefix(logits, n, inv_t, order, by_logit, total);
    }
    std::vector<float> cand(static_cast<size_t>(keep));
    for (int64_t i = 0; i < keep; ++i) cand[size_t(i)] = logits[order[size_t(i)]];
    std::vector<double> e;
    double sum = 0;
    keep = weights(cand.data(), keep, total, e, sum);
    for (int64_t i = 0; i < keep; ++i) p[size_t(order[size_t(i)])] = float(e[size_t(i)] / sum);
  }

  int32_t sample(const float* logits, int64_t n) {
    if (o_.greedy) return argmax(logits, n);
    distribution(logits, n, scratch_);
    return draw(scratch_);
  }

  // The same draw as sample() with the logits row on B's device (where a model writes it): only
  // the id, top-k candidates or top-p's denominator and candidates reach the host, through the
  // backend's sampling primitives (backend/cpu/sampling.hpp). On the CPU it equals sample() (a
  // test); elsewhere the sums run in another order, so a draw can differ only where u or the
  // top-p cut lies within double rounding (~1e-15) of a boundary.
  template <class B>
  int32_t sample_on(const float* logits, int64_t n) {
    using O = backend::Ops<B>;
    if (o_.greedy) return O::argmax(logits, n);
    const float inv_t = 1.0f / o_.temperature;
    if (!truncated(n)) return O::sample_softmax(logits, n, inv_t, uniform());
    std::vector<float> cand;
    std::vector<int32_t> ids;
    auto top = [&](int64_t k) {
      cand.resize(size_t(k));
      ids.resize(size_t(k));
      O::top_logits(logits, n, k, cand.data(), ids.data());
    };
    double total = 0;
    if (o_.top_k > 0 && o_.top_k < n) {
      top(o_.top_k);
    } else {  // top_p_prefix's doubling, on candidates
      total = O::softmax_sum(logits, n, inv_t);
      for (int64_t k = std::min<int64_t>(n, 64);; k = std::min<int64_t>(n, 4 * k)) {
        top(k);
        const double mx = double(cand[0]) * inv_t;
        double cum = 0;
        for (int64_t i = 0; i < k; ++i) cum += std::exp(double(cand[size_t(i)]) * inv_t - mx) / total;
        if (cum >= o_.top_p || k == n) break;
      }
    }
    std::vector<double> e;
    double sum = 0;
    const int64_t keep = weights(cand.data(), int64_t(cand.size()), total, e, sum);
    // draw() over the whole row walks the ids in ascending order; so do the kept candidates.
    std::vector<int64_t> by_id(static_cast<size_t>(keep));
    std::iota(by_id.begin(), by_id.end(), 0);
    std::sort(by_id.begin(), by_id.end(), [&](int64_t a, int64_t b) { return ids[size_t(a)] < ids[size_t(b)]; });
    return walk(
        uniform(), keep, [&](int64_t j) { return ids[size_t(by_id[size_t(j)])]; },
        [&](int64_t j) { return float(e[size_t(by_id[size_t(j)])] / sum); });
  }

  // One draw from a probability vector.
  int32_t draw(const std::vector<float>& p) {
    return walk(
        uniform(), int64_t(p.size()), [](int64_t i) { return int32_t(i); }, [&](int64_t i) { return p[size_t(i)]; });
  }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  // The draw: over ids ascending (id(j), mass(j) for j < count), the first at which u minus the
  // masses so far drops below 0; rounding can leave u slightly positive: then the last id with mass.
  template <class Id, class Mass>
  static int32_t walk(double u, int64_t count, Id id, Mass mass) {
    int32_t last = 0;
    for (int64_t j = 0; j < count; ++j) {
      const float p = mass(j);
      if (p <= 0) continue;
      last = id(j);
      u -= p;
      if (u < 0) return last;
    }
    return last;
  }

  // Whether top-k or top-p restricts the draw (otherwise every id keeps its softmax probability).
  bool truncated(int64_t n) const { return (o_.top_k > 0 && o_.top_k < n) || o_.top_p < 1.0f; }

  // From the candidates, largest first (cand[j]: the j-th largest logit, j < k) and, for top-p
  // without top-k, the softmax denominator over all ids (else 0): e[j] = exp(cand[j] / T - m),
  // the top-p cut (the smallest prefix whose probability reaches top_p), and `sum`, the kept
  // weights' total. Returns how many candidates are kept.
  int64_t weights(const float* cand, int64_t k, double total, std::vector<double>& e, double& sum) const {
    const float inv_t = 1.0f / o_.temperature;
    const double mx = double(cand[0]) * inv_t;
    e.resize(size_t(k));
    sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += (e[size_t(i)] = std::exp(double(cand[i]) * inv_t - mx));
    int64_t keep = k;
    if (o_.top_p < 1.0f) {
      const double z = total > 0 ? total : sum;  // `cand` is only the prefix top_p_prefix sorted
      double cum = 0;
      for (int64_t i = 0; i < k; ++i) {
        cum += e[size_t(i)] / z;
        if (cum >= o_.top_p) {
          keep = i + 1;
          break;
        }
      }
      sum = std::accumulate(e.begin(), e.begin() + keep, 0.0);
    }
    return keep;
  }

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
