// MLA's attention orders on the CPU (nn/mla.hpp has the math and when each runs). Queries q are
// [n, H, nope + rope] with RoPE applied, at positions p0 .. p0 + n - 1; the latent rows
// [c_kv ; k_pe] of positions [0, p0 + n) are in the cache; outputs o are [n, H, v].
//   mla_expanded_attention  the plain reference: expand every cached row through kv_b_proj, then
//                           dot / softmax / axpy per head (over the selected rows only with a selection)
//   mla_tiled_attention     the same arithmetic kTileRows rows at a time (flash attention per head)
//   mla_absorb, mla_latent_attention, mla_unabsorb   the absorbed order: q~ = W_UK^T q_nope, one
//                           pass over the latent rows for all heads (mla_attention.hpp), o = W_UV o~
#pragma once

#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/mla_attention.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/cache_view.hpp"
#include "deepseek/core/parallel.hpp"

#include <algorithm>
#include <limits>
#include <vector>

namespace deepseek::backend::cpu {

// sel_idx / sel_count / sel_k: query s attends to the sel_count[s] positions at sel_idx + s * sel_k
// (DSA), or, when sel_idx is null, to [0, p0 + s].
inline void mla_expanded_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                                   int64_t p0, const CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                                   int64_t sel_k, float* o) {
  const int64_t H = m.num_heads, qk = m.qk_head_dim(), nope = m.qk_nope_head_dim, rope = m.qk_rope_head_dim;
  const int64_t lora = m.kv_lora_rank, vd = m.v_head_dim, kvw = nope + vd, T = p0 + n;
  std::vector<float> latent(size_t(T * lora)), kpe(size_t(T * rope));
  for (int64_t t = 0; t < T; ++t) {
    cache.load(t, 0, latent.data() + t * lora, lora);
    cache.load(t, lora, kpe.data() + t * rope, rope);
  }
  std::vector<float> kvb(size_t(T * H * kvw));  // [T, H, nope + v]
  linear(kv_b_proj, latent.data(), T, kvb.data());
  parallel_for(H, [&](int64_t h0, int64_t h1) {
    std::vector<float> p(static_cast<size_t>(T));
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t s = 0; s < n; ++s) {
        const float* qs = q + (s * H + h) * qk;
        const int32_t* ix = sel_idx ? sel_idx + s * sel_k : nullptr;
        const int64_t len = sel_idx ? int64_t(sel_count[s]) : p0 + s + 1;
        for (int64_t j = 0; j < len; ++j) {
          const int64_t t = ix ? int64_t(ix[j]) : j;
          const float* k = kvb.data() + (t * H + h) * kvw;
          p[size_t(j)] = scale * (dot(qs, k, nope) + dot(qs + nope, kpe.data() + t * rope, rope));
        }
        softmax(p.data(), len);
        float* os = o + (s * H + h) * vd;
        std::fill(os, os + vd, 0.0f);
        for (int64_t j = 0; j < len; ++j) axpy(p[size_t(j)], kvb.data() + ((ix ? int64_t(ix[j]) : j) * H + h) * kvw + nope, os, vd);
      }
  });
}

// Tiled order: blocks of kTileRows cached rows, each expanded once (k_nope, v for all heads) and
// consumed by a flash-attention step per head; state m, l [H, n] and O [n, H, v].
inline constexpr int64_t kMlaTileRows = 128;
inline void mla_tiled_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& dims, float scale, const float* q, int64_t n,
                                int64_t p0, const CacheView& cache, float* o) {
  const int64_t H = dims.num_heads, qk = dims.qk_head_dim(), nope = dims.qk_nope_head_dim, rope = dims.qk_rope_head_dim;
  const int64_t lora = dims.kv_lora_rank, vd = dims.v_head_dim, kvw = nope + vd, T = p0 + n;
  std::vector<float> m(size_t(H * n), -std::numeric_limits<float>::infinity()), l(size_t(H * n), 0.0f);
  std::fill(o, o + n * H * vd, 0.0f);
  const int64_t R = std::min(kMlaTileRows, T);
  std::vector<float> latent(size_t(R * lora)), kvb(size_t(R * H * kvw)), key(size_t(R * H * qk));
  std::vector<int32_t> vis(static_cast<size_t>(n));
  for (int64_t t0 = 0; t0 < T; t0 += R) {
    const int64_t r = std::min(R, T - t0);
    for (int64_t j = 0; j < r; ++j) cache.load(t0 + j, 0, latent.data() + j * lora, lora);
    linear(kv_b_proj, latent.data(), r, kvb.data());  // [r, H, nope + v]
    // keys [r, H, qk] = [k_nope ; k_pe] (k_pe shared by the heads), values stay in kvb
    for (int64_t j = 0; j < r; ++j) {
      float* kj = key.data() + j * H * qk;
      cache.load(t0 + j, lora, kj + nope, rope);
      for (int64_t h = 0; h < H; ++h) {
        const float* src = kvb.data() + (j * H + h) * kvw;
        std::copy(src, src + nope, kj + h * qk);
        if (h > 0) std::copy(kj + nope, kj + qk, kj + h * qk + nope);
      }
    }
    for (int64_t s = 0; s < n; ++s) vis[size_t(s)] = int32_t(std::clamp<int64_t>(p0 + s + 1 - t0, 0, r));
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h)
        online_attention_block(q + h * qk, H * qk, n, qk, key.data() + h * qk, H * qk, kvb.data() + h * kvw + nope, H * kvw, r, vd,
                               vis.data(), scale, m.data() + h * n, l.data() + h * n, o + h * vd, H * vd);
    });
  }
  parallel_for(n * H, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {  // i = s * H + h
      const float inv = 1.0f / l[size_t((i % H) * n + i / H)];
      for (int64_t d = 0; d < vd; ++d) o[i * vd + d] *= inv;
    }
  });
}

