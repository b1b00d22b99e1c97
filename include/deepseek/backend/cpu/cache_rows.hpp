// Cache row writes and reads for n consecutive positions (the row encoding is core/cache_view.hpp's).
#pragma once

#include "deepseek/core/cache_view.hpp"

#include <cstdint>

namespace deepseek::backend::cpu {

// Rows p0 .. p0 + n - 1, columns [col, col + width) <- v[t * ld, + width), rounded to the cache dtype.
inline void store_rows(const CacheView& c, int64_t p0, int64_t col, const float* v, int64_t n, int64_t width, int64_t ld) {
  for (int64_t t = 0; t < n; ++t) c.store(p0 + t, col, v + t * ld, width);
}
// out[t * ld, + width) <- columns [col, col + width) of rows p0 .. p0 + n - 1 as f32 (exact).
inline void load_rows(const CacheView& c, int64_t p0, int64_t col, int64_t n, int64_t width, float* out, int64_t ld) {
  for (int64_t t = 0; t < n; ++t) c.load(p0 + t, col, out + t * ld, width);
}

}  // namespace deepseek::backend::cpu
