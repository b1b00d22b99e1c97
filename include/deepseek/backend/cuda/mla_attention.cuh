// MLA's attention orders on the GPU: backend/cpu/mla.hpp's five primitives under the same contract
// (nn/mla.hpp has the math and says which order runs when). Per call, n queries at positions
// p0 .. p0 + n - 1, H heads, lora = kv_lora_rank, Wq = lora + rope:
//   q   [n, H, nope + rope] (RoPE applied)   qa [n, H, Wq]   ot [n, H, lora]   o [n, H, v]
//   kv_b_proj [H (nope + v), lora] (f32, bf16 or FP8 128 x 128 block-scaled, on the device):
//       W_UK[h] = rows [h (nope + v), h (nope + v) + nope), W_UV[h] = the next v rows
//   cache rows [c_kv ; k_pe (; index key)] of positions [0, p0 + n): a CacheView (f32, bf16 or FP8
//       FlashMLA rows, contiguous or paged; storage and block table on the device)
//
//   mla_absorb              qa[s, h] = [W_UK[h]^T q_nope[s, h] ; q_pe[s, h]]  (nothing rounded: the
//                           CPU's linear_transposed_rows ignores W.activations)
//   mla_latent_attention    ot[s, h] = sum_j softmax_j(scale qa[s, h] . row_j) row_j[0, lora), over
//                           rows [0, p0 + s] or query s's DSA selection (sel_idx, sel_count, sel_k)
//   mla_unabsorb            o[s, h] = W_UV[h] ot[s, h]; bf16 activations round ot to bf16 first
//                           (FP8 weights: bf16(ot x block scale) times the e4m3 value), as linear_rows
//   mla_expanded_attention  the plain order: k_nope, v = kv_b_proj(c_kv) for every cached row
//                           (load_rows + linear), then scores, softmax, weighted sum per (query, head)
//   mla_tiled_attention     the same kMlaTiledRows rows at a time, an online softmax between tiles
//                           (memory: one expanded tile, never T x H x (nope + v))
//
// mla_latent_attention, the decode kernel. A CTA owns kStateRows = 32 (query, head) states that
// share one row list (dense: consecutive heads of a sequence's consecutive queries; DSA: heads of one
// query) and one part of that list. Per block of kBlockRows = 32 rows, the rows are widened once into
// shared memory as f32; each warp then scores its 4 states against all 32 rows (lane j: row j),
// updates their online softmax with warp reductions (max, sum) and adds p row_j[0, lora) to their o~
// in registers (lane: columns lane + 32 i). One read of a row serves the CTA's 32 states: every head
// up to H = 32; V3's 128 heads take 4 CTAs reading the same rows (L2 hits after the first).
// Split-K: when the tiles are fewer than the GPU holds at once (decode at small batch), each list is
// split into parts of whole blocks (grid y), each with its own (max, sum, o~), merged by
// mla_latent_merge:  o~ = sum_p O_p e^(m_p - m) / sum_p l_p e^(m_p - m), m = max_p m_p (parts that
// saw no row skipped): the CPU's latent_attention, with the GPU's CTAs in place of its threads.
// mla_latent_attention_paged is the same kernel for an engine that keeps its own paged pool: B
// sequences of nq queries each, block tables and sequence lengths in device memory (so a captured
// decode graph replays with new lengths).
// Shared memory: (32 ldq + 32 ldk) floats, 148 KB at V3's 576-value rows (opt-in limits: sm_80
// 163 KB, sm_90 227 KB), so one CTA per SM there; the launcher checks the device's limit.
// The exact orders' attention kernels are plain: one block per (query, head), a thread per row's
// dot product. Not here yet: double-buffered row loads (cp.async), tensor-core bf16 products.
//
// Exactness: f32 throughout (fmaf, expf, max subtraction): bf16 rows widen exactly, FP8 values are
// e4m3 x scale exactly; only the summation order differs from the CPU (relative ~1e-6). The one
// rounding asked for: bf16_products over a bf16 cache rounds q~ and each softmax weight p (not the
// running sum) to bf16 before the products, as the CPU's latent_block_bf16 does (the rows are bf16
// already, so every product is exact). Over f32 / FP8 rows the flag is ignored, as on the CPU; where
// the CPU cannot multiply natively (no AVX512-BF16, lora % 32 != 0) it stays exact, and the two
// differ at bf16 precision.
#pragma once

#include "deepseek/backend/cuda/cache_rows.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/linear.cuh"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/cache_view.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <limits>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

// ---- traits ----------------------------------------------------------------------------------

struct MlaLatentTraits {
  static constexpr int kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kRowsPerWarp = 4;                    // (query, head) states one warp owns
  static constexpr int kStateRows = kWarps * kRowsPerWarp;  // states one CTA serves per row read
  static constexpr int kBlockRows = 32;                     // rows per step: one per lane when scoring
  static constexpr int kMinBlocksPerPart = 4;               // split-K parts of >= 128 rows: a part
                                                            // must outweigh loading its 32 queries
  static constexpr int64_t kMaxLora = 512;                  // o~ registers: 16 columns a lane
};
static_assert(MlaLatentTraits::kBlockRows == 32, "the score step maps one row to one lane");

