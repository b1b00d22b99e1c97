// DeepSeek-OCR image preprocessing: RGB image -> global view + optional local tiles, normalised.
//
// Modes (base_size = global view side, image_size = tile side or direct side, crop = tiling):
//   tiny 512/512/no, small 640/640/no, base 1024/1024/no, large 1280/1280/no,
//   gundam 1024/640/yes, gundam-m 1280/1024/yes.
// Non-crop: image_size <= 640 -> direct resize to S x S (aspect not kept); else ImageOps.pad to
//   S x S: contain() scales the long side to S and the short side to round(short/long * S)
//   (Python round, half to even; computed as (short / long) * S), BICUBIC, pasted at
//   round((S - resized) * 0.5) on the short axis into a canvas of colour 127 = int(0.5 * 255).
// Crop: if W <= 640 and H <= 640 (the literal 640 of both official code paths) no tiles;
//   otherwise the InternVL-style grid search: candidates (i columns, j rows) with
//   min_crops <= i*j <= max_crops in CPython's set-iteration order, stably sorted by i*j; pick the
//   smallest |W/H - i/j|; on an exact tie switch to the later candidate iff W*H > 0.5*T*T*i*j.
//   Resize the whole image to (T*i, T*j) (BICUBIC, aspect not kept) and cut i*j tiles row-major
//   (tile k at column k % i, row k / i). The global view is ImageOps.pad to base_size.
// Normalisation (torchvision ToTensor + Normalize(0.5, 0.5) in float32): x = (p/255 - 0.5)/0.5,
//   CHW.
// Which official path: HF `infer()` (defaults min 2, max 9; it passes no tile size to
// dynamic_preprocess, so its tiles are always 640 even for Gundam-M) and vLLM (MIN_CROPS 2,
// MAX_CROPS 6, tile = IMAGE_SIZE) agree for Gundam with max_crops 9 vs 6 as the only difference.
// We follow HF's max 9 by default (PreprocessOptions::max_crops = 6 gives vLLM's) and vLLM's tile
// = image_size, the only consistent choice for Gundam-M (1024 tiles, 256 tokens each).
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/vision/image.hpp"
#include "deepseek/vision/resample.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace deepseek::vision {

enum class OcrMode { tiny, small, base, large, gundam, gundam_m };

inline OcrMode parse_mode(const std::string& s) {
  if (s == "tiny") return OcrMode::tiny;
  if (s == "small") return OcrMode::small;
  if (s == "base") return OcrMode::base;
  if (s == "large") return OcrMode::large;
  if (s == "gundam") return OcrMode::gundam;
  if (s == "gundam-m") return OcrMode::gundam_m;
  throw Error("unknown OCR mode '" + s + "' (expected tiny, small, base, large, gundam or gundam-m)", at_field("mode"));
}

inline const char* mode_name(OcrMode m) {
  switch (m) {
    case OcrMode::tiny:
      return "tiny";
    case OcrMode::small:
      return "small";
    case OcrMode::base:
      return "base";
    case OcrMode::large:
      return "large";
    case OcrMode::gundam:
      return "gundam";
    case OcrMode::gundam_m:
      return "gundam-m";
  }
  return "?";
}

struct ModeSpec {
  int64_t base_size, image_size;
  bool crop;
};

inline ModeSpec mode_spec(OcrMode m) {
  switch (m) {
    case OcrMode::tiny:
      return {512, 512, false};
    case OcrMode::small:
      return {640, 640, false};
    case OcrMode::base:
      return {1024, 1024, false};
    case OcrMode::large:
      return {1280, 1280, false};
    case OcrMode::gundam:
      return {1024, 640, true};
    case OcrMode::gundam_m:
      return {1280, 1024, true};
  }
  throw Error("invalid OcrMode value", at_field("mode"));
}

// [3, size, size] float32, x = (p/255 - 0.5)/0.5.
struct View {
  int64_t size = 0;
  std::vector<float> chw;
};

inline constexpr int64_t kMaxCrops = 64;
// Images with both sides <= this get no tiles in crop modes (a literal in the official code).
inline constexpr int64_t kNoTileSide = 640;
inline constexpr uint8_t kPadValue = 127;  // int(0.5 * 255): the mean colour

struct PreprocessOptions {
  int64_t min_crops = 2, max_crops = 9;
};

struct PreparedImage {
  View global;
  std::vector<View> tiles;  // row-major, tiles_w * tiles_h of them, or none
  int64_t tiles_w = 1, tiles_h = 1;
  int64_t width = 0, height = 0;  // original, after EXIF
};

// The same before normalisation (what Pillow hands to ToTensor).
struct PreparedPixels {
  Image global;
  std::vector<Image> tiles;
  int64_t tiles_w = 1, tiles_h = 1;
};

// --- grid search -------------------------------------------------------------------------------

