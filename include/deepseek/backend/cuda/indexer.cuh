// The DSA lightning indexer on the GPU (nn/dsa.hpp has the math; the CPU twins, contract for
// contract, are backend/cpu/indexer.hpp and indexer_scores.hpp):
//   indexer_keys     k [n, D] at positions p0 ..: LayerNorm (k_norm), RoPE on dims [0, r.dim), and
//                    with fp8_hadamard k <- e4m3 round trip of (1/sqrt(D)) H_D k, one ue8m0 scale per 128
//   indexer_queries  q [n, H, D]: the same RoPE (+ rotation and rounding) on every head
//   indexer_select   I(s, t) = sum_h w[s, h] ReLU(scale q[s, h] . k_t)   t <= p0 + s, k_t in cache
//                    columns [col, col + D) (f32, bf16, or V3.2's FP8 index key: e4m3 + f32 scales)
//                    idx[s * topk, + count[s]) = the positions of the count[s] = min(topk, p0 + s + 1)
//                    largest I(s, .), ascending; ties go to the lower position (the CPU's order
//                    "score desc, then position asc" makes the set unique, so ties select equally)
//
// Key / query preparation: one 128-thread block per vector, the vector in shared memory. Its
// roundings are the CPU's as g++ -O3 -mfma compiles them, so the results are equal bit for bit but
// where the device's double cos / sin and glibc's straddle an f32 rounding boundary: LayerNorm's
// mean and variance in double, summed in the CPU's order by one thread (D values; the squares are
// FMAs), then (x - mean) inv as two roundings and * w + b as one FMA; the half-split rotation
// x0 c - x1 s, x0 s + x1 c as two FMAs over a rounded product, the interleaved one unfused; the
// Hadamard butterfly in the CPU's stage order (the same adds), and the e4m3 step with the CPU's
// scale (amax * (1/448), not / 448).
//
// Selection, per chunk of queries whose scores fit the scratch (kScoreBudget floats):
//   scores  grid (key tiles of kKeys, queries): a tile of keys widened to f32 in shared memory once
//           and scored against all H heads, kHeads heads at a time (thread: one head, two keys;
//           f32 FMA dots), summed over heads in head order as the CPU does; differs from Eigen's
//           GEMM in the dots' summation order only (~1e-6 relative)
//   top-k   one block per query: a 4-pass MSB-first radix select (8-bit digits, shared histograms)
//           finds the k-th largest score T and how many equal to T are needed; one ordered pass
//           (a packed block scan of "> T" and "== T" flags) writes the selected positions ascending.
//           Scores map to order-preserving unsigned keys (-0 read as +0, as the CPU's == does)
// Queries with p0 + s + 1 <= topk select every position unscored (as the CPU). idx entries past
// count[s] are not written. All pointers are device memory; shapes and the CacheView are host values.
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/cache_rows.cuh"
#include "deepseek/backend/cuda/dtype.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/cache_view.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

// ---- key / query preparation ------------------------------------------------------------------

inline constexpr int kPrepareThreads = 128;  // one thread per value of an FP8 block of 128

// RoPE of pair i of vector x at position pos (backend/cpu/rope.hpp's rope_one, its roundings).
__device__ __forceinline__ void rope_pair(float* x, int64_t i, int64_t pos, const RopeArgs& a) {
  const double phi = double(pos) * a.inv_freq[i];
  const float c = float(cos(phi) * a.attention_factor), s = float(sin(phi) * a.attention_factor);
  float* pa = a.interleaved ? x + 2 * i : x + i;
  float* pb = a.interleaved ? x + 2 * i + 1 : x + i + a.half;
  const float x0 = *pa, x1 = *pb;
  if (a.interleaved) {
    *pa = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    *pb = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  } else {
    *pa = fmaf(x0, c, -__fmul_rn(x1, s));
    *pb = fmaf(x0, s, __fmul_rn(x1, c));
  }
}

