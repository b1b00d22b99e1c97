// Pillow-exact bicubic resize of 8-bit RGB (Image.resize((w, h), Image.BICUBIC), no box, no
// reducing_gap), restated from the algorithm in Pillow's src/libImaging/Resample.c.
//
//   kernel   Keys cubic, a = -0.5:  |x|<1: (a+2)|x|^3 - (a+3)|x|^2 + 1;  1<=|x|<2: a(|x|^3 - 5|x|^2 + 8|x| - 4)
//   per axis scale = in/out, filterscale = max(scale, 1) (antialiasing: the kernel is stretched
//            by the downscale factor), support = 2 * filterscale;
//            output i has centre c = (i + 0.5) * scale, taps x in [int(c - support + 0.5),
//            int(c + support + 0.5)) clipped to [0, in), weight w(x) = K((x - c + 0.5) / filterscale),
//            normalised to sum 1 in double, then to fixed point round(w * 2^22) (PRECISION_BITS = 22,
//            rounding away from zero).
//   passes   horizontal first (only over the source rows the vertical pass will read), rounded
//            and clamped to uint8: (2^21 + sum p*w) >> 22 clamped to [0, 255]; then vertical, same
//            rounding. Exception (Pillow 13's ImagingResampleInner; older Resample.c is always
//            horizontal-first): when the height shrinks by more than twice as many pixels as the
//            width does, in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w), the vertical pass
//            runs first over all columns. Pinned by fixture cases (720x477 -> 1001x333,
//            700x940 -> 512x512). A pass whose size does not change is skipped; same size both
//            ways = copy.
// Accumulators are int32 as in Pillow: |sum| <= 255 * sum|w| < 2^31 for this kernel.
// Coefficients are computed with floating-point contraction off: Pillow's C is built without
// FMA, and a fused multiply-add can move a weight across a fixed-point rounding boundary.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/core/parallel.hpp"
#include "deepseek/vision/image.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace deepseek::vision {

namespace detail {

inline constexpr int kResamplePrecisionBits = 22;  // 32 - 8 - 2, as Pillow

// One axis of a resize: for output i, taps [xmin[i], xmin[i] + count[i]) with fixed-point
// weights k[i * ksize + t].
struct ResampleAxis {
  int64_t ksize = 0;
  std::vector<int32_t> xmin, count;
  std::vector<int32_t> k;
};

#if defined(__clang__)
#define DEEPSEEK_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#if defined(__CUDACC__)
#pragma nv_diag_suppress 1675  // nvcc's front end does not know GCC's optimize pragma (host code of a .cu file)
#endif
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#define DEEPSEEK_NO_FP_CONTRACT
#else
#define DEEPSEEK_NO_FP_CONTRACT
#endif

inline double bicubic_kernel(double x) {
  DEEPSEEK_NO_FP_CONTRACT
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

inline ResampleAxis resample_axis(int64_t in_size, int64_t out_size) {
  DEEPSEEK_NO_FP_CONTRACT
  ResampleAxis ax;
  // Pillow: box (0, 0, in, in) as floats, scale = (double)(in1 - in0) / out.
  const double scale = double(float(in_size) - 0.0f) / double(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  ax.ksize = int64_t(std::ceil(support)) * 2 + 1;
  ax.xmin.resize(size_t(out_size));
  ax.count.resize(size_t(out_size));
  ax.k.assign(size_t(out_size * ax.ksize), 0);
  std::vector<double> w(size_t(ax.ksize));
  const double ss = 1.0 / filterscale;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = 0.0 + (double(i) + 0.5) * scale;
    int64_t xmin = int64_t(center - support + 0.5);  // C cast truncates toward zero, as Pillow
    if (xmin < 0) xmin = 0;
    int64_t xmax = int64_t(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      const double v = bicubic_kernel((double(x + xmin) - center + 0.5) * ss);
      w[size_t(x)] = v;
      ww += v;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      const double kx = ww != 0.0 ? w[size_t(x)] / ww : w[size_t(x)];
      const double fixed = kx * double(1 << kResamplePrecisionBits);
      ax.k[size_t(i * ax.ksize + x)] = kx < 0 ? int32_t(-0.5 + fixed) : int32_t(0.5 + fixed);
    }
    ax.xmin[size_t(i)] = int32_t(xmin);
    ax.count[size_t(i)] = int32_t(xmax);
  }
  return ax;
}

#if !defined(__clang__) && defined(__GNUC__)
#pragma GCC pop_options
#endif
#undef DEEPSEEK_NO_FP_CONTRACT

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kResamplePrecisionBits;  // arithmetic shift, as Pillow's table lookup
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows [row0, row0 + rows) of src (width in_w) -> dst rows of width out_w.
inline void resample_horizontal(const uint8_t* src, int64_t in_w, int64_t row0, int64_t rows, const ResampleAxis& ax,
                                int64_t out_w, uint8_t* dst) {
  parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* s = src + (row0 + r) * in_w * 3;
          uint8_t* d = dst + r * out_w * 3;
          for (int64_t x = 0; x < out_w; ++x) {
            const int32_t* k = &ax.k[size_t(x * ax.ksize)];
            const uint8_t* p = s + int64_t(ax.xmin[size_t(x)]) * 3;
            int32_t a0 = 1 << (kResamplePrecisionBits - 1), a1 = a0, a2 = a0;
            for (int32_t t = 0, n = ax.count[size_t(x)]; t < n; ++t, p += 3) {
              a0 += int32_t(p[0]) * k[t];
              a1 += int32_t(p[1]) * k[t];
              a2 += int32_t(p[2]) * k[t];
            }
            d[x * 3 + 0] = clip8(a0);
            d[x * 3 + 1] = clip8(a1);
            d[x * 3 + 2] = clip8(a2);
          }
        }
      },
      16);
}

