// The DSA indexer's activation work on the CPU (nn/dsa.hpp has the math): key and query
// preparation (LayerNorm, RoPE, the FP8 Hadamard simulation) and the top-k selection over the
// cached keys (scores: indexer_scores.hpp).
#pragma once

#include "deepseek/backend/cpu/indexer_scores.hpp"
#include "deepseek/backend/cpu/rope.hpp"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/cache_view.hpp"
#include "deepseek/core/dtype.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace deepseek::backend::cpu {

namespace indexer_detail {

// LayerNorm of one key, mean and variance in double (as the reference's f32 LayerNorm up to rounding).
inline void key_layer_norm(float* v, int64_t D, const float* w, const float* b, float eps) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < D; ++i) mean += v[i];
  mean /= double(D);
  for (int64_t i = 0; i < D; ++i) var += (v[i] - mean) * (v[i] - mean);
  const float inv = float(1.0 / std::sqrt(var / double(D) + double(eps)));
  for (int64_t i = 0; i < D; ++i) v[i] = (v[i] - float(mean)) * inv * w[i] + b[i];
}

// In place: v <- e4m3 round trip of (1/sqrt(D)) H_D v, one ue8m0 scale per block of 128 values.
// DeepSeek-V3.2-Exp inference: rotate_activation = hadamard_transform(x, scale = D^-0.5) (Sylvester
// order, the butterfly below), then kernel.py act_quant(x, block_size = 128, scale_fmt = "ue8m0"):
// per block of 128 values, amax = max(|x|, 1e-4), s = 2^ceil(log2(amax * (1/448))) exactly (its
// fast_round_scale reads the exponent bits, + 1 if any mantissa bit is set), x <- e4m3(clamp(x / s,
// +-448)) s. fp8_index's relu(q8 . k8) q_s k_s w / sqrt(D) is then the dequantized score the
// selection computes (power-of-two scales: only f32 summation order differs). Dims below 128 form one block.
inline void fp8_hadamard(float* v, int64_t D) {
  constexpr int64_t kBlock = 128;
  for (int64_t len = 1; len < D; len *= 2)
    for (int64_t i = 0; i < D; i += 2 * len)
      for (int64_t j = i; j < i + len; ++j) {
        const float a = v[j], b = v[j + len];
        v[j] = a + b;
        v[j + len] = a - b;
      }
  const float norm = 1.0f / std::sqrt(float(D));
  for (int64_t i = 0; i < D; ++i) v[i] *= norm;
  for (int64_t b0 = 0; b0 < D; b0 += kBlock) {
    const int64_t b1 = std::min(D, b0 + kBlock);
    float amax = 1e-4f;
    for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float sigma = pow2_ceil(amax * (1.0f / 448.0f));
    for (int64_t i = b0; i < b1; ++i) v[i] = f8_e4m3_to_f32(f32_to_f8_e4m3(std::clamp(v[i] / sigma, -448.0f, 448.0f))) * sigma;
  }
}

}  // namespace indexer_detail

// Keys k [n, D] of positions p0 ..: LayerNorm (k_norm), RoPE on the first r.dim dims, and with
// fp8_hadamard the rotation + e4m3 round trip.
inline void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps, int64_t p0,
                         const RopeParams& r, bool fp8_hadamard) {
  for (int64_t t = 0; t < n; ++t) {
    float* kt = k + t * D;
    indexer_detail::key_layer_norm(kt, D, norm_weight, norm_bias, eps);
    rope_one(kt, p0 + t, r);
    if (fp8_hadamard) indexer_detail::fp8_hadamard(kt, D);
  }
}

// Queries q [n, H, D] of positions p0 ..: RoPE on each head's first r.dim dims (+ the FP8 rotation).
inline void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const RopeParams& r, bool fp8_hadamard) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* v = q + (t * H + h) * D;
      rope_one(v, p0 + t, r);
      if (fp8_hadamard) indexer_detail::fp8_hadamard(v, D);
    }
}

// For each query s < n at position p0 + s (q [n, H, D], head weights w [n, H]): the positions of
// the topk largest scores among the keys of rows [0, p0 + s] (columns [col, col + D) of the cache),
// ascending, into idx[s * topk, + count[s]); ties go to the lower position. count[s] =
// min(topk, p0 + s + 1); when every position fits, none is scored.
inline void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                           const CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count) {
  const KeyFormat key_format = cache.dtype == CacheDType::f32 ? KeyFormat::f32
                               : cache.index_fp8 > 0          ? KeyFormat::fp8
                                                              : KeyFormat::bf16;
  std::vector<float> score;
  std::vector<const void*> keys;
  std::vector<int32_t> order;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t len = p0 + s + 1;
    int32_t* out = idx + s * topk;
    if (len <= topk) {  // everything is selected: no need to score
      for (int64_t t = 0; t < len; ++t) out[t] = int32_t(t);
      count[s] = int32_t(len);
      continue;
    }
    score.resize(size_t(len));
    if (keys.empty())  // the key addresses of rows [0, p0 + n), gathered once for every query
      for (int64_t t = 0; t < p0 + n; ++t) keys.push_back(cache.values_at(t, col));
    indexer_scores(q + s * H * D, w + s * H, H, D, scale, keys.data(), key_format, len, score.data());
    order.resize(size_t(len));
    for (int64_t t = 0; t < len; ++t) order[size_t(t)] = int32_t(t);
    auto before = [&](int32_t a, int32_t b) {
      return score[size_t(a)] > score[size_t(b)] || (score[size_t(a)] == score[size_t(b)] && a < b);
    };
    std::nth_element(order.begin(), order.begin() + topk, order.end(), before);
    std::sort(order.begin(), order.begin() + topk);
    std::copy(order.begin(), order.begin() + topk, out);
    count[s] = int32_t(topk);
  }
}

}  // namespace deepseek::backend::cpu
