// The CPU loops of the DeepSeek-OCR vision encoder (SAM-B ViTDet + CLIP-L): activations are f32,
// images and feature maps channels-last ([H, W, C] row-major, i.e. [H*W, C] token rows).
//
//   layernorm          y = (x - mean) / sqrt(var + eps) * w + b per row (biased variance; LayerNorm
//                      and SAM's LayerNorm2d on channels-last maps are the same loop)
//   gelu_erf           x * (1 + erf(x / sqrt 2)) / 2 (SAM's nn.GELU), quick_gelu x * sigmoid(1.702 x) (CLIP)
//   im2col_hwc         3x3 (any k, stride, zero pad) patches of a channels-last map, columns (ky, kx, c)
//   patchify_chw       non-overlapping p x p patches of a CHW image, columns (c, ky, kx) = Conv2d's weight order
//   vit_attention      multi-head attention over a grid, global or in w x w windows (ViTDet: the grid is
//                      zero-padded after the norm, so padded keys/values are the qkv bias, unmasked), with
//                      SAM's decomposed relative-position bias q . Rh[qy - ky] + q . Rw[qx - kx] (unscaled q)
//   resize_bicubic_aa  torch F.interpolate(bicubic, antialias=True, align_corners=False) of a channels-last
//                      table: Keys cubic a = -0.5, support widened by the scale when shrinking, normalised
//                      weights, separable (width, then height); weights in f32 as PyTorch computes them
//   resize_linear      torch F.interpolate(linear, align_corners=False) along the rows of a [L, C] table
//   round_to_dtype     f32 values rounded to bf16 / f16 precision in place (resampled tables cast back
//                      to the parameters' dtype, as the official bf16 run's `.to(dtype)`)
//   repeat_row         one [d] row written to n strided rows (OCR's image_newline / view_seperator rows)
//
// Versions: exp/erf/sigmoid, layernorm and softmax have AVX2 bodies with scalar twins that compute the
// same formulas (tests compare them); attention multiplies with Eigen (Q K^T and P V per block of 128
// queries and tile of 1024 keys, online softmax: one pass over the logits for scale + bias + max, one
// for exp + sum, the division applied to the output), the resamplers are plain loops. erf is
// Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), the formula PyTorch's vectorised CPU erf uses, so GELU
// agrees with torch's to a few f32 ulp.
#pragma once

#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace deepseek::backend::cpu {

namespace vision_detail {
constexpr float kErfP = 0.3275911f, kErfA1 = 0.254829592f, kErfA2 = -0.284496736f, kErfA3 = 1.421413741f,
                kErfA4 = -1.453152027f, kErfA5 = 1.061405429f;

inline float erf_as(float x) {
  const float a = std::fabs(x), t = 1.0f / (kErfP * a + 1.0f);
  const float r = (((kErfA5 * t + kErfA4) * t + kErfA3) * t + kErfA2) * t + kErfA1;
  const float e = 1.0f - r * t * std::exp(-x * x);
  return x < 0 ? -e : e;
}

#if DEEPSEEK_CPU_AVX2
// exp(x) for x in [-87.3, 88.3] (clamped outside: 2^n stays a normal number): x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial
// (Cephes' expf coefficients), 2^n through the exponent bits; about 1 ulp.
inline __m256 exp256(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
inline __m256 erf256(__m256 x) {
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f)), a = _mm256_xor_ps(x, sign);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(kErfP), a, one));
  __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(kErfA5), t, _mm256_set1_ps(kErfA4));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kErfA3));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kErfA2));
  r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(kErfA1));
  const __m256 e = exp256(_mm256_xor_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.0f)));
  return _mm256_xor_ps(_mm256_fnmadd_ps(_mm256_mul_ps(r, t), e, one), sign);
}
#endif
}  // namespace vision_detail