// Vector blockIdx.x of v [count, D] (position p0 + blockIdx.x / heads): LayerNorm when norm_w is
// set, RoPE, and with fp8 the Hadamard rotation + e4m3 round trip. Dynamic shared memory: D floats.
static __global__ void indexer_prepare(float* v, int64_t heads, int64_t D, const float* norm_w, const float* norm_b,
                                       float eps, int64_t p0, RopeArgs rope, bool fp8, float hadamard_norm) {
  extern __shared__ float indexer_prepare_smem[];
  float* x = indexer_prepare_smem;
  __shared__ float stats[2];
  float* g = v + int64_t(blockIdx.x) * D;
  const int64_t pos = p0 + int64_t(blockIdx.x) / heads;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) x[i] = g[i];
  __syncthreads();
  if (norm_w) {
    if (threadIdx.x == 0) {  // the CPU's order: the statistics must round alike
      double mean = 0, var = 0;
      for (int64_t i = 0; i < D; ++i) mean += double(x[i]);
      mean /= double(D);
      for (int64_t i = 0; i < D; ++i) {
        const double d = double(x[i]) - mean;
        var = fma(d, d, var);
      }
      stats[0] = float(mean);
      stats[1] = float(1.0 / sqrt(var / double(D) + double(eps)));
    }
    __syncthreads();
    const float mean = stats[0], inv = stats[1];
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      x[i] = fmaf(__fmul_rn(__fsub_rn(x[i], mean), inv), norm_w[i], norm_b[i]);
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < rope.half; i += blockDim.x) rope_pair(x, i, pos, rope);
  __syncthreads();
  if (fp8) {
    for (int64_t len = 1; len < D; len *= 2) {  // pair p of this stage: (j, j + len), j in its group of 2 len
      for (int64_t p = threadIdx.x; p < D / 2; p += blockDim.x) {
        const int64_t j = (p / len) * 2 * len + p % len;
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
      __syncthreads();
    }
    for (int64_t b0 = 0; b0 < D; b0 += kPrepareThreads) {
      const int64_t j = b0 + threadIdx.x;
      const bool in = j < D;
      const float y = in ? __fmul_rn(x[j], hadamard_norm) : 0.0f;
      const float amax = fmaxf(1e-4f, dev::block_max(fabsf(y)));
      const float sigma = dev::pow2_ceil(amax * (1.0f / 448.0f));
      if (in) x[j] = dev::f8_e4m3_to_f32(dev::f32_to_f8_e4m3(fminf(fmaxf(y / sigma, -448.0f), 448.0f))) * sigma;
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) g[i] = x[i];
}

// ---- scores -----------------------------------------------------------------------------------

// How an index key is stored (cpu::KeyFormat): D f32, D bf16, or D e4m3 bytes + one f32 scale per 128.
enum class KeyFormat : int { f32, bf16, fp8 };

// Value d of the key at `key` (the instruction: widen one stored element to f32, exactly).
__device__ __forceinline__ float key_value(const uint8_t* key, KeyFormat f, int64_t D, int64_t d) {
  if (f == KeyFormat::f32) return reinterpret_cast<const float*>(key)[d];
  if (f == KeyFormat::bf16) return dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(key)[d]);
  return dev::f8_e4m3_to_f32(key[d]) * reinterpret_cast<const float*>(key + D)[d / 128];
}

// The score tile (traits): kKeys keys x kHeads heads per step, one warp per head, two keys per lane.
struct ScoreTile {
  static constexpr int kKeys = 64, kHeads = 8, kThreads = 256;
  static_assert(kThreads == 32 * kHeads && kKeys == 64, "a warp per head, a lane per two keys");
  // Shared memory: the key row pointers, keys [kKeys, D + 1] (padded: lanes read distinct banks),
  // the head chunk's queries [kHeads, D] and dots [kHeads, kKeys].
  static size_t smem_bytes(int64_t D) {
    return kKeys * sizeof(const uint8_t*) + sizeof(float) * size_t(kKeys * (D + 1) + kHeads * D + kHeads * kKeys);
  }
};