inline constexpr int kMlaTokens = 8;           // absorb / unabsorb: tokens one pass over W serves
inline constexpr int64_t kMlaTiledRows = 128;  // mla_tiled_attention's tile (the CPU's kMlaTileRows)
inline constexpr int kMlaThreads = 128;        // the per-(query, head) kernels of the exact orders

__device__ __forceinline__ float mla_neg_inf() { return -__int_as_float(0x7f800000); }
__device__ __forceinline__ int64_t mla_min(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- instruction: one value of a latent row ---------------------------------------------------

// Column c (< the row's FP8 suffix) of a cached row as f32, exactly: f32; bf16 widened; FP8 rows
// (core/cache_view.hpp): e4m3 x its block's scale in the quantized prefix, bf16 after the scales.
__device__ __forceinline__ float mla_latent_value(const uint8_t* row, const RowLayout& l, int64_t c) {
  if (l.dtype == 0) return reinterpret_cast<const float*>(row)[c];
  if (l.dtype == 1) return dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[c]);
  if (c < l.fp8_values)
    return dev::f8_e4m3_to_f32(row[c]) * reinterpret_cast<const float*>(row + l.fp8_values)[c / 128];
  return dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(row + l.tail_offset)[c - l.fp8_values]);
}

// ---- the absorbed order ------------------------------------------------------------------------

// qa[t, h, c] = sum_{r < nope} q[t, h, r] W[h kvw + r, c] for c < lora; q_pe copied after it.
// Grid (ceil(Wq / blockDim), H, token groups); a thread owns column c for kMlaTokens tokens, so each
// weight is read once per group (coalesced over c).
static __global__ void mla_absorb(WeightArgs w, int64_t kvw, int64_t H, int64_t nope, int64_t rope, int64_t lora,
                                  const float* q, int64_t n, float* qa) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, h = blockIdx.y;
  const int64_t qk = nope + rope, Wq = lora + rope;
  if (c >= Wq) return;
  for (int64_t t0 = int64_t(blockIdx.z) * kMlaTokens; t0 < n; t0 += int64_t(gridDim.z) * kMlaTokens) {
    const int nt = int(mla_min(n - t0, kMlaTokens));
    const float* qt = q + (t0 * H + h) * qk;  // token t0 + t at qt + t H qk
    float* out = qa + (t0 * H + h) * Wq;
    if (c >= lora) {
      for (int t = 0; t < nt; ++t) out[t * H * Wq + c] = qt[t * H * qk + nope + (c - lora)];
      continue;
    }
    float acc[kMlaTokens];
#pragma unroll
    for (int t = 0; t < kMlaTokens; ++t) acc[t] = 0.0f;
    for (int64_t r = 0; r < nope; ++r) {
      const float wv = weight_at(w, h * kvw + r, c);
#pragma unroll
      for (int t = 0; t < kMlaTokens; ++t)
        if (t < nt) acc[t] = fmaf(qt[t * H * qk + r], wv, acc[t]);
    }
#pragma unroll
    for (int t = 0; t < kMlaTokens; ++t)
      if (t < nt) out[t * H * Wq + c] = acc[t];
  }
}

// o[t, h, d] = W[h kvw + nope + d, :] . x[t, h, :] with x = ot rounded as linear.cuh's gemv rounds
// (round: bf16(x), FP8 weights bf16(x s) times the e4m3 value). One warp per (h, d) row, lanes over
// the lora columns (coalesced), a warp sum; grid (ceil(v / warps), H, token groups).
static __global__ void mla_unabsorb(WeightArgs w, int64_t H, int64_t nope, int64_t lora, int64_t vd, bool round,
                                    const float* ot, int64_t n, float* o) {
  const int64_t kvw = nope + vd;
  const int warps = int(blockDim.x) >> 5, lane = int(threadIdx.x) & 31;
  const int64_t d = int64_t(blockIdx.x) * warps + (int(threadIdx.x) >> 5), h = blockIdx.y;
  if (d >= vd) return;  // the whole warp
  const int64_t r = h * kvw + nope + d;
  const bool fp8 = w.dtype == 2;
  for (int64_t t0 = int64_t(blockIdx.z) * kMlaTokens; t0 < n; t0 += int64_t(gridDim.z) * kMlaTokens) {
    const int nt = int(mla_min(n - t0, kMlaTokens));
    const float* x = ot + (t0 * H + h) * lora;  // token t0 + t at x + t H lora
    float acc[kMlaTokens];
#pragma unroll
    for (int t = 0; t < kMlaTokens; ++t) acc[t] = 0.0f;
    for (int64_t c = lane; c < lora; c += 32) {
      if (round && fp8) {
        const float wr = weight_raw(w, r, c), s = block_scale(w, r, c);
#pragma unroll
        for (int t = 0; t < kMlaTokens; ++t)
          if (t < nt) acc[t] = fmaf(wr, dev::round_to_bf16(x[t * H * lora + c] * s), acc[t]);
      } else {
        const float wv = weight_at(w, r, c);
#pragma unroll
        for (int t = 0; t < kMlaTokens; ++t)
          if (t < nt) {
            const float xv = x[t * H * lora + c];
            acc[t] = fmaf(wv, round ? dev::round_to_bf16(xv) : xv, acc[t]);
          }
      }
    }
#pragma unroll
    for (int t = 0; t < kMlaTokens; ++t)
      if (t < nt) {
        const float s = dev::warp_sum(acc[t]);
        if (lane == 0) o[((t0 + t) * H + h) * vd + d] = s;
      }
  }
}

