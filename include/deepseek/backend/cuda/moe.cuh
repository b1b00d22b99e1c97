// Mixture-of-experts primitives on the GPU: backend/cpu/moe.hpp's moe_route and moe_experts under
// the same contract (the math is nn/moe.hpp's header; tests/cuda/test_moe.cu compares both).
//
//   moe_route    logits [n, E] -> idx [n, K] (descending selection score, ties to the lower index
//                as cpu::topk_indices), weight [n, K]. One warp per token: scores s (softmax with
//                max subtraction, or sigmoid), choice = s + e_score_correction_bias, the group
//                limit (a group's max, or for noaux_tc the sum of its two best; keep topk_group
//                groups, the rest -inf), then K rounds of a warp arg-max; the weights are summed
//                in selection order by one lane, as the CPU does.
//   moe_experts  y [n, d] = shared(x) (when given) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]),
//                expert(x) = down(silu(gate x) * up x); gate / up [inter, d], down [d, inter].
//
// moe_experts runs per chunk of at most kChunkTokens tokens (P = tokens * K (token, k) pairs):
//   1. moe_permute (one block): tokens per expert, their prefix offsets, and each pair's slot p in
//      the pairs sorted by expert, stable in token order; then the tile lists: an expert with at
//      most kExpertGemvTokens tokens gets one GEMV tile, a busier one 64-token GEMM tiles
//   2. gate / up:  h[p, r] = silu(gate_e[r] . x[token(p)]) * (up_e[r] . x[token(p)])
//   3. down:       o[p, c] = down_e[c] . h[p]
//      Steps 2 and 3 are the same grouped kernels over (row group, tile): the grid is sized for
//      the worst case (no tile count is read back) and blocks past the real count exit at once.
//        expert_gemv  one warp per weight row over the expert's tokens, T = 1, 4 or 16 of them
//                     per pass over the row (T >= n in decode: the row is read once); 16-byte
//                     loads per lane, widened in registers, f32 FMAs, a warp reduction per token
//        expert_gemm  a 64-token x 64-row tile per block: 32-column slabs of x and of the
//                     dequantized weights staged in shared memory, 4 x 4 outputs per thread
//   4. moe_combine:   y[t] = (shared ? y[t] : 0) + sum over t's pairs, in ascending expert order
//                     (ascending slot), of weight * o[p]: backend/cpu/moe.hpp's order
// The shared expert is cuda::linear + silu_mul (linear.cuh), as the CPU's swiglu.
//
// Exactness: every product is linear.cuh's (f32 weights; bf16 widened; FP8 e4m3 x block scale, or
// with bf16 activations e4m3 x bf16(x * scale); bf16 activations round x to bf16 otherwise), and
// h = g / (1 + exp(-g)) * u as cpu::silu_mul. Sums are f32 FMAs in another order than the CPU's:
// ~1e-6 relative. Routing equals the CPU's selection where no two scores are within f32 rounding.
//
// Graph safety: nothing is copied to or read from the host. The per-expert weight pointers travel
// by value in the kernel parameters (MatrixSet: 2 x 256 pointers, 4 KB per projection; the gate /
// up pass takes 8.3 KB, within the 32 KB parameter limit of CUDA 12.1+ on Volta and later), as
// __grid_constant__ so indexing them by expert reads the parameter bank instead of a local copy.
// Scratch is stream-ordered (cudaMallocAsync), which a graph capture records as allocation nodes.
#pragma once

#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/linear.cuh"
#include "deepseek/backend/params.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

inline constexpr int kMaxExperts = 256;  // E: routing and the kernel-parameter weight tables
inline constexpr int kMaxTopK = 32;      // K
inline constexpr int kMaxGroups = 32;    // n_group: one lane per group
inline constexpr int kRouteWarps = 8;    // tokens per routing block
inline constexpr int kPermuteThreads = 1024;
inline constexpr int64_t kChunkTokens = 1024;  // bounds the scratch: P x (inter + d) floats
inline constexpr int kExpertGemvTokens = 16;   // experts with more tokens take the GEMM tiles

// The traits of the two grouped kernels.
struct GemvTraits {
  static constexpr int kWarps = 8;  // rows per block, one per warp
};
struct GemmTraits {
  static constexpr int kTokens = 64, kRows = 64, kDepth = 32;  // tile: tokens x rows, slab depth
  static constexpr int kThreads = 256, kMicro = 4;             // 16 x 16 threads, 4 x 4 outputs each
  static constexpr int kRun = 8;                               // columns one thread stages per slab
};

// ---- The per-element instructions: stored weights widened to f32 -------------------------------

enum : int { kF32 = 0, kBf16 = 1, kE4m3 = 2 };  // WeightArgs::dtype's codes
template <int D>
struct Stored;
template <>
struct Stored<kF32> {
  using T = float;
};
template <>
struct Stored<kBf16> {
  using T = uint16_t;
};
template <>
struct Stored<kE4m3> {
  using T = uint8_t;
};

