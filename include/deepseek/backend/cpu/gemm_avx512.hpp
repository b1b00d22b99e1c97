// A small f32 GEMM for the attention kernels, in AVX-512 register tiles (compiled by target
// attributes, chosen at run time like linear_avx512.hpp's kernels):
//   C[M, N] (+)= A[M, K] B[K, N]      A(i, k) = A[i a_rs + k a_cs] (any strides), B, C row-major
// A tile is 6 rows x 32 columns (12 zmm accumulators; per k two loads of B and six broadcasts of A),
// or 12 rows x 16 columns when N <= 16; K in chunks of 256 so a B panel (256 x 32 floats, 32 KB)
// stays in L1 while the row tiles pass over it; edge columns use masked loads and stores. The strided A lets MLA's attention multiply by a
// transposed score block without transposing it. Tested against a plain triple loop
// (tests/nn/test_mla_attention.cpp).
//
// gemm_bf16_avx512 is the same tile on AVX512-BF16 (VDPBF16PS: 32 bf16 products summed pairwise into
// 16 f32 lanes): C[M, N] (+)= sum over k2 < K2 of A_i[k2] . B[k2][n], where A_i[k2] is a pair of bf16
// (one uint32) at A[i a_rs + k2 a_cs] and B holds pairs too, "pair-interleaved": B[(k2 ldb + n) * 2
// + {0, 1}] = the (2 k2, 2 k2 + 1) entries of column n. Every product of two bf16 is exact in f32;
// only the summation order differs from gemm_bf16_reference.
#pragma once

#include "deepseek/backend/cpu/linear_avx512.hpp"  // has_avx512(), DEEPSEEK_CPU_AVX512_KERNELS

#include "deepseek/core/dtype.hpp"

#include <algorithm>
#include <cstdint>

namespace deepseek::backend::cpu {

// The plain loop the tiled kernel is checked against.
inline void gemm_reference(const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb, float* C, int64_t ldc,
                           int64_t M, int64_t N, int64_t K, bool accumulate) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = accumulate ? C[i * ldc + j] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += double(A[i * a_rs + k * a_cs]) * B[k * ldb + j];
      C[i * ldc + j] = float(acc);
    }
}

// The plain loop gemm_bf16_avx512 is checked against (A and B as described above).
inline void gemm_bf16_reference(const uint32_t* A, int64_t a_rs, int64_t a_cs, const uint16_t* B, int64_t ldb, float* C,
                                int64_t ldc, int64_t M, int64_t N, int64_t K2, bool accumulate) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = accumulate ? C[i * ldc + j] : 0.0;
      for (int64_t k = 0; k < K2; ++k) {
        const uint32_t a = A[i * a_rs + k * a_cs];
        const uint16_t* b = B + (k * ldb + j) * 2;
        acc += double(bf16_to_f32(uint16_t(a & 0xFFFF))) * bf16_to_f32(b[0]) + double(bf16_to_f32(uint16_t(a >> 16))) * bf16_to_f32(b[1]);
      }
      C[i * ldc + j] = float(acc);
    }
}