// What mla_latent_attention's kernel reads. Queries are numbered q = seq nq + s (s < nq, the last
// nq positions of sequence seq); state rows q H + h. A group is the queries sharing one row list:
// a sequence's nq queries (dense) or one query (DSA); a tile is kStateRows consecutive states of a
// group, so tile x = group (x / tiles_per_group), states [(x % tiles_per_group) kStateRows, + 32).
struct MlaLatentArgs {
  const float* qa = nullptr;  // [queries, H, Wq]
  const uint8_t* base = nullptr;
  RowLayout layout{};
  int64_t block_size = 0;           // 0: contiguous rows
  const int32_t* tables = nullptr;  // paged: sequence seq's block table at tables + seq * table_stride
  int64_t table_stride = 0;
  const int32_t* seq_lens = nullptr;  // rows of sequence seq: seq_lens[seq], or seq_len when null
  int64_t seq_len = 0;
  int64_t nq = 0, H = 0, lora = 0, Wq = 0;
  int64_t ldq = 0, ldk = 0;          // shared-memory row strides of the queries and of the rows
  const int32_t* sel_idx = nullptr;  // DSA: query q's positions at sel_idx + q sel_k, sel_count[q] of them
  const int32_t* sel_count = nullptr;
  int64_t sel_k = 0;
  int64_t queries_per_group = 0, tiles_per_group = 0, rows = 0;  // rows: all states (queries x H)
  float scale = 1.0f;
  bool round_bf16 = false;  // bf16 products: q~ and p rounded to bf16
  float* out = nullptr;     // one part: ot [queries, H, lora]
  float* part_m = nullptr;  // split-K: [parts][rows] max and sum, [parts][rows][lora] unnormalised o~
  float* part_l = nullptr;
  float* part_o = nullptr;
};

// ---- algorithm: the absorbed attention over latent rows ----------------------------------------

