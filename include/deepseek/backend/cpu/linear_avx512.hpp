// AVX-512 linear kernels, chosen at run time on CPUs that have the instructions (linear.hpp keeps
// the AVX2 kernels for the rest and as the plain twins these are tested against):
//
//   bf16 weights, bf16 activations (AVX512-BF16):    y[t, r] = sum_c W[r, c] bf16(x[t, c])
//   bf16 weights, f32 activations (AVX512-F/BW):     y[t, r] = sum_c W[r, c] x[t, c]
//   FP8 weights, f32 activations (AVX512-F/BW):      y[t, r] = sum_c e4m3(W[r, c]) (x[t, c] s(r, c))
//   FP8 weights, bf16 activations (AVX512-BF16):     y[t, r] = sum_c e4m3(W[r, c]) bf16(x[t, c] s(r, c))
//   (s(r, c) = scale_inv[r / 128, c / 128]; products and sums in f32)
//
// Shapes: W [rows, cols] row-major as stored; x [n, cols] f32 (row stride ldx) is packed per group
// of up to 6 tokens as [cols / 32][N][32] (zero padded to 32 columns), in bf16 (rounded to nearest
// even) or f32; y [n, rows] f32 (row stride ldy).
//
// Why these are fast:
//   - VDPBF16PS multiplies 32 bf16 pairs into 16 f32 lanes in one instruction, 2-3x the f32 FMA
//     rate, and bf16 weights need no widening at all. Each step loads R weight vectors and N token
//     vectors and issues R x N dot products (R x N accumulators in the 32 zmm registers).
//   - bf16 weights against f32 inputs widen in 2 instructions without a shuffle: in a 32-bit lane
//     holding the pair (w[2j], w[2j+1]), lane << 16 is w[2j] as f32 and lane & 0xFFFF0000 is
//     w[2j+1]. The input is packed to match: per 32 columns the 16 even ones, then the 16 odd.
//   - FP8 is bound by widening, not by memory. 32 e4m3 bytes become 32 f32 values in 6
//     instructions: in a 16-bit lane, byte << 7 (sign carried to bit 15) is an f16 equal to the
//     e4m3 value / 256, subnormals included, and VCVTPH2PS widens 16 at a time. The 256 and the
//     block scale are folded into the packed input, once per 128-row block, not per weight.
// bf16 activations are what torch's bf16 linear and llama.cpp's bf16 dot products compute
// (ActivationDType::bf16 opts in). For FP8 the input is rounded after the block scale is
// applied, the form in which the kernel multiplies it (linear_reference states the same rule).
//
// The functions are compiled for AVX-512 by target attributes whatever the build flags, and run
// only when the CPU reports the features (has_avx512(), has_avx512bf16()).
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <immintrin.h>
#define DEEPSEEK_CPU_AVX512_KERNELS 1
#define DEEPSEEK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define DEEPSEEK_CPU_AVX512_KERNELS 0
#endif