// scores[(s - s0) * ld + t] for query s = s0 + blockIdx.y, keys t of tile blockIdx.x with t < p0 + s + 1.
static __global__ void indexer_scores(const float* q, const float* w, int64_t s0, int64_t p0, int64_t H, int64_t D,
                                      float scale, const uint8_t* base, int64_t block_size, const int32_t* table,
                                      int64_t row_bytes, int64_t key_offset, KeyFormat fmt, int64_t topk, float* scores,
                                      int64_t ld) {
  using T = ScoreTile;
  const int64_t s = s0 + blockIdx.y, len = p0 + s + 1, t0 = int64_t(blockIdx.x) * T::kKeys;
  if (len <= topk || t0 >= len) return;  // selected unscored / past the causal end
  const int r = int(len - t0 < T::kKeys ? len - t0 : T::kKeys);
  extern __shared__ __align__(16) unsigned char indexer_scores_smem[];
  const uint8_t** rows = reinterpret_cast<const uint8_t**>(indexer_scores_smem);
  float* K = reinterpret_cast<float*>(rows + T::kKeys);
  float* Q = K + T::kKeys * (D + 1);
  float* S = Q + T::kHeads * D;
  const int tid = int(threadIdx.x), lane = tid & 31, hh = tid >> 5;
  if (tid < r) rows[tid] = row_ptr(const_cast<uint8_t*>(base), block_size, table, row_bytes, t0 + tid) + key_offset;
  __syncthreads();
  const int Di = int(D);  // <= kIndexerMaxHeadDim: the tile's indices fit an int
  for (int e = tid; e < T::kKeys * Di; e += T::kThreads) {
    const int j = e / Di, d = e % Di;
    K[j * (Di + 1) + d] = j < r ? key_value(rows[j], fmt, D, d) : 0.0f;
  }
  const float* qs = q + s * H * D;
  const float* ws = w + s * H;
  float acc = 0;  // thread tid < kKeys: key t0 + tid
  for (int64_t h0 = 0; h0 < H; h0 += T::kHeads) {
    for (int e = tid; e < T::kHeads * Di; e += T::kThreads) Q[e] = h0 + e / Di < H ? qs[h0 * D + e] : 0.0f;
    __syncthreads();
    const float* qh = Q + hh * D;
    const float* k0 = K + lane * (D + 1);
    const float* k1 = K + (lane + 32) * (D + 1);
    float d0 = 0, d1 = 0;
    for (int64_t d = 0; d < D; ++d) {
      const float qv = qh[d];
      d0 = fmaf(qv, k0[d], d0);
      d1 = fmaf(qv, k1[d], d1);
    }
    S[hh * T::kKeys + lane] = d0;
    S[hh * T::kKeys + lane + 32] = d1;
    __syncthreads();
    if (tid < T::kKeys) {
      const int64_t hn = H - h0 < T::kHeads ? H - h0 : T::kHeads;
      for (int64_t j = 0; j < hn; ++j) acc += ws[h0 + j] * fmaxf(S[j * T::kKeys + tid] * scale, 0.0f);
    }
    __syncthreads();  // Q and S are rewritten by the next chunk
  }
  if (tid < r) scores[(s - s0) * ld + t0 + tid] = acc;
}

// ---- top-k ------------------------------------------------------------------------------------

struct SelectTraits {
  static constexpr int kThreads = 512, kDigitBits = 8, kBins = 1 << kDigitBits;
  static_assert(kThreads >= kBins && kThreads <= 1024 && kThreads % 32 == 0, "a thread per radix bin");
  static_assert(kThreads < (1 << 16), "per-chunk counts are packed in 16 bits");
};

// An unsigned key in the order of the float scores (-0 as +0: the CPU compares with == and >).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Inclusive prefix sum of v over the block in thread order; *total gets the block's sum. Every
// thread calls it; part is 32 values of shared memory. (Counts here; the sampler's double masses.)
template <class T>
__device__ __forceinline__ T block_inclusive_scan(T v, T* part, T* total) {
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, warps = int(blockDim.x) >> 5;
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += y;
  }
  if (lane == 31) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T x = lane < warps ? part[lane] : T(0);
    for (int o = 1; o < 32; o <<= 1) {
      const T y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    part[lane] = x;
  }
  __syncthreads();
  const T r = v + (warp > 0 ? part[warp - 1] : T(0));
  *total = part[warps - 1];
  __syncthreads();  // part is reused by the next call
  return r;
}