#if DEEPSEEK_CPU_AVX512_KERNELS
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace gemm_detail {
// The lanes of a 16-lane vector that hold one of `left` remaining elements.
inline __mmask16 lanes16(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// MR rows x NV * 16 columns of C in registers (MR * NV <= 12 accumulators).
template <int MR, int NV>
__attribute__((target("avx512f"))) inline void tile(const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb,
                                                    float* C, int64_t ldc, int64_t K, const __mmask16* mk, bool acc) {
  __m512 c[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? _mm512_maskz_loadu_ps(mk[v], C + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_maskz_loadu_ps(mk[v], B + k * ldb + 16 * v);
    const float* a = A + k * a_cs;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * a_rs]);
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(av, b[v], c[r][v]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(C + r * ldc + 16 * v, mk[v], c[r][v]);
}

template <int MR, int NV>
DEEPSEEK_TARGET_AVX512 inline void tile_bf16(const uint32_t* A, int64_t a_rs, int64_t a_cs, const uint16_t* B, int64_t ldb,
                                             float* C, int64_t ldc, int64_t K2, const __mmask16* mk, bool acc) {
  __m512 c[MR][NV];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? _mm512_maskz_loadu_ps(mk[v], C + r * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t k = 0; k < K2; ++k) {
    __m512bh b[NV];
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_maskz_loadu_epi32(mk[v], B + (k * ldb + 16 * v) * 2);
    const uint32_t* a = A + k * a_cs;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int32_t(a[r * a_rs]));
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_dpbf16_ps(c[r][v], av, b[v]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(C + r * ldc + 16 * v, mk[v], c[r][v]);
}

// C's columns in panels of 32 (6-row tiles) or, when N <= 16, one panel of 16 (12-row tiles, so a
// narrow product such as 16 heads' scores does not spend half its multiplies on masked lanes); K
// in chunks of kc so a B panel stays in L1. T(mr, nv, a, b, c, kc, masks, acc) runs one tile.
template <class Tile>
inline void tiled(int64_t M, int64_t N, int64_t K, int64_t kKc, bool accumulate, const Tile& run) {
  const int nv = N <= 16 ? 1 : 2, mr = nv == 1 ? 12 : 6;
  for (int64_t j0 = 0; j0 < N; j0 += 16 * nv) {
    const __mmask16 mk[2] = {lanes16(N - j0), lanes16(N - j0 - 16)};
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      for (int64_t i0 = 0; i0 < M; i0 += mr) run(int(std::min<int64_t>(mr, M - i0)), nv, i0, j0, k0, kc, mk, accumulate || k0 > 0);
    }
  }
}

// Dispatches a run-time (rows, vectors) to the template instance.
template <template <int, int> class F, class... Args>
inline void dispatch_tile(int mr, int nv, Args&&... args) {
  if (nv == 2) {
    switch (mr) {
      case 6: F<6, 2>::run(args...); break;
      case 5: F<5, 2>::run(args...); break;
      case 4: F<4, 2>::run(args...); break;
      case 3: F<3, 2>::run(args...); break;
      case 2: F<2, 2>::run(args...); break;
      default: F<1, 2>::run(args...); break;
    }
    return;
  }
  switch (mr) {
    case 12: F<12, 1>::run(args...); break;
    case 11: F<11, 1>::run(args...); break;
    case 10: F<10, 1>::run(args...); break;
    case 9: F<9, 1>::run(args...); break;
    case 8: F<8, 1>::run(args...); break;
    case 7: F<7, 1>::run(args...); break;
    case 6: F<6, 1>::run(args...); break;
    case 5: F<5, 1>::run(args...); break;
    case 4: F<4, 1>::run(args...); break;
    case 3: F<3, 1>::run(args...); break;
    case 2: F<2, 1>::run(args...); break;
    default: F<1, 1>::run(args...); break;
  }
}
template <int MR, int NV>
struct F32Tile {
  template <class... A>
  static void run(A&&... a) { tile<MR, NV>(a...); }
};
template <int MR, int NV>
struct Bf16Tile {
  template <class... A>
  static void run(A&&... a) { tile_bf16<MR, NV>(a...); }
};
}  // namespace gemm_detail

// Needs has_avx512bf16().
DEEPSEEK_TARGET_AVX512 inline void gemm_bf16_avx512(const uint32_t* A, int64_t a_rs, int64_t a_cs, const uint16_t* B,
                                                    int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N, int64_t K2,
                                                    bool accumulate) {
  // K in chunks of 128 pairs: a B panel of 128 x 32 pairs is 16 KB
  gemm_detail::tiled(M, N, K2, 128, accumulate,
                     [&](int mr, int nv, int64_t i0, int64_t j0, int64_t k0, int64_t kc, const __mmask16* mk, bool acc) {
                       gemm_detail::dispatch_tile<gemm_detail::Bf16Tile>(mr, nv, A + i0 * a_rs + k0 * a_cs, a_rs, a_cs,
                                                                         B + (k0 * ldb + j0) * 2, ldb, C + i0 * ldc + j0, ldc,
                                                                         kc, mk, acc);
                     });
}

__attribute__((target("avx512f"))) inline void gemm_avx512(const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                                                           int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
                                                           int64_t K, bool accumulate) {
  // K in chunks of 256: a B panel (256 x 32 floats) is 32 KB
  gemm_detail::tiled(M, N, K, 256, accumulate,
                     [&](int mr, int nv, int64_t i0, int64_t j0, int64_t k0, int64_t kc, const __mmask16* mk, bool acc) {
                       gemm_detail::dispatch_tile<gemm_detail::F32Tile>(mr, nv, A + i0 * a_rs + k0 * a_cs, a_rs, a_cs,
                                                                        B + k0 * ldb + j0, ldb, C + i0 * ldc + j0, ldc, kc, mk,
                                                                        acc);
                     });
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace deepseek::backend::cpu
