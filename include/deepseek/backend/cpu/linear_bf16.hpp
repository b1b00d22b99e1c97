// Linear layers with bf16 activations on CPUs with AVX512-BF16: y[t, r] = sum_c W[r, c] * bf16(x[t, c]),
// W in bf16, products and sums in f32.
//
//   W: bf16 [rows, cols]; x: [n, cols] f32, rounded to bf16 (nearest, ties to even) once per call
//   and packed as [group][cols / 32][N][32] for groups of up to kGroup tokens (zero padded to 32
//   columns); y: [n, rows] f32
//
// VDPBF16PS multiplies 32 bf16 pairs and adds them into 16 f32 lanes in one instruction, which on
// the CPUs that have it is 2-3x the f32 FMA rate and needs no widening of the weights at all: the
// weight bytes go from memory straight into the multiplier. Each step loads R weight vectors and
// N token vectors and issues R x N dot products (R x N accumulators in the 32 zmm registers).
// This is what torch's bf16 linear (oneDNN) and llama.cpp's bf16 dot products compute: the input
// is rounded to bf16. ActivationDType::bf16 on a BlockQuantMatrix opts in (linear.hpp); CPUs
// without AVX512-BF16 compute the same rounded product through the f32 kernels.
//
// The functions here are compiled for AVX512-BF16 by a target attribute whatever the build flags,
// and run only when the CPU reports the feature at run time (has_avx512bf16()).
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <immintrin.h>
#define DEEPSEEK_CPU_BF16_KERNEL 1
#define DEEPSEEK_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define DEEPSEEK_CPU_BF16_KERNEL 0
#endif

namespace deepseek::backend::cpu {

namespace detail {
inline std::atomic<int>& bf16_kernel_switch() {  // -1: not decided yet, 0: off, 1: on
  static std::atomic<int> s{-1};
  return s;
}
}  // namespace detail

// True when the CPU has AVX512-BF16 and the native kernel is enabled (the default where present;
// DEEPSEEK_NO_AVX512BF16=1 in the environment or set_avx512bf16(false) turns it off).
inline bool has_avx512bf16() {
  int s = detail::bf16_kernel_switch().load(std::memory_order_relaxed);
  if (s < 0) {
#if DEEPSEEK_CPU_BF16_KERNEL
    const char* off = std::getenv("DEEPSEEK_NO_AVX512BF16");
    s = (!(off && *off && *off != '0') && __builtin_cpu_supports("avx512bf16")) ? 1 : 0;
#else
    s = 0;
#endif
    detail::bf16_kernel_switch().store(s, std::memory_order_relaxed);
  }
  return s == 1;
}

// Turns the native kernel off (or back on where the CPU has it): tests run both paths.
inline void set_avx512bf16(bool on) {
#if DEEPSEEK_CPU_BF16_KERNEL
  detail::bf16_kernel_switch().store(on && __builtin_cpu_supports("avx512bf16") ? 1 : 0, std::memory_order_relaxed);
#else
  (void)on;
  detail::bf16_kernel_switch().store(0, std::memory_order_relaxed);
#endif
}

// x rounded to bf16 and back to f32 (what the fallback multiplies): [n, cols] -> [n, cols] dense.
inline void round_to_bf16(const float* x, int64_t n, int64_t cols, int64_t ldx, float* out) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < cols; ++c) out[t * cols + c] = bf16_to_f32(f32_to_bf16(x[t * ldx + c]));
}

#if DEEPSEEK_CPU_BF16_KERNEL
// GCC 12's AVX-512 intrinsics fill unused operands with _mm512_undefined_*(), a self-initialised
// variable that trips -Wuninitialized at every site they are inlined into.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace detail {

inline constexpr int kBf16Group = 6;  // most tokens per register block

// Tokens [t0, t0 + N) of x as bf16, [steps][N][32], zero padded past cols. VCVTNE2PS2BF16 rounds
// to nearest even as f32_to_bf16 does (NaN aside: activations are finite).
DEEPSEEK_TARGET_AVX512BF16 inline void pack_bf16(const float* x, int64_t ldx, int64_t cols, int N, uint16_t* out) {
  const int64_t steps = (cols + 31) / 32, full = cols / 32;
  for (int t = 0; t < N; ++t) {
    const float* xt = x + t * ldx;
    for (int64_t s = 0; s < full; ++s) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xt + s * 32 + 16), _mm512_loadu_ps(xt + s * 32));
      _mm512_storeu_si512(out + (s * N + t) * 32, (__m512i)v);
    }
    for (int64_t s = full; s < steps; ++s) {
      uint16_t* o = out + (s * N + t) * 32;
      const int64_t m = cols - s * 32;
      for (int64_t j = 0; j < m; ++j) o[j] = f32_to_bf16(xt[s * 32 + j]);
      for (int64_t j = m; j < 32; ++j) o[j] = 0;
    }
  }
}

DEEPSEEK_TARGET_AVX512BF16 inline float hsum512(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
  return _mm512_cvtss_f32(v);
}

// The four horizontal sums of a, b, c, d in one pass (a third of the shuffles of four hsum512).
DEEPSEEK_TARGET_AVX512BF16 inline __m128 hsum512x4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // per lane a02 b02 a13 b13
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));  // per lane a b c d
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0x4E));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, 0xB1));
  return _mm512_castps512_ps128(s);
}