// One stored weight as f32 (FP8: the e4m3 value alone; the block scale is applied by the caller).
template <int D>
__device__ __forceinline__ float widen(typename Stored<D>::T v) {
  if constexpr (D == kF32)
    return v;
  else if constexpr (D == kBf16)
    return dev::bf16_to_f32(v);
  else
    return dev::f8_e4m3_to_f32(v);
}
// The 4 / sizeof(T) weights of one little-endian 32-bit word (bf16: the low half is element 0).
template <int D>
__device__ __forceinline__ void widen_word(uint32_t u, float* o) {
  if constexpr (D == kF32) {
    o[0] = __uint_as_float(u);
  } else if constexpr (D == kBf16) {
    o[0] = __uint_as_float(u << 16);
    o[1] = __uint_as_float(u & 0xffff0000u);
  } else {
    for (int b = 0; b < 4; ++b) o[b] = dev::f8_e4m3_to_f32(uint8_t(u >> (8 * b)));
  }
}
// V consecutive weights from element i of w as f32: vector loads of up to 16 bytes (the caller
// guarantees their alignment), one element at a time for V == 1.
template <int D, int V>
__device__ __forceinline__ void load_weights(const void* w, int64_t i, float* o) {
  using T = typename Stored<D>::T;
  constexpr int kBytes = V * int(sizeof(T)), kPerWord = 4 / int(sizeof(T));
  const T* p = static_cast<const T*>(w) + i;
  if constexpr (kBytes >= 16) {
    static_assert(kBytes % 16 == 0, "whole 16-byte vectors");
#pragma unroll
    for (int q = 0; q < kBytes / 16; ++q) {
      const uint4 u = __ldg(reinterpret_cast<const uint4*>(p) + q);
      widen_word<D>(u.x, o + (4 * q + 0) * kPerWord);
      widen_word<D>(u.y, o + (4 * q + 1) * kPerWord);
      widen_word<D>(u.z, o + (4 * q + 2) * kPerWord);
      widen_word<D>(u.w, o + (4 * q + 3) * kPerWord);
    }
  } else if constexpr (kBytes == 8) {
    const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    widen_word<D>(u.x, o);
    widen_word<D>(u.y, o + kPerWord);
  } else if constexpr (kBytes == 4 && V == kPerWord) {
    widen_word<D>(__ldg(reinterpret_cast<const uint32_t*>(p)), o);
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) o[v] = widen<D>(p[v]);
  }
}
// V consecutive activations (f32) from x: float4 loads when V is a multiple of 4.
template <int V>
__device__ __forceinline__ void load_inputs(const float* x, float* o) {
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int q = 0; q < V / 4; ++q) {
      const float4 u = reinterpret_cast<const float4*>(x)[q];
      o[4 * q] = u.x, o[4 * q + 1] = u.y, o[4 * q + 2] = u.z, o[4 * q + 3] = u.w;
    }
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) o[v] = x[v];
  }
}
__device__ __forceinline__ float swiglu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// ---- The weights of every expert, by value in the kernel parameters ----------------------------

// One projection (gate_proj, up_proj or down_proj) of all experts: one layout, per-expert data.
struct MatrixSet {
  const void* w[kMaxExperts];
  const float* scale[kMaxExperts];  // FP8: [ceil(rows / block_rows), scale_cols] per expert
  int64_t rows, cols, scale_cols;
  int block_rows, block_cols;
  bool round;  // bf16 activations (ActivationDType::bf16)
};
// One grouped pass: M = 2 the gate / up pair (h = silu(gate x) * up x), M = 1 down_proj.
template <int M>
struct ExpertPass {
  MatrixSet w[M];
  const float* in;        // [*, cols]: x (rows by token, through slot_token) or h (rows by slot)
  const int* slot_token;  // the token of slot p; null: the input row is the slot
  float* out;             // [P, rows], rows by slot
  const int4* tiles;      // (expert, first slot, tokens, 0)
  const int* n_tiles;     // the tile count, on the device
  bool vec;               // expert_gemm: cols % 8 == 0 and 16-byte aligned rows (vector staging)
};

// The tile of block row blockIdx.y, or false past the tile count.
__device__ __forceinline__ bool tile_of(const int4* tiles, const int* n_tiles, int4& tile) {
  if (int(blockIdx.y) >= *n_tiles) return false;
  tile = tiles[blockIdx.y];
  return true;
}

// ---- Routing ------------------------------------------------------------------------------------

struct RouteArgs {
  int E, K, n_group, topk_group;
  bool sigmoid, limit_groups, group_top2, norm;
  float scaling;
  const float* bias;  // e_score_correction_bias [E] or null
};
// The larger of (v, i) over the warp by value, then the lower index; every lane gets it. An empty
// candidate is (-inf, INT_MAX), which loses to any real one, -inf included.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) v = ov, i = oi;
  }
}

