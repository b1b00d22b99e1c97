// Elementwise and row-wise primitives of the CPU backend (all activations are f32).
#pragma once

#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/core/checked.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace deepseek::backend::cpu {

// y[t] = w * x[t] / sqrt(mean(x[t]^2) + eps), rows of length d. As transformers: normalise in f32,
// then multiply by the weight.
inline void rmsnorm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, int64_t ldx = -1,
                    int64_t ldy = -1) {
  if (ldx < 0) ldx = d;
  if (ldy < 0) ldy = d;
  for (int64_t t = 0; t < n; ++t) {
    const float* xr = x + t * ldx;
    float* yr = y + t * ldy;
    float ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / float(d) + eps);
    for (int64_t i = 0; i < d; ++i) yr[i] = w[i] * (xr[i] * inv);
  }
}

// g[i] = silu(g[i]) * u[i]
inline void silu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// In-place softmax over x[0:n).
inline void softmax(float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / s;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float acc = 0;
#if DEEPSEEK_CPU_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), a1);
  }
  acc = hsum(_mm256_add_ps(a0, a1));
#endif
  for (; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// y[i] += a * x[i]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#if DEEPSEEK_CPU_AVX2
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += a * x[i];
}

// dst[i] = bf16 h[i] as f32 for i < n (exact: bf16 is the top half of an f32); cached bf16 rows and
// keys are read through it.
inline void widen_bf16(const uint16_t* h, int64_t n, float* dst) {
  int64_t i = 0;
#if DEEPSEEK_CPU_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16x8(h + i));
#endif
  for (; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
}

// dst[0, n) = e4m3 bytes b[0, n) times s (exact: e4m3 x a power-of-two scale; FP8 cache rows and
// FP8 index keys, one scale per block).
inline void widen_e4m3_scaled(const uint8_t* b, int64_t n, float s, float* dst) {
  int64_t i = 0;
#if DEEPSEEK_CPU_AVX2
  const __m256 vs = _mm256_set1_ps(s * 256.0f);  // load_e4m3x16_div256 returns value / 256
  for (; i + 16 <= n; i += 16) {
    __m256 lo, hi;
    load_e4m3x16_div256(b + i, lo, hi);
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(lo, vs));
    _mm256_storeu_ps(dst + i + 8, _mm256_mul_ps(hi, vs));
  }
#endif
  for (; i < n; ++i) dst[i] = f8_e4m3_to_f32(b[i]) * s;
}

// A vector of any float dtype as f32 (norm weights, biases: small, converted once at load).
inline void to_f32(const TensorView& v, float* out) {
  const int64_t n = v.numel();
  switch (v.dtype()) {
    case DType::f32: std::copy(v.data_as<const float>(), v.data_as<const float>() + n, out); break;
    case DType::bf16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(v.data_as<const uint16_t>()[i]);
      break;
    case DType::f16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(v.data_as<const uint16_t>()[i]);
      break;
    default: break;  // callers admit only float dtypes
  }
}

// out[i, :] = table[ids[i], :] as f32 for a [vocab, d] table of any float dtype (the caller has
// checked every id against vocab).
inline void embedding(const TensorView& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t d = table.dim(1);
  for (int64_t i = 0; i < n; ++i) to_f32(table.slice_rows(ids[i], ids[i] + 1), out + i * d);
}

// True when none of x[0, n) is NaN or infinite (core/checked.hpp's vectorisable scan).
inline bool all_finite(const float* x, int64_t n) { return first_non_finite(x, n) < 0; }

}  // namespace deepseek::backend::cpu
