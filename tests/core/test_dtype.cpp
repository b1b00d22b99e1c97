// dtype conversions: exhaustive over every 8- and 16-bit encoding, against an independent
// brute-force nearest-value search, and against values written by PyTorch
// (tests/reference/make_dtype_fixtures.py -> tests/fixtures/dtypes/dtypes.safetensors).
#include <deepseek/core/dtype.hpp>
#include <deepseek/io/safetensors.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

using namespace deepseek;

namespace {

bool same_bits_or_both_nan(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return f32_bits(a) == f32_bits(b);
}

// Independent reference for round-to-nearest-even onto a finite set of representable values:
// binary search in the sorted list of non-negative finite values of the format, compare the
// distances in double, ties go to the even encoding. Returns the encoding of |x| (no sign) or
// `overflow` when x lies past the largest value (beyond the tie with the next binade).
struct Format {
  std::vector<std::pair<double, uint32_t>> values;  // (value, code) ascending, non-negative, finite
  double overflow_threshold;                          // |x| >= this does not round to a finite value
};

uint32_t nearest_even(const Format& f, double a, uint32_t overflow) {
  if (a >= f.overflow_threshold) return overflow;
  auto it = std::lower_bound(f.values.begin(), f.values.end(), std::make_pair(a, 0u));
  if (it == f.values.end()) return f.values.back().second;  // between the max and the threshold
  if (it->first == a || it == f.values.begin()) return it->second;
  auto lo = it - 1;
  const double dl = a - lo->first, dh = it->first - a;
  if (dl < dh) return lo->second;
  if (dh < dl) return it->second;
  return (lo->second & 1u) ? it->second : lo->second;
}

Format make_format(int bits, float (*decode)(uint16_t), double overflow_threshold) {
  Format f;
  for (uint32_t c = 0; c < (1u << (bits - 1)); ++c) {  // sign bit clear
    const float v = decode(static_cast<uint16_t>(c));
    if (std::isfinite(v)) f.values.push_back({double(v), c});
  }
  std::sort(f.values.begin(), f.values.end());
  f.overflow_threshold = overflow_threshold;
  return f;
}

float dec_f16(uint16_t c) { return f16_to_f32(c); }
float dec_bf16(uint16_t c) { return bf16_to_f32(c); }
float dec_f8(uint16_t c) { return f8_e4m3_to_f32(static_cast<uint8_t>(c)); }

std::vector<float> probe_floats() {
  std::vector<float> v;
  // A stride through all 2^32 patterns hits every exponent with varied mantissas ...
  for (uint64_t u = 0; u < (1ull << 32); u += 4093) v.push_back(f32_from_bits(static_cast<uint32_t>(u)));
  // ... plus every exact tie and its neighbours for each target format.
  for (uint32_t c = 0; c < 0x7f80; ++c) {
    const float lo = bf16_to_f32(static_cast<uint16_t>(c)), hi = bf16_to_f32(static_cast<uint16_t>(c + 1));
    const float mid = float((double(lo) + double(hi)) / 2);
    v.insert(v.end(), {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)});
  }
  for (uint32_t c = 0; c < 0x7c00; ++c) {
    const double lo = f16_to_f32(static_cast<uint16_t>(c)), hi = f16_to_f32(static_cast<uint16_t>(c + 1));
    const float mid = float((lo + hi) / 2);
    v.insert(v.end(), {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)});
  }
  for (uint32_t c = 0; c < 0x7e; ++c) {
    const double lo = f8_e4m3_to_f32(static_cast<uint8_t>(c)), hi = f8_e4m3_to_f32(static_cast<uint8_t>(c + 1));
    const float mid = float((lo + hi) / 2);
    v.insert(v.end(), {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)});
  }
  for (float x : {448.f, 464.f, 464.0001f, 479.99f, 480.f, 65504.f, 65519.99f, 65520.f, 1e-45f, 5.96e-8f, 2.98e-8f})
    v.push_back(x);
  const size_t n = v.size();
  for (size_t i = 0; i < n; ++i) v.push_back(-v[i]);
  return v;
}

}  // namespace

TEST_CASE("decoders are exact on every encoding", "[dtype]") {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    // bf16 is the top half of an f32.
    REQUIRE(f32_bits(bf16_to_f32(h)) == (c << 16));
    // f16: compare with the textbook formula evaluated in double.
    const int e = (c >> 10) & 0x1f, m = c & 0x3ff;
    const double sign = (c & 0x8000) ? -1.0 : 1.0;
    const float f = f16_to_f32(h);
    if (e == 31) {
      REQUIRE((m ? std::isnan(f) : std::isinf(f)));
    } else {
      const double ref = e == 0 ? sign * std::ldexp(m, -24) : sign * std::ldexp(1024 + m, e - 25);
      REQUIRE(double(f) == ref);
      REQUIRE(std::signbit(f) == bool(c & 0x8000));
    }
  }
  for (uint32_t c = 0; c < 256; ++c) {
    const uint8_t b = static_cast<uint8_t>(c);
    const int e = (c >> 3) & 0xf, m = c & 7;
    const float f = f8_e4m3_to_f32(b);
    if (e == 15 && m == 7) {
      REQUIRE(std::isnan(f));
    } else {
      const double sign = (c & 0x80) ? -1.0 : 1.0;
      const double ref = e == 0 ? sign * std::ldexp(m, -9) : sign * std::ldexp(8 + m, e - 10);
      REQUIRE(double(f) == ref);
    }
    const float s = e8m0_to_f32(b);
    if (c == 255) REQUIRE(std::isnan(s));
    else REQUIRE(double(s) == std::ldexp(1.0, int(c) - 127));
  }
  REQUIRE(f8_e4m3_to_f32(0x7e) == 448.0f);
}