// Query s = s0 + blockIdx.x: idx[s * topk ..] and count[s] from its scores row (blockIdx.x of `scores`).
static __global__ void indexer_topk(const float* scores, int64_t ld, int64_t s0, int64_t p0, int64_t topk, int32_t* idx,
                                    int32_t* count) {
  using T = SelectTraits;
  const int64_t s = s0 + blockIdx.x, len = p0 + s + 1;
  int32_t* out = idx + s * topk;
  const int tid = int(threadIdx.x);
  if (len <= topk) {  // every position, unscored
    for (int64_t t = tid; t < len; t += T::kThreads) out[t] = int32_t(t);
    if (tid == 0) count[s] = int32_t(len);
    return;
  }
  if (topk == 0) {
    if (tid == 0) count[s] = 0;
    return;
  }
  const float* row = scores + int64_t(blockIdx.x) * ld;
  __shared__ uint32_t hist[T::kBins], part[32], chosen[2];
  // Radix select, most significant digit first: the k-th largest key is prefix once all digits are
  // fixed; `need` is how many keys equal to it the selection takes (the lowest positions).
  uint32_t prefix = 0, mask = 0, need = uint32_t(topk), total = 0;
  for (int shift = 32 - T::kDigitBits; shift >= 0; shift -= T::kDigitBits) {
    if (tid < T::kBins) hist[tid] = 0;
    __syncthreads();
    for (int64_t i = tid; i < len; i += T::kThreads) {
      const uint32_t u = order_key(row[i]);
      if ((u & mask) == prefix) atomicAdd(&hist[(u >> shift) & (T::kBins - 1)], 1u);
    }
    __syncthreads();
    // Thread j holds bin kBins - 1 - j: its inclusive scan counts the keys at or above that bin.
    const uint32_t c = tid < T::kBins ? hist[T::kBins - 1 - tid] : 0u;
    const uint32_t at_or_above = block_inclusive_scan(c, part, &total);
    if (tid < T::kBins && at_or_above >= need && at_or_above - c < need) {
      chosen[0] = uint32_t(T::kBins - 1 - tid);
      chosen[1] = at_or_above - c;
    }
    __syncthreads();
    prefix |= chosen[0] << shift;
    mask |= uint32_t(T::kBins - 1) << shift;
    need -= chosen[1];
    __syncthreads();  // chosen is rewritten by the next pass
  }
  // Positions ascending: a key above the threshold, or one of the first `need` equal to it. The
  // output slot of a selected position is (# above before it) + min(# equal before it, need).
  const uint32_t above = uint32_t(topk) - need;
  uint32_t gt_seen = 0, eq_seen = 0;
  for (int64_t b0 = 0; b0 < len && (gt_seen < above || eq_seen < need); b0 += T::kThreads) {
    const int64_t i = b0 + tid;
    const uint32_t u = i < len ? order_key(row[i]) : 0u;
    const bool gt = i < len && u > prefix, eq = i < len && u == prefix;
    const uint32_t packed = uint32_t(gt) | (uint32_t(eq) << 16);
    const uint32_t before = block_inclusive_scan(packed, part, &total) - packed;
    const uint32_t gt_before = gt_seen + (before & 0xffffu), eq_before = eq_seen + (before >> 16);
    if (gt || (eq && eq_before < need)) out[gt_before + (eq_before < need ? eq_before : need)] = int32_t(i);
    gt_seen += total & 0xffffu;
    eq_seen += total >> 16;
  }
  if (tid == 0) count[s] = int32_t(topk);
}

}  // namespace kernels

namespace detail {
inline kernels::RopeArgs indexer_rope_args(const RopeParams& r, int64_t D, const char* what) {
  const int64_t half = r.dim / 2;
  if (half > kernels::kMaxRopePairs || 2 * half > D || r.dim % 2 != 0)
    throw Error(std::string(what) + ": " + std::to_string(r.dim) + " rotary dims of a head of " + std::to_string(D) +
                " (the CUDA kernel takes an even count up to min(D, " + std::to_string(2 * kernels::kMaxRopePairs) +
                "))");
  kernels::RopeArgs a;
  for (int64_t i = 0; i < half; ++i) a.inv_freq[i] = r.inv_freq[i];
  a.half = half;
  a.interleaved = r.interleaved;
  a.attention_factor = r.attention_factor;
  return a;
}
inline void indexer_prepare(float* v, int64_t count, int64_t heads, int64_t D, const float* norm_w, const float* norm_b,
                            float eps, int64_t p0, const RopeParams& r, bool fp8, const char* what) {
  if (D <= 0 || count <= 0) return;
  if (fp8 && (D & (D - 1)) != 0)
    throw Error(std::string(what) + ": the FP8 indexer needs a power-of-two head dim D (Hadamard rotation), got " +
                std::to_string(D));
  const kernels::RopeArgs a = indexer_rope_args(r, D, what);
  const float hadamard_norm = 1.0f / std::sqrt(float(D));  // the CPU's f32 constant
  kernels::indexer_prepare<<<unsigned(count), kernels::kPrepareThreads, size_t(D) * sizeof(float), stream()>>>(
      v, heads, D, norm_w, norm_b, eps, p0, a, fp8, hadamard_norm);
  DEEPSEEK_CUDA_CHECK_LAUNCH("indexer_prepare");
}
}  // namespace detail

// Keys k [n, D] of positions p0 ..: LayerNorm (norm_weight, norm_bias [D]), RoPE on the first r.dim
// dims, and with fp8_hadamard the rotation + e4m3 round trip (cpu::indexer_keys).
inline void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps,
                         int64_t p0, const RopeParams& r, bool fp8_hadamard) {
  detail::indexer_prepare(k, n, 1, D, norm_weight, norm_bias, eps, p0, r, fp8_hadamard, "indexer_keys");
}
// Queries q [n, H, D] of positions p0 ..: RoPE on each head's first r.dim dims (+ the FP8 rotation).
inline void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const RopeParams& r,
                            bool fp8_hadamard) {
  if (H <= 0) return;
  detail::indexer_prepare(q, n * H, H, D, nullptr, nullptr, 0.0f, p0, r, fp8_hadamard, "indexer_queries");
}

