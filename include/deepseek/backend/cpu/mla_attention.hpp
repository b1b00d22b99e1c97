// The attention kernels behind nn::Mla's orders (mla.hpp says which runs when).
//
// latent_attention: absorbed attention over cached latent rows (the absorbed dense and the sparse DSA
// orders). For n queries s and H heads h, with Wq = lora + rope:
//   qa[s, h]     = [W_UK[h]^T q_nope ; RoPE(q_pe)]               [Wq]     (built by nn::Mla)
//   row_j        = [c_kv ; k_pe] of the j-th row in s's row list  [Wq]     (f32, bf16 or FP8 in the cache)
//   score(s,h,j) = scale qa[s, h] . row_j,            j < len[s]
//   o~[s, h]     = sum_j softmax_j(score) row_j[0, lora)           [lora]   (W_UV applied by nn::Mla)
//
// One pass over the rows serves every head and every query of a group: a block of kRowBlock rows is
// widened once to f32 and two GEMMs (Eigen) run on it, S = Q_g K_b^T [M_g, r] and O_g += P K_b[:, :lora],
// with an online softmax per (query, head) between them (flash-attention's order). That is what makes
// MLA decode cheap: reading row t costs one pass for all H heads, not H passes.
// Work split:
//   group  queries sharing a row list: a run of kGroupRows / H queries over the shared list (dense,
//          causal through len[s]) or one query over its own list (DSA's selection)
//   part   with fewer groups than threads (decode), a group's rows are split into contiguous parts
//          run on different threads, each with its own (max, sum, O) state, merged at the end
//          (split-K): o = sum_p O_p e^(m_p - m) / sum_p l_p e^(m_p - m), m = max_p m_p
// The two GEMMs run on AVX-512 register tiles where the CPU has it (gemm_avx512.hpp, scores kept
// transposed; latent_block_avx512), on Eigen otherwise.
// Arithmetic is f32 throughout (bf16 rows widen exactly, FP8 values become e4m3 x scale exactly);
// only the summation order differs from latent_attention_reference, the plain two-pass loop the
// tests compare it with. The one exception is asked for: LatentRows::bf16_products over bf16 rows
// on an AVX512-BF16 CPU multiplies the rows as they are stored (VDPBF16PS, latent_block_bf16),
// with q~ and the softmax weights rounded to bf16 (as FlashMLA's bf16 kernels do; sums stay f32):
// twice the f32 FMA rate where attention, not memory, bounds decode (128 heads x 576 values is
// 278 KFLOP per 1,152-byte row).
#pragma once

#include "deepseek/backend/cpu/gemm_avx512.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/cpu/simd.hpp"
#include "deepseek/backend/cpu/vision_ops.hpp"  // exp_sum, scale_bias_max
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

// The rows the queries attend to. Query s reads rows[s * stride + j] for j < len[s] (stride 0: all
// queries share one list, as in causal dense attention where len[s] = p0 + s + 1).
// How a row's values are stored (nn/kv_cache.hpp has the layouts): f32 or bf16 values; or FP8:
// fp8_values e4m3 bytes, one f32 scale per 128 of them, then bf16 values.
enum class RowFormat { f32, bf16, fp8 };
struct LatentRows {
  const void* const* rows = nullptr;
  int64_t stride = 0;
  const int32_t* len = nullptr;
  RowFormat format = RowFormat::f32;
  int64_t fp8_values = 0;  // RowFormat::fp8: the quantized prefix (kv_lora_rank)
  // bf16 rows on an AVX512-BF16 CPU: multiply them natively, q~ and the softmax weights p rounded
  // to bf16 (what LoadOptions::activations = bf16 asks of every product); otherwise (and on other
  // CPUs) rows are widened to f32 and q~, p stay f32.
  bool bf16_products = false;
};

inline constexpr int64_t kRowBlock = 128, kGroupRows = 256;