namespace deepseek::backend::cpu {

namespace detail {
// Decode over long rows: bytes each row stream prefetches ahead of itself (see dot_block; the
// AVX2 kernels in linear.hpp use it too). Rows whose block of R is at most kDecodeNextBlock bytes
// prefetch the next block instead, except short bf16 rows, which rows_block takes one at a time
// as a single stream that prefetches kDecodePrefetchOneStream bytes ahead.
inline constexpr int64_t kDecodePrefetch = 2048, kDecodeNextBlock = 16384, kDecodePrefetchOneStream = 4096;

// parallel_for's max_chunks for a GEMV over W's rows [r0, r1) (it keeps at least 4 chunks per
// thread and at most one per row unit). For one token, one per ~256 KB of weights: the threads
// stream at the same rate but start at different times (the caller publishes the job, a worker may
// wake from sleep), and the last chunk taken is what the other thread waits for. With 4 per thread
// the V3 vocabulary's lm_head (129,280 x 2048 bf16) went out in 66 MB chunks. Several tokens keep
// 4 per thread: each chunk prefetches its next rows into L2 while it computes.
inline int64_t gemv_chunks(const BlockQuantMatrix& W, int64_t r0, int64_t r1, int64_t n) {
  if (n != 1) return 0;
  return (r1 - r0) * W.cols() * int64_t(dtype_size(W.dtype())) / (256 << 10);
}

// Bit 0: AVX512-F/BW/VL usable, bit 1: AVX512-BF16 too; -1: not decided yet.
inline std::atomic<int>& avx512_switch() {
  static std::atomic<int> s{-1};
  return s;
}
inline int avx512_detect() {
#if DEEPSEEK_CPU_AVX512_KERNELS
  // (VCVTPH2PS on zmm is AVX512-F itself.)
  const bool base = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  return base ? (1 | (__builtin_cpu_supports("avx512bf16") ? 2 : 0)) : 0;
#else
  return 0;
#endif
}
inline int avx512_level() {
  int s = avx512_switch().load(std::memory_order_relaxed);
  if (s < 0) {
    const char* off = std::getenv("DEEPSEEK_NO_AVX512");
    s = (off && *off && *off != '0') ? 0 : avx512_detect();
    avx512_switch().store(s, std::memory_order_relaxed);
  }
  return s;
}
}  // namespace detail

// The CPU has AVX512-F/BW/VL (the FP8 kernel) and the kernels are enabled: the default where
// present; DEEPSEEK_NO_AVX512=1 in the environment or set_avx512(false) turns them off.
inline bool has_avx512() { return (detail::avx512_level() & 1) != 0; }
// ... and AVX512-BF16 (the bf16-activation kernels).
inline bool has_avx512bf16() { return (detail::avx512_level() & 2) != 0; }
// Tests run both the AVX-512 kernels and their AVX2 twins.
inline void set_avx512(bool on) { detail::avx512_switch().store(on ? detail::avx512_detect() : 0, std::memory_order_relaxed); }

#if DEEPSEEK_CPU_AVX512_KERNELS
// GCC 12's AVX-512 intrinsics fill unused operands with _mm512_undefined_*(), a self-initialised
// variable that trips -Wuninitialized at every site they are inlined into.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace detail {

inline constexpr int kGroup = 6;  // most tokens per register block

DEEPSEEK_TARGET_AVX512 inline float hsum512(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

// The four horizontal sums of a, b, c, d in one pass (a third of the shuffles of four hsum512).
DEEPSEEK_TARGET_AVX512 inline __m128 hsum512x4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // per lane a02 b02 a13 b13
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));  // per lane a b c d
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0x4E));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0xB1));
  return _mm512_castps512_ps128(s);
}

template <int K>
DEEPSEEK_TARGET_AVX512 inline void hsums(const __m512* a, float* o) {
  int k = 0;
  for (; k + 4 <= K; k += 4) _mm_storeu_ps(o + k, hsum512x4(a[k], a[k + 1], a[k + 2], a[k + 3]));
  for (; k < K; ++k) o[k] = hsum512(a[k]);
}

// How pack() lays out each 32-column step of a token: bf16 (rounded to nearest even, as
// f32_to_bf16), f32 in column order, or f32 with the 16 even columns first and then the 16 odd
// ones (the order in which dot_step widens a bf16 weight vector against f32 inputs).
enum class PackAs { bf16, f32, f32_even_odd };