namespace detail {

// CPython 3.8+ hash of the tuple (i, j) of small non-negative ints (hash(n) == n): xxHash-style.
inline uint64_t py_tuple_hash2(uint64_t i, uint64_t j) {
  const uint64_t p1 = 11400714785074694791ULL, p2 = 14029467366897019727ULL, p5 = 2870177450012600261ULL;
  uint64_t acc = p5;
  for (uint64_t lane : {i, j}) {
    acc += lane * p2;
    acc = (acc << 31) | (acc >> 33);
    acc *= p1;
  }
  acc += 2 ^ (p5 ^ 3527539ULL);
  if (acc == ~uint64_t(0)) return 1546275796;
  return acc;
}

}  // namespace detail

// The candidate grids in the order the official code iterates them: `set((i, j) for n in
// range(min, max+1) for i in 1..n for j in 1..n if min <= i*j <= max)` iterated in CPython's
// hash-table order (table of 8 slots, linear probing runs of 9, perturbed probing, growth to 4x
// used when 3/5 full), then `sorted(key=i*j)` (stable). The order decides exact ties.
inline std::vector<std::pair<int64_t, int64_t>> tile_candidates(int64_t min_num, int64_t max_num) {
  if (min_num < 1 || max_num < min_num || max_num > kMaxCrops)
    throw Error("tile candidates need 1 <= min_crops <= max_crops <= " + std::to_string(kMaxCrops) + ", got " +
                    std::to_string(min_num) + ".." + std::to_string(max_num),
                at_field("max_crops"));
  struct Slot {
    bool used = false;
    uint64_t hash = 0;
    int64_t i = 0, j = 0;
  };
  std::vector<Slot> table(8);
  size_t fill = 0;
  auto insert_clean = [](std::vector<Slot>& t, const Slot& s) {
    const size_t mask = t.size() - 1;
    size_t perturb = s.hash, i = s.hash & mask;
    while (true) {
      if (!t[i].used) return void(t[i] = s);
      if (i + 9 <= mask) {
        for (size_t k = 1; k <= 9; ++k)
          if (!t[i + k].used) return void(t[i + k] = s);
      }
      perturb >>= 5;
      i = (i * 5 + 1 + perturb) & mask;
    }
  };
  auto add = [&](int64_t a, int64_t b) {
    const uint64_t h = detail::py_tuple_hash2(uint64_t(a), uint64_t(b));
    const size_t mask = table.size() - 1;
    size_t perturb = h, i = h & mask;
    while (true) {
      const size_t probes = (i + 9 <= mask) ? 9 : 0;
      for (size_t k = 0; k <= probes; ++k) {
        Slot& e = table[i + k];
        if (!e.used) {
          e = Slot{true, h, a, b};
          ++fill;
          if (fill * 5 >= mask * 3) {  // set_table_resize(used * 4): smallest power of 2 > 4*used
            size_t n = 8;
            while (n <= fill * 4) n <<= 1;
            std::vector<Slot> grown(n);
            for (const Slot& s : table)
              if (s.used) insert_clean(grown, s);
            table.swap(grown);
          }
          return;
        }
        if (e.hash == h && e.i == a && e.j == b) return;
      }
      perturb >>= 5;
      i = (i * 5 + 1 + perturb) & mask;
    }
  };
  for (int64_t n = min_num; n <= max_num; ++n)
    for (int64_t i = 1; i <= n; ++i)
      for (int64_t j = 1; j <= n; ++j)
        if (i * j <= max_num && i * j >= min_num) add(i, j);
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const Slot& s : table)
    if (s.used) out.emplace_back(s.i, s.j);
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& x, const auto& y) { return x.first * x.second < y.first * y.second; });
  return out;
}

// find_closest_aspect_ratio of the official code: (i columns, j rows) for a W x H image and tile
// side T, in double precision exactly as the Python floats.
inline std::pair<int64_t, int64_t> find_closest_aspect_ratio(int64_t width, int64_t height, int64_t tile,
                                                             const std::vector<std::pair<int64_t, int64_t>>& cands) {
  const double aspect = double(width) / double(height);
  double best_diff = std::numeric_limits<double>::infinity();
  std::pair<int64_t, int64_t> best{1, 1};
  const double area = double(width) * double(height);  // exact below 2^53
  for (const auto& r : cands) {
    const double diff = std::fabs(aspect - double(r.first) / double(r.second));
    if (diff < best_diff) {
      best_diff = diff;
      best = r;
    } else if (diff == best_diff) {
      if (area > 0.5 * double(tile) * double(tile) * double(r.first) * double(r.second)) best = r;
    }
  }
  return best;
}

inline std::pair<int64_t, int64_t> find_closest_aspect_ratio(int64_t width, int64_t height, int64_t tile,
                                                             int64_t min_num, int64_t max_num) {
  return find_closest_aspect_ratio(width, height, tile, tile_candidates(min_num, max_num));
}

// --- pixel steps ---------------------------------------------------------------------------------

namespace detail {

inline void check_image(const Image& img) {
  if (img.width <= 0 || img.height <= 0 || int64_t(img.rgb.size()) != img.width * img.height * 3)
    throw Error("image is empty or its buffer is not width*height*3 bytes", at_field("image"));
}

inline int64_t py_round(double v) { return int64_t(std::nearbyint(v)); }  // half to even (default mode)

}  // namespace detail