namespace latent_detail {

// dst[0, w) = the row's first w values as f32 (bf16 values widened by ops.hpp's widen_bf16)
inline void widen_row(const void* src, const LatentRows& r, int64_t w, float* dst) {
  if (r.format == RowFormat::f32) {
    std::memcpy(dst, src, size_t(w) * sizeof(float));
    return;
  }
  if (r.format == RowFormat::bf16) {
    widen_bf16(static_cast<const uint16_t*>(src), w, dst);
    return;
  }
  const uint8_t* b = static_cast<const uint8_t*>(src);
  const int64_t q = std::min(w, r.fp8_values);
  const float* scales = reinterpret_cast<const float*>(b + r.fp8_values);
  for (int64_t b0 = 0; b0 < q; b0 += 128) widen_e4m3_scaled(b + b0, std::min<int64_t>(128, q - b0), scales[b0 / 128], dst + b0);
  if (w > q) widen_bf16(reinterpret_cast<const uint16_t*>(b + r.fp8_values + 4 * (r.fp8_values / 128)), w - q, dst + q);
}

}  // namespace latent_detail

#if DEEPSEEK_CPU_AVX512_KERNELS && DEEPSEEK_CPU_AVX2
// One row block on AVX-512 (gemm_avx512), scores kept transposed so that neither operand is ever
// transposed: S^T [nr, M] = K_b [nr, Wq] Q^T [Wq, M] (Q^T built once per work item), the online
// softmax across S^T's columns (8 (query, head) states at a time), O [M, lora] += (S^T)^T K_b[:, :lora].
// The online softmax of one transposed score block S^T [nr, M] (column m: query-head m, whose first
// vis[m] rows are visible): scales by `scale`, updates the running max mx and sum, leaves the
// weights e^(x - mx) in S^T (0 where not visible) and rescales the unnormalised O [M, lora].
__attribute__((target("avx512f"))) inline void online_softmax_transposed(float* st, int64_t nr, int64_t M, const int32_t* vis,
                                                                         float scale, float* mx, float* sum, float* corr,
                                                                         float* obuf, int64_t lora) {
  const float ninf = -std::numeric_limits<float>::infinity();
  std::fill(corr, corr + M, ninf);  // corr holds the block max until it becomes the correction
  for (int64_t j = 0; j < nr; ++j) {
    float* row = st + j * M;
    for (int64_t m = 0; m < M; ++m) {
      row[m] *= scale;
      if (j < vis[m]) corr[m] = std::max(corr[m], row[m]);
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    const float m_new = std::max(mx[m], corr[m]);
    corr[m] = m_new == ninf ? 1.0f : std::exp(mx[m] - m_new);  // 0 on the first visible block
    mx[m] = m_new;
    sum[m] *= corr[m];
  }
  for (int64_t j = 0; j < nr; ++j) {
    float* row = st + j * M;
    const __m256i jv = _mm256_set1_epi32(int32_t(j));
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) {
      const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vis + m)), jv));
      const __m256 e = _mm256_and_ps(vision_detail::exp256(_mm256_sub_ps(_mm256_loadu_ps(row + m), _mm256_loadu_ps(mx + m))), keep);
      _mm256_storeu_ps(row + m, e);
      _mm256_storeu_ps(sum + m, _mm256_add_ps(_mm256_loadu_ps(sum + m), e));
    }
    for (; m < M; ++m) {
      row[m] = j < vis[m] ? std::exp(row[m] - mx[m]) : 0.0f;
      sum[m] += row[m];
    }
  }
  for (int64_t m = 0; m < M; ++m)
    if (corr[m] != 1.0f)
      for (int64_t d = 0; d < lora; ++d) obuf[m * lora + d] *= corr[m];
}

__attribute__((target("avx512f"))) inline void latent_block_avx512(const float* qt, const float* kbuf, int64_t nr, int64_t M,
                                                                   int64_t Wq, int64_t lora, const int32_t* vis, float scale,
                                                                   float* st, float* mx, float* sum, float* corr, float* obuf) {
  gemm_avx512(kbuf, Wq, 1, qt, M, st, M, nr, M, Wq, false);
  online_softmax_transposed(st, nr, M, vis, scale, mx, sum, corr, obuf, lora);
  gemm_avx512(st, 1, M, kbuf, Wq, obuf, lora, M, lora, nr, true);
}