inline constexpr int64_t kIndexerMaxHeadDim = 256;         // the score tile's shared memory (76 KB at 256)
inline constexpr int64_t kScoreBudget = int64_t(1) << 26;  // scratch floats for one chunk of queries' scores

// For each query s < n at position p0 + s (q [n, H, D], head weights w [n, H]): the positions of the
// topk largest scores among the keys of rows [0, p0 + s] (cache columns [col, col + D)), ascending,
// into idx[s * topk, + count[s]); ties go to the lower position; count[s] = min(topk, p0 + s + 1)
// (cpu::indexer_select). idx and count are device arrays.
inline void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                           const CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count) {
  if (n <= 0) return;
  if (H <= 0 || D <= 0 || D > kIndexerMaxHeadDim)
    throw Error("indexer_select: H = " + std::to_string(H) + ", D = " + std::to_string(D) +
                " (the CUDA kernel takes 0 < D <= " + std::to_string(kIndexerMaxHeadDim) + ")");
  if (topk < 0 || p0 < 0 || p0 + n > int64_t(INT32_MAX))
    throw Error("indexer_select: topk = " + std::to_string(topk) + ", positions " + std::to_string(p0) + " .. " +
                std::to_string(p0 + n) + " (int32 positions, topk >= 0)");
  // The key's format and byte offset in a row, as cpu::indexer_select reads them (CacheView::values_at).
  kernels::KeyFormat fmt = kernels::KeyFormat::bf16;
  int64_t key_offset = 0;
  if (cache.dtype == CacheDType::f32) {
    fmt = kernels::KeyFormat::f32;
    key_offset = 4 * col;
  } else if (cache.dtype == CacheDType::fp8_e4m3 && cache.index_fp8 > 0) {
    if (col != cache.suffix_start() || D != cache.index_fp8)
      throw Error("indexer_select: col " + std::to_string(col) + ", D " + std::to_string(D) +
                  " is not the FP8 index key (columns " + std::to_string(cache.suffix_start()) + " .. " +
                  std::to_string(cache.width) + ")");
    fmt = kernels::KeyFormat::fp8;
    key_offset = cache.suffix_offset();
  } else {
    if (col < cache.bf16_start())
      throw Error("indexer_select: col " + std::to_string(col) + " lies in the FP8 latent (columns 0 .. " +
                  std::to_string(cache.bf16_start()) + ")");
    key_offset = cache.tail_offset() + 2 * (col - cache.bf16_start());
  }
  if (col < 0 || col + D > cache.width)
    throw Error("indexer_select: col " + std::to_string(col) + " + D " + std::to_string(D) +
                " exceeds the cache row of " + std::to_string(cache.width));

  using Tile = kernels::ScoreTile;
  const int64_t ld = p0 + n;
  const bool scored = ld > topk && topk > 0;  // else every query selects all of its positions (or none)
  const int64_t chunk = std::min<int64_t>({n, std::max<int64_t>(1, kScoreBudget / ld), 65535});
  Buffer scores(scored ? size_t(chunk * ld) : 0);
  const size_t smem = Tile::smem_bytes(D);
  if (scored && smem > 48 * 1024)
    DEEPSEEK_CUDA_CHECK(
        cudaFuncSetAttribute(kernels::indexer_scores, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  for (int64_t s0 = 0; s0 < n; s0 += chunk) {
    const int64_t m = std::min(chunk, n - s0), keys = p0 + s0 + m;
    if (scored && keys > topk) {
      const dim3 grid{unsigned((keys + Tile::kKeys - 1) / Tile::kKeys), unsigned(m)};
      kernels::indexer_scores<<<grid, Tile::kThreads, smem, detail::stream()>>>(
          q, w, s0, p0, H, D, scale, cache.base, cache.block_size, cache.block_table, cache.row_bytes(), key_offset,
          fmt, topk, scores.data(), ld);
      DEEPSEEK_CUDA_CHECK_LAUNCH("indexer_scores");
    }
    DEEPSEEK_LAUNCH(indexer_topk, unsigned(m), kernels::SelectTraits::kThreads, scores.data(), ld, s0, p0, topk, idx,
                    count);
  }
}

}  // namespace deepseek::backend::cuda
