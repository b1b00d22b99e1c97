// Plain multi-head attention over a K/V cache on the CPU (nn/attention.hpp has the math): the
// cache row of a token is [k (KVH x hd) ; v (KVH x hd)]; query head h reads KV head h / (H / KVH).
#pragma once

#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/core/cache_view.hpp"
#include "deepseek/core/parallel.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deepseek::backend::cpu {

// q [n, H, hd] at positions p0 ..; query s attends to rows [0, p0 + s]; o [n, H, hd].
inline void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                          const CacheView& cache, float* o) {
  const int64_t kvw = G * hd;
  // Head g's K or V of row t as f32: in place for an f32 cache, widened into buf otherwise.
  const bool f32 = cache.dtype == CacheDType::f32;
  auto kv_at = [&](int64_t t, int64_t col, float* buf) -> const float* {
    if (f32) return cache.row(t) + col;
    cache.load(t, col, buf, hd);
    return buf;
  };
  parallel_for(H, [&](int64_t h0, int64_t h1) {
    std::vector<float> p, buf(static_cast<size_t>(hd));
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t g = h / (H / G);
      for (int64_t s = 0; s < n; ++s) {
        const int64_t len = p0 + s + 1;
        p.resize(size_t(len));
        const float* qs = q + (s * H + h) * hd;
        for (int64_t t = 0; t < len; ++t) p[size_t(t)] = scale * dot(qs, kv_at(t, g * hd, buf.data()), hd);
        softmax(p.data(), len);
        float* os = o + (s * H + h) * hd;
        std::fill(os, os + hd, 0.0f);
        for (int64_t t = 0; t < len; ++t) axpy(p[size_t(t)], kv_at(t, kvw + g * hd, buf.data()), os, hd);
      }
    }
  });
}

}  // namespace deepseek::backend::cpu