// out[i][t] = dot(row_i, x_t) over all columns for R rows and N packed tokens.
template <int R, int N>
DEEPSEEK_TARGET_AVX512BF16 inline void bf16_dot_block(const uint16_t* const* rows, const uint16_t* xp, int64_t cols,
                                                      float (*out)[N]) {
  __m512 acc[R][N];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) acc[i][t] = _mm512_setzero_ps();
  const int64_t full = cols / 32;
  int64_t s = 0;
  for (; s < full; ++s, xp += 32 * N) {
    __m512bh w[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) w[i] = (__m512bh)_mm512_loadu_si512(rows[i] + s * 32);
#pragma GCC unroll 8
    for (int t = 0; t < N; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + 32 * t);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], w[i], xv);
    }
  }
  if (full * 32 < cols) {  // last partial step: masked weight loads, x is zero padded
    const __mmask32 m = (__mmask32)((uint64_t(1) << (cols - full * 32)) - 1);
    __m512bh w[R];
    for (int i = 0; i < R; ++i) w[i] = (__m512bh)_mm512_maskz_loadu_epi16(m, rows[i] + full * 32);
    for (int t = 0; t < N; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xp + 32 * t);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], w[i], xv);
    }
  }
  constexpr int K = R * N;
  __m512* a = &acc[0][0];
  float* o = &out[0][0];
  int k = 0;
  for (; k + 4 <= K; k += 4) _mm_storeu_ps(o + k, hsum512x4(a[k], a[k + 1], a[k + 2], a[k + 3]));
  for (; k < K; ++k) o[k] = hsum512(a[k]);
}

// Rows [ra, rb) (absolute) for one packed group of N tokens; y row index r - r0.
template <int N>
DEEPSEEK_TARGET_AVX512BF16 inline void bf16_rows(const uint16_t* base, int64_t cols, int64_t ra, int64_t rb, int64_t r0,
                                                 const uint16_t* xp, float* y, int64_t ldy) {
  // Enough rows that R x N independent accumulators hide the dot product's latency, few enough
  // that R x N + R + 1 vectors fit in the 32 registers.
  constexpr int R = N <= 2 ? 8 : N <= 4 ? 6 : 4;
  int64_t r = ra;
  for (; r + R <= rb; r += R) {
    const uint16_t* rows[R];
    for (int i = 0; i < R; ++i) rows[i] = base + (r + i) * cols;
    float out[R][N];
    bf16_dot_block<R, N>(rows, xp, cols, out);
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < N; ++t) y[t * ldy + r + i - r0] = out[i][t];
  }
  for (; r < rb; ++r) {
    const uint16_t* rows[1] = {base + r * cols};
    float out[1][N];
    bf16_dot_block<1, N>(rows, xp, cols, out);
    for (int t = 0; t < N; ++t) y[t * ldy + r - r0] = out[0][t];
  }
}

DEEPSEEK_TARGET_AVX512BF16 inline void bf16_rows_n(const uint16_t* base, int64_t cols, int64_t ra, int64_t rb, int64_t r0,
                                                   const uint16_t* xp, int N, float* y, int64_t ldy) {
  switch (N) {
    case 1: bf16_rows<1>(base, cols, ra, rb, r0, xp, y, ldy); break;
    case 2: bf16_rows<2>(base, cols, ra, rb, r0, xp, y, ldy); break;
    case 3: bf16_rows<3>(base, cols, ra, rb, r0, xp, y, ldy); break;
    case 4: bf16_rows<4>(base, cols, ra, rb, r0, xp, y, ldy); break;
    case 5: bf16_rows<5>(base, cols, ra, rb, r0, xp, y, ldy); break;
    default: bf16_rows<6>(base, cols, ra, rb, r0, xp, y, ldy); break;
  }
}

}  // namespace detail

// y[t, r - r0] = W[r, :] . bf16(x[t, :]) for r in [r0, r1); W must be bf16 and has_avx512bf16() true.
inline void linear_rows_bf16(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                             int64_t ldx, int64_t ldy) {
  const int64_t cols = W.cols(), rows = r1 - r0, steps = (cols + 31) / 32;
  // ceil(n / 6) groups of near-equal size (13 tokens: 5 + 4 + 4, not 6 + 6 + 1): a small group
  // costs a full pass over the weights for few products.
  const int64_t groups = (n + detail::kBf16Group - 1) / detail::kBf16Group;
  auto group_begin = [&](int64_t g) { return g * n / groups; };
  static thread_local std::vector<uint16_t> packed_buf;
  packed_buf.resize(size_t(n * steps * 32 + 32));
  // 64-byte aligned: a zmm load that straddles two cache lines costs two.
  uint16_t* packed = packed_buf.data() + ((64 - reinterpret_cast<uintptr_t>(packed_buf.data()) % 64) % 64) / 2;
  // Group g (tokens [group_begin(g), group_begin(g + 1))) starts at packed + group_begin(g) * steps * 32.
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t t0 = group_begin(g);
    detail::pack_bf16(x + t0 * ldx, ldx, cols, int(group_begin(g + 1) - t0), packed + t0 * steps * 32);
  }
  const uint16_t* base = W.weight.data_as<const uint16_t>();
  const uint16_t* xp = packed;
  // Chunks of 32 rows; within a chunk every token group sweeps the chunk's rows, which stay in L2.
  constexpr int64_t C = 32;
  const int64_t chunks = (rows + C - 1) / C;
  parallel_for(chunks, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch) {
      const int64_t ra = r0 + ch * C, rb = std::min(r1, ra + C);
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t t0 = group_begin(g);
        detail::bf16_rows_n(base, cols, ra, rb, r0, xp + t0 * steps * 32, int(group_begin(g + 1) - t0), y + t0 * ldy, ldy);
      }
    }
  });
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace deepseek::backend::cpu