// y[t] = (x[t] - mean) / sqrt(var + eps) * w + b over rows of length d (two passes, biased variance).
inline void layernorm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y,
                      int64_t ldx = -1, int64_t ldy = -1) {
  if (ldx < 0) ldx = d;
  if (ldy < 0) ldy = d;
  parallel_for(
      n,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const float* xr = x + t * ldx;
          float* yr = y + t * ldy;
          int64_t i = 0;
          float s = 0;
#if DEEPSEEK_CPU_AVX2
          __m256 acc = _mm256_setzero_ps();
          for (; i + 8 <= d; i += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(xr + i));
          s = hsum(acc);
#endif
          for (; i < d; ++i) s += xr[i];
          const float mean = s / float(d);
          float v = 0;
          i = 0;
#if DEEPSEEK_CPU_AVX2
          const __m256 vm = _mm256_set1_ps(mean);
          acc = _mm256_setzero_ps();
          for (; i + 8 <= d; i += 8) {
            const __m256 c = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vm);
            acc = _mm256_fmadd_ps(c, c, acc);
          }
          v = hsum(acc);
#endif
          for (; i < d; ++i) v += (xr[i] - mean) * (xr[i] - mean);
          const float inv = 1.0f / std::sqrt(v / float(d) + eps);
          i = 0;
#if DEEPSEEK_CPU_AVX2
          const __m256 vi = _mm256_set1_ps(inv);
          for (; i + 8 <= d; i += 8) {
            const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vi);
            _mm256_storeu_ps(yr + i, _mm256_fmadd_ps(c, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
          }
#endif
          for (; i < d; ++i) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
        }
      },
      16);
}

// x[t, :] += bias for n rows of length d (row stride ld).
inline void add_bias(float* x, int64_t n, int64_t d, const float* bias, int64_t ld = -1) {
  if (ld < 0) ld = d;
  for (int64_t t = 0; t < n; ++t) {
    float* r = x + t * ld;
    int64_t i = 0;
#if DEEPSEEK_CPU_AVX2
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(r + i, _mm256_add_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(bias + i)));
#endif
    for (; i < d; ++i) r[i] += bias[i];
  }
}

// y[i] += x[i]
inline void add(float* y, const float* x, int64_t n) {
  int64_t i = 0;
#if DEEPSEEK_CPU_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) y[i] += x[i];
}

// x = x (1 + erf(x / sqrt 2)) / 2, in place. `scalar` forces the plain twin (tests).
inline void gelu_erf(float* x, int64_t n, bool scalar = false) {
  constexpr float kRsqrt2 = 0.70710678118654752f;
  parallel_for(
      (n + 4095) / 4096,
      [&](int64_t b, int64_t e) {
        int64_t i = b * 4096;
        const int64_t end = std::min(n, e * 4096);
#if DEEPSEEK_CPU_AVX2
        if (!scalar) {
          const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(kRsqrt2);
          for (; i + 8 <= end; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(v, half), _mm256_add_ps(one, vision_detail::erf256(_mm256_mul_ps(v, k)))));
          }
        }
#else
        (void)scalar;
#endif
        for (; i < end; ++i) x[i] = x[i] * 0.5f * (1.0f + vision_detail::erf_as(x[i] * kRsqrt2));
      });
}

// x = x sigmoid(1.702 x), in place (CLIP's quick_gelu).
inline void quick_gelu(float* x, int64_t n, bool scalar = false) {
  parallel_for(
      (n + 4095) / 4096,
      [&](int64_t b, int64_t e) {
        int64_t i = b * 4096;
        const int64_t end = std::min(n, e * 4096);
#if DEEPSEEK_CPU_AVX2
        if (!scalar) {
          const __m256 one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(-1.702f);
          for (; i + 8 <= end; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, vision_detail::exp256(_mm256_mul_ps(v, k))));
            _mm256_storeu_ps(x + i, _mm256_mul_ps(v, s));
          }
        }
#else
        (void)scalar;
#endif
        for (; i < end; ++i) x[i] = x[i] * (1.0f / (1.0f + std::exp(-1.702f * x[i])));
      });
}

