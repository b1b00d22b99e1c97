// What the CPU backend may use, decided at compile time: AVX2 + FMA + F16C (the default build
// flags; -DDEEPSEEK_NATIVE=ON uses -march=native). Every vector path in backend/cpu has a scalar
// twin that computes the same sums; tests compare the two, and the scalar one is what a build
// without AVX2/FMA/F16C runs. The AVX-512 linear kernels (linear_avx512.hpp) are compiled by target
// attributes in any x86-64 build and chosen at run time.
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define DEEPSEEK_CPU_AVX2 1
#else
#define DEEPSEEK_CPU_AVX2 0
#endif

namespace deepseek::backend::cpu {
inline constexpr bool kHaveAvx2 = DEEPSEEK_CPU_AVX2 != 0;

#if DEEPSEEK_CPU_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// 8 bf16 -> 8 f32 (exact: bf16 is the top half of an f32).
inline __m256 load_bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
// 8 e4m3fn bytes -> 8 f32 equal to the true values / 256 (exact). Shifting the byte left by 7
// in a 16-bit lane lands exponent and mantissa where an f16 keeps them (5-bit exponent, bias 15
// instead of 7: a factor 2^-8) and the sign on bit 14; adding the sign bit once more carries it to
// bit 15. F16C widens the f16 in hardware, subnormals included, so no denormal assists slow the
// loop. NaN (0x7F) is not kept: weights are finite.
inline __m256 load_e4m3x8_div256(const uint8_t* p) {
  const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m128i h = _mm_slli_epi16(_mm_add_epi16(b, _mm_and_si128(b, _mm_set1_epi16(0x80))), 7);
  return _mm256_cvtph_ps(h);
}
// The same for 16 bytes at once: the integer steps run once on 256-bit lanes for both halves.
inline void load_e4m3x16_div256(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_slli_epi16(_mm256_add_epi16(b, _mm256_and_si256(b, _mm256_set1_epi16(0x80))), 7);
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}
#endif

}  // namespace deepseek::backend::cpu
