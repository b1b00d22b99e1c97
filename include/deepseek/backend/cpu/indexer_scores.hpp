// The DSA lightning indexer's score loop (nn/dsa.hpp): one query's index heads against a list of
// cached index keys,
//   I(t) = sum_h w_h ReLU(scale q_h . k_t)      q [H, D], w [H], k_t [D]
// A key is stored (KeyFormat) as D f32 or bf16 values, or as D e4m3 bytes followed by one f32 scale
// per 128 of them (V3.2's FP8 indexer, nn/kv_cache.hpp); widening to f32 is exact in every case.
// Keys are taken kKeyBlock at a time, widened to f32 once, and scored for all H heads by one GEMM
// (S = Q K_b^T [H, r], Eigen), so each key is read once for every head (the per-head dot loop read it
// H times); blocks are split across threads. indexer_scores_reference is the plain loop it is tested
// against; the two differ in summation order only.
#pragma once

#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace deepseek::backend::cpu {

inline constexpr int64_t kKeyBlock = 128;

enum class KeyFormat { f32, bf16, fp8 };

namespace indexer_detail {
inline void widen_key(const void* src, KeyFormat fmt, int64_t D, float* dst) {
  if (fmt == KeyFormat::bf16) {
    widen_bf16(static_cast<const uint16_t*>(src), D, dst);
  } else if (fmt == KeyFormat::f32) {
    std::memcpy(dst, src, size_t(D) * sizeof(float));
  } else {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t b0 = 0; b0 < D; b0 += 128) {
      float s;
      std::memcpy(&s, b + D + 4 * (b0 / 128), sizeof(float));
      widen_e4m3_scaled(b + b0, std::min<int64_t>(128, D - b0), s, dst + b0);
    }
  }
}
}  // namespace indexer_detail

// scores[t] for t < n; keys[t] is the address of key t's D values.
inline void indexer_scores(const float* q, const float* w, int64_t H, int64_t D, float scale, const void* const* keys,
                           KeyFormat fmt, int64_t n, float* scores) {
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
      for (int64_t j = 0; j < r; ++j) indexer_detail::widen_key(keys[t0 + j], fmt, D, kbuf.data() + j * D);
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
                                     const void* const* keys, KeyFormat fmt, int64_t n, float* scores) {
  std::vector<float> k(static_cast<size_t>(D));
  for (int64_t t = 0; t < n; ++t) {
    indexer_detail::widen_key(keys[t], fmt, D, k.data());
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