// Size ImageOps.contain(image, (S, S)) resizes to (one side may be 0 for extreme aspect ratios).
inline std::pair<int64_t, int64_t> contain_size(int64_t width, int64_t height, int64_t size) {
  const double im_ratio = double(width) / double(height);
  if (im_ratio == 1.0) return {size, size};
  if (im_ratio > 1.0) return {size, detail::py_round(double(height) / double(width) * double(size))};
  return {detail::py_round(double(width) / double(height) * double(size)), size};
}

// ImageOps.pad(image, (S, S), BICUBIC, color=(127,127,127), centering=(0.5, 0.5)): the uint8
// canvas before normalisation.
inline Image pad_to_square(const Image& img, int64_t size, uint8_t fill = kPadValue) {
  detail::check_image(img);
  const auto [rw, rh] = contain_size(img.width, img.height, size);
  if (rw == size && rh == size) return resize_bicubic(img, size, size);
  Image out;
  out.width = out.height = size;
  out.rgb.assign(size_t(size * size * 3), fill);
  if (rw == 0 || rh == 0) return out;  // contain() returned an empty image: nothing to paste
  const Image r = resize_bicubic(img, rw, rh);
  const int64_t x0 = rw != size ? detail::py_round(double(size - rw) * 0.5) : 0;
  const int64_t y0 = rw != size ? 0 : detail::py_round(double(size - rh) * 0.5);
  for (int64_t y = 0; y < rh; ++y)
    std::memcpy(&out.rgb[size_t(((y0 + y) * size + x0) * 3)], &r.rgb[size_t(y * rw * 3)], size_t(rw * 3));
  return out;
}

// Image.crop((x, y, x + w, y + h)) inside the image.
inline Image crop(const Image& img, int64_t x, int64_t y, int64_t w, int64_t h) {
  Image out;
  out.width = w;
  out.height = h;
  out.rgb.resize(size_t(w * h * 3));
  for (int64_t r = 0; r < h; ++r)
    std::memcpy(&out.rgb[size_t(r * w * 3)], &img.rgb[size_t(((y + r) * img.width + x) * 3)], size_t(w * 3));
  return out;
}

// torchvision ToTensor + Normalize(mean 0.5, std 0.5) of a square image, float32 like torch.
inline View normalize_view(const Image& img) {
  detail::check_image(img);
  if (img.width != img.height) throw Error("normalize_view expects a square image", at_field("image"));
  View v;
  v.size = img.width;
  const int64_t plane = img.width * img.height;
  v.chw.resize(size_t(plane * 3));
  float lut[256];
  for (int p = 0; p < 256; ++p) lut[p] = (float(p) / 255.0f - 0.5f) / 0.5f;
  for (int64_t i = 0; i < plane; ++i)
    for (int64_t c = 0; c < 3; ++c) v.chw[size_t(c * plane + i)] = lut[img.rgb[size_t(i * 3 + c)]];
  return v;
}

// The tiling decision alone: (tiles_w, tiles_h) = (1, 1) when no tiles are cut.
inline std::pair<int64_t, int64_t> tile_grid(int64_t width, int64_t height, OcrMode mode,
                                             const PreprocessOptions& opt = {}) {
  const ModeSpec spec = mode_spec(mode);
  if (!spec.crop) return {1, 1};
  const auto cands = tile_candidates(opt.min_crops, opt.max_crops);  // validates the options
  if (width <= kNoTileSide && height <= kNoTileSide) return {1, 1};
  return find_closest_aspect_ratio(width, height, spec.image_size, cands);
}

// Every view as uint8 RGB, exactly what the official code passes to its transform.
inline PreparedPixels prepare_pixels(const Image& img, OcrMode mode, const PreprocessOptions& opt = {}) {
  detail::check_image(img);
  const ModeSpec spec = mode_spec(mode);
  PreparedPixels out;
  if (!spec.crop) {
    // HF pads to image_size, vLLM to base_size: equal in every non-crop mode.
    if (spec.image_size <= 640)
      out.global = pad_to_square(resize_bicubic(img, spec.image_size, spec.image_size), spec.base_size);
    else
      out.global = pad_to_square(img, spec.image_size);
    return out;
  }
  const auto [gw, gh] = tile_grid(img.width, img.height, mode, opt);
  out.global = pad_to_square(img, spec.base_size);
  if (gw > 1 || gh > 1) {
    const int64_t T = spec.image_size;
    const Image resized = resize_bicubic(img, T * gw, T * gh);
    for (int64_t k = 0; k < gw * gh; ++k) out.tiles.push_back(crop(resized, (k % gw) * T, (k / gw) * T, T, T));
    out.tiles_w = gw;
    out.tiles_h = gh;
  }
  return out;
}

inline PreparedImage preprocess(const Image& img, OcrMode mode, const PreprocessOptions& opt = {}) {
  PreparedPixels px = prepare_pixels(img, mode, opt);
  PreparedImage out;
  out.global = normalize_view(px.global);
  for (const Image& t : px.tiles) out.tiles.push_back(normalize_view(t));
  out.tiles_w = px.tiles_w;
  out.tiles_h = px.tiles_h;
  out.width = img.width;
  out.height = img.height;
  return out;
}

}  // namespace deepseek::vision