// Packs N tokens of x (row stride ldx) as [steps][N][32], each value times its column's factor
// f[c / bc] when f is given (FP8: scale * 256; bc a multiple of 32); zero padded past cols.
template <PackAs P>
DEEPSEEK_TARGET_AVX512 inline void pack(const float* x, int64_t ldx, int64_t cols, int N, const float* f, int64_t bc, void* out) {
  const int64_t steps = (cols + 31) / 32;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int t = 0; t < N; ++t) {
    const float* xt = x + t * ldx;
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t c0 = s * 32, m = std::min<int64_t>(32, cols - c0);
      const __mmask16 m0 = __mmask16(m >= 16 ? 0xFFFF : (1u << m) - 1), m1 = __mmask16(m >= 32 ? 0xFFFF : m > 16 ? (1u << (m - 16)) - 1 : 0);
      __m512 a = _mm512_maskz_loadu_ps(m0, xt + c0), b = _mm512_maskz_loadu_ps(m1, xt + c0 + 16);
      if (f) {  // 32 columns never straddle a scale block
        const __m512 fv = _mm512_set1_ps(f[c0 / bc]);
        a = _mm512_mul_ps(a, fv);
        b = _mm512_mul_ps(b, fv);
      }
      if constexpr (P == PackAs::bf16) {
        _mm512_storeu_si512(static_cast<uint16_t*>(out) + (s * N + t) * 32, (__m512i)_mm512_cvtne2ps_pbh(b, a));
      } else {
        float* o = static_cast<float*>(out) + (s * N + t) * 32;
        _mm512_storeu_ps(o, P == PackAs::f32 ? a : _mm512_permutex2var_ps(a, even, b));
        _mm512_storeu_ps(o + 16, P == PackAs::f32 ? b : _mm512_permutex2var_ps(a, odd, b));
      }
    }
  }
}

// 32 e4m3 bytes -> 32 f32 values / 256 (exact), as lo (bytes 0-15) and hi (16-31).
DEEPSEEK_TARGET_AVX512 inline void widen_e4m3x32(__m256i bytes, __m512& lo, __m512& hi) {
  const __m512i b = _mm512_cvtepu8_epi16(bytes);
  const __m512i h = _mm512_slli_epi16(_mm512_add_epi16(b, _mm512_and_si512(b, _mm512_set1_epi16(0x80))), 7);
  lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

// One row of e4m3 bytes as bf16 values / 256 (exact), zero padded to a multiple of 32.
DEEPSEEK_TARGET_AVX512 inline void widen_row_bf16(const uint8_t* row, int64_t cols, uint16_t* out) {
  const int64_t steps = (cols + 31) / 32;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t m = std::min<int64_t>(32, cols - s * 32);
    const __m256i b = m == 32 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + s * 32))
                              : _mm256_maskz_loadu_epi8(uint32_t((uint64_t(1) << m) - 1), row + s * 32);
    __m512 lo, hi;
    widen_e4m3x32(b, lo, hi);
    _mm512_storeu_si512(out + s * 32, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}

// Keeps a loaded vector in a register. GCC otherwise folds the load into every instruction that
// uses it: one 64-byte load per use, and Zen 4 loads one zmm per cycle (bf16 weights x f32 input,
// 2 rows: 8 loads per 128 weight bytes instead of 4).
template <class V>
DEEPSEEK_TARGET_AVX512 inline void in_register(V& v) {
  asm("" : "+v"(v));
}

