// Checked integer arithmetic and conversions for numbers that come from outside (files, JSON,
// command-line options): a value is range-checked into its type before it is used, never
// truncated or wrapped, and the error names what the value was (a field, an option).
//
//   checked_cast<int>(v, lo, hi, "n_group")         v in [lo, hi], else Error naming "n_group"
//   parse_integer("4096", lo, hi, "--max-new")        strict decimal: no sign games, no trailing text
//   checked_mul(a, b, what), checked_add(a, b, what)  int64 products and sums that must not overflow
//   excerpt(text)                                     untrusted text cut short for an error message
//   first_non_finite(x, n)                            where a float buffer first holds NaN or inf
//   check_finite(x, rows, cols, stage, where)         Error naming the stage, row and column of the first
#pragma once

#include "deepseek/core/error.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace deepseek {

// At most `max` bytes of `s` for an error message (with "..." and the full length when cut), so
// an error never echoes megabytes of hostile input; control bytes (NUL, newline, ESC) are shown
// as \xNN so a message cannot be cut short or rewrite the terminal. Cuts at a UTF-8 boundary.
inline std::string excerpt(std::string_view s, size_t max = 80) {
  size_t n = std::min(s.size(), max);
  if (n < s.size())
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::string out;
  out.reserve(n + 16);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  if (n < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

inline std::string range_str(int64_t lo, int64_t hi) {
  return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
}

// `what` is a field or option name; the message reads "<what> = v is out of range [lo, hi]".
// [lo, hi] must lie inside To's range (the caller states the policy; the type must hold it).
template <class To, class From>
To checked_cast(From v, int64_t lo, int64_t hi, const std::string& what, ErrorWhere where = {}) {
  static_assert(std::is_integral<From>::value && std::is_integral<To>::value && sizeof(From) <= 8, "integers only");
  bool ok;
  if constexpr (std::is_signed<From>::value) {
    ok = int64_t(v) >= lo && int64_t(v) <= hi;
  } else {
    ok = hi >= 0 && uint64_t(v) <= uint64_t(hi) && (lo <= 0 || uint64_t(v) >= uint64_t(lo));
  }
  if (!ok) {
    const std::string shown = std::is_signed<From>::value ? std::to_string(int64_t(v)) : std::to_string(uint64_t(v));
    throw Error(what + " = " + shown + " is out of range " + range_str(lo, hi), std::move(where));
  }
  return static_cast<To>(v);
}

// Strict decimal integer in [lo, hi]: optional '-', digits, nothing else (no spaces, '+', hex,
// or trailing text); values that overflow int64 are out of range, not wrapped.
inline int64_t parse_integer(std::string_view s, int64_t lo, int64_t hi, const std::string& what) {
  int64_t v = 0;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  const auto r = std::from_chars(b, e, v);
  if (s.empty() || r.ptr != e || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    throw Error(what + " expects an integer, got '" + excerpt(s) + "'");
  if (r.ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw Error(what + " = " + excerpt(s) + " is out of range " + range_str(lo, hi));
  return v;
}

inline int64_t checked_mul(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error(what + ": " + std::to_string(a) + " x " + std::to_string(b) + " overflows int64");
  return r;
}

inline int64_t checked_add(int64_t a, int64_t b, const std::string& what) {
  int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw Error(what + ": " + std::to_string(a) + " + " + std::to_string(b) + " overflows int64");
  return r;
}

// Index of the first NaN or infinity in x[0, n), or -1. The scan takes the maximum of the bit
// patterns of |x| (an integer max reduction: vectorizes, no branch per value) a block at a time,
// and finds the exact index only in a block that has one.
inline int64_t first_non_finite(const float* x, int64_t n) {
  constexpr int64_t kBlock = 1024;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    uint32_t top = 0;  // the largest |x| bit pattern: NaN and inf are the patterns >= 0x7f800000
    for (int64_t i = b; i < e; ++i) {
      uint32_t u;
      std::memcpy(&u, x + i, sizeof u);
      top = std::max(top, u & 0x7fffffffu);
    }
    if (top >= 0x7f800000u)
      for (int64_t i = b; i < e; ++i)
        if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

// Throws if x [rows, cols], the output of `stage` (a model stage named with its tensors, e.g.
// "decoder layer 3 (model.layers.3)"), holds NaN or inf: such values would otherwise reach the
// sampler as all-NaN logits. `stage` is called only when there is something to report, so callers
// build the label lazily.
template <class Stage>
void check_finite(const float* x, int64_t rows, int64_t cols, Stage&& stage, const ErrorWhere& where) {
  const int64_t i = first_non_finite(x, rows * cols);
  if (i < 0) return;
  throw Error(std::string("non-finite value (") + (std::isnan(x[i]) ? "NaN" : x[i] > 0 ? "inf" : "-inf") +
                  ") first appears in the output of " + std::string(stage()) + ", row " + std::to_string(i / cols) +
                  ", column " + std::to_string(i % cols) + ": the checkpoint's weights (or the config's values) are not usable",
              where);
}

}  // namespace deepseek