// qa[s, h] = [W_UK[h]^T q_nope ; q_pe]  [n, H, lora + rope]
inline void mla_absorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* q, int64_t n, float* qa) {
  const int64_t H = m.num_heads, qk = m.qk_head_dim(), nope = m.qk_nope_head_dim, rope = m.qk_rope_head_dim;
  const int64_t lora = m.kv_lora_rank, kvw = nope + m.v_head_dim, Wq = lora + rope;
  parallel_for(H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h) {
      linear_transposed_rows(kv_b_proj, h * kvw, h * kvw + nope, q + h * qk, n, qa + h * Wq, H * qk, H * Wq);
      for (int64_t s = 0; s < n; ++s) {
        const float* pe = q + (s * H + h) * qk + nope;
        std::copy(pe, pe + rope, qa + (s * H + h) * Wq + lora);
      }
    }
  });
}

// o_h[s] = W_UV[h] o~[s, h]  (ot [n, H, lora] -> o [n, H, v])
inline void mla_unabsorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* ot, int64_t n, float* o) {
  const int64_t H = m.num_heads, nope = m.qk_nope_head_dim, lora = m.kv_lora_rank, vd = m.v_head_dim, kvw = nope + vd;
  parallel_for(H, [&](int64_t h0, int64_t h1) {
    for (int64_t h = h0; h < h1; ++h)
      linear_rows(kv_b_proj, h * kvw + nope, (h + 1) * kvw, ot + h * lora, n, o + h * vd, H * lora, H * vd);
  });
}

// o~ [n, H, lora] from absorbed queries qa over the cache's latent rows: rows [0, p0 + s] for
// query s, or its selected rows (sel_idx as in mla_expanded_attention; unselected rows are never
// read). bf16_products: multiply bf16 rows natively (LatentRows).
inline void mla_latent_attention(const MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0, const CacheView& cache,
                                 const int32_t* sel_idx, const int32_t* sel_count, int64_t sel_k, bool bf16_products,
                                 float* ot) {
  const RowFormat format = cache.dtype == CacheDType::f32    ? RowFormat::f32
                           : cache.dtype == CacheDType::bf16 ? RowFormat::bf16
                                                             : RowFormat::fp8;
  std::vector<const void*> rows;
  std::vector<int32_t> len;
  if (sel_idx) {
    rows.resize(size_t(n * sel_k));
    for (int64_t s = 0; s < n; ++s)
      for (int64_t j = 0; j < sel_count[s]; ++j) rows[size_t(s * sel_k + j)] = cache.row_data(sel_idx[s * sel_k + j]);
  } else {
    rows.resize(size_t(p0 + n));
    for (int64_t t = 0; t < p0 + n; ++t) rows[size_t(t)] = cache.row_data(t);
    len.resize(size_t(n));
    for (int64_t s = 0; s < n; ++s) len[size_t(s)] = int32_t(p0 + s + 1);
  }
  const LatentRows r{rows.data(), sel_idx ? sel_k : 0, sel_idx ? sel_count : len.data(), format, cache.fp8_values, bf16_products};
  latent_attention(qa, n, m.num_heads, m.kv_lora_rank, m.qk_rope_head_dim, scale, r, ot);
}

}  // namespace deepseek::backend::cpu
