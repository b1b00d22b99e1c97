// Plain multi-head attention over a K/V cache on the GPU (nn/attention.hpp has the math; the CPU
// twin is backend/cpu/mha_attention.hpp, same contract): the cache row of a token is
// [k (G x hd) ; v (G x hd)] with RoPE already applied to k, and query head h reads KV head
// g = h / (H / G):
//   o[s, h] = sum_{t <= p0 + s} softmax_t(scale q[s, h] . k_g(t)) v_g(t)      q, o [n, H, hd]
// Split-K (flash decoding), all arithmetic f32:
//   partial  grid (query head s H + h, split of kv positions): kWarps warps take the split's keys
//            round robin, each an online softmax (running max m, sum l and the o accumulators in
//            registers, hd / 32 per lane; the dot split over the lanes and reduced by shuffles);
//            the warps then merge in shared memory into the split's (m, l, o[hd])
//   combine  grid (s H + h): o = sum_i e^{m_i - M} o_i / sum_i e^{m_i - M} l_i over the splits
// The number of splits fills about kTargetBlocks blocks (decode: many splits; prefill: one).
// Against the CPU (scores, one softmax, then sum_t p_t v_t) only the summation order and the
// device's expf differ: ~1e-6 relative. The cache is read in its dtype exactly as CacheView::load
// widens it (f32, bf16, or FP8's layout), contiguous or paged; its storage and block table are
// device memory, q and o device arrays, the shapes host values.
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/cache_rows.cuh"
#include "deepseek/backend/cuda/dtype.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/core/cache_view.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

struct MhaTraits {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kMaxHeadDim = 256, kPerLane = kMaxHeadDim / 32;  // o accumulators per lane
  static constexpr int64_t kMinKeysPerSplit = 128, kTargetBlocks = 1024;
};

// Column c of a cache row as f32, exactly as CacheView::load widens it (the per-element instruction).
__device__ __forceinline__ float cache_value(const uint8_t* r, const RowLayout& l, int64_t c) {
  if (l.dtype == 0) return reinterpret_cast<const float*>(r)[c];
  if (l.dtype == 1) return dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(r)[c]);
  if (c < l.fp8_values) return dev::f8_e4m3_to_f32(r[c]) * reinterpret_cast<const float*>(r + l.fp8_values)[c / 128];
  if (c >= l.suffix_start) {
    const uint8_t* q = r + l.suffix_offset;
    const int64_t k = c - l.suffix_start;
    return dev::f8_e4m3_to_f32(q[k]) * reinterpret_cast<const float*>(q + l.index_fp8)[k / 128];
  }
  return dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(r + l.tail_offset)[c - l.fp8_values]);
}

// Split blockIdx.y (kv positions [y chunk, + chunk)) of query head blockIdx.x = s H + h; writes
// part[(blockIdx.x splits + y) (hd + 2) ..] = m, l, o[hd]. Splits past the causal end write nothing.
// K of KV head g sits at columns [g hd, + hd) of a row, its V at [kvw + g hd, + hd) (kvw = G hd).
static __global__ void mha_partial(const float* q, int64_t p0, int64_t H, int64_t group, int64_t hd, int64_t kvw,
                                   float scale, const uint8_t* base, int64_t block_size, const int32_t* table,
                                   RowLayout l, int64_t chunk, int64_t splits, float* part) {
  using T = MhaTraits;
  const int64_t qh = blockIdx.x, s = qh / H, h = qh % H, len = p0 + s + 1, t0 = int64_t(blockIdx.y) * chunk;
  if (t0 >= len) return;
  const int64_t t1 = t0 + chunk < len ? t0 + chunk : len;
  const int64_t kcol = (h / group) * hd, vcol = kvw + kcol;
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  float qr[T::kPerLane], acc[T::kPerLane];
#pragma unroll
  for (int i = 0; i < T::kPerLane; ++i) {
    const int64_t j = lane + 32 * i;
    qr[i] = j < hd ? q[qh * hd + j] : 0.0f;
    acc[i] = 0.0f;
  }
  // Online softmax over this warp's keys; m = -inf until the first key (its corr is e^-inf = 0).
  float m = -__int_as_float(0x7f800000), lsum = 0.0f;
  for (int64_t t = t0 + warp; t < t1; t += T::kWarps) {
    const uint8_t* r = row_ptr(const_cast<uint8_t*>(base), block_size, table, l.row_bytes, t);
    float d = 0.0f;
#pragma unroll
    for (int i = 0; i < T::kPerLane; ++i) {
      const int64_t j = lane + 32 * i;
      if (j < hd) d = fmaf(qr[i], cache_value(r, l, kcol + j), d);
    }
    const float x = scale * dev::warp_sum(d);
    const float mn = fmaxf(m, x), corr = expf(m - mn), p = expf(x - mn);
    lsum = lsum * corr + p;
#pragma unroll
    for (int i = 0; i < T::kPerLane; ++i) {
      const int64_t j = lane + 32 * i;
      if (j < hd) acc[i] = acc[i] * corr + p * cache_value(r, l, vcol + j);
    }
    m = mn;
  }
  // Merge the warps (warp 0 always has key t0, so the maximum M is finite).
  __shared__ float wm[T::kWarps], wl[T::kWarps], wo[T::kWarps][T::kMaxHeadDim];
  if (lane == 0) {
    wm[warp] = m;
    wl[warp] = lsum;
  }
#pragma unroll
  for (int i = 0; i < T::kPerLane; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < hd) wo[warp][j] = acc[i];
  }
  __syncthreads();
  float M = wm[0];
  for (int w = 1; w < T::kWarps; ++w) M = fmaxf(M, wm[w]);
  float* out = part + (qh * splits + int64_t(blockIdx.y)) * (hd + 2);
  if (threadIdx.x == 0) {
    float L = 0.0f;
    for (int w = 0; w < T::kWarps; ++w) L += wl[w] * expf(wm[w] - M);
    out[0] = M;
    out[1] = L;
  }
  for (int64_t j = threadIdx.x; j < hd; j += T::kThreads) {
    float o = 0.0f;
    for (int w = 0; w < T::kWarps; ++w) o += wo[w][j] * expf(wm[w] - M);
    out[2 + j] = o;
  }
}

