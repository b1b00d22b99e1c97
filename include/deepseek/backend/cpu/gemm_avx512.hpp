// A small f32 GEMM for the attention kernels, in AVX-512 register tiles (compiled by target
// attributes, chosen at run time like linear_avx512.hpp's kernels):
//   C[M, N] (+)= A[M, K] B[K, N]      A(i, k) = A[i a_rs + k a_cs] (any strides), B, C row-major
// A tile is 6 rows x 32 columns (12 zmm accumulators; per k two loads of B and six broadcasts of A),
// K in chunks of 256 so a B panel (256 x 32 floats, 32 KB) stays in L1 while the row tiles pass over
// it; edge columns use masked loads and stores. The strided A lets MLA's attention multiply by a
// transposed score block without transposing it. Tested against a plain triple loop
// (tests/nn/test_mla_attention.cpp).
#pragma once

#include "deepseek/backend/cpu/linear_avx512.hpp"  // has_avx512(), DEEPSEEK_CPU_AVX512_KERNELS

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

#if DEEPSEEK_CPU_AVX512_KERNELS
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace gemm_detail {
template <int MR>
__attribute__((target("avx512f"))) inline void tile(const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb,
                                                    float* C, int64_t ldc, int64_t K, __mmask16 m0, __mmask16 m1, bool acc) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    c0[r] = acc ? _mm512_maskz_loadu_ps(m0, C + r * ldc) : _mm512_setzero_ps();
    c1[r] = acc ? _mm512_maskz_loadu_ps(m1, C + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, B + k * ldb), b1 = _mm512_maskz_loadu_ps(m1, B + k * ldb + 16);
    const float* a = A + k * a_cs;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * a_rs]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
  }
}
}  // namespace gemm_detail

__attribute__((target("avx512f"))) inline void gemm_avx512(const float* A, int64_t a_rs, int64_t a_cs, const float* B,
                                                           int64_t ldb, float* C, int64_t ldc, int64_t M, int64_t N,
                                                           int64_t K, bool accumulate) {
  constexpr int64_t kKc = 256;
  for (int64_t j0 = 0; j0 < N; j0 += 32) {
    const int64_t nj = std::min<int64_t>(32, N - j0);
    const __mmask16 m0 = nj >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nj) - 1);
    const __mmask16 m1 = nj >= 32 ? __mmask16(0xFFFF) : nj <= 16 ? __mmask16(0) : __mmask16((1u << (nj - 16)) - 1);
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      const bool acc = accumulate || k0 > 0;
      const float* b = B + k0 * ldb + j0;
      for (int64_t i0 = 0; i0 < M; i0 += 6) {
        const float* a = A + i0 * a_rs + k0 * a_cs;
        float* c = C + i0 * ldc + j0;
        switch (std::min<int64_t>(6, M - i0)) {
          case 6: gemm_detail::tile<6>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
          case 5: gemm_detail::tile<5>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
          case 4: gemm_detail::tile<4>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
          case 3: gemm_detail::tile<3>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
          case 2: gemm_detail::tile<2>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
          default: gemm_detail::tile<1>(a, a_rs, a_cs, b, ldb, c, ldc, kc, m0, m1, acc); break;
        }
      }
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace deepseek::backend::cpu
