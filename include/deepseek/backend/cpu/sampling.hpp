// The sampler's passes over a logits row (generate/sampler.hpp), as backend primitives so that a
// GPU samples without copying the row [vocab] to the host: only candidates, a sum or the id leave
// the device. With inv_t = 1 / temperature and m = max_i logits[i] * inv_t:
//
//   top_logits(x, n, k)          the k largest logits and their ids, in the sampler's order
//                                (descending logit, ties: the lower id first)
//   softmax_sum(x, n, inv_t)     Z = sum_i exp(x[i] * inv_t - m), in double (top-p's denominator)
//   sample_softmax(x, n, inv_t, u)
//                                one draw of plain temperature sampling: p_i = f32(exp(x[i] inv_t - m) / Z),
//                                the first id i (ascending) at which u - (p_0 + ... + p_i) < 0 with u
//                                in [0, 1); rounding can leave u >= the whole sum: then the last id
//                                with p_i > 0
//
// These are the plain references (sequential sums in id order) every other backend is tested
// against; Sampler::sample on host logits computes the same values through the same steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace deepseek::backend::cpu {

// values[j], ids[j] for j < k: the k largest of x[0, n) (k <= n), descending, ties by lower id.
inline void top_logits(const float* x, int64_t n, int64_t k, float* values, int32_t* ids) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [x](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  if (k < n) std::nth_element(order.begin(), order.begin() + k, order.end(), by_logit);
  std::sort(order.begin(), order.begin() + k, by_logit);
  for (int64_t j = 0; j < k; ++j) {
    ids[j] = order[size_t(j)];
    values[j] = x[order[size_t(j)]];
  }
}

inline double softmax_sum(const float* x, int64_t n, float inv_t) {
  const double m = double(*std::max_element(x, x + n)) * inv_t;
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp(double(x[i]) * inv_t - m);
  return z;
}

inline int32_t sample_softmax(const float* x, int64_t n, float inv_t, double u) {
  const double m = double(*std::max_element(x, x + n)) * inv_t, z = softmax_sum(x, n, inv_t);
  int32_t last = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float p = float(std::exp(double(x[i]) * inv_t - m) / z);
    if (p <= 0) continue;
    last = int32_t(i);
    u -= p;
    if (u < 0) return int32_t(i);
  }
  return last;
}

}  // namespace deepseek::backend::cpu