// Grid (tiles, parts), MlaLatentTraits::kThreads threads, dynamic shared memory
// (kStateRows ldq + kBlockRows ldk) floats. kSlots >= lora / 32: o~ columns per lane.
template <int kSlots>
static __global__ void __launch_bounds__(MlaLatentTraits::kThreads, kSlots <= 4 ? 2 : 1)
    mla_latent_attention(MlaLatentArgs a) {
  using T = MlaLatentTraits;
  constexpr int R = T::kRowsPerWarp;
  extern __shared__ float4 mla_latent_smem[];
  float* qs = reinterpret_cast<float*>(mla_latent_smem);  // [kStateRows][ldq] the states' queries
  float* ks = qs + T::kStateRows * a.ldq;                 // [kBlockRows][ldk] one block of rows as f32
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int64_t g = int64_t(blockIdx.x) / a.tiles_per_group;
  const int64_t f0 = (int64_t(blockIdx.x) % a.tiles_per_group) * T::kStateRows;
  const int64_t states = a.queries_per_group * a.H;  // of this group
  const bool sparse = a.sel_idx != nullptr;
  const int64_t seq = sparse ? g / a.nq : g;
  const int64_t seq_len = a.seq_lens ? int64_t(a.seq_lens[seq]) : a.seq_len;
  const int32_t* table = a.block_size > 0 ? a.tables + seq * a.table_stride : nullptr;
  const int32_t* sel = sparse ? a.sel_idx + g * a.sel_k : nullptr;
  // The list length state f sees: its query's selection, or causal: query f / H of the group sits
  // at position seq_len - nq + f / H and sees rows [0, that].
  auto visible = [&](int64_t f) -> int64_t {
    if (f >= states) return 0;
    const int64_t len = sparse ? int64_t(a.sel_count[g]) : seq_len - a.nq + f / a.H + 1;
    return len > 0 ? len : 0;
  };
  const int64_t L = visible((f0 + T::kStateRows < states ? f0 + T::kStateRows : states) - 1);  // the tile's longest

  for (int64_t i = threadIdx.x; i < int64_t(T::kStateRows) * a.ldq; i += T::kThreads) {
    const int64_t m = i / a.ldq, c = i % a.ldq, f = f0 + m;
    float v = 0.0f;  // padding columns and missing states score 0
    if (f < states && c < a.Wq) {
      v = a.qa[(g * states + f) * a.Wq + c];
      if (a.round_bf16) v = dev::round_to_bf16(v);
    }
    qs[i] = v;
  }

  int64_t len[R];
  float mx[R], sum[R], acc[R][kSlots];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    len[r] = visible(f0 + warp * R + r);
    mx[r] = mla_neg_inf();
    sum[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) acc[r][i] = 0.0f;
  }

  // This part's rows [t_begin, t_end): whole blocks of the list, split evenly over the parts.
  const int64_t blocks = (L + T::kBlockRows - 1) / T::kBlockRows, parts = gridDim.y, part = blockIdx.y;
  const int64_t t_begin = blocks * part / parts * T::kBlockRows;
  const int64_t t_end = mla_min(L, blocks * (part + 1) / parts * T::kBlockRows);
  const int64_t ldq4 = a.ldq / 4;
  for (int64_t t0 = t_begin; t0 < t_end; t0 += T::kBlockRows) {
    const int nr = int(mla_min(T::kBlockRows, t_end - t0));
    __syncthreads();  // every warp is done with the previous block (on the first: qs is written)
    for (int j = warp; j < T::kBlockRows; j += T::kWarps) {
      float* dst = ks + j * a.ldk;
      const uint8_t* row = nullptr;  // rows past the part stay 0, so 0 x row never meets garbage
      if (j < nr)
        row = row_ptr(const_cast<uint8_t*>(a.base), a.block_size, table, a.layout.row_bytes,
                      sel ? int64_t(sel[t0 + j]) : t0 + j);
      for (int64_t c = lane; c < a.ldq; c += 32) dst[c] = row && c < a.Wq ? mla_latent_value(row, a.layout, c) : 0.0f;
    }
    __syncthreads();

    // S = Q K^T: lane j scores row j against the warp's R states; ldk = 4 (mod 32) keeps the
    // float4 reads of 8 lanes on distinct banks, the queries are broadcasts.
    float s[R];
#pragma unroll
    for (int r = 0; r < R; ++r) s[r] = 0.0f;
    const float4* k4 = reinterpret_cast<const float4*>(ks + lane * a.ldk);
    const float4* q4 = reinterpret_cast<const float4*>(qs + int64_t(warp) * R * a.ldq);
    for (int64_t c = 0; c < ldq4; ++c) {
      const float4 k = k4[c];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 q = q4[r * ldq4 + c];
        s[r] = fmaf(q.x, k.x, s[r]);
        s[r] = fmaf(q.y, k.y, s[r]);
        s[r] = fmaf(q.z, k.z, s[r]);
        s[r] = fmaf(q.w, k.w, s[r]);
      }
    }

    // Online softmax per state (a warp holds a state's whole block of scores).
    float p[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool vis = lane < nr && t0 + lane < len[r];
      const float x = vis ? s[r] * a.scale : mla_neg_inf();
      const float bmax = dev::warp_max(x);
      p[r] = 0.0f;
      if (bmax == mla_neg_inf()) continue;  // the state sees none of this block (warp-uniform)
      const float m_new = fmaxf(mx[r], bmax);
      const float corr = expf(mx[r] - m_new);  // 0 on the first block the state sees
      mx[r] = m_new;
      const float e = vis ? expf(x - m_new) : 0.0f;
      sum[r] = sum[r] * corr + dev::warp_sum(e);
      if (corr != 1.0f) {
#pragma unroll
        for (int i = 0; i < kSlots; ++i) acc[r][i] *= corr;
      }
      p[r] = a.round_bf16 ? dev::round_to_bf16(e) : e;
    }

    // o~ += P K[:, :lora]: row j's weights come from lane j, its values from shared memory.
    for (int j = 0; j < nr; ++j) {
      float pj[R];
#pragma unroll
      for (int r = 0; r < R; ++r) pj[r] = __shfl_sync(0xffffffffu, p[r], j);
      const float* kr = ks + j * a.ldk;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int64_t c = lane + 32 * i;
        if (c < a.lora) {
          const float v = kr[c];
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][i] = fmaf(pj[r], v, acc[r][i]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t f = f0 + warp * R + r;
    if (f >= states) continue;
    const int64_t row = g * states + f;
    if (parts == 1) {
      const float inv = sum[r] > 0.0f ? 1.0f / sum[r] : 0.0f;  // an empty list gives 0, as on the CPU
      float* out = a.out + row * a.lora;
#pragma unroll
      for (int i = 0; i < kSlots; ++i)
        if (lane + 32 * i < a.lora) out[lane + 32 * i] = acc[r][i] * inv;
    } else {
      const int64_t at = part * a.rows + row;
      if (lane == 0) {
        a.part_m[at] = mx[r];
        a.part_l[at] = sum[r];
      }
      float* out = a.part_o + at * a.lora;
#pragma unroll
      for (int i = 0; i < kSlots; ++i)
        if (lane + 32 * i < a.lora) out[lane + 32 * i] = acc[r][i];
    }
  }
}

// The split-K merge, one block per state row (the CPU's order: parts ascending, O scaled and summed,
// then times 1 / l).
static __global__ void mla_latent_merge(const float* part_m, const float* part_l, const float* part_o, int parts,
                                        int64_t rows, int64_t lora, float* out) {
  const int64_t row = blockIdx.x;
  float gm = mla_neg_inf();
  for (int p = 0; p < parts; ++p) gm = fmaxf(gm, part_m[p * rows + row]);
  float l = 0.0f;
  for (int p = 0; p < parts; ++p) {
    const int64_t at = p * rows + row;
    if (part_l[at] != 0.0f) l += part_l[at] * expf(part_m[at] - gm);  // a part with no visible row adds nothing
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int64_t c = threadIdx.x; c < lora; c += blockDim.x) {
    float o = 0.0f;
    for (int p = 0; p < parts; ++p) {
      const int64_t at = p * rows + row;
      if (part_l[at] != 0.0f) o = fmaf(expf(part_m[at] - gm), part_o[at * lora + c], o);
    }
    out[row * lora + c] = o * inv;
  }
}

// ---- the expanded orders ----------------------------------------------------------------------

