// Linear layers over weights in their checkpoint dtype: y[t, r] = sum_c W[r, c] * x[t, c].
//
//   W: BlockQuantMatrix [rows, cols] in f32, bf16 or f8_e4m3 (+ f32 block scales)
//   x: [n, cols] f32 (row stride ldx), y: [n, rows] f32 (row stride ldy)
//
// Versions, all tested against linear_reference (plain loops over BlockQuantMatrix::at):
//   gemv   n <= kGemvMaxTokens (decode, MTP verify): each weight row is decoded in registers
//          (bf16: shift; e4m3: widen through F16C) and dotted with every token; the scale of an
//          FP8 block multiplies the partial sum of that block. Memory-bound by design: a weight
//          byte is read once per call. Threads split the rows.
//   tiled  larger n (prefill): a tile of kTileRows rows is dequantized to f32 (exact) and Eigen's
//          GEMM multiplies it; f32 weights go to Eigen directly. Threads split the tiles.
// Row ranges [r0, r1) let MLA address one head's slice of kv_b_proj without copying.
#pragma once

#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/parallel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deepseek::backend::cpu {

inline constexpr int64_t kGemvMaxTokens = 4;
inline constexpr int64_t kTileRows = 64;

// Plain reference: no vectors, no threads, double accumulation.
inline void linear_reference(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1,
                             int64_t ldy = -1) {
  const int64_t rows = W.rows(), cols = W.cols();
  if (ldx < 0) ldx = cols;
  if (ldy < 0) ldy = rows;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += double(W.at(r, c)) * double(x[t * ldx + c]);
      y[t * ldy + r] = float(acc);
    }
}

// Dequantizes W[r, c0:c1) to f32 (exact).
inline void decode_row(const BlockQuantMatrix& W, int64_t r, int64_t c0, int64_t c1, float* out) {
  const int64_t cols = W.cols();
  switch (W.dtype()) {
    case DType::f32: std::copy(W.weight.data_as<const float>() + r * cols + c0, W.weight.data_as<const float>() + r * cols + c1, out); break;
    case DType::bf16: {
      const uint16_t* p = W.weight.data_as<const uint16_t>() + r * cols;
      int64_t c = c0;
#if DEEPSEEK_CPU_AVX2
      for (; c + 8 <= c1; c += 8) _mm256_storeu_ps(out + (c - c0), load_bf16x8(p + c));
#endif
      for (; c < c1; ++c) out[c - c0] = bf16_to_f32(p[c]);
      break;
    }
    case DType::f8_e4m3: {
      const uint8_t* p = W.weight.data_as<const uint8_t>() + r * cols;
      for (int64_t cb = c0; cb < c1;) {
        const int64_t ce = std::min(c1, (cb / W.block_cols + 1) * W.block_cols);
        const float s = W.scale(r, cb);
        int64_t c = cb;
#if DEEPSEEK_CPU_AVX2
        const __m256 vs = _mm256_set1_ps(s * 256.0f);
        for (; c + 8 <= ce; c += 8) _mm256_storeu_ps(out + (c - c0), _mm256_mul_ps(load_e4m3x8_div256(p + c), vs));
#endif
        for (; c < ce; ++c) out[c - c0] = f8_e4m3_to_f32(p[c]) * s;
        cb = ce;
      }
      break;
    }
    default: break;
  }
}