// x[i] = exp(x[i] - m) for i < n; returns the sum.
inline float exp_sum(float* x, int64_t n, float m, bool scalar = false) {
  int64_t i = 0;
  float sum = 0;
#if DEEPSEEK_CPU_AVX2
  if (!scalar) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      const __m256 e = vision_detail::exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
      _mm256_storeu_ps(x + i, e);
      acc = _mm256_add_ps(acc, e);
    }
    sum = hsum(acc);
  }
#else
  (void)scalar;
#endif
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - m));
  return sum;
}

// s[j] = s[j] * scale + (a + b[j]) (b null: + 0) for j < n; returns max_j s[j].
inline float scale_bias_max(float* s, int64_t n, float scale, float a, const float* b) {
  int64_t j = 0;
  float mx = -std::numeric_limits<float>::infinity();
#if DEEPSEEK_CPU_AVX2
  const __m256 vs = _mm256_set1_ps(scale), va = _mm256_set1_ps(a);
  __m256 vm = _mm256_set1_ps(mx);
  for (; j + 8 <= n; j += 8) {
    const __m256 bias = b ? _mm256_add_ps(va, _mm256_loadu_ps(b + j)) : va;
    const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(s + j), vs, bias);
    _mm256_storeu_ps(s + j, v);
    vm = _mm256_max_ps(vm, v);
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  mx = _mm_cvtss_f32(m4);
#endif
  for (; j < n; ++j) {
    s[j] = s[j] * scale + (a + (b ? b[j] : 0.0f));
    mx = std::max(mx, s[j]);
  }
  return mx;
}

// In-place softmax of each of the m rows of length n (row stride ld).
inline void softmax_rows(float* s, int64_t m, int64_t n, int64_t ld, bool scalar = false) {
  for (int64_t r = 0; r < m; ++r) {
    float* x = s + r * ld;
    const float mx = *std::max_element(x, x + n);
    const float inv = 1.0f / exp_sum(x, n, mx, scalar);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
  }
}

// Patches of a channels-last map x [H, W, C] for output pixels [p0, p1) of a k x k convolution with
// `stride` and zero padding `pad`: cols [(p1 - p0), k * k * C], column (ky * k + kx) * C + c.
inline void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad, int64_t Wo,
                       int64_t p0, int64_t p1, float* cols) {
  const int64_t width = k * k * C;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t oy = p / Wo, ox = p % Wo;
    float* row = cols + (p - p0) * width;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t iy = oy * stride - pad + ky;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ix = ox * stride - pad + kx;
        float* dst = row + (ky * k + kx) * C;
        if (iy < 0 || iy >= H || ix < 0 || ix >= W) std::fill(dst, dst + C, 0.0f);
        else std::memcpy(dst, x + (iy * W + ix) * C, size_t(C) * sizeof(float));
      }
    }
  }
}

// Non-overlapping p x p patches of a CHW image x [C, H, W] (H, W multiples of p): cols [(H/p)(W/p), C p p],
// patch (py, px) in row-major order, column (c * p + ky) * p + kx (a Conv2d weight [out, C, p, p] row).
inline void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
  const int64_t ho = H / p, wo = W / p, width = C * p * p;
  for (int64_t py = 0; py < ho; ++py)
    for (int64_t px = 0; px < wo; ++px) {
      float* row = cols + (py * wo + px) * width;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < p; ++ky)
          std::memcpy(row + (c * p + ky) * p, x + (c * H + py * p + ky) * W + px * p, size_t(p) * sizeof(float));
    }
}