// The plain order (cpu::mla_expanded_attention), one block per state i = s H + h: the scores of
// its list into p (a row of scratch [n H, T]), softmax (max subtracted, normalised), then
// o[i, d] = sum_j p_j v_j[d] with j ascending. kvb [T, H, nope + v] the expanded rows, kpe [T, rope].
static __global__ void mla_expanded_attention(const float* q, int64_t H, int64_t nope, int64_t rope, int64_t vd,
                                              const float* kvb, const float* kpe, int64_t p0, const int32_t* sel_idx,
                                              const int32_t* sel_count, int64_t sel_k, int64_t T, float scale,
                                              float* p_all, float* o) {
  const int64_t i = blockIdx.x, s = i / H, h = i % H, qk = nope + rope, kvw = nope + vd;
  const float* qs = q + i * qk;
  const int32_t* ix = sel_idx ? sel_idx + s * sel_k : nullptr;
  const int64_t len = sel_idx ? int64_t(sel_count[s]) : p0 + s + 1;
  float* p = p_all + i * T;
  float mx = mla_neg_inf();
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    const int64_t t = ix ? int64_t(ix[j]) : j;
    const float* k = kvb + (t * H + h) * kvw;
    float a = 0.0f, b = 0.0f;
    for (int64_t d = 0; d < nope; ++d) a = fmaf(qs[d], k[d], a);
    for (int64_t d = 0; d < rope; ++d) b = fmaf(qs[nope + d], kpe[t * rope + d], b);
    p[j] = scale * (a + b);
    mx = fmaxf(mx, p[j]);
  }
  mx = dev::block_max(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += blockDim.x) {
    p[j] = expf(p[j] - mx);
    sum += p[j];
  }
  const float inv = 1.0f / dev::block_sum(sum);  // its barriers order every p write before the reads below
  for (int64_t d = threadIdx.x; d < vd; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < len; ++j)
      acc = fmaf(p[j] * inv, kvb[((ix ? int64_t(ix[j]) : j) * H + h) * kvw + nope + d], acc);
    o[i * vd + d] = acc;
  }
}

// One tile of the tiled order (cpu::online_attention_block for every head at once), one block per
// state i = s H + h over the tile's rows t0 .. t0 + r - 1, of which query s sees the first
// clamp(p0 + s + 1 - t0, 0, r). Keys [k_nope ; k_pe] (kvb [r, H, nope + v], kpe [r, rope]); the
// running max m, sum l [n H] and the unnormalised output O = o [n H, v]:
//   m' = max(m, max_j x_j), l' = l e^(m - m') + sum_j e^(x_j - m'), O' = O e^(m - m') + sum_j e^(x_j - m') v_j
static __global__ void mla_tiled_step(const float* q, int64_t H, int64_t nope, int64_t rope, int64_t vd,
                                      const float* kvb, const float* kpe, int64_t r, int64_t t0, int64_t p0,
                                      float scale, float* m, float* l, float* o) {
  __shared__ float p[kMlaTiledRows];
  const int64_t i = blockIdx.x, s = i / H, h = i % H, qk = nope + rope, kvw = nope + vd;
  const int64_t vis = mla_min(r, p0 + s + 1 - t0 > 0 ? p0 + s + 1 - t0 : 0);
  if (vis == 0) return;  // the whole block: causal, the tile lies after the query
  const float* qs = q + i * qk;
  float bmax = mla_neg_inf();
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    const float* k = kvb + (j * H + h) * kvw;
    float a = 0.0f;
    for (int64_t d = 0; d < nope; ++d) a = fmaf(qs[d], k[d], a);
    for (int64_t d = 0; d < rope; ++d) a = fmaf(qs[nope + d], kpe[j * rope + d], a);
    p[j] = a * scale;
    bmax = fmaxf(bmax, p[j]);
  }
  bmax = dev::block_max(bmax);
  const float m_old = m[i], m_new = fmaxf(m_old, bmax), corr = expf(m_old - m_new);  // 0 on the first tile
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    p[j] = expf(p[j] - m_new);
    sum += p[j];
  }
  sum = dev::block_sum(sum);  // its barriers: every p written, every thread has read m[i]
  for (int64_t d = threadIdx.x; d < vd; d += blockDim.x) {
    float acc = o[i * vd + d] * corr;
    for (int64_t j = 0; j < vis; ++j) acc = fmaf(p[j], kvb[(j * H + h) * kvw + nope + d], acc);
    o[i * vd + d] = acc;
  }
  if (threadIdx.x == 0) {
    m[i] = m_new;
    l[i] = l[i] * corr + sum;
  }
}

// o[i, :] *= 1 / l[i] (the tiled order's last step).
static __global__ void mla_normalize(float* o, const float* l, int64_t rows, int64_t vd) {
  DEEPSEEK_GRID_STRIDE(k, rows * vd) o[k] *= 1.0f / l[k / vd];
}

}  // namespace kernels

