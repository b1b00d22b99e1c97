// resize_bicubic against Pillow's Image.resize(BICUBIC) on real pixels: odd sizes, up and down,
// one-axis cases; plus the speed of a 4000x3000 -> 1024x768 resize.
#include "vision_fixture.hpp"

#include <deepseek/vision/resample.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <string>

using deepseek::vision::Image;
using deepseek::vision::resize_bicubic;
using vision_test::manifest;

TEST_CASE("resize_bicubic equals Pillow BICUBIC bit for bit", "[vision][resize]") {
  std::map<std::string, Image> inputs;
  int n = 0;
  for (const auto& r : manifest()["resize"]) {
    const std::string file = r["file"];
    if (!inputs.count(file)) inputs[file] = vision_test::pillow_pixels(vision_test::entry_for(file));
    const Image& src = inputs[file];
    const int64_t w = r["width"], h = r["height"];
    INFO(file << " " << src.width << "x" << src.height << " -> " << w << "x" << h);
    const Image out = resize_bicubic(src, w, h);
    REQUIRE(out.width == w);
    REQUIRE(out.height == h);
    CHECK(vision_test::crc32_hex(out.rgb) == r["hash"].get<std::string>());
    ++n;
  }
  CHECK(n >= 16);
}

TEST_CASE("resize_bicubic validates its arguments", "[vision][resize]") {
  Image img;
  img.width = 2;
  img.height = 2;
  img.rgb.assign(12, 7);
  CHECK(resize_bicubic(img, 2, 2).rgb == img.rgb);
  CHECK_THROWS_AS(resize_bicubic(img, 0, 5), deepseek::Error);
  CHECK_THROWS_AS(resize_bicubic(img, 100000, 100000), deepseek::Error);
  img.rgb.pop_back();
  CHECK_THROWS_AS(resize_bicubic(img, 3, 3), deepseek::Error);
  // a constant image stays constant (weights sum to 2^22 after rounding, both passes)
  img.rgb.assign(12, 200);
  const Image up = resize_bicubic(img, 17, 5);
  for (uint8_t v : up.rgb) CHECK(v == 200);
}

// Hidden (run with `test_vision "[.speed]"`): prints the time; the machine is shared, so no bound.
TEST_CASE("resize_bicubic speed 4000x3000 -> 1024x768", "[.speed]") {
  Image src;
  src.width = 4000;
  src.height = 3000;
  src.rgb.resize(size_t(4000 * 3000 * 3));
  uint32_t s = 1;
  for (auto& v : src.rgb) v = uint8_t((s = s * 1664525u + 1013904223u) >> 24);
  double best = 1e9;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const Image out = resize_bicubic(src, 1024, 768);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, ms);
    REQUIRE(out.width == 1024);
  }
  WARN("resize_bicubic 4000x3000 -> 1024x768: best of 5 " << best << " ms on " << deepseek::num_threads()
                                                          << " threads");
}