// The same block with bf16 products (AVX512-BF16, gemm_bf16_avx512): kb [nr, Wq] the block's bf16
// rows, qp q~ in bf16 pairs [Wq / 2][M][2] (made once per work item by pack_queries_bf16). After
// the softmax the weights are rounded to bf16 in pairs of rows, pp [nr / 2][M][2], and the rows'
// first lora values interleaved in pairs of rows, vp [nr / 2][lora][2]; a row past nr is zero.
// Needs lora % 32 == 0 and Wq even.
DEEPSEEK_TARGET_AVX512 inline void latent_block_bf16(const uint16_t* qp, const uint16_t* kb, int64_t nr, int64_t M, int64_t Wq,
                                                     int64_t lora, const int32_t* vis, float scale, float* st, float* mx,
                                                     float* sum, float* corr, float* obuf, uint16_t* pp, uint16_t* vp) {
  gemm_bf16_avx512(reinterpret_cast<const uint32_t*>(kb), Wq / 2, 1, qp, M, st, M, nr, M, Wq / 2, false);
  online_softmax_transposed(st, nr, M, vis, scale, mx, sum, corr, obuf, lora);
  alignas(64) static constexpr uint16_t kPairs[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  alignas(64) static constexpr uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                                   8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static constexpr uint16_t kHi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                   24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i pairs = _mm512_load_si512(kPairs), lo_idx = _mm512_load_si512(kLo), hi_idx = _mm512_load_si512(kHi);
  const int64_t n2 = (nr + 1) / 2;
  for (int64_t j2 = 0; j2 < n2; ++j2) {
    const bool second = 2 * j2 + 1 < nr;
    const float* r0 = st + 2 * j2 * M;
    for (int64_t m = 0; m < M; m += 16) {
      const __mmask16 k = gemm_detail::lanes16(M - m);
      const __m512 a = _mm512_maskz_loadu_ps(k, r0 + m), b = second ? _mm512_maskz_loadu_ps(k, r0 + M + m) : _mm512_setzero_ps();
      const __m512i ab = _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(b, a));  // (a_m, b_m) pairs
      _mm512_mask_storeu_epi32(pp + (j2 * M + m) * 2, k, ab);
    }
    const uint16_t* k0 = kb + 2 * j2 * Wq;
    for (int64_t c = 0; c < lora; c += 32) {
      const __m512i a = _mm512_loadu_si512(k0 + c), b = second ? _mm512_loadu_si512(k0 + Wq + c) : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + (j2 * lora + c) * 2, _mm512_permutex2var_epi16(a, lo_idx, b));
      _mm512_storeu_si512(vp + (j2 * lora + c) * 2 + 32, _mm512_permutex2var_epi16(a, hi_idx, b));
    }
  }
  gemm_bf16_avx512(reinterpret_cast<const uint32_t*>(pp), 1, M, vp, lora, obuf, lora, M, lora, n2, true);
}

// qp [Wq / 2][M][2] = q~ [M, Wq] rounded to bf16 (nearest even), in pairs of columns.
DEEPSEEK_TARGET_AVX512 inline void pack_queries_bf16(const float* q, int64_t M, int64_t Wq, uint16_t* qp, uint16_t* row) {
  for (int64_t m = 0; m < M; ++m) {
    const float* qm = q + m * Wq;
    for (int64_t c = 0; c < Wq; c += 32) {
      const int64_t left = Wq - c;
      const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(gemm_detail::lanes16(left - 16), qm + c + 16),
                                                     _mm512_maskz_loadu_ps(gemm_detail::lanes16(left), qm + c));
      _mm512_mask_storeu_epi16(row + c, left >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1ull << left) - 1), h);
    }
    const uint32_t* pr = reinterpret_cast<const uint32_t*>(row);
    uint32_t* out = reinterpret_cast<uint32_t*>(qp);
    for (int64_t k2 = 0; k2 < Wq / 2; ++k2) out[k2 * M + m] = pr[k2];
  }
}
#endif