// o[blockIdx.x hd, + hd) from the splits of query head blockIdx.x that hold keys (the first
// ceil(len / chunk)).
static __global__ void mha_combine(const float* part, int64_t p0, int64_t H, int64_t hd, int64_t chunk, int64_t splits,
                                   float* o) {
  const int64_t qh = blockIdx.x, len = p0 + qh / H + 1, used = (len + chunk - 1) / chunk;
  const float* pp = part + qh * splits * (hd + 2);
  float M = pp[0];
  for (int64_t i = 1; i < used; ++i) M = fmaxf(M, pp[i * (hd + 2)]);
  float L = 0.0f;
  for (int64_t i = 0; i < used; ++i) L += pp[i * (hd + 2) + 1] * expf(pp[i * (hd + 2)] - M);
  for (int64_t j = threadIdx.x; j < hd; j += blockDim.x) {
    float acc = 0.0f;
    for (int64_t i = 0; i < used; ++i) acc += pp[i * (hd + 2) + 2 + j] * expf(pp[i * (hd + 2)] - M);
    o[qh * hd + j] = acc / L;
  }
}

}  // namespace kernels

// q [n, H, hd] at positions p0 ..; query s attends to rows [0, p0 + s] of the cache (row: k then v
// of G KV heads, 2 G hd values); o [n, H, hd] (cpu::mha_attention). All arrays on the device.
inline void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                          const CacheView& cache, float* o) {
  using T = kernels::MhaTraits;
  if (n <= 0) return;
  if (G < 1 || H < 1 || H % G != 0)
    throw Error("mha_attention: H = " + std::to_string(H) + " query heads over G = " + std::to_string(G) +
                " KV heads (H must be a positive multiple of G)");
  if (hd < 1 || hd > T::kMaxHeadDim)
    throw Error("mha_attention: head dim hd = " + std::to_string(hd) + " (the CUDA kernel takes 1 .. " +
                std::to_string(T::kMaxHeadDim) + ")");
  if (cache.width < 2 * G * hd)
    throw Error("mha_attention: the cache row holds " + std::to_string(cache.width) +
                " values, K and V of G = " + std::to_string(G) + " heads need " + std::to_string(2 * G * hd));
  if (p0 < 0) throw Error("mha_attention: p0 = " + std::to_string(p0));
  const int64_t longest = p0 + n, heads = n * H;
  const int64_t max_splits = (longest + T::kMinKeysPerSplit - 1) / T::kMinKeysPerSplit;
  int64_t splits = std::clamp<int64_t>((T::kTargetBlocks + heads - 1) / heads, 1, max_splits);
  const int64_t chunk = (longest + splits - 1) / splits;
  splits = (longest + chunk - 1) / chunk;
  Buffer part(size_t(heads * splits * (hd + 2)));
  const dim3 grid{unsigned(heads), unsigned(splits)};
  DEEPSEEK_LAUNCH(mha_partial, grid, T::kThreads, q, p0, H, H / G, hd, G * hd, scale, cache.base, cache.block_size,
                  cache.block_table, kernels::row_layout(cache), chunk, splits, part.data());
  DEEPSEEK_LAUNCH(mha_combine, unsigned(heads), T::kThreads, part.data(), p0, H, hd, chunk, splits, o);
}

}  // namespace deepseek::backend::cuda