namespace detail {

inline void mla_check_dims(const MlaDims& m, const char* what) {
  if (m.num_heads <= 0 || m.qk_nope_head_dim <= 0 || m.qk_rope_head_dim < 0 || m.kv_lora_rank <= 0 || m.v_head_dim <= 0)
    throw Error(std::string(what) + ": MlaDims must be positive (num_heads " + std::to_string(m.num_heads) +
                ", qk_nope_head_dim " + std::to_string(m.qk_nope_head_dim) + ", qk_rope_head_dim " +
                std::to_string(m.qk_rope_head_dim) + ", kv_lora_rank " + std::to_string(m.kv_lora_rank) +
                ", v_head_dim " + std::to_string(m.v_head_dim) + ")");
  if (m.num_heads > 65535)
    throw Error(std::string(what) + ": num_heads " + std::to_string(m.num_heads) + " exceeds a grid dimension");
}
// kv_b_proj on the device as [H (nope + v), kv_lora_rank]; returns its kernel view.
inline kernels::WeightArgs mla_kv_b_args(const BlockQuantMatrix& W, const MlaDims& m, const char* what) {
  mla_check_dims(m, what);
  const int64_t rows = m.num_heads * (m.qk_nope_head_dim + m.v_head_dim);
  if (W.rows() != rows || W.cols() != m.kv_lora_rank)
    throw Error(std::string(what) + ": kv_b_proj is [" + std::to_string(W.rows()) + ", " + std::to_string(W.cols()) +
                "], expected [num_heads (qk_nope_head_dim + v_head_dim), kv_lora_rank] = [" + std::to_string(rows) +
                ", " + std::to_string(m.kv_lora_rank) + "]");
  return weight_args(W, what);
}
// The cache holds the latent rows [c_kv ; k_pe] in its first kv_lora_rank + rope columns.
inline void mla_check_cache(const CacheView& c, const MlaDims& m, const char* what) {
  const int64_t Wq = m.kv_lora_rank + m.qk_rope_head_dim;
  if (c.width < Wq)
    throw Error(std::string(what) + ": cache rows hold " + std::to_string(c.width) +
                " values, fewer than kv_lora_rank + qk_rope_head_dim = " + std::to_string(Wq));
  if (c.dtype == CacheDType::fp8_e4m3 && (c.fp8_values % kFp8CacheBlock != 0 || c.suffix_start() < Wq))
    throw Error(std::string(what) + ": an FP8 cache needs fp8_values a multiple of 128 (got " +
                std::to_string(c.fp8_values) + ") and its FP8 index key after the latent columns");
  // The kernels read each FP8 row's block scales as f32 at row + fp8_values: every row must start
  // 4-byte aligned (an odd bf16 tail would fault with a misaligned address; x86 does not care).
  if (c.dtype == CacheDType::fp8_e4m3 && c.row_bytes() % 4 != 0)
    throw Error(std::string(what) + ": FP8 cache rows of " + std::to_string(c.row_bytes()) +
                " bytes are not a multiple of 4 (their f32 scales would be misaligned on the GPU)");
  if (c.block_size > 0 && c.block_table == nullptr)
    throw Error(std::string(what) + ": a paged cache needs its block_table");
}
inline int mla_device_attribute(cudaDeviceAttr attr) {
  int v = 0;
  DEEPSEEK_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, Context::current().device()));
  return v;
}