// qa [n, H, Wq] (row stride Wq), o [n, H, lora].
inline void latent_attention(const float* qa, int64_t n, int64_t H, int64_t lora, int64_t rope, float scale,
                             const LatentRows& r, float* o) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  const int64_t Wq = lora + rope;
  const int64_t qg = r.stride == 0 ? std::max<int64_t>(1, kGroupRows / H) : 1;  // queries per group
  const int64_t groups = (n + qg - 1) / qg;
  auto group_len = [&](int64_t g) {  // rows the group's last-reaching query reads
    int64_t L = 0;
    for (int64_t s = g * qg; s < std::min(n, (g + 1) * qg); ++s) L = std::max<int64_t>(L, r.len[s]);
    return L;
  };
  int64_t max_len = 0;
  for (int64_t g = 0; g < groups; ++g) max_len = std::max(max_len, group_len(g));
  const int64_t threads = num_threads();
  // parts per group: enough to give every thread work, each at least one block of rows
  const int64_t parts = groups >= threads ? 1
                                          : std::max<int64_t>(1, std::min((threads + groups - 1) / groups,
                                                                          (max_len + kRowBlock - 1) / kRowBlock));
  const int64_t Mq = qg * H;  // state rows of one group (queries x heads)
  // split-K partial states: [groups * parts][Mq] max and sum, [..][Mq, lora] unnormalised O
  std::vector<float> part_m, part_l, part_o;
  if (parts > 1) {
    part_m.resize(size_t(groups * parts * Mq));
    part_l.resize(size_t(groups * parts * Mq));
    part_o.resize(size_t(groups * parts * Mq * lora));
  }

#if DEEPSEEK_CPU_AVX512_KERNELS && DEEPSEEK_CPU_AVX2
  const bool avx512 = has_avx512();
  const bool native_bf16 = r.format == RowFormat::bf16 && r.bf16_products && has_avx512bf16() && Wq % 2 == 0 && lora % 32 == 0;
