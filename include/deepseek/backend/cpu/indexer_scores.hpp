// The DSA lightning indexer's score loop (nn/dsa.hpp): one query's index heads against a list of
// cached index keys,
//   I(t) = sum_h w_h ReLU(scale q_h . k_t)      q [H, D], w [H], k_t [D] (f32 or bf16 in the cache)
// Keys are taken kKeyBlock at a time, widened to f32 once, and scored for all H heads by one GEMM
// (S = Q K_b^T [H, r], Eigen), so each key is read once for every head (the per-head dot loop read it
// H times); blocks are split across threads. indexer_scores_reference is the plain loop it is tested
// against; the two differ in summation order only.
#pragma once

#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace deepseek::backend::cpu {

inline constexpr int64_t kKeyBlock = 128;

namespace indexer_detail {
inline void widen_key(const void* src, bool bf16, int64_t D, float* dst) {
  if (bf16) widen_bf16(static_cast<const uint16_t*>(src), D, dst);
  else std::memcpy(dst, src, size_t(D) * sizeof(float));
}
}  // namespace indexer_detail

// scores[t] for t < n; keys[t] is the address of key t's D values.
inline void indexer_scores(const float* q, const float* w, int64_t H, int64_t D, float scale, const void* const* keys,
                           bool bf16, int64_t n, float* scores) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const int64_t blocks = (n + kKeyBlock - 1) / kKeyBlock;
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    static thread_local std::vector<float> kbuf, sbuf;
    kbuf.resize(size_t(kKeyBlock * D));
    sbuf.resize(size_t(H * kKeyBlock));
    const ConstMap Q(q, H, D, Eigen::OuterStride<>(D));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t0 = b * kKeyBlock, r = std::min(kKeyBlock, n - t0);
      for (int64_t j = 0; j < r; ++j) indexer_detail::widen_key(keys[t0 + j], bf16, D, kbuf.data() + j * D);
      Map S(sbuf.data(), H, r, Eigen::OuterStride<>(kKeyBlock));
      S.noalias() = Q * ConstMap(kbuf.data(), r, D, Eigen::OuterStride<>(D)).transpose();
      float* out = scores + t0;
      std::fill(out, out + r, 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        const float* s = sbuf.data() + h * kKeyBlock;
        const float wh = w[h];
        for (int64_t j = 0; j < r; ++j) out[j] += wh * std::max(s[j] * scale, 0.0f);
      }
    }
  });
}

inline void indexer_scores_reference(const float* q, const float* w, int64_t H, int64_t D, float scale,
                                     const void* const* keys, bool bf16, int64_t n, float* scores) {
  std::vector<float> k(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    indexer_detail::widen_key(keys[t], bf16, D, k.data());
    double acc = 0;
    for (int64_t h = 0; h < H; ++h) {
      double d = 0;
      for (int64_t i = 0; i < D; ++i) d += double(q[h * D + i]) * k[size_t(i)];
      acc += double(w[h]) * std::max(d * scale, 0.0);
    }
    scores[t] = float(acc);
  }
}

}  // namespace deepseek::backend::cpu