// Multi-head attention over a grid of H x W tokens (row-major), ViTDet style.
//   qkv     [H * W, 3 * heads * hd]: per token q | k | v, each head-major (head h at h * hd)
//   window  > 0: the grid is cut into window x window regions after zero-padding it bottom/right to a
//           multiple of the window; a padded token's q, k, v are pad_qkv (the qkv bias: the official
//           code pads the normed input with zeros) and its keys are NOT masked; outputs of padded
//           queries are dropped. 0: one region, the whole grid.
//   rel_h   [2 rh - 1, hd], rel_w [2 rw - 1, hd] for regions of rh x rw tokens, or null (no bias):
//           logit(q, k) = scale q.k + q.rel_h[qy - ky + rh - 1] + q.rel_w[qx - kx + rw - 1]
//           (q unscaled in the bias terms, as add_decomposed_rel_pos computes them)
//   out     [H * W, heads * hd], head-major (as heads are concatenated before the output projection)
// Work items (region, head, block of kQueryBlock queries) run on the thread pool. Keys are visited in
// tiles of kKeyTile with an online softmax (running max and sum; the output is rescaled when the max
// grows and divided by the sum once at the end), so a tile of logits stays in L2 even for the 4096
// keys of a global block at S = 1024; Eigen multiplies Q K^T and P V per tile.
inline constexpr int64_t kQueryBlock = 128, kKeyTile = 1024;
inline void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                          const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const int64_t C = heads * hd, ld = 3 * C;
  const int64_t rh = window > 0 ? window : H, rw = window > 0 ? window : W;
  const int64_t nry = (H + rh - 1) / rh, nrx = (W + rw - 1) / rw, n = rh * rw;
  const int64_t qblocks = (n + kQueryBlock - 1) / kQueryBlock;
  const bool gather = window > 0;  // a window's tokens are not contiguous: copy them (and the pads) per item
  parallel_for(nry * nrx * heads * qblocks, [&](int64_t i0, int64_t i1) {
    static thread_local std::vector<float> kbuf, vbuf, qbuf, sbuf, obuf, bh, bw, mx, sum;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t qb = item % qblocks, h = (item / qblocks) % heads, region = item / (qblocks * heads);
      const int64_t ry = region / nrx, rx = region % nrx;
      const int64_t m0 = qb * kQueryBlock, m = std::min(kQueryBlock, n - m0);
      // Token j of the region -> its row of qkv, or pad_qkv for a padded position.
      auto row = [&](int64_t j) -> const float* {
        const int64_t y = ry * rh + j / rw, x = rx * rw + j % rw;
        return (y < H && x < W) ? qkv + (y * W + x) * ld : pad_qkv;
      };
      const float *K, *V, *Q;
      int64_t ldk = ld, ldq = ld;
      if (gather) {
        kbuf.resize(size_t(n * hd));
        vbuf.resize(size_t(n * hd));
        qbuf.resize(size_t(m * hd));
        for (int64_t j = 0; j < n; ++j) {
          const float* r = row(j);
          std::memcpy(kbuf.data() + j * hd, r + C + h * hd, size_t(hd) * sizeof(float));
          std::memcpy(vbuf.data() + j * hd, r + 2 * C + h * hd, size_t(hd) * sizeof(float));
        }
        for (int64_t j = 0; j < m; ++j) std::memcpy(qbuf.data() + j * hd, row(m0 + j) + h * hd, size_t(hd) * sizeof(float));
        K = kbuf.data();
        V = vbuf.data();
        Q = qbuf.data();
        ldk = ldq = hd;
      } else {
        K = qkv + C + h * hd;
        V = qkv + 2 * C + h * hd;
        Q = qkv + m0 * ld + h * hd;
      }
      if (rel_h) {
        // bh[i][ky] = q_i . rel_h[qy - ky + rh - 1], bw[i][kx] = q_i . rel_w[qx - kx + rw - 1] (unscaled q)
        bh.resize(size_t(m * rh));
        bw.resize(size_t(m * rw));
        for (int64_t i = 0; i < m; ++i) {
          const int64_t qy = (m0 + i) / rw, qx = (m0 + i) % rw;
          const Eigen::Map<const Eigen::VectorXf> q(Q + i * ldq, hd);
          for (int64_t ky = 0; ky < rh; ++ky)
            bh[size_t(i * rh + ky)] = q.dot(Eigen::Map<const Eigen::VectorXf>(rel_h + (qy - ky + rh - 1) * hd, hd));
          for (int64_t kx = 0; kx < rw; ++kx)
            bw[size_t(i * rw + kx)] = q.dot(Eigen::Map<const Eigen::VectorXf>(rel_w + (qx - kx + rw - 1) * hd, hd));
        }
      }
      const int64_t kt = std::min(n, kKeyTile);
      sbuf.resize(size_t(m * kt));
      obuf.assign(size_t(m * hd), 0.0f);
      mx.assign(size_t(m), -std::numeric_limits<float>::infinity());
      sum.assign(size_t(m), 0.0f);
      const ConstMap Qm(Q, m, hd, Eigen::OuterStride<>(ldq));
      Map O(obuf.data(), m, hd, Eigen::OuterStride<>(hd));
      for (int64_t j0 = 0; j0 < n; j0 += kt) {
        const int64_t nk = std::min(kt, n - j0);
        Map S(sbuf.data(), m, nk, Eigen::OuterStride<>(kt));
        S.noalias() = Qm * ConstMap(K + j0 * ldk, nk, hd, Eigen::OuterStride<>(ldk)).transpose();
        for (int64_t i = 0; i < m; ++i) {
          float* s = sbuf.data() + i * kt;
          // logits = scale q.k (+ bias), and the tile's row max; keys in runs of one key row (ky)
          float tmax = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < nk;) {
            const int64_t key = j0 + j, kx0 = rel_h ? key % rw : 0, len = rel_h ? std::min(nk - j, rw - kx0) : nk - j;
            tmax = std::max(tmax, scale_bias_max(s + j, len, scale, rel_h ? bh[size_t(i * rh + key / rw)] : 0.0f,
                                                 rel_h ? bw.data() + i * rw + kx0 : nullptr));
            j += len;
          }
          const float m_new = std::max(mx[size_t(i)], tmax);
          const float corr = std::exp(mx[size_t(i)] - m_new);  // 0 on the first tile (-inf)
          mx[size_t(i)] = m_new;
          sum[size_t(i)] = sum[size_t(i)] * corr + exp_sum(s, nk, m_new);
          if (j0 > 0)
            for (int64_t d = 0; d < hd; ++d) obuf[size_t(i * hd + d)] *= corr;
        }
        O.noalias() += S * ConstMap(V + j0 * ldk, nk, hd, Eigen::OuterStride<>(ldk));
      }
      for (int64_t i = 0; i < m; ++i) {
        const int64_t j = m0 + i, y = ry * rh + j / rw, x = rx * rw + j % rw;
        if (y >= H || x >= W) continue;
        const float inv = 1.0f / sum[size_t(i)];
        float* o = out + (y * W + x) * C + h * hd;
        for (int64_t d = 0; d < hd; ++d) o[d] = obuf[size_t(i * hd + d)] * inv;
      }
    }
  });
}