// One 32-column step of dot_block: masked weight loads on the last, partial step (x is zero padded).
// f32 products (BF16 = false) make two FMAs per row and token; with one token they go to two
// accumulators (acc, acc2) so that the two are independent, with more the R x N chains suffice
// and acc2 is unused.
template <class W, bool BF16, int R, int N, bool Tail>
DEEPSEEK_TARGET_AVX512 inline void dot_step(const W* const* rows, const void* xpv, int64_t s, uint32_t m, __m512 (&acc)[R][N],
                                            __m512 (&acc2)[R][N]) {
  constexpr bool split = !BF16 && N == 1;
  if constexpr (std::is_same_v<W, uint16_t> && !BF16) {
    const float* xp = static_cast<const float*>(xpv) + s * N * 32;  // even columns, then odd (PackAs::f32_even_odd)
    __m512 ev[R], od[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      __m512i w = Tail ? _mm512_maskz_loadu_epi16(m, rows[i] + s * 32) : _mm512_loadu_si512(rows[i] + s * 32);
      in_register(w);
      ev[i] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
      od[i] = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(int(0xFFFF0000u))));
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) {
      __m512 x0 = _mm512_loadu_ps(xp + 32 * t), x1 = _mm512_loadu_ps(xp + 32 * t + 16);
      if constexpr (R > 1) in_register(x0), in_register(x1);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        if constexpr (split) {
          acc[i][t] = _mm512_fmadd_ps(ev[i], x0, acc[i][t]);
          acc2[i][t] = _mm512_fmadd_ps(od[i], x1, acc2[i][t]);
        } else {
          acc[i][t] = _mm512_fmadd_ps(od[i], x1, _mm512_fmadd_ps(ev[i], x0, acc[i][t]));
        }
      }
    }
  } else if constexpr (std::is_same_v<W, uint16_t>) {
    const uint16_t* xp = static_cast<const uint16_t*>(xpv) + s * N * 32;
    __m512bh w[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
      w[i] = (__m512bh)(Tail ? _mm512_maskz_loadu_epi16(m, rows[i] + s * 32) : _mm512_loadu_si512(rows[i] + s * 32));
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + 32 * t);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], w[i], xv);
    }
  } else if constexpr (BF16) {
    const uint16_t* xp = static_cast<const uint16_t*>(xpv) + s * N * 32;
    __m512bh w[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i b = Tail ? _mm256_maskz_loadu_epi8(m, rows[i] + s * 32)
                             : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + s * 32));
      __m512 lo, hi;
      widen_e4m3x32(b, lo, hi);
      w[i] = _mm512_cvtne2ps_pbh(hi, lo);
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + 32 * t);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], w[i], xv);
    }
  } else {
    const float* xp = static_cast<const float*>(xpv) + s * N * 32;
    __m512 lo[R], hi[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256i b = Tail ? _mm256_maskz_loadu_epi8(m, rows[i] + s * 32)
                             : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + s * 32));
      widen_e4m3x32(b, lo[i], hi[i]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) {
      __m512 x0 = _mm512_loadu_ps(xp + 32 * t), x1 = _mm512_loadu_ps(xp + 32 * t + 16);
      if constexpr (R > 1) in_register(x0), in_register(x1);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        if constexpr (split) {
          acc[i][t] = _mm512_fmadd_ps(lo[i], x0, acc[i][t]);
          acc2[i][t] = _mm512_fmadd_ps(hi[i], x1, acc2[i][t]);
        } else {
          acc[i][t] = _mm512_fmadd_ps(hi[i], x1, _mm512_fmadd_ps(lo[i], x0, acc[i][t]));
        }
      }
    }
  }
}

// Software prefetch of the weight rows a multi-token kernel reads next, a few lines per 32-column
// step. Each bf16 row of a 2048-wide matrix is one 4 KB page, and the hardware prefetcher stops at
// page ends, so without this the first token group of every chunk waits on memory row by row
// while later chunks' rows could already be on their way.
struct Prefetch {
  const char* p = nullptr;
  int64_t lines = 0, per_step = 0;
  DEEPSEEK_TARGET_AVX512 void step() {
    for (int64_t k = 0; k < per_step && lines > 0; ++k, --lines, p += 64) _mm_prefetch(p, _MM_HINT_T1);
  }
};