#endif
  parallel_for(groups * parts, [&](int64_t i0, int64_t i1) {
    static thread_local std::vector<float> kbuf, sbuf, obuf, mx, sum, qt, corr;
    static thread_local std::vector<int32_t> vis;
    static thread_local std::vector<uint16_t> kb16, qp, pp, vp;
    kbuf.resize(size_t(kRowBlock * Wq));
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t g = item / parts, p = item % parts;
      const int64_t s0 = g * qg, s1 = std::min(n, s0 + qg), M = (s1 - s0) * H;
      const int64_t L = group_len(g);
      // this part's rows: [b, e), whole blocks
      const int64_t blocks = (L + kRowBlock - 1) / kRowBlock;
      const int64_t b = (blocks * p / parts) * kRowBlock, e = std::min(L, (blocks * (p + 1) / parts) * kRowBlock);
      sbuf.resize(size_t(M * kRowBlock));
      obuf.assign(size_t(M * lora), 0.0f);
      mx.assign(size_t(M), -std::numeric_limits<float>::infinity());
      sum.assign(size_t(M), 0.0f);
      const void* const* list = r.rows + s0 * r.stride;
      const ConstMap Q(qa + s0 * H * Wq, M, Wq, Eigen::OuterStride<>(Wq));
      Map O(obuf.data(), M, lora, Eigen::OuterStride<>(lora));
#if DEEPSEEK_CPU_AVX512_KERNELS && DEEPSEEK_CPU_AVX2
      if (native_bf16) {
        qp.resize(size_t(Wq * M));
        kb16.resize(size_t(kRowBlock * Wq));
        pp.resize(size_t(kRowBlock * M));
        vp.resize(size_t(kRowBlock * lora));
        pack_queries_bf16(qa + s0 * H * Wq, M, Wq, qp.data(), kb16.data());
      } else if (avx512) {
        qt.resize(size_t(Wq * M));  // Q^T [Wq, M]
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < Wq; ++k) qt[size_t(k * M + m)] = qa[(s0 * H + m) * Wq + k];
      }
      if (avx512) {
        corr.resize(size_t(M));
        vis.resize(size_t(M));
      }
#endif
      for (int64_t t0 = b; t0 < e; t0 += kRowBlock) {
        const int64_t nr = std::min(kRowBlock, e - t0);
#if DEEPSEEK_CPU_AVX512_KERNELS && DEEPSEEK_CPU_AVX2
        if (native_bf16) {
          for (int64_t j = 0; j < nr; ++j) std::memcpy(kb16.data() + j * Wq, list[t0 + j], size_t(Wq) * 2);
          for (int64_t m = 0; m < M; ++m) vis[size_t(m)] = int32_t(std::clamp<int64_t>(r.len[s0 + m / H] - t0, 0, nr));
          latent_block_bf16(qp.data(), kb16.data(), nr, M, Wq, lora, vis.data(), scale, sbuf.data(), mx.data(), sum.data(),
                            corr.data(), obuf.data(), pp.data(), vp.data());
          continue;
        }
#endif
        for (int64_t j = 0; j < nr; ++j) latent_detail::widen_row(list[t0 + j], r, Wq, kbuf.data() + j * Wq);
#if DEEPSEEK_CPU_AVX512_KERNELS && DEEPSEEK_CPU_AVX2
        if (avx512) {
          for (int64_t m = 0; m < M; ++m) vis[size_t(m)] = int32_t(std::clamp<int64_t>(r.len[s0 + m / H] - t0, 0, nr));
          latent_block_avx512(qt.data(), kbuf.data(), nr, M, Wq, lora, vis.data(), scale, sbuf.data(), mx.data(), sum.data(),
                              corr.data(), obuf.data());
          continue;
        }
#endif
        const ConstMap K(kbuf.data(), nr, Wq, Eigen::OuterStride<>(Wq));
        Map S(sbuf.data(), M, nr, Eigen::OuterStride<>(kRowBlock));
        S.noalias() = Q * K.transpose();
        for (int64_t m = 0; m < M; ++m) {
          float* srow = sbuf.data() + m * kRowBlock;
          const int64_t visible = std::clamp<int64_t>(r.len[s0 + m / H] - t0, 0, nr);
          if (visible == 0) {  // none of this block is visible to the query (causal): P row = 0
            std::fill(srow, srow + nr, 0.0f);
            continue;
          }
          const float bmax = scale_bias_max(srow, visible, scale, 0.0f, nullptr);
          const float m_new = std::max(mx[size_t(m)], bmax);
          const float c = std::exp(mx[size_t(m)] - m_new);  // 0 on the first visible block
          mx[size_t(m)] = m_new;
          sum[size_t(m)] = sum[size_t(m)] * c + exp_sum(srow, visible, m_new);
          std::fill(srow + visible, srow + nr, 0.0f);
          if (c != 1.0f) {
            float* orow = obuf.data() + m * lora;
            for (int64_t d = 0; d < lora; ++d) orow[d] *= c;
          }
        }
        O.noalias() += S * ConstMap(kbuf.data(), nr, lora, Eigen::OuterStride<>(Wq));
      }
      if (parts == 1) {
        for (int64_t m = 0; m < M; ++m) {
          const float inv = sum[size_t(m)] > 0 ? 1.0f / sum[size_t(m)] : 0.0f;
          float* out = o + (s0 * H + m) * lora;
          for (int64_t d = 0; d < lora; ++d) out[d] = obuf[size_t(m * lora + d)] * inv;
        }
      } else {
        const int64_t at = item * Mq;
        std::copy(mx.begin(), mx.end(), part_m.begin() + at);
        std::copy(sum.begin(), sum.end(), part_l.begin() + at);
        std::copy(obuf.begin(), obuf.end(), part_o.begin() + at * lora);
      }
    }
  });
  if (parts == 1) return;
  parallel_for(n * H, [&](int64_t m0, int64_t m1) {
    for (int64_t row = m0; row < m1; ++row) {  // row = s * H + h
      const int64_t g = (row / H) / qg, m = row - g * qg * H;
      float gm = -std::numeric_limits<float>::infinity();
      for (int64_t p = 0; p < parts; ++p) gm = std::max(gm, part_m[size_t((g * parts + p) * Mq + m)]);
      float* out = o + row * lora;
      std::fill(out, out + lora, 0.0f);
      float l = 0;
      for (int64_t p = 0; p < parts; ++p) {
        const int64_t at = (g * parts + p) * Mq + m;
        if (part_l[size_t(at)] == 0) continue;  // a part with no visible rows
        const float w = std::exp(part_m[size_t(at)] - gm);
        l += part_l[size_t(at)] * w;
        axpy(w, part_o.data() + at * lora, out, lora);
      }
      const float inv = l > 0 ? 1.0f / l : 0.0f;
      for (int64_t d = 0; d < lora; ++d) out[d] *= inv;
    }
  });
}