// One warp per token t = blockIdx.x * kRouteWarps + warp.
static __global__ void __launch_bounds__(kRouteWarps * 32)
    moe_route(const float* logits, int64_t n, RouteArgs a, int* idx, float* weight) {
  __shared__ float s_all[kRouteWarps][kMaxExperts], c_all[kRouteWarps][kMaxExperts], w_all[kRouteWarps][kMaxTopK];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int64_t t = int64_t(blockIdx.x) * kRouteWarps + warp;
  if (t >= n) return;
  const int E = a.E, K = a.K;
  const float neg_inf = -__int_as_float(0x7f800000);
  float* s = s_all[warp];
  float* c = c_all[warp];
  const float* l = logits + t * E;
  if (a.sigmoid) {
    for (int e = lane; e < E; e += 32) s[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    float m = neg_inf;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, l[e]);
    m = dev::warp_max(m);
    float sum = 0;
    for (int e = lane; e < E; e += 32) sum += (s[e] = expf(l[e] - m));
    const float inv = 1.0f / dev::warp_sum(sum);
    for (int e = lane; e < E; e += 32) s[e] *= inv;
  }
  for (int e = lane; e < E; e += 32) c[e] = s[e] + (a.bias ? a.bias[e] : 0.0f);
  __syncwarp();
  if (a.limit_groups) {
    const int per_group = E / a.n_group;
    float score = neg_inf;
    int gid = INT_MAX;
    if (lane < a.n_group) {
      const float* v = c + lane * per_group;
      if (a.group_top2) {  // the sum of the group's two best (one: itself + 0)
        float b1 = neg_inf, b2 = neg_inf;
        for (int i = 0; i < per_group; ++i) {
          if (v[i] > b1)
            b2 = b1, b1 = v[i];
          else if (v[i] > b2)
            b2 = v[i];
        }
        score = b1 + (per_group > 1 ? b2 : 0.0f);
      } else {
        score = v[0];
        for (int i = 1; i < per_group; ++i) score = fmaxf(score, v[i]);
      }
      gid = lane;
    }
    uint32_t keep = 0;
    for (int k = 0; k < a.topk_group; ++k) {
      float bv = score;
      int bi = gid;
      warp_argmax(bv, bi);
      keep |= 1u << bi;
      if (lane == bi) score = neg_inf, gid = INT_MAX;
    }
    __syncwarp();
    for (int e = lane; e < E; e += 32)
      if (!((keep >> (e / per_group)) & 1u)) c[e] = neg_inf;
    __syncwarp();
  }
  // Top-K: lane owns experts lane + 32 j; `taken` marks the ones already selected.
  uint32_t taken = 0;
  float sum = 0;
  for (int k = 0; k < K; ++k) {
    float bv = neg_inf;
    int bi = INT_MAX;
    for (int j = 0, e = lane; e < E; ++j, e += 32)
      if (!((taken >> j) & 1u) && (bi == INT_MAX || c[e] > bv)) bv = c[e], bi = e;
    warp_argmax(bv, bi);
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == 0) {
      idx[t * K + k] = bi;
      sum += (w_all[warp][k] = s[bi]);
    }
  }
  if (lane == 0)
    for (int k = 0; k < K; ++k) {
      float w = w_all[warp][k];
      if (a.sigmoid) {
        if (a.norm) w /= (sum + 1e-20f);
        w *= a.scaling;
      } else if (a.norm && K > 1) {
        w /= (sum + 1e-20f);
      } else {
        w *= a.scaling;
      }
      weight[t * K + k] = w;
    }
}

// ---- moe_experts step 1: the permutation and the tile lists -------------------------------------

struct MoePlan {
  int* slot_token;   // [P] token (within the chunk) of slot p
  int* pair_slot;    // [P] slot of pair t * K + k; -1 for an id outside [0, E)
  int4* gemv_tiles;  // (expert, first slot, tokens, 0): one per expert
  int4* gemm_tiles;  // the same per 64 tokens
  int* n_tiles;      // [2]: GEMV tiles, GEMM tiles
};

// One block of kPermuteThreads. An expert with 1 .. gemv_max tokens gets one GEMV tile (all its
// tokens), a busier one GEMM tiles of GemmTraits::kTokens.
static __global__ void __launch_bounds__(kPermuteThreads)
    moe_permute(const int* idx, int P, int K, int E, int gemv_max, MoePlan plan) {
  constexpr int kWarps = kPermuteThreads / 32;
  __shared__ int count[kMaxExperts], next[kMaxExperts];
  __shared__ int warp_count[kWarps][kMaxExperts];  // per chunk: pairs of warp w for expert e
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < kWarps * kMaxExperts; i += kPermuteThreads) (&warp_count[0][0])[i] = 0;
  for (int e = tid; e < E; e += kPermuteThreads) count[e] = 0;
  __syncthreads();
  for (int p = tid; p < P; p += kPermuteThreads) {
    const int e = idx[p];
    if (e >= 0 && e < E) atomicAdd(&count[e], 1);
  }
  __syncthreads();
  // Offsets and tiles: lane L of warp 0 takes experts [L * per, (L + 1) * per), after an
  // exclusive scan of the lanes' slot and tile counts.
  if (warp == 0) {
    const int per = (E + 31) / 32, e0 = min(E, lane * per), e1 = min(E, e0 + per);
    int slots = 0, small = 0, large = 0;
    for (int e = e0; e < e1; ++e) {
      const int c = count[e];
      slots += c;
      if (c <= gemv_max)
        small += c > 0;
      else
        large += (c + GemmTraits::kTokens - 1) / GemmTraits::kTokens;
    }
    int slot = slots, gi = small, li = large;  // inclusive scans
    for (int o = 1; o < 32; o <<= 1) {
      const int a = __shfl_up_sync(0xffffffffu, slot, o), b = __shfl_up_sync(0xffffffffu, gi, o),
                c = __shfl_up_sync(0xffffffffu, li, o);
      if (lane >= o) slot += a, gi += b, li += c;
    }
    slot -= slots, gi -= small, li -= large;
    for (int e = e0; e < e1; ++e) {
      const int c = count[e];
      next[e] = slot;
      if (c <= gemv_max) {
        if (c > 0) plan.gemv_tiles[gi++] = make_int4(e, slot, c, 0);
      } else
        for (int i = 0; i < c; i += GemmTraits::kTokens)
          plan.gemm_tiles[li++] = make_int4(e, slot + i, min(GemmTraits::kTokens, c - i), 0);
      slot += c;
    }
    if (lane == 31) plan.n_tiles[0] = gi, plan.n_tiles[1] = li;
  }
  __syncthreads();
  // Slots in pair order, kPermuteThreads pairs at a time: a pair's slot is its expert's next free
  // slot plus the pairs of that expert before it in this chunk (earlier warps, then earlier lanes).
  for (int base = 0; base < P; base += kPermuteThreads) {
    const int p = base + tid;
    int e = p < P ? idx[p] : -1;
    if (e < 0 || e >= E) e = -1;
    const uint32_t peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (e >= 0 && rank == 0) warp_count[warp][e] = __popc(peers);
    __syncthreads();
    if (e >= 0) {
      int slot = next[e] + rank;
      for (int w = 0; w < warp; ++w) slot += warp_count[w][e];
      plan.slot_token[slot] = p / K;
      plan.pair_slot[p] = slot;
    } else if (p < P) {
      plan.pair_slot[p] = -1;
    }
    __syncthreads();
    for (int x = tid; x < E; x += kPermuteThreads) {
      int total = 0;
      for (int w = 0; w < kWarps; ++w) total += warp_count[w][x], warp_count[w][x] = 0;
      next[x] += total;
    }
    __syncthreads();
  }
}