// src rows (width w, first row = source row `row0`) -> out_h rows; taps index source rows.
inline void resample_vertical(const uint8_t* src, int64_t w, int64_t row0, const ResampleAxis& ax, int64_t out_h,
                              uint8_t* dst) {
  const int64_t n = w * 3;
  parallel_for(
      out_h,
      [&](int64_t y0, int64_t y1) {
        std::vector<int32_t> acc(static_cast<size_t>(n));
        for (int64_t y = y0; y < y1; ++y) {
          std::fill(acc.begin(), acc.end(), 1 << (kResamplePrecisionBits - 1));
          const int32_t* k = &ax.k[size_t(y * ax.ksize)];
          for (int32_t t = 0, cnt = ax.count[size_t(y)]; t < cnt; ++t) {
            const uint8_t* s = src + (int64_t(ax.xmin[size_t(y)]) + t - row0) * n;
            const int32_t kt = k[t];
            int32_t* a = acc.data();
            for (int64_t i = 0; i < n; ++i) a[i] += int32_t(s[i]) * kt;
          }
          uint8_t* d = dst + y * n;
          for (int64_t i = 0; i < n; ++i) d[i] = clip8(acc[size_t(i)]);
        }
      },
      8);
}

}  // namespace detail

// Image.resize((width, height), Image.BICUBIC) on an RGB image, bit for bit.
inline Image resize_bicubic(const Image& src, int64_t width, int64_t height) {
  if (src.width <= 0 || src.height <= 0 || int64_t(src.rgb.size()) != src.width * src.height * 3)
    throw Error("resize_bicubic: source image is empty or its buffer is not width*height*3 bytes", at_field("image"));
  if (width <= 0 || height <= 0 || width > kMaxImagePixels / height)
    throw Error("resize_bicubic: target size " + std::to_string(width) + "x" + std::to_string(height) +
                    " is empty or over kMaxImagePixels",
                at_field("size"));
  if (src.width > INT32_MAX / 2 || src.height > INT32_MAX / 2)
    throw Error("resize_bicubic: source too large", at_field("image"));
  if (width == src.width && height == src.height) return src;

  const bool need_h = width != src.width, need_v = height != src.height;
  const detail::ResampleAxis ay = detail::resample_axis(src.height, height);
  // Source rows the vertical pass reads; the horizontal pass runs on those only.
  const int64_t y_first = ay.xmin.front();
  const int64_t y_last = int64_t(ay.xmin.back()) + ay.count.back();

  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width * height * 3));
  if (!need_v) {
    const detail::ResampleAxis ax = detail::resample_axis(src.width, width);
    detail::resample_horizontal(src.rgb.data(), src.width, 0, src.height, ax, width, out.rgb.data());
    return out;
  }
  if (!need_h) {
    detail::resample_vertical(src.rgb.data(), src.width, 0, ay, height, out.rgb.data());
    return out;
  }
  const detail::ResampleAxis ax = detail::resample_axis(src.width, width);
  const int64_t dy = src.height - height, dx = src.width - width;
  if (dy > 0 && dy > 2 * dx) {  // height shrinks much more than width: vertical pass first
    std::vector<uint8_t> tmp(size_t(src.width * height * 3));
    detail::resample_vertical(src.rgb.data(), src.width, 0, ay, height, tmp.data());
    detail::resample_horizontal(tmp.data(), src.width, 0, height, ax, width, out.rgb.data());
    return out;
  }
  std::vector<uint8_t> tmp(size_t((y_last - y_first) * width * 3));
  detail::resample_horizontal(src.rgb.data(), src.width, y_first, y_last - y_first, ax, width, tmp.data());
  detail::resample_vertical(tmp.data(), width, y_first, ay, height, out.rgb.data());
  return out;
}

}  // namespace deepseek::vision