// online_attention_block: one key block of flash attention for one head (the tiled order, with
// k_nope and v expanded one block of rows at a time). Queries Q [n, dk] (row stride ldq), keys K
// [r, dk] and values V [r, dv] (strides ldk, ldv); query s sees the first vis[s] keys of the block.
// The running state of query s, m[s] (max logit), l[s] (sum of e^(logit - m)) and O[s] [dv]
// (row stride ldo, unnormalised), is rescaled and extended:
//   m' = max(m, max_j x_j), l' = l e^(m - m') + sum_j e^(x_j - m'), O' = O e^(m - m') + sum_j e^(x_j - m') V_j
// Queries that see none of the block (vis = 0, causal) are skipped. Start with m = -inf, l = 0,
// O = 0; the attention output is O / l.
inline void online_attention_block(const float* Q, int64_t ldq, int64_t n, int64_t dk, const float* K, int64_t ldk,
                                   const float* V, int64_t ldv, int64_t r, int64_t dv, const int32_t* vis, float scale,
                                   float* m, float* l, float* O, int64_t ldo) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
  using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
  int64_t s0 = 0;  // causal: the queries that see nothing of the block come first
  while (s0 < n && vis[s0] <= 0) ++s0;
  if (s0 == n) return;
  const int64_t nq = n - s0;
  static thread_local std::vector<float> sbuf;
  sbuf.resize(size_t(nq * r));
  Map S(sbuf.data(), nq, r, Eigen::OuterStride<>(r));
  S.noalias() = ConstMap(Q + s0 * ldq, nq, dk, Eigen::OuterStride<>(ldq)) * ConstMap(K, r, dk, Eigen::OuterStride<>(ldk)).transpose();
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t s = s0 + i, v = std::min<int64_t>(vis[s], r);
    float* x = sbuf.data() + i * r;
    if (v <= 0) {
      std::fill(x, x + r, 0.0f);
      continue;
    }
    const float bmax = scale_bias_max(x, v, scale, 0.0f, nullptr);
    const float m_new = std::max(m[s], bmax);
    const float corr = std::exp(m[s] - m_new);  // 0 on the first block the query sees
    m[s] = m_new;
    l[s] = l[s] * corr + exp_sum(x, v, m_new);
    std::fill(x + v, x + r, 0.0f);
    if (corr != 1.0f)
      for (int64_t d = 0; d < dv; ++d) O[s * ldo + d] *= corr;
  }
  Map(O + s0 * ldo, nq, dv, Eigen::OuterStride<>(ldo)).noalias() += S * ConstMap(V, r, dv, Eigen::OuterStride<>(ldv));
}

// The plain reference: per (query, head) scores over the whole list, softmax, weighted sum.
inline void latent_attention_reference(const float* qa, int64_t n, int64_t H, int64_t lora, int64_t rope, float scale,
                                       const LatentRows& r, float* o) {
  const int64_t Wq = lora + rope;
  std::vector<float> row(static_cast<size_t>(Wq)), p;
  for (int64_t s = 0; s < n; ++s)
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qa + (s * H + h) * Wq;
      const int64_t len = r.len[s];
      p.resize(size_t(len));
      for (int64_t j = 0; j < len; ++j) {
        latent_detail::widen_row(r.rows[s * r.stride + j], r, Wq, row.data());
        double acc = 0;
        for (int64_t i = 0; i < Wq; ++i) acc += double(q[i]) * row[size_t(i)];
        p[size_t(j)] = float(acc) * scale;
      }
      softmax(p.data(), len);
      float* out = o + (s * H + h) * lora;
      std::fill(out, out + lora, 0.0f);
      for (int64_t j = 0; j < len; ++j) {
        latent_detail::widen_row(r.rows[s * r.stride + j], r, Wq, row.data());
        for (int64_t i = 0; i < lora; ++i) out[i] += p[size_t(j)] * row[size_t(i)];
      }
    }
}

}  // namespace deepseek::backend::cpu