// x rounded to f32 as written: a compiler may not fuse the product that produced it into an FMA with
// the next operation (-ffp-contract), which would move torch's source coordinates by an ulp.
inline float no_contract(float x) {
  volatile float v = x;
  return v;
}

// PyTorch's antialiased bicubic weights along one axis (n_in -> n_out, align_corners False): for output
// i, taps start[i] .. start[i] + taps[i] - 1 with weights w[i * max_taps + j], normalised to sum 1.
struct AaAxis {
  std::vector<int64_t> start, taps;
  std::vector<float> w;
  int64_t max_taps = 0;
};
inline AaAxis bicubic_aa_axis(int64_t n_in, int64_t n_out) {
  auto cubic = [](float x) {  // Keys, a = -0.5
    constexpr float a = -0.5f;
    x = std::fabs(x);
    if (x < 1.0f) return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return (((x - 5.0f) * x + 8.0f) * x - 4.0f) * a;
    return 0.0f;
  };
  AaAxis ax;
  const float scale = float(n_in) / float(n_out);
  const float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
  const float inv = scale >= 1.0f ? 1.0f / scale : 1.0f;
  ax.max_taps = int64_t(std::ceil(support)) * 2 + 1;
  ax.start.resize(size_t(n_out));
  ax.taps.resize(size_t(n_out));
  ax.w.assign(size_t(n_out * ax.max_taps), 0.0f);
  for (int64_t i = 0; i < n_out; ++i) {
    const float center = no_contract(scale * (float(i) + 0.5f));
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5f), 0);
    const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5f), n_in);
    const int64_t taps = std::min(hi - lo, ax.max_taps);
    float* w = ax.w.data() + i * ax.max_taps;
    float total = 0;
    for (int64_t j = 0; j < taps; ++j) total += (w[j] = cubic((float(j + lo) - center + 0.5f) * inv));
    if (total != 0.0f)
      for (int64_t j = 0; j < taps; ++j) w[j] /= total;
    ax.start[size_t(i)] = lo;
    ax.taps[size_t(i)] = taps;
  }
  return ax;
}