// ---- moe_experts steps 2 and 3: the grouped expert kernels --------------------------------------

// Grid (ceil(rows / kWarps), tile slots). Warp w of block (x, j) computes row x * kWarps + w of
// tile j's expert for all of the tile's tokens, T at a time (decode: all at once, so the row is
// read once). Vec: 16-byte weight loads (cols and FP8's block_cols multiples of V, rows 16-byte
// aligned); else one element per lane and step.
template <int D, bool Vec, int M, int T>
static __global__ void __launch_bounds__(GemvTraits::kWarps * 32) expert_gemv(const __grid_constant__ ExpertPass<M> a) {
  constexpr bool kFp8 = D == kE4m3;
  constexpr int V = Vec ? 16 / int(sizeof(typename Stored<D>::T)) : 1;
  int4 tile;
  if (!tile_of(a.tiles, a.n_tiles, tile)) return;
  const int e = tile.x, count = tile.z;
  const int64_t rows = a.w[0].rows, cols = a.w[0].cols;
  const int64_t r = int64_t(blockIdx.x) * GemvTraits::kWarps + (int(threadIdx.x) >> 5);
  if (r >= rows) return;
  const int lane = int(threadIdx.x) & 31;
  const bool round = a.w[0].round;
  const unsigned bc = unsigned(a.w[0].block_cols);
  const void* wp[M];
  const float* sp[M];  // FP8: this row's block row of scales
#pragma unroll
  for (int m = 0; m < M; ++m) {
    wp[m] = a.w[m].w[e];
    sp[m] = kFp8 ? a.w[m].scale[e] + (r / a.w[m].block_rows) * a.w[m].scale_cols : nullptr;
  }
  for (int p0 = tile.y; p0 < tile.y + count; p0 += T) {
    const int nt = min(T, tile.y + count - p0);
    const float* xin[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const int p = p0 + (t < nt ? t : 0);
      xin[t] = a.in + int64_t(a.slot_token ? a.slot_token[p] : p) * cols;
    }
    float acc[M][T];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int t = 0; t < T; ++t) acc[m][t] = 0;
    for (int64_t c = int64_t(lane) * V; c < cols; c += 32 * V) {
      float w[M][V], s[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        load_weights<D, V>(wp[m], r * cols + c, w[m]);
        s[m] = kFp8 ? sp[m][unsigned(c) / bc] : 1.0f;
        if (kFp8 && !round)  // W[r, c] = e4m3 * scale, as linear.cuh's weight_at
#pragma unroll
          for (int v = 0; v < V; ++v) w[m][v] *= s[m];
      }
#pragma unroll
      for (int t = 0; t < T; ++t) {
        if (t >= nt) break;
        float xv[V];
        load_inputs<V>(xin[t] + c, xv);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          if (!kFp8 && round) xv[v] = dev::round_to_bf16(xv[v]);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            const float xi = kFp8 && round ? dev::round_to_bf16(xv[v] * s[m]) : xv[v];  // e4m3 * bf16(x * s)
            acc[m][t] = fmaf(w[m][v], xi, acc[m][t]);
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < T; ++t) {
      if (t >= nt) break;
      float v[M];
#pragma unroll
      for (int m = 0; m < M; ++m) v[m] = dev::warp_sum(acc[m][t]);
      if (lane == 0) a.out[int64_t(p0 + t) * rows + r] = M == 2 ? swiglu(v[0], v[M - 1]) : v[0];
    }
  }
}