// out[i][t] = dot(row_i, x_t) over all columns for R rows and N packed tokens.
//   W = bf16 weights, BF16 = true:   dp of bf16 pairs
//   W = bf16 weights, BF16 = false:  shift / mask to f32, FMA against the even/odd packed f32 input
//   W = e4m3 weights, BF16 = true:   widen, round to bf16 (exact), dp
//   W = e4m3 weights, BF16 = false:  widen, f32 FMA against the f32 packed input
template <class W, bool BF16, int R, int N>
DEEPSEEK_TARGET_AVX512 inline void dot_block(const W* const* rows, const void* xp, int64_t cols, float (*out)[N],
                                             Prefetch* pf = nullptr) {
  __m512 acc[R][N], acc2[R][N];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) acc[i][t] = acc2[i][t] = _mm512_setzero_ps();
  const int64_t full = cols / 32;
  if constexpr (N == 1) {
    // Decode reads each weight once, from memory. R rows advancing side by side look like R short
    // streams to the hardware prefetcher, which ramps up on each too late (and stops at each 4 KB
    // page); the rows are contiguous, so the next block's R rows are prefetched here, spread over
    // this block's steps (FP8 decode: 7.1 -> 9.8 tok/s on the V2-Lite-shaped benchmark). Where
    // the next block is more than L1 holds beside the input (rows over 8 KB: 10944-wide down
    // projections, V3's 7168-wide rows), lines prefetched that early would be evicted before use,
    // so each row stream prefetches kDecodePrefetch bytes ahead of itself instead, running into
    // row i + R (the next block's i-th row) at its end.
    // Both prefetch into L2 (T1), not L1: an L1 prefetch holds one of the core's few L1 miss
    // buffers until its line arrives, and the kernel's own loads then wait for free buffers,
    // while L2 tracks many more misses, so more lines are in flight per core. Measured on weights
    // mapped from a file (4 KB page-cache pages, as a checkpoint is), same session, interleaved:
    // bf16 weights x f32 input, 1408x2048 experts 27.7 -> 38.7 GB/s, 2048x10944 22.8 -> 27.0,
    // 18432x7168 24.9 -> 31.5; FP8 2048x7168 19.7 -> 26.3; the V2-Lite-shaped 4-layer model at
    // 1K context, f32 activations, 19.6 -> 23.6 tok/s (medians of 6 interleaved bursts). With
    // bf16 inputs short rows come out within this machine's noise either way (lm_head 46.5 ->
    // 42.8 GB/s, FP8 experts 23.8 -> 22.2, the model 22.3 -> 24.0 tok/s), so one rule serves all.
    // One bf16 row (rows_block's choice for rows of at most kDecodeNextBlock / 2 bytes) is one
    // stream through contiguous rows: it prefetches kDecodePrefetchOneStream bytes ahead, into the
    // next row at its end.
    const int64_t row_bytes = cols * int64_t(sizeof(W));
    const bool one_stream = R == 1 && sizeof(W) == 2;
    if (one_stream || R * row_bytes > kDecodeNextBlock) {
      const int64_t ahead = one_stream ? kDecodePrefetchOneStream : kDecodePrefetch;
      for (int64_t s = 0; s < full; ++s) {
        if (sizeof(W) == 2 || (s & 1) == 0) {  // one line per row every 64 bytes
          const int64_t off = s * 32 * int64_t(sizeof(W)) + ahead;
#pragma GCC unroll 8
          for (int i = 0; i < R; ++i) {
            const char* p = reinterpret_cast<const char*>(rows[i]);
            _mm_prefetch(off < row_bytes ? p + off : p + R * row_bytes + (off - row_bytes), _MM_HINT_T1);
          }
        }
        dot_step<W, BF16, R, N, false>(rows, xp, s, 0, acc, acc2);
      }
    } else {
      const char* next = reinterpret_cast<const char*>(rows[0] + R * cols);
      const int64_t lines = (R * row_bytes + 63) / 64, per = (lines + full - 1) / std::max<int64_t>(full, 1);
      int64_t l = 0;
      for (int64_t s = 0; s < full; ++s) {
        for (int64_t k = 0; k < per && l < lines; ++k, ++l) _mm_prefetch(next + l * 64, _MM_HINT_T1);
        dot_step<W, BF16, R, N, false>(rows, xp, s, 0, acc, acc2);
      }
    }
  } else if (pf && pf->lines > 0) {
    for (int64_t s = 0; s < full; ++s) {
      pf->step();
      dot_step<W, BF16, R, N, false>(rows, xp, s, 0, acc, acc2);
    }
  } else {
    for (int64_t s = 0; s < full; ++s) dot_step<W, BF16, R, N, false>(rows, xp, s, 0, acc, acc2);
  }
  if (full * 32 < cols) dot_step<W, BF16, R, N, true>(rows, xp, full, uint32_t((uint64_t(1) << (cols - full * 32)) - 1), acc, acc2);
  if constexpr (!BF16 && N == 1)
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < N; ++t) acc[i][t] = _mm512_add_ps(acc[i][t], acc2[i][t]);
  hsums<R * N>(&acc[0][0], &out[0][0]);
}