// x [h_in, w_in, C] -> y [h_out, w_out, C] (channels-last), bicubic antialias, width first then height.
inline void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out, float* y) {
  const AaAxis ax = bicubic_aa_axis(w_in, w_out), ay = bicubic_aa_axis(h_in, h_out);
  std::vector<float> tmp(size_t(h_in * w_out * C), 0.0f);
  for (int64_t r = 0; r < h_in; ++r)
    for (int64_t o = 0; o < w_out; ++o) {
      float* dst = tmp.data() + (r * w_out + o) * C;
      for (int64_t j = 0; j < ax.taps[size_t(o)]; ++j) {
        const float wj = ax.w[size_t(o * ax.max_taps + j)];
        const float* src = x + (r * w_in + ax.start[size_t(o)] + j) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += wj * src[c];
      }
    }
  std::fill(y, y + h_out * w_out * C, 0.0f);
  for (int64_t o = 0; o < h_out; ++o)
    for (int64_t j = 0; j < ay.taps[size_t(o)]; ++j) {
      const float wj = ay.w[size_t(o * ay.max_taps + j)];
      const float* src = tmp.data() + (ay.start[size_t(o)] + j) * w_out * C;
      float* dst = y + o * w_out * C;
      for (int64_t k = 0; k < w_out * C; ++k) dst[k] += wj * src[k];
    }
}

// x [L, C] -> y [M, C]: linear interpolation along L, align_corners False (source index
// (i + 0.5) L / M - 0.5 clamped at 0; the upper neighbour clamped at L - 1), in f32 as PyTorch.
inline void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y) {
  const float scale = float(L) / float(M);
  for (int64_t i = 0; i < M; ++i) {
    const float src = std::max(no_contract(scale * (float(i) + 0.5f)) - 0.5f, 0.0f);
    const int64_t i0 = std::min<int64_t>(int64_t(src), L - 1);
    const int64_t i1 = i0 + (i0 < L - 1 ? 1 : 0);
    const float l1 = src - float(i0), l0 = 1.0f - l1;
    for (int64_t c = 0; c < C; ++c) y[i * C + c] = l0 * x[i0 * C + c] + l1 * x[i1 * C + c];
  }
}

// x[i] rounded to d's precision (round to nearest even) for i < n: bf16, f16; f32 (or any other dtype) leaves x.
inline void round_to_dtype(float* x, int64_t n, DType d) {
  if (d == DType::bf16)
    for (int64_t i = 0; i < n; ++i) x[i] = round_to_bf16(x[i]);
  else if (d == DType::f16)
    for (int64_t i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

// y[r * ldy + c] = row[c] for r < n, c < d.
inline void repeat_row(const float* row, int64_t d, int64_t n, float* y, int64_t ldy) {
  for (int64_t r = 0; r < n; ++r) std::memcpy(y + r * ldy, row, size_t(d) * sizeof(float));
}

}  // namespace deepseek::backend::cpu