// The launch behind mla_latent_attention and mla_latent_attention_paged (seqs sequences of nq
// queries; seq_lens on the device or seq_len for all; max_len bounds every list, host-known).
inline void mla_latent_launch(const MlaDims& m, float scale, const float* qa, int64_t seqs, int64_t nq,
                              const CacheView& cache, const int32_t* tables, int64_t table_stride,
                              const int32_t* seq_lens, int64_t seq_len, int64_t max_len, const int32_t* sel_idx,
                              const int32_t* sel_count, int64_t sel_k, bool bf16_products, float* ot,
                              const char* what) {
  using T = kernels::MlaLatentTraits;
  mla_check_dims(m, what);
  mla_check_cache(cache, m, what);
  if (seqs <= 0 || nq <= 0) return;
  if (m.kv_lora_rank > T::kMaxLora)
    throw Error(std::string(what) + ": kv_lora_rank " + std::to_string(m.kv_lora_rank) + " exceeds the kernel's " +
                std::to_string(T::kMaxLora));
  if (sel_idx && (sel_count == nullptr || sel_k < 0))
    throw Error(std::string(what) + ": a selection needs sel_count and sel_k >= 0");
  const bool sparse = sel_idx != nullptr;
  kernels::MlaLatentArgs a;
  a.qa = qa;
  a.base = cache.base;
  a.layout = kernels::row_layout(cache);
  a.block_size = cache.block_size;
  a.tables = tables;
  a.table_stride = table_stride;
  a.seq_lens = seq_lens;
  a.seq_len = seq_len;
  a.nq = nq;
  a.H = m.num_heads;
  a.lora = m.kv_lora_rank;
  a.Wq = m.kv_lora_rank + m.qk_rope_head_dim;
  a.ldq = (a.Wq + 3) / 4 * 4;
  a.ldk = (a.Wq + 31) / 32 * 32 + 4;  // = 4 (mod 32): conflict-free float4 reads of a row per lane
  a.sel_idx = sel_idx;
  a.sel_count = sel_count;
  a.sel_k = sel_k;
  a.queries_per_group = sparse ? 1 : nq;
  a.tiles_per_group = (a.queries_per_group * a.H + T::kStateRows - 1) / T::kStateRows;
  a.rows = seqs * nq * a.H;
  a.scale = scale;
  a.round_bf16 = bf16_products && cache.dtype == CacheDType::bf16;
  a.out = ot;
  const int64_t groups = sparse ? seqs * nq : seqs, tiles = groups * a.tiles_per_group;
  if (tiles > INT_MAX) throw Error(std::string(what) + ": " + std::to_string(tiles) + " tiles exceed the grid");

  void (*kernel)(kernels::MlaLatentArgs) = a.lora <= 128   ? kernels::mla_latent_attention<4>
                                        : a.lora <= 256 ? kernels::mla_latent_attention<8>
                                                        : kernels::mla_latent_attention<16>;
  const size_t smem = size_t(T::kStateRows * a.ldq + T::kBlockRows * a.ldk) * sizeof(float);  // 148 KB at V3's 576
  const int optin = mla_device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  if (smem > size_t(optin))
    throw Error(std::string(what) + ": rows of " + std::to_string(a.Wq) + " values need " + std::to_string(smem) +
                " bytes of shared memory per block; this GPU offers " + std::to_string(optin));
  if (smem > 48 * 1024)
    DEEPSEEK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));

  // Split-K: enough parts to fill the GPU once, each at least kMinBlocksPerPart blocks long.
  int per_sm = 0;
  DEEPSEEK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, T::kThreads, smem));
  const int64_t resident = int64_t(std::max(per_sm, 1)) * mla_device_attribute(cudaDevAttrMultiProcessorCount);
  const int64_t longest = sparse ? sel_k : max_len;
  const int64_t max_blocks = (std::max<int64_t>(longest, 0) + T::kBlockRows - 1) / T::kBlockRows;
  const int64_t cap = std::max<int64_t>(1, (max_blocks + T::kMinBlocksPerPart - 1) / T::kMinBlocksPerPart);
  const int64_t parts = tiles >= resident ? 1 : std::min<int64_t>({cap, (resident + tiles - 1) / tiles, 65535});

  Buffer partial;
  if (parts > 1) {
    partial.resize(size_t(parts * a.rows * (a.lora + 2)));
    a.part_m = partial.data();
    a.part_l = a.part_m + parts * a.rows;
    a.part_o = a.part_l + parts * a.rows;
  }
  kernel<<<dim3(unsigned(tiles), unsigned(parts)), T::kThreads, smem, stream()>>>(a);
  DEEPSEEK_CUDA_CHECK_LAUNCH("mla_latent_attention");
  if (parts > 1)
    DEEPSEEK_LAUNCH(mla_latent_merge, unsigned(a.rows), kernels::kMlaThreads, a.part_m, a.part_l, a.part_o, int(parts),
                    a.rows, a.lora, ot);
}

inline unsigned mla_token_groups(int64_t n) {
  return unsigned(std::min<int64_t>((n + kernels::kMlaTokens - 1) / kernels::kMlaTokens, 65535));
}

}  // namespace detail

// qa[s, h] = [W_UK[h]^T q_nope ; q_pe]  (q [n, H, nope + rope] -> qa [n, H, lora + rope]).
inline void mla_absorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* q, int64_t n, float* qa) {
  const kernels::WeightArgs a = detail::mla_kv_b_args(kv_b_proj, m, "mla_absorb");
  if (n <= 0) return;
  const int64_t Wq = m.kv_lora_rank + m.qk_rope_head_dim;
  const dim3 grid(unsigned((Wq + kernels::kMlaThreads - 1) / kernels::kMlaThreads), unsigned(m.num_heads),
                  detail::mla_token_groups(n));
  DEEPSEEK_LAUNCH(mla_absorb, grid, kernels::kMlaThreads, a, m.qk_nope_head_dim + m.v_head_dim, m.num_heads,
                  m.qk_nope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank, q, n, qa);
}

// o_h[s] = W_UV[h] o~[s, h]  (ot [n, H, lora] -> o [n, H, v]); ot rounded as linear_rows rounds it.
inline void mla_unabsorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* ot, int64_t n, float* o) {
  const kernels::WeightArgs a = detail::mla_kv_b_args(kv_b_proj, m, "mla_unabsorb");
  if (n <= 0) return;
  constexpr int kWarps = 8;
  const dim3 grid(unsigned((m.v_head_dim + kWarps - 1) / kWarps), unsigned(m.num_heads), detail::mla_token_groups(n));
  DEEPSEEK_LAUNCH(mla_unabsorb, grid, 32 * kWarps, a, m.num_heads, m.qk_nope_head_dim, m.kv_lora_rank, m.v_head_dim,
                  kv_b_proj.activations == ActivationDType::bf16, ot, n, o);
}

// o~ [n, H, lora] from qa [n, H, lora + rope] over the cache's latent rows: rows [0, p0 + s] for
// query s, or its sel_count[s] selected positions at sel_idx + s sel_k (device arrays; unselected
// rows are never read). bf16_products: see the header.
inline void mla_latent_attention(const MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0,
                                 const CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                                 int64_t sel_k, bool bf16_products, float* ot) {
  detail::mla_latent_launch(m, scale, qa, 1, n, cache, cache.block_table, 0, nullptr, p0 + n, p0 + n, sel_idx,
                            sel_count, sel_k, bf16_products, ot, "mla_latent_attention");
}