// GemmTraits::kRun consecutive inputs from column c of row x (zero past cols or for no row).
__device__ __forceinline__ void stage_inputs(const float* x, int64_t c, int64_t cols, bool vec, float* o) {
  constexpr int R = GemmTraits::kRun;
  if (x && vec && c + R <= cols) {
    load_inputs<R>(x + c, o);
    return;
  }
#pragma unroll
  for (int i = 0; i < R; ++i) o[i] = x && c + i < cols ? x[c + i] : 0.0f;
}
// The same for weights: element `row` + c on of w, widened (FP8: the e4m3 values alone).
template <int D>
__device__ __forceinline__ void stage_weights(const void* w, bool ok, int64_t row, int64_t c, int64_t cols, bool vec,
                                              float* o) {
  constexpr int R = GemmTraits::kRun;
  if (ok && vec && c + R <= cols) {
    load_weights<D, R>(w, row + c, o);
    return;
  }
  const auto* p = static_cast<const typename Stored<D>::T*>(w) + row;
#pragma unroll
  for (int i = 0; i < R; ++i) o[i] = ok && c + i < cols ? widen<D>(p[c + i]) : 0.0f;
}

// Grid (ceil(rows / kRows), tile slots). Block (x, j): rows [x * kRows, + kRows) for tile j's
// nt <= kTokens tokens. Per slab of kDepth columns each thread stages kRun columns of one token
// row and of one weight row (per matrix), transformed as the product needs them; then each thread
// multiplies a kMicro x kMicro block of (token, row) out of shared memory. FP8 needs block_rows
// % kRows == 0 and block_cols % kDepth == 0 (the launcher checks): one scale per tile and slab.
template <int D, int M>
static __global__ void __launch_bounds__(GemmTraits::kThreads) expert_gemm(const __grid_constant__ ExpertPass<M> a) {
  using G = GemmTraits;
  constexpr bool kFp8 = D == kE4m3;
  int4 tile;
  if (!tile_of(a.tiles, a.n_tiles, tile)) return;
  const int e = tile.x, p0 = tile.y, nt = tile.z;
  const int64_t rows = a.w[0].rows, cols = a.w[0].cols, r0 = int64_t(blockIdx.x) * G::kRows;
  const bool round = a.w[0].round;
  // [m][k][token or row]; + 4 keeps the float4 reads aligned.
  __shared__ __align__(16) float xs[M][G::kDepth][G::kTokens + 4];
  __shared__ __align__(16) float ws[M][G::kDepth][G::kRows + 4];
  const int tid = int(threadIdx.x);
  const int lr = tid % G::kTokens, lc = (tid / G::kTokens) * G::kRun;  // staging: row lr, columns lc ..
  static_assert(G::kTokens == G::kRows && G::kThreads * G::kRun == G::kTokens * G::kDepth, "one staging map");
  const float* xrow = nullptr;
  if (lr < nt) xrow = a.in + int64_t(a.slot_token ? a.slot_token[p0 + lr] : p0 + lr) * cols;
  const bool w_ok = r0 + lr < rows;
  const int64_t w_row = (r0 + lr) * cols;
  const float* srow[M];  // FP8: the tile's block row of scales
#pragma unroll
  for (int m = 0; m < M; ++m) srow[m] = kFp8 ? a.w[m].scale[e] + (r0 / a.w[m].block_rows) * a.w[m].scale_cols : nullptr;
  const int ty = tid / 16, tx = tid % 16;  // compute: tokens ty * 4 .., rows tx * 4 ..
  float acc[M][G::kMicro][G::kMicro];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int i = 0; i < G::kMicro; ++i)
#pragma unroll
      for (int j = 0; j < G::kMicro; ++j) acc[m][i][j] = 0;
  for (int64_t k0 = 0; k0 < cols; k0 += G::kDepth) {
    float xv[G::kRun];
    stage_inputs(xrow, k0 + lc, cols, a.vec, xv);
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float s = kFp8 ? srow[m][unsigned(k0) / unsigned(a.w[m].block_cols)] : 1.0f;
      float wv[G::kRun];
      stage_weights<D>(a.w[m].w[e], w_ok, w_row, k0 + lc, cols, a.vec, wv);
#pragma unroll
      for (int i = 0; i < G::kRun; ++i) {
        const float x = xv[i];
        xs[m][lc + i][lr] = kFp8 && round ? dev::round_to_bf16(x * s) : round ? dev::round_to_bf16(x) : x;
        ws[m][lc + i][lr] = kFp8 && !round ? wv[i] * s : wv[i];
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < G::kDepth; ++k)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float4 xa = *reinterpret_cast<const float4*>(&xs[m][k][ty * G::kMicro]);
        const float4 wb = *reinterpret_cast<const float4*>(&ws[m][k][tx * G::kMicro]);
        const float xr[4] = {xa.x, xa.y, xa.z, xa.w}, wr[4] = {wb.x, wb.y, wb.z, wb.w};
#pragma unroll
        for (int i = 0; i < G::kMicro; ++i)
#pragma unroll
          for (int j = 0; j < G::kMicro; ++j) acc[m][i][j] = fmaf(xr[i], wr[j], acc[m][i][j]);
      }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < G::kMicro; ++i) {
    const int t = ty * G::kMicro + i;
    if (t >= nt) break;
#pragma unroll
    for (int j = 0; j < G::kMicro; ++j) {
      const int64_t r = r0 + tx * G::kMicro + j;
      if (r < rows) a.out[int64_t(p0 + t) * rows + r] = M == 2 ? swiglu(acc[0][i][j], acc[M - 1][i][j]) : acc[0][i][j];
    }
  }
}

