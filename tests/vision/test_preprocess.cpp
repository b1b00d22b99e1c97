// preprocess / prepare_pixels against the official code (dynamic_preprocess, find_closest_aspect_ratio
// loaded from the DeepSeek-OCR repo) and Pillow's ImageOps.pad, for every fixture image and mode;
// the grid search on 900 sizes (486 exact ties); CPython's candidate order; torch's normalisation.
#include "vision_fixture.hpp"

#include <deepseek/vision/preprocess.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <string>

using namespace deepseek::vision;
using vision_test::manifest;

TEST_CASE("every mode matches the official preprocessing on real images", "[vision][preprocess]") {
  int views = 0, tiled = 0;
  for (const auto& e : manifest()["images"]) {
    if (!e.contains("modes")) continue;
    const std::string file = e["file"];
    const Image img = vision_test::pillow_pixels(e);
    for (const auto& [name, rec] : e["modes"].items()) {
      INFO(file << " " << img.width << "x" << img.height << " mode " << name);
      const OcrMode mode = parse_mode(name);
      const PreparedPixels px = prepare_pixels(img, mode);
      REQUIRE(px.tiles_w == rec["tiles_w"].get<int64_t>());
      REQUIRE(px.tiles_h == rec["tiles_h"].get<int64_t>());
      REQUIRE(px.global.width == mode_spec(mode).base_size);
      CHECK(vision_test::crc32_hex(px.global.rgb) == rec["global"].get<std::string>());
      REQUIRE(px.tiles.size() == rec["tiles"].size());
      for (size_t k = 0; k < px.tiles.size(); ++k) {
        INFO("tile " << k);
        REQUIRE(px.tiles[k].width == mode_spec(mode).image_size);
        CHECK(vision_test::crc32_hex(px.tiles[k].rgb) == rec["tiles"][k].get<std::string>());
      }
      views += 1 + int(px.tiles.size());
      tiled += !px.tiles.empty();
    }
  }
  CHECK(views > 60);
  CHECK(tiled >= 8);
}

TEST_CASE("preprocess normalises every view like ToTensor + Normalize(0.5, 0.5)", "[vision][preprocess]") {
  // torch's float32 values for p = 0..255, as bit patterns
  const auto& ref = manifest()["normalize"];
  REQUIRE(ref.size() == 256);
  Image all;
  all.width = all.height = 16;
  for (int p = 0; p < 256; ++p)
    for (int c = 0; c < 3; ++c) all.rgb.push_back(uint8_t(c == 1 ? 255 - p : p));
  const View v = normalize_view(all);
  REQUIRE(v.size == 16);
  for (int p = 0; p < 256; ++p) {
    uint32_t r = 0, g = 0;
    std::memcpy(&r, &v.chw[size_t(p)], 4);
    std::memcpy(&g, &v.chw[size_t(256 + 255 - p)], 4);
    CHECK(r == ref[size_t(p)].get<uint32_t>());
    CHECK(g == ref[size_t(p)].get<uint32_t>());
  }
  const Image img = vision_test::pillow_pixels(vision_test::entry_for("src/verify.jpeg"));
  const PreparedImage pi = preprocess(img, OcrMode::gundam);
  const PreparedPixels px = prepare_pixels(img, OcrMode::gundam);
  CHECK(pi.width == 720);
  CHECK(pi.height == 477);
  CHECK(pi.tiles_w == 3);
  CHECK(pi.tiles_h == 2);
  REQUIRE(pi.tiles.size() == 6);
  CHECK(pi.global.size == 1024);
  CHECK(pi.global.chw == normalize_view(px.global).chw);
  CHECK(pi.tiles[5].chw == normalize_view(px.tiles[5]).chw);
}

TEST_CASE("grid search equals the official find_closest_aspect_ratio, ties included", "[vision][grid]") {
  int ties = 0;
  for (const auto& g : manifest()["grid"]) {
    const int64_t W = g["width"], H = g["height"], T = g["tile"], mn = g["min"], mx = g["max"];
    INFO(W << "x" << H << " tile " << T << " crops " << mn << ".." << mx);
    const auto best = find_closest_aspect_ratio(W, H, T, mn, mx);
    CHECK(best.first == g["best"][0].get<int64_t>());
    CHECK(best.second == g["best"][1].get<int64_t>());
    ties += g["tie"].get<bool>();
  }
  CHECK(ties > 100);
  for (const auto& c : manifest()["candidates"]) {
    const auto order = tile_candidates(c["min"], c["max"]);
    REQUIRE(order.size() == c["order"].size());
    for (size_t k = 0; k < order.size(); ++k) {
      CHECK(order[k].first == c["order"][k][0].get<int64_t>());
      CHECK(order[k].second == c["order"][k][1].get<int64_t>());
    }
  }
}

TEST_CASE("modes, the no-tile threshold and option errors", "[vision][preprocess]") {
  for (const char* n : {"tiny", "small", "base", "large", "gundam", "gundam-m"})
    CHECK(std::string(mode_name(parse_mode(n))) == n);
  try {
    parse_mode("gundam_m");
    FAIL("accepted an unknown mode");
  } catch (const deepseek::Error& e) {
    CHECK(std::string(e.what()).find("'gundam_m'") != std::string::npos);
  }
  CHECK(mode_spec(OcrMode::gundam).base_size == 1024);
  CHECK(mode_spec(OcrMode::gundam).image_size == 640);
  CHECK(mode_spec(OcrMode::gundam_m).image_size == 1024);
  CHECK(mode_spec(OcrMode::tiny).crop == false);
  // the literal 640: 640x640 gets no tiles, 641x300 gets 2x1 (spec worked examples)
  CHECK(tile_grid(640, 640, OcrMode::gundam) == std::make_pair(int64_t(1), int64_t(1)));
  CHECK(tile_grid(641, 300, OcrMode::gundam) == std::make_pair(int64_t(2), int64_t(1)));
  CHECK(tile_grid(1700, 2200, OcrMode::gundam) == std::make_pair(int64_t(2), int64_t(3)));
  CHECK(tile_grid(3000, 1000, OcrMode::gundam) == std::make_pair(int64_t(3), int64_t(1)));
  CHECK(tile_grid(640, 640, OcrMode::gundam_m) == std::make_pair(int64_t(1), int64_t(1)));
  PreprocessOptions bad;
  bad.min_crops = 5;
  bad.max_crops = 3;
  CHECK_THROWS_AS(tile_grid(1000, 1000, OcrMode::gundam, bad), deepseek::Error);
  bad.min_crops = 1;
  bad.max_crops = 1000;
  CHECK_THROWS_AS(tile_grid(1000, 1000, OcrMode::gundam, bad), deepseek::Error);
  // an extreme aspect ratio: contain() gives a 0-wide image, the global view is all padding
  Image thin;
  thin.width = 1;
  thin.height = 5000;
  thin.rgb.assign(5000 * 3, 9);
  const PreparedPixels px = prepare_pixels(thin, OcrMode::base);
  for (uint8_t v : px.global.rgb) CHECK(v == kPadValue);
  Image empty;
  CHECK_THROWS_AS(preprocess(empty, OcrMode::base), deepseek::Error);
}
