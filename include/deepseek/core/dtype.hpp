// Element types and exact conversions between them.
//
//   f32, f64           IEEE binary32 / binary64
//   bf16               top 16 bits of binary32; f32 -> bf16 rounds to nearest even, NaN -> 0x7FC0
//                      (torch's scalar rule; its vectorized cast writes 0xFFFF: both are NaN)
//   f16                IEEE binary16; f32 -> f16 rounds to nearest even (subnormals included),
//                      |x| >= 65520 -> inf, NaN -> 0x7E00 with the sign kept
//   f8_e4m3            float8_e4m3fn as in DeepSeek checkpoints: bias 7, no inf, 0x7F/0xFF = NaN,
//                      max 448; f32 -> e4m3 rounds to nearest even and saturates like torch
//                      (>= 2.x): every finite |x| past 448 and +-inf give +-448, NaN keeps its sign
//   e8m0               float8_e8m0fnu block scales: 2^(e-127), 0xFF = NaN, no sign, no zero;
//                      f32 -> e8m0 follows torch: |x| taken, rounds to the nearest power of two
//                      with halfway cases (1.5 * 2^e) up, f32 subnormals above 2^-127 up to
//                      2^-126, zero -> 0x00, overflow/inf/NaN -> 0xFF
//   i64, i32, i16, i8, u8, boolean   integers as stored by safetensors
//
// Every conversion is checked bit-for-bit over all 2^8 / 2^16 encodings and against values
// written by PyTorch (tests/core/test_dtype.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace deepseek {

enum class DType : uint8_t { f64, f32, f16, bf16, f8_e4m3, e8m0, i64, i32, i16, i8, u8, boolean };

struct DTypeInfo {
  DType dtype;
  const char* name;         // our name, e.g. "bf16"
  const char* safetensors;  // the name in a safetensors header, e.g. "BF16"
  int size;                 // bytes per element
  bool is_float;
};

// One traits table instead of switches spread through the code.
inline constexpr DTypeInfo kDTypes[] = {
    {DType::f64, "f64", "F64", 8, true},          {DType::f32, "f32", "F32", 4, true},
    {DType::f16, "f16", "F16", 2, true},          {DType::bf16, "bf16", "BF16", 2, true},
    {DType::f8_e4m3, "f8_e4m3", "F8_E4M3", 1, true}, {DType::e8m0, "e8m0", "F8_E8M0", 1, true},
    {DType::i64, "i64", "I64", 8, false},         {DType::i32, "i32", "I32", 4, false},
    {DType::i16, "i16", "I16", 2, false},         {DType::i8, "i8", "I8", 1, false},
    {DType::u8, "u8", "U8", 1, false},            {DType::boolean, "bool", "BOOL", 1, false},
};

constexpr const DTypeInfo& dtype_info(DType t) { return kDTypes[static_cast<int>(t)]; }
constexpr int dtype_size(DType t) { return dtype_info(t).size; }
inline const char* dtype_name(DType t) { return dtype_info(t).name; }

inline std::optional<DType> dtype_from_safetensors(std::string_view s) {
  for (const auto& d : kDTypes)
    if (s == d.safetensors) return d.dtype;
  return std::nullopt;
}

// Maps C++ element types to DType (for typed access to tensors).
template <class T> struct dtype_of;
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::i16; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::i8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---- bf16 -----------------------------------------------------------------------------------
inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);                     // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}
// The nearest bf16 value of f, as an f32 (what bf16 activations multiply).
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

namespace detail {
// Rounds a finite, non-negative binary32 (given as bits) to the nearest value of a binary format
// with `man` mantissa bits and exponent bias `bias` (subnormals included), ties to even. Returns
// the encoding without sign; values beyond the largest finite value give codes past it, which
// the caller maps to inf or NaN as its format requires.
inline uint32_t round_to_minifloat(uint32_t abs_bits, int man, int bias) {
  const int exp_field = int(abs_bits >> 23);
  if (exp_field == 0) return 0;  // f32 zero/subnormal: far below any target's smallest subnormal
  const int e = exp_field - 127;
  const uint32_t m = (abs_bits & 0x7fffffu) | 0x800000u;  // value = m * 2^(e-23)
  const int min_e = 1 - bias;
  int shift = 23 - man;
  uint32_t code_base = 0;
  if (e >= min_e) {
    code_base = uint32_t(e - min_e) << man;  // q keeps the implicit bit, which adds the last 1
  } else {
    shift += min_e - e;
    if (shift > 25) return 0;  // below half the smallest subnormal
  }
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  uint32_t code = code_base + q;
  if (rem > half || (rem == half && (q & 1u))) ++code;  // a carry moves into the exponent, as it should
  return code;
}
}  // namespace detail

// ---- f16 ------------------------------------------------------------------------------------
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    float v = std::ldexp(static_cast<float>(man), -24);  // exact: man < 2^10
    return sign ? -v : v;
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a == 0x7f800000u) return sign | 0x7c00u;
  const uint32_t code = detail::round_to_minifloat(a, 10, 15);
  return static_cast<uint16_t>(sign | (code >= 0x7c00u ? 0x7c00u : code));
}

// ---- f8 e4m3fn ------------------------------------------------------------------------------
inline float f8_e4m3_to_f32(uint8_t b) {
  const bool neg = b & 0x80u;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -9);
  } else {
    v = f32_from_bits(((exp + 120u) << 23) | (man << 20));
  }
  return neg ? -v : v;
}

inline uint8_t f32_to_f8_e4m3(float f) {
  const uint32_t u = f32_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7fu;  // NaN
  if (a == 0x7f800000u) return sign | 0x7eu;  // the format has no inf: saturate
  const uint32_t code = detail::round_to_minifloat(a, 3, 7);
  return static_cast<uint8_t>(sign | (code >= 0x7fu ? 0x7eu : code));
}

// The smallest power of two >= x, for a positive normal x (exact: the exponent of x, plus one when
// any mantissa bit is set): the ue8m0 block scales of DeepSeek's act_quant and FlashMLA's FP8 cache.
inline float pow2_ceil(float x) {
  int e = 0;
  const float m = std::frexp(x, &e);  // x = m 2^e, m in [0.5, 1)
  return std::ldexp(1.0f, m == 0.5f ? e - 1 : e);
}

// ---- e8m0 -----------------------------------------------------------------------------------
inline float e8m0_to_f32(uint8_t b) {
  if (b == 0xff) return std::numeric_limits<float>::quiet_NaN();
  if (b == 0) return f32_from_bits(0x00400000u);  // 2^-127 is an f32 subnormal
  return f32_from_bits(uint32_t(b) << 23);
}

inline uint8_t f32_to_e8m0(float f) {
  const uint32_t a = f32_bits(f) & 0x7fffffffu;
  const uint32_t exp = a >> 23;
  if (exp == 0xff) return 0xff;
  if (exp == 0) return a > 0x400000u ? 1 : 0;  // f32 subnormal: above 2^-127 rounds up to 2^-126
  const uint32_t e = exp + ((a & 0x400000u) ? 1u : 0u);
  return static_cast<uint8_t>(e >= 0xff ? 0xff : e);
}

}  // namespace deepseek