// ---- moe_experts step 4: the combine ------------------------------------------------------------

// One block per token t: y[t] = (accumulate ? y[t] : 0) + the weighted expert rows summed in
// ascending slot (= expert) order, each as fmaf(w, o, sum) from 0 (cpu::axpy into zeros).
static __global__ void moe_combine(const float* o, const int* pair_slot, const float* weight, int K, int64_t d,
                                   bool accumulate, float* y) {
  __shared__ int slot[kMaxTopK];
  __shared__ float w[kMaxTopK];
  __shared__ int m;
  const int64_t t = blockIdx.x;
  if (threadIdx.x == 0) {  // insertion sort of the token's (slot, weight) pairs by slot
    int count = 0;
    for (int k = 0; k < K; ++k) {
      const int p = pair_slot[t * K + k];
      if (p < 0) continue;
      const float wk = weight[t * K + k];
      int i = count++;
      for (; i > 0 && slot[i - 1] > p; --i) slot[i] = slot[i - 1], w[i] = w[i - 1];
      slot[i] = p, w[i] = wk;
    }
    m = count;
  }
  __syncthreads();
  float* yt = y + t * d;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float sum = 0;
    for (int k = 0; k < m; ++k) sum = fmaf(w[k], o[int64_t(slot[k]) * d + c], sum);
    yt[c] = (accumulate ? yt[c] : 0.0f) + sum;
  }
}

}  // namespace kernels

namespace detail {

// Uninitialized stream-ordered device scratch of n T (the expert passes write all they read).
template <class T>
class Scratch {
 public:
  explicit Scratch(size_t n) {
    if (n) DEEPSEEK_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&p_), n * sizeof(T), stream()));
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (p_) (void)cudaFreeAsync(p_, stream());
  }
  T* data() const { return p_; }

 private:
  T* p_ = nullptr;
};

// The MatrixSet of projection `proj` over experts [0, E): every expert's matrix must share the
// first one's shape, dtype, block shape and activation rounding. dtype: WeightArgs's code;
// aligned: every matrix starts on 16 bytes.
inline void matrix_set(const ExpertFfn* experts, int E, const BlockQuantMatrix* ExpertFfn::*proj, const char* name,
                       kernels::MatrixSet& s, int& dtype, bool& aligned) {
  s = kernels::MatrixSet{};
  aligned = true;
  for (int e = 0; e < E; ++e) {
    const std::string what = "moe_experts: experts[" + std::to_string(e) + "]." + name;
    const BlockQuantMatrix* W = experts[e].*proj;
    if (!W) throw Error(what + " is null");
    const kernels::WeightArgs a = weight_args(*W, what.c_str());
    const bool round = W->activations == ActivationDType::bf16;
    if (e == 0) {
      s.rows = W->rows(), s.cols = a.cols, s.scale_cols = a.scale_cols;
      s.block_rows = a.block_rows, s.block_cols = a.block_cols, s.round = round;
      dtype = a.dtype;
    } else if (W->rows() != s.rows || a.cols != s.cols || a.dtype != dtype || round != s.round ||
               (a.dtype == kernels::kE4m3 &&
                (a.block_rows != s.block_rows || a.block_cols != s.block_cols || a.scale_cols != s.scale_cols))) {
      throw Error(what + " differs from experts[0]." + name +
                  " in shape, dtype, block shape or activations (the CUDA kernels take one layout for all experts)");
    }
    s.w[e] = a.w;
    s.scale[e] = a.scale;
    aligned = aligned && reinterpret_cast<uintptr_t>(a.w) % 16 == 0;
  }
}

// expert_gemv's 16-byte loads fit: rows and FP8 scale blocks hold whole vectors of V elements.
inline bool gemv_vec(const kernels::MatrixSet& s, int dtype, bool aligned, bool input_aligned) {
  const int64_t V = dtype == kernels::kF32 ? 4 : dtype == kernels::kBf16 ? 8 : 16;
  return aligned && input_aligned && s.cols % V == 0 && (dtype != kernels::kE4m3 || s.block_cols % V == 0);
}
// expert_gemm's one scale per tile and slab.
inline bool gemm_fits(const kernels::MatrixSet& s, int dtype) {
  return dtype != kernels::kE4m3 ||
         (s.block_rows % kernels::GemmTraits::kRows == 0 && s.block_cols % kernels::GemmTraits::kDepth == 0);
}