// Rows [ra, rb) (absolute) for one packed group of N tokens; y row index r - r0.
template <class W, bool BF16, int N>
DEEPSEEK_TARGET_AVX512 inline void rows_block(const W* base, int64_t cols, int64_t ra, int64_t rb, int64_t r0, const void* xp,
                                              float* y, int64_t ldy, Prefetch* pf) {
  // Enough rows that R x N independent accumulators hide the latency, few enough that the
  // accumulators, the R widened weight vectors (two each for f32) and the input fit 32 registers.
  // Decode (N = 1) streams from memory and wants few rows side by side (measured on the
  // V2-Lite-shaped benchmark: bf16 8 rows 21 GB/s, 2 rows 37 GB/s; FP8 8 rows 22 GB/s, 4 rows 25).
  // Short bf16 rows (at most 8 KB: V2-Lite's 2048-wide projections, experts and lm_head) go one
  // at a time, so that each core reads one contiguous stream: two rows side by side are two
  // 4 KB streams that the hardware prefetcher restarts at every row. Measured on the V2-Lite-shaped
  // 4-layer bf16 checkpoint, mapped from its file, 2 threads, 1K context, decode against a plain
  // 2-thread read of the same bytes per token interleaved in one process: f32 activations 0.81 ->
  // 0.94 of the read, bf16 activations 0.84 -> 0.93; 2048-wide rows alone (2 GB, past the L3)
  // 0.88 -> 1.05. Rows over 8 KB (V3's 7168 and 18432) keep two rows: one was no faster there
  // (1.11 vs 1.12 at 7168, 1.24 vs 1.11 at 18432), nor is it for FP8, which widening bounds.
  constexpr bool wide = !BF16;  // f32 products: two widened vectors per row
  constexpr int R = wide ? (N <= 1 ? 2 : N <= 2 ? 6 : N <= 4 ? 4 : 2) : (N <= 1 ? 2 : N <= 2 ? 8 : N <= 4 ? 6 : 4);
  const bool one_stream = N == 1 && sizeof(W) == 2 && R * cols * int64_t(sizeof(W)) <= kDecodeNextBlock;
  int64_t r = ra;
  for (; !one_stream && r + R <= rb; r += R) {
    const W* rows[R];
    for (int i = 0; i < R; ++i) rows[i] = base + r * cols + i * cols;
    float out[R][N];
    dot_block<W, BF16, R, N>(rows, xp, cols, out, pf);
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < N; ++t) y[t * ldy + r + i - r0] = out[i][t];
  }
  for (; r < rb; ++r) {
    const W* rows[1] = {base + r * cols};
    float out[1][N];
    dot_block<W, BF16, 1, N>(rows, xp, cols, out, pf);
    for (int t = 0; t < N; ++t) y[t * ldy + r - r0] = out[0][t];
  }
}

template <class W, bool BF16>
DEEPSEEK_TARGET_AVX512 inline void rows_block_n(const W* base, int64_t cols, int64_t ra, int64_t rb, int64_t r0, const void* xp,
                                                int N, float* y, int64_t ldy, Prefetch* pf = nullptr) {
  switch (N) {
    case 1: rows_block<W, BF16, 1>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
    case 2: rows_block<W, BF16, 2>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
    case 3: rows_block<W, BF16, 3>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
    case 4: rows_block<W, BF16, 4>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
    case 5: rows_block<W, BF16, 5>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
    default: rows_block<W, BF16, 6>(base, cols, ra, rb, r0, xp, y, ldy, pf); break;
  }
}

// ceil(n / 6) groups of near-equal size (13 tokens: 4 + 4 + 5, not 6 + 6 + 1): a small group costs
// a full pass over the weights for few products.
struct Groups {
  int64_t n, count;
  explicit Groups(int64_t n_) : n(n_), count((n_ + kGroup - 1) / kGroup) {}
  int64_t begin(int64_t g) const { return g * n / count; }
  int N(int64_t g) const { return int(begin(g + 1) - begin(g)); }
};

