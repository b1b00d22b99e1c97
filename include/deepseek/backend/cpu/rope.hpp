// RoPE over many vectors at once (nn/rope.hpp has the math): vector h of row t sits at
// x + t * ld + h * head_stride and rotates by the angles of position p0 + t.
#pragma once

#include "deepseek/backend/params.hpp"

#include <cmath>
#include <cstdint>

namespace deepseek::backend::cpu {

// Rotates x[0, r.dim) of one vector for position p, in place: cos and sin in double, rounded to
// f32 once (the table transformers builds), then the pair rotation in f32.
inline void rope_one(float* x, int64_t p, const RopeParams& r) {
  const int64_t half = r.dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double phi = double(p) * r.inv_freq[i];
    const float c = float(std::cos(phi) * r.attention_factor), s = float(std::sin(phi) * r.attention_factor);
    float* a = r.interleaved ? x + 2 * i : x + i;
    float* b = r.interleaved ? x + 2 * i + 1 : x + i + half;
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
  }
}

inline void rope(float* x, int64_t n, int64_t heads, int64_t ld, int64_t head_stride, int64_t p0, const RopeParams& r) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) rope_one(x + t * ld + h * head_stride, p0 + t, r);
}

}  // namespace deepseek::backend::cpu