namespace detail {

// dot(W[r, c0:c1), x[c0:c1)) for one row; FP8 blocks are summed apart and scaled.
inline float dot_row(const BlockQuantMatrix& W, int64_t r, const float* x) {
  const int64_t cols = W.cols();
  switch (W.dtype()) {
    case DType::f32: {
      const float* p = W.weight.data_as<const float>() + r * cols;
      int64_t c = 0;
      float acc = 0;
#if DEEPSEEK_CPU_AVX2
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (; c + 16 <= cols; c += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + c), _mm256_loadu_ps(x + c), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p + c + 8), _mm256_loadu_ps(x + c + 8), a1);
      }
      acc = hsum(_mm256_add_ps(a0, a1));
#endif
      for (; c < cols; ++c) acc += p[c] * x[c];
      return acc;
    }
    case DType::bf16: {
      const uint16_t* p = W.weight.data_as<const uint16_t>() + r * cols;
      int64_t c = 0;
      float acc = 0;
#if DEEPSEEK_CPU_AVX2
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      for (; c + 16 <= cols; c += 16) {
        a0 = _mm256_fmadd_ps(load_bf16x8(p + c), _mm256_loadu_ps(x + c), a0);
        a1 = _mm256_fmadd_ps(load_bf16x8(p + c + 8), _mm256_loadu_ps(x + c + 8), a1);
      }
      acc = hsum(_mm256_add_ps(a0, a1));
#endif
      for (; c < cols; ++c) acc += bf16_to_f32(p[c]) * x[c];
      return acc;
    }
    case DType::f8_e4m3: {
      const uint8_t* p = W.weight.data_as<const uint8_t>() + r * cols;
      const float* srow = W.scale_inv.data_as<const float>() + (r / W.block_rows) * W.scale_inv.dim(1);
      float acc = 0;
      for (int64_t cb = 0, blk = 0; cb < cols; cb += W.block_cols, ++blk) {
        const int64_t ce = std::min(cols, cb + W.block_cols);
        int64_t c = cb;
        float part = 0;
#if DEEPSEEK_CPU_AVX2
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (; c + 16 <= ce; c += 16) {
          a0 = _mm256_fmadd_ps(load_e4m3x8_div256(p + c), _mm256_loadu_ps(x + c), a0);
          a1 = _mm256_fmadd_ps(load_e4m3x8_div256(p + c + 8), _mm256_loadu_ps(x + c + 8), a1);
        }
        part = hsum(_mm256_add_ps(a0, a1)) * 256.0f;
#endif
        for (; c < ce; ++c) part += f8_e4m3_to_f32(p[c]) * x[c];
        acc += part * srow[blk];
      }
      return acc;
    }
    default: return 0.0f;
  }
}

inline std::vector<float>& tile_buffer() {
  static thread_local std::vector<float> buf;
  return buf;
}

}  // namespace detail

// y[t, r - r0] = W[r, :] . x[t, :] for r in [r0, r1).
inline void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                        int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), rows = r1 - r0;
  if (ldx < 0) ldx = cols;
  if (ldy < 0) ldy = rows;
  if (rows <= 0 || n <= 0) return;
  if (n <= kGemvMaxTokens) {
    parallel_for(rows, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        for (int64_t t = 0; t < n; ++t) y[t * ldy + i] = detail::dot_row(W, r0 + i, x + t * ldx);
    }, 16);
    return;
  }
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const ConstMap X(x, n, cols, Eigen::OuterStride<>(ldx));
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  parallel_for(tiles, [&](int64_t b, int64_t e) {
    for (int64_t tile = b; tile < e; ++tile) {
      const int64_t i0 = tile * kTileRows, i1 = std::min(rows, i0 + kTileRows);
      Map Y(y + i0, n, i1 - i0, Eigen::OuterStride<>(ldy));
      if (W.dtype() == DType::f32) {
        const ConstMap T(W.weight.data_as<const float>() + (r0 + i0) * cols, i1 - i0, cols, Eigen::OuterStride<>(cols));
        Y.noalias() = X * T.transpose();
      } else {
        auto& buf = detail::tile_buffer();
        buf.resize(size_t((i1 - i0) * cols));
        for (int64_t i = i0; i < i1; ++i) decode_row(W, r0 + i, 0, cols, buf.data() + (i - i0) * cols);
        const ConstMap T(buf.data(), i1 - i0, cols, Eigen::OuterStride<>(cols));
        Y.noalias() = X * T.transpose();
      }
    }
  });
}

inline void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
  linear_rows(W, 0, W.rows(), x, n, y, ldx, ldy);
}

// y[t, c] = sum_{r in [r0, r1)} x[t, r - r0] * W[r, c]: the transposed product MLA's absorbed
// path needs (q_nope folded through W_UK). x: [n, r1 - r0], y: [n, cols].
inline void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n,
                                   float* y, int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), k = r1 - r0;
  if (ldx < 0) ldx = k;
  if (ldy < 0) ldy = cols;
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  auto& buf = detail::tile_buffer();
  buf.resize(size_t(k * cols));
  for (int64_t r = r0; r < r1; ++r) decode_row(W, r, 0, cols, buf.data() + (r - r0) * cols);
  Eigen::Map<const RowMat, 0, Eigen::OuterStride<>> X(x, n, k, Eigen::OuterStride<>(ldx));
  Eigen::Map<const RowMat> T(buf.data(), k, cols);
  Eigen::Map<RowMat, 0, Eigen::OuterStride<>> Y(y, n, cols, Eigen::OuterStride<>(ldy));
  Y.noalias() = X * T;
}

}  // namespace deepseek::backend::cpu