// A 64-byte aligned thread-local buffer of at least `bytes` (a zmm load straddling two cache
// lines costs two).
inline void* aligned_scratch(size_t bytes, int which) {
  static thread_local std::vector<uint8_t> buf[4];
  auto& b = buf[which];
  b.resize(bytes + 64);
  return b.data() + (64 - reinterpret_cast<uintptr_t>(b.data()) % 64) % 64;
}

}  // namespace detail

// y[t, r - r0] = W[r, :] . bf16(x[t, :]) for r in [r0, r1); W bf16, has_avx512bf16().
// bf16 = false: f32 activations (has_avx512()), exact products.
inline void linear_rows_bf16_avx512(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                                    int64_t ldx, int64_t ldy, bool bf16 = true) {
  const int64_t cols = W.cols(), rows = r1 - r0, steps = (cols + 31) / 32;
  const detail::Groups G(n);
  void* packed = detail::aligned_scratch(size_t(n * steps * 32 * (bf16 ? 2 : 4)), 0);
  for (int64_t g = 0; g < G.count; ++g) {  // group g starts begin(g) * steps * 32 values in
    const int64_t off = G.begin(g) * steps * 32;
    if (bf16) detail::pack<detail::PackAs::bf16>(x + G.begin(g) * ldx, ldx, cols, G.N(g), nullptr, 0, static_cast<uint16_t*>(packed) + off);
    else detail::pack<detail::PackAs::f32_even_odd>(x + G.begin(g) * ldx, ldx, cols, G.N(g), nullptr, 0, static_cast<float*>(packed) + off);
  }
  const uint16_t* base = W.weight.data_as<const uint16_t>();
  // Chunks of 32 rows; within a chunk every token group sweeps the chunk's rows, which stay in L2.
  // With several tokens the next chunk's rows are prefetched into L2 while this chunk computes
  // (decode prefetches inside dot_block).
  parallel_for((rows + 31) / 32, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch) {
      const int64_t ra = r0 + ch * 32, rb = std::min(r1, ra + 32);
      detail::Prefetch pf;
      if (n > 1 && ch + 1 < e) {
        const int64_t next_rows = std::min(r1, rb + 32) - rb;
        pf.p = reinterpret_cast<const char*>(base + rb * cols);
        pf.lines = (next_rows * cols * 2 + 63) / 64;
        const int64_t total_steps = std::max<int64_t>(1, G.count * (rb - ra) / 4 * (cols / 32));
        pf.per_step = (pf.lines + total_steps - 1) / total_steps;
      }
      for (int64_t g = 0; g < G.count; ++g) {
        const int64_t off = G.begin(g) * steps * 32;
        if (bf16)
          detail::rows_block_n<uint16_t, true>(base, cols, ra, rb, r0, static_cast<const uint16_t*>(packed) + off, G.N(g),
                                               y + G.begin(g) * ldy, ldy, &pf);
        else
          detail::rows_block_n<uint16_t, false>(base, cols, ra, rb, r0, static_cast<const float*>(packed) + off, G.N(g),
                                                y + G.begin(g) * ldy, ldy, &pf);
      }
    }
  }, 1, detail::gemv_chunks(W, r0, r1, n));
}