TEST_CASE("encoders round-trip every finite encoding", "[dtype]") {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    const float b = bf16_to_f32(h);
    REQUIRE(f32_to_bf16(b) == (std::isnan(b) ? 0x7fc0 : h));
    const float f = f16_to_f32(h);
    REQUIRE(f32_to_f16(f) == (std::isnan(f) ? ((h & 0x8000) | 0x7e00) : h));
  }
  for (uint32_t c = 0; c < 256; ++c) {
    const uint8_t b = static_cast<uint8_t>(c);
    const float f = f8_e4m3_to_f32(b);
    REQUIRE(f32_to_f8_e4m3(f) == (std::isnan(f) ? ((b & 0x80) | 0x7f) : b));
    if (c > 0 && c < 255) REQUIRE(f32_to_e8m0(e8m0_to_f32(b)) == b);
  }
}

TEST_CASE("encoders round to nearest even like a brute-force search", "[dtype]") {
  const Format bf16 = make_format(16, dec_bf16, 0);  // bf16 overflow handled below
  const Format f16 = make_format(16, dec_f16, 65520.0);
  const Format f8 = make_format(8, dec_f8, 464.0 + 1e-9);  // 464 ties to 448 (even); above saturates
  Format bf16_fin = bf16;
  bf16_fin.overflow_threshold = double(f32_from_bits(0x7f7f8000u));  // halfway past the max bf16
  const std::vector<float> xs = probe_floats();
  size_t checked = 0;
  for (float x : xs) {
    if (!std::isfinite(x)) continue;
    const double a = std::fabs(double(x));
    const uint32_t sign16 = std::signbit(x) ? 0x8000u : 0u;
    INFO("x = " << x);
    REQUIRE(f32_to_bf16(x) == (sign16 | nearest_even(bf16_fin, a, 0x7f80u)));
    REQUIRE(f32_to_f16(x) == (sign16 | nearest_even(f16, a, 0x7c00u)));
    REQUIRE(f32_to_f8_e4m3(x) == ((sign16 >> 8) | nearest_even(f8, a, 0x7eu)));
    ++checked;
  }
  REQUIRE(checked > 1000000);
  REQUIRE(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  REQUIRE(f32_to_f8_e4m3(std::numeric_limits<float>::infinity()) == 0x7e);
  REQUIRE(f32_to_f8_e4m3(-1e30f) == 0xfe);
  REQUIRE(f32_to_f8_e4m3(-std::numeric_limits<float>::quiet_NaN()) == 0xff);
}

TEST_CASE("conversions match values written by PyTorch", "[dtype][torch]") {
  auto f = io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/dtypes/dtypes.safetensors");
  auto samples = f->view("f32_samples");
  const float* x = samples.data_as<float>();
  const int64_t n = samples.numel();
  REQUIRE(n > 1000);
  const uint16_t* bf = f->view("f32_to_bf16").data_as<uint16_t>();
  const uint16_t* hf = f->view("f32_to_f16").data_as<uint16_t>();
  const uint8_t* f8 = f->view("f32_to_f8_e4m3").data_as<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    INFO("sample " << i << " = " << x[i]);
    if (std::isnan(x[i])) {  // torch writes NaN as 0x7FC0 or 0xFFFF depending on its code path
      REQUIRE(std::isnan(bf16_to_f32(bf[i])));
      REQUIRE(std::isnan(bf16_to_f32(f32_to_bf16(x[i]))));
    } else {
      REQUIRE(f32_to_bf16(x[i]) == bf[i]);
    }
    REQUIRE(f32_to_f16(x[i]) == hf[i]);
    REQUIRE(f32_to_f8_e4m3(x[i]) == f8[i]);
  }
  if (f->find("f32_to_e8m0")) {
    const uint8_t* e8 = f->view("f32_to_e8m0").data_as<uint8_t>();
    for (int64_t i = 0; i < n; ++i) {
      INFO("sample " << i << " = " << x[i]);
      REQUIRE(f32_to_e8m0(x[i]) == e8[i]);
    }
  }
  struct All {
    const char* enc;
    const char* dec;
    int bits;
  };
  for (All a : {All{"bf16_all", "bf16_all_to_f32", 16}, All{"f16_all", "f16_all_to_f32", 16},
                All{"f8_e4m3_all", "f8_e4m3_all_to_f32", 8}, All{"e8m0_all", "e8m0_all_to_f32", 8}}) {
    if (!f->find(a.enc)) {
      REQUIRE(std::string(a.enc) == "e8m0_all");  // only e8m0 may be absent (older safetensors)
      continue;
    }
    auto enc = f->view(a.enc);
    const float* ref = f->view(a.dec).data_as<float>();
    REQUIRE(enc.numel() == (1 << a.bits));
    for (int64_t i = 0; i < enc.numel(); ++i) {
      float ours;
      if (enc.dtype() == DType::bf16) ours = bf16_to_f32(enc.data_as<uint16_t>()[i]);
      else if (enc.dtype() == DType::f16) ours = f16_to_f32(enc.data_as<uint16_t>()[i]);
      else if (enc.dtype() == DType::f8_e4m3) ours = f8_e4m3_to_f32(enc.data_as<uint8_t>()[i]);
      else ours = e8m0_to_f32(enc.data_as<uint8_t>()[i]);
      INFO(a.enc << " code " << i);
      REQUIRE(same_bits_or_both_nan(ours, ref[i]));
    }
  }
}