template <int D, bool Vec, int M>
inline void launch_gemv(const kernels::ExpertPass<M>& a, int T, dim3 grid) {
  constexpr int kBlock = kernels::GemvTraits::kWarps * 32;
  if (T == 1)
    kernels::expert_gemv<D, Vec, M, 1><<<grid, kBlock, 0, stream()>>>(a);
  else if (T == 4)
    kernels::expert_gemv<D, Vec, M, 4><<<grid, kBlock, 0, stream()>>>(a);
  else
    kernels::expert_gemv<D, Vec, M, kernels::kExpertGemvTokens><<<grid, kBlock, 0, stream()>>>(a);
  DEEPSEEK_CUDA_CHECK_LAUNCH("expert_gemv");
}
// One grouped pass (gate / up or down) of dtype D: the GEMV tiles, then the GEMM tiles.
template <int D, int M>
inline void expert_pass_as(kernels::ExpertPass<M> a, const kernels::MoePlan& plan, int T, bool vec, unsigned gemv_cap,
                           unsigned gemm_cap) {
  const int64_t rows = a.w[0].rows;
  a.tiles = plan.gemv_tiles;
  a.n_tiles = plan.n_tiles;
  const dim3 gemv_grid(unsigned((rows + kernels::GemvTraits::kWarps - 1) / kernels::GemvTraits::kWarps), gemv_cap);
  if (vec)
    launch_gemv<D, true, M>(a, T, gemv_grid);
  else
    launch_gemv<D, false, M>(a, T, gemv_grid);
  if (gemm_cap == 0) return;
  a.tiles = plan.gemm_tiles;
  a.n_tiles = plan.n_tiles + 1;
  const dim3 gemm_grid(unsigned((rows + kernels::GemmTraits::kRows - 1) / kernels::GemmTraits::kRows), gemm_cap);
  kernels::expert_gemm<D, M><<<gemm_grid, kernels::GemmTraits::kThreads, 0, stream()>>>(a);
  DEEPSEEK_CUDA_CHECK_LAUNCH("expert_gemm");
}
template <int M>
inline void expert_pass(int dtype, const kernels::ExpertPass<M>& a, const kernels::MoePlan& plan, int T, bool vec,
                        unsigned gemv_cap, unsigned gemm_cap) {
  switch (dtype) {
    case kernels::kF32:
      expert_pass_as<kernels::kF32, M>(a, plan, T, vec, gemv_cap, gemm_cap);
      break;
    case kernels::kBf16:
      expert_pass_as<kernels::kBf16, M>(a, plan, T, vec, gemv_cap, gemm_cap);
      break;
    default:
      expert_pass_as<kernels::kE4m3, M>(a, plan, T, vec, gemv_cap, gemm_cap);
      break;
  }
}

// y [n, d] = down(silu(gate x) * up x): the shared expert (cpu::swiglu).
inline void swiglu(const ExpertFfn& f, const float* x, int64_t n, float* y) {
  const int64_t inter = f.gate_proj->rows();
  Scratch<float> g(size_t(n * inter)), u(size_t(n * inter));
  linear(*f.gate_proj, x, n, g.data());
  linear(*f.up_proj, x, n, u.data());
  silu_mul(g.data(), u.data(), n * inter);
  linear(*f.down_proj, g.data(), n, y);
}

}  // namespace detail

// logits [n, E] -> idx [n, top_k] (descending selection score), weight [n, top_k]; r.bias is a
// device array (or null).
inline void moe_route(const float* logits, int64_t n, const MoeRouting& r, int* idx, float* weight) {
  using Method = MoeRouting::Method;
  const int E = r.n_experts, K = r.top_k;
  if (E < 1 || E > kernels::kMaxExperts)
    throw Error("moe_route: n_experts " + std::to_string(E) + " (the CUDA kernel takes 1 .. " +
                std::to_string(kernels::kMaxExperts) + ")");
  if (K < 1 || K > E || K > kernels::kMaxTopK)
    throw Error("moe_route: top_k " + std::to_string(K) + " (1 .. min(n_experts, " + std::to_string(kernels::kMaxTopK) +
                "))");
  const bool limit = r.method != Method::greedy && r.n_group > 1;
  if (limit && (r.n_group > kernels::kMaxGroups || E % r.n_group != 0))
    throw Error("moe_route: n_group " + std::to_string(r.n_group) + " must divide n_experts " + std::to_string(E) +
                " and be at most " + std::to_string(kernels::kMaxGroups));
  if (limit && (r.topk_group < 1 || r.topk_group > r.n_group))
    throw Error("moe_route: topk_group " + std::to_string(r.topk_group) + " (1 .. n_group " +
                std::to_string(r.n_group) + ")");
  if (n <= 0) return;
  kernels::RouteArgs a;
  a.E = E, a.K = K, a.n_group = r.n_group, a.topk_group = r.topk_group;
  a.sigmoid = r.scoring == MoeRouting::Scoring::sigmoid;
  a.limit_groups = limit;
  a.group_top2 = r.method == Method::noaux_tc;
  a.norm = r.norm_topk_prob;
  a.scaling = r.routed_scaling_factor;
  a.bias = r.bias;
  DEEPSEEK_LAUNCH(moe_route, unsigned((n + kernels::kRouteWarps - 1) / kernels::kRouteWarps), kernels::kRouteWarps * 32,
                  logits, n, a, idx, weight);
}