// y[t, r - r0] = W[r, :] . x[t, :] for r in [r0, r1), W f8_e4m3 with block scales whose columns
// are a multiple of 32 (DeepSeek: 128 x 128); bf16: the input times the scale is rounded to bf16
// (needs has_avx512bf16()), else f32 (has_avx512()).
inline void linear_rows_e4m3_avx512(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                                    int64_t ldx, int64_t ldy, bool bf16) {
  const int64_t cols = W.cols(), steps = (cols + 31) / 32, sc = W.scale_inv.dim(1);
  const int64_t br = W.block_rows;
  const detail::Groups G(n);
  const uint8_t* base = W.weight.data_as<const uint8_t>();
  // Work units: 32-row chunks for a few tokens (the input is packed per chunk: cheap), whole
  // scale blocks for more (packing n x cols per unit would rival the products). Units are aligned
  // to multiples of `unit` rows, which never straddle a scale block.
  const int64_t unit = (n <= 4 && br % 32 == 0) ? 32 : br;
  const int64_t u0 = r0 / unit, units = (r1 - 1) / unit - u0 + 1;
  const size_t bytes = size_t(n * steps * 32 * (bf16 ? 2 : 4));
  parallel_for(units, [&](int64_t b, int64_t e) {
    void* packed = detail::aligned_scratch(bytes, 1);
    float* f = static_cast<float*>(detail::aligned_scratch(size_t(sc) * 4, 2));
    int64_t packed_block = -1;
    for (int64_t u = b; u < e; ++u) {
      const int64_t ra = std::max(r0, (u0 + u) * unit), rb = std::min(r1, (u0 + u + 1) * unit), blk = ra / br;
      if (blk != packed_block) {
        const float* srow = W.scale_inv.data_as<const float>() + blk * sc;
        for (int64_t k = 0; k < sc; ++k) f[k] = srow[k] * 256.0f;
        for (int64_t g = 0; g < G.count; ++g) {
          const int64_t off = G.begin(g) * steps * 32;
          void* dst = static_cast<char*>(packed) + off * (bf16 ? 2 : 4);
          if (bf16) detail::pack<detail::PackAs::bf16>(x + G.begin(g) * ldx, ldx, cols, G.N(g), f, W.block_cols, dst);
          else if (G.count > 1)  // for the bf16 tile below
            detail::pack<detail::PackAs::f32_even_odd>(x + G.begin(g) * ldx, ldx, cols, G.N(g), f, W.block_cols, dst);
          else detail::pack<detail::PackAs::f32>(x + G.begin(g) * ldx, ldx, cols, G.N(g), f, W.block_cols, dst);
        }
        packed_block = blk;
      }
      if (G.count > 1) {
        // Several token groups: widen 32 rows at a time to a bf16 tile (exact: e4m3 / 256 fits
        // bf16; in L2) once, and let every group run a bf16-weight kernel over it (bf16 or f32
        // activations), instead of widening once per group.
        uint16_t* tile = static_cast<uint16_t*>(detail::aligned_scratch(size_t(32 * steps * 32 * 2), 3));
        for (int64_t sa = ra; sa < rb; sa += 32) {
          const int64_t len = std::min<int64_t>(32, rb - sa);
          for (int64_t i = 0; i < len; ++i) detail::widen_row_bf16(base + (sa + i) * cols, cols, tile + i * steps * 32);
          for (int64_t g = 0; g < G.count; ++g) {  // the tile's row i is row sa + i: y index i - (r0 - sa)
            const int64_t off = G.begin(g) * steps * 32;
            if (bf16)
              detail::rows_block_n<uint16_t, true>(tile, steps * 32, 0, len, r0 - sa, static_cast<const uint16_t*>(packed) + off,
                                                   G.N(g), y + G.begin(g) * ldy, ldy);
            else
              detail::rows_block_n<uint16_t, false>(tile, steps * 32, 0, len, r0 - sa, static_cast<const float*>(packed) + off,
                                                    G.N(g), y + G.begin(g) * ldy, ldy);
          }
        }
        continue;
      }
      for (int64_t g = 0; g < G.count; ++g) {
        const int64_t off = G.begin(g) * steps * 32;
        if (bf16)
          detail::rows_block_n<uint8_t, true>(base, cols, ra, rb, r0, static_cast<const uint16_t*>(packed) + off, G.N(g),
                                              y + G.begin(g) * ldy, ldy);
        else
          detail::rows_block_n<uint8_t, false>(base, cols, ra, rb, r0, static_cast<const float*>(packed) + off, G.N(g),
                                               y + G.begin(g) * ldy, ldy);
      }
    }
  }, 1, detail::gemv_chunks(W, r0, r1, n));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace deepseek::backend::cpu