// The engine entry: `batch` sequences of nq queries each over one paged pool. `pool` gives the
// storage and the row layout (base, width, dtype, fp8_values, index_fp8, block_size > 0); its
// block_table is not read. Sequence b's block table is block_tables + b table_stride and it holds
// seq_lens[b] rows (both device arrays); its queries are its last nq positions, query s at
// seq_lens[b] - nq + s sees rows [0, seq_lens[b] - nq + s] (a decode step: nq = 1), or with a
// selection its sel_count[q] positions at sel_idx + q sel_k (q = b nq + s). max_seq_len (host)
// bounds every seq_lens[b]; it sizes the split. qa [batch nq, H, lora + rope], ot [batch nq, H, lora].
inline void mla_latent_attention_paged(const MlaDims& m, float scale, const float* qa, int64_t batch, int64_t nq,
                                       const CacheView& pool, const int32_t* block_tables, int64_t table_stride,
                                       const int32_t* seq_lens, int64_t max_seq_len, const int32_t* sel_idx,
                                       const int32_t* sel_count, int64_t sel_k, bool bf16_products, float* ot) {
  const char* what = "mla_latent_attention_paged";
  if (pool.block_size <= 0 || block_tables == nullptr || seq_lens == nullptr)
    throw Error(std::string(what) + ": needs a paged pool (block_size > 0), block_tables and seq_lens");
  if (table_stride * pool.block_size < max_seq_len)
    throw Error(std::string(what) + ": table_stride " + std::to_string(table_stride) + " blocks of " +
                std::to_string(pool.block_size) + " rows cannot hold max_seq_len " + std::to_string(max_seq_len));
  CacheView c = pool;
  c.block_table = block_tables;  // checked as the pool's table: the kernel reads block_tables itself
  detail::mla_latent_launch(m, scale, qa, batch, nq, c, block_tables, table_stride, seq_lens, 0, max_seq_len, sel_idx,
                            sel_count, sel_k, bf16_products, ot, what);
}

// The plain order: every cached row [0, p0 + n) expanded through kv_b_proj (as linear rounds its
// input for bf16 activations), then per (query, head) over [0, p0 + s] or the selection.
inline void mla_expanded_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q,
                                   int64_t n, int64_t p0, const CacheView& cache, const int32_t* sel_idx,
                                   const int32_t* sel_count, int64_t sel_k, float* o) {
  const char* what = "mla_expanded_attention";
  detail::mla_kv_b_args(kv_b_proj, m, what);
  detail::mla_check_cache(cache, m, what);
  if (n <= 0) return;
  if (sel_idx && sel_count == nullptr) throw Error(std::string(what) + ": a selection needs sel_count");
  const int64_t H = m.num_heads, lora = m.kv_lora_rank, rope = m.qk_rope_head_dim, T = p0 + n;
  Buffer latent(size_t(T * lora)), kpe(size_t(T * rope)), kvb(size_t(T * H * (m.qk_nope_head_dim + m.v_head_dim))),
      p(size_t(n * H * T));
  load_rows(cache, 0, 0, T, lora, latent.data(), lora);
  load_rows(cache, 0, lora, T, rope, kpe.data(), rope);
  linear(kv_b_proj, latent.data(), T, kvb.data());
  DEEPSEEK_LAUNCH(mla_expanded_attention, unsigned(n * H), kernels::kMlaThreads, q, H, m.qk_nope_head_dim, rope,
                  m.v_head_dim, kvb.data(), kpe.data(), p0, sel_idx, sel_count, sel_k, T, scale, p.data(), o);
}

// The tiled order: kMlaTiledRows rows at a time, expanded (load_rows + linear) and consumed by an
// online-softmax step for every (query, head); causal over [0, p0 + s].
inline void mla_tiled_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q,
                                int64_t n, int64_t p0, const CacheView& cache, float* o) {
  const char* what = "mla_tiled_attention";
  detail::mla_kv_b_args(kv_b_proj, m, what);
  detail::mla_check_cache(cache, m, what);
  if (n <= 0) return;
  const int64_t H = m.num_heads, lora = m.kv_lora_rank, rope = m.qk_rope_head_dim, vd = m.v_head_dim, T = p0 + n;
  const int64_t R = std::min(kernels::kMlaTiledRows, T);
  Buffer latent(size_t(R * lora)), kpe(size_t(R * rope)), kvb(size_t(R * H * (m.qk_nope_head_dim + vd))),
      state(size_t(2 * n * H));
  float* mx = state.data();
  float* l = mx + n * H;  // zero, as Buffer starts
  fill(mx, n * H, -std::numeric_limits<float>::infinity());
  fill(o, n * H * vd, 0.0f);
  for (int64_t t0 = 0; t0 < T; t0 += R) {
    const int64_t r = std::min(R, T - t0);
    load_rows(cache, t0, 0, r, lora, latent.data(), lora);
    load_rows(cache, t0, lora, r, rope, kpe.data(), rope);
    linear(kv_b_proj, latent.data(), r, kvb.data());  // [r, H, nope + v]
    DEEPSEEK_LAUNCH(mla_tiled_step, unsigned(n * H), kernels::kMlaThreads, q, H, m.qk_nope_head_dim, rope, vd,
                    kvb.data(), kpe.data(), r, t0, p0, scale, mx, l, o);
  }
  DEEPSEEK_LAUNCH(mla_normalize, kernels::grid_for(n * H * vd), kernels::kThreads, o, l, n * H, vd);
}

}  // namespace deepseek::backend::cuda