// y [n, d] = shared(x) (when given) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]) (overwritten).
// experts: a host array of E; its matrices, x, idx, weight and y are on the device.
inline void moe_experts(const ExpertFfn* experts, int E, const ExpertFfn* shared, const float* x, int64_t n, int64_t d,
                        const int* idx, const float* weight, int K, float* y) {
  if (E < 1 || E > kernels::kMaxExperts)
    throw Error("moe_experts: E " + std::to_string(E) + " (the CUDA kernels take 1 .. " +
                std::to_string(kernels::kMaxExperts) + " experts)");
  if (K < 1 || K > kernels::kMaxTopK)
    throw Error("moe_experts: K " + std::to_string(K) + " (1 .. " + std::to_string(kernels::kMaxTopK) + ")");
  kernels::ExpertPass<2> gate_up{};
  kernels::ExpertPass<1> down{};
  int gate_dtype = 0, up_dtype = 0, down_dtype = 0;
  bool gate_aligned = true, up_aligned = true, down_aligned = true;
  detail::matrix_set(experts, E, &ExpertFfn::gate_proj, "gate_proj", gate_up.w[0], gate_dtype, gate_aligned);
  detail::matrix_set(experts, E, &ExpertFfn::up_proj, "up_proj", gate_up.w[1], up_dtype, up_aligned);
  detail::matrix_set(experts, E, &ExpertFfn::down_proj, "down_proj", down.w[0], down_dtype, down_aligned);
  const kernels::MatrixSet &g = gate_up.w[0], &u = gate_up.w[1], &dn = down.w[0];
  if (u.rows != g.rows || u.cols != g.cols || up_dtype != gate_dtype || u.round != g.round ||
      (gate_dtype == kernels::kE4m3 && (u.block_rows != g.block_rows || u.block_cols != g.block_cols)))
    throw Error("moe_experts: up_proj differs from gate_proj in shape, dtype, block shape or activations");
  const int64_t inter = g.rows;
  if (g.cols != d || dn.rows != d || dn.cols != inter)
    throw Error("moe_experts: expert shapes gate/up [" + std::to_string(g.rows) + ", " + std::to_string(g.cols) +
                "], down [" + std::to_string(dn.rows) + ", " + std::to_string(dn.cols) + "] do not fit d " +
                std::to_string(d));
  if (shared && (!shared->gate_proj || !shared->up_proj || !shared->down_proj || shared->gate_proj->cols() != d ||
                 shared->up_proj->cols() != d || shared->up_proj->rows() != shared->gate_proj->rows() ||
                 shared->down_proj->rows() != d || shared->down_proj->cols() != shared->gate_proj->rows()))
    throw Error("moe_experts: the shared expert's matrices are missing, do not fit each other or do not fit d " +
                std::to_string(d));
  if (n <= 0 || d <= 0) return;

  // Experts with few tokens take the GEMV tiles (one per expert, its tokens T at a time: all at
  // once when n <= T); all of them do when the FP8 blocks do not fit expert_gemm's tiles.
  const int T = n == 1 ? 1 : n <= 4 ? 4 : kernels::kExpertGemvTokens;
  const bool tiled = detail::gemm_fits(g, gate_dtype) && detail::gemm_fits(dn, down_dtype);
  const int gemv_max = tiled ? kernels::kExpertGemvTokens : INT_MAX;
  const int64_t chunk = std::min(n, kernels::kChunkTokens), P_max = chunk * K;
  // Worst-case tile counts: one GEMV tile per expert with tokens; GEMM tiles sum_e ceil(c_e / 64)
  // <= P / 64 + (experts with more than kExpertGemvTokens tokens).
  const int64_t gemv_cap = std::min<int64_t>(E, P_max);
  const int64_t gemm_cap =
      tiled ? P_max / kernels::GemmTraits::kTokens + std::min<int64_t>(E, P_max / (kernels::kExpertGemvTokens + 1)) : 0;
  detail::Scratch<int4> tiles(size_t(gemv_cap + gemm_cap));
  detail::Scratch<int> ints(size_t(2 * P_max + 2));
  detail::Scratch<float> h(size_t(P_max * inter)), o(size_t(P_max * d));
  kernels::MoePlan plan;
  plan.gemv_tiles = tiles.data();
  plan.gemm_tiles = tiles.data() + gemv_cap;
  plan.slot_token = ints.data();
  plan.pair_slot = ints.data() + P_max;
  plan.n_tiles = ints.data() + 2 * P_max;

  const bool x_aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 && d % 4 == 0;
  gate_up.slot_token = plan.slot_token;
  gate_up.out = h.data();
  gate_up.vec = g.cols % kernels::GemmTraits::kRun == 0 && gate_aligned && up_aligned && x_aligned;
  down.in = h.data();
  down.slot_token = nullptr;
  down.out = o.data();
  down.vec = dn.cols % kernels::GemmTraits::kRun == 0 && down_aligned;  // h: cudaMallocAsync, 256-byte aligned
  const bool gate_up_vec = detail::gemv_vec(g, gate_dtype, gate_aligned && up_aligned, x_aligned);
  const bool down_vec = detail::gemv_vec(dn, down_dtype, down_aligned, true);
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t nc = std::min(chunk, n - t0);
    const int P = int(nc * K);
    const float* xc = x + t0 * d;
    float* yc = y + t0 * d;
    if (shared) detail::swiglu(*shared, xc, nc, yc);
    DEEPSEEK_LAUNCH(moe_permute, 1u, kernels::kPermuteThreads, idx + t0 * K, P, K, E, gemv_max, plan);
    gate_up.in = xc;
    detail::expert_pass(gate_dtype, gate_up, plan, T, gate_up_vec, unsigned(gemv_cap), unsigned(gemm_cap));
    detail::expert_pass(down_dtype, down, plan, T, down_vec, unsigned(gemv_cap), unsigned(gemm_cap));
    DEEPSEEK_LAUNCH(moe_combine, unsigned(nc), kernels::kThreads, o.data(), plan.pair_slot, weight + t0 * K, K, d,
                    shared != nullptr, yc);
  }
}

}  // namespace deepseek::backend::cuda
