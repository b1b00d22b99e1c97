// decode_image / load_image against Pillow (official load_image: exif_transpose + convert('RGB')),
// and every kind of bad input.
#include "vision_fixture.hpp"

#include <deepseek/vision/image.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using deepseek::vision::Alpha;
using deepseek::vision::decode_image;
using deepseek::vision::DecodeOptions;
using deepseek::vision::Image;
using deepseek::vision::load_image;
using vision_test::fixture;
using vision_test::manifest;

namespace {

struct Diff {
  int max = 0;
  int64_t count = 0;
};

Diff diff(const Image& a, const Image& b) {
  Diff d;
  for (size_t i = 0; i < a.rgb.size(); ++i) {
    const int e = std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    d.max = std::max(d.max, e);
    d.count += e != 0;
  }
  return d;
}

// Expect a deepseek::Error whose message names `name` and contains `part`.
template <class F>
void expect_error(F&& f, const std::string& name, const std::string& part) {
  try {
    f();
  } catch (const deepseek::Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(name) != std::string::npos);
    CHECK(std::string(e.what()).find(part) != std::string::npos);
    return;
  }
  FAIL("no deepseek::Error for " << name);
}

}  // namespace

TEST_CASE("decode matches Pillow: every format exactly (JPEG: with libjpeg-turbo)", "[vision][decode]") {
  const std::string decoder = deepseek::vision::jpeg_decoder();
#if DEEPSEEK_HAVE_LIBJPEG
  REQUIRE(decoder.rfind("libjpeg", 0) == 0);
#else
  REQUIRE(decoder == "stb_image");
#endif
  int jpegs = 0, lossless = 0, grey = 0, cmyk = 0, progressive = 0, worst = 0;
  for (const auto& e : manifest()["images"]) {
    const std::string file = e["file"];
    const std::string mode = e["mode"];
    INFO(file << " (" << e["format"].get<std::string>() << " " << mode << ")");
    const Image im = load_image(fixture(file));
    REQUIRE(im.width == e["width"].get<int64_t>());
    REQUIRE(im.height == e["height"].get<int64_t>());
    REQUIRE(im.rgb.size() == size_t(im.width * im.height * 3));
    if (e.contains("pillow_png")) {
      const Image ref = load_image(fixture(e["pillow_png"].get<std::string>()));
      // the stored PNG is Pillow's decode bit for bit (its CRC is the one Pillow computed)
      REQUIRE(vision_test::crc32_hex(ref.rgb) == e["decoded"].get<std::string>());
      const Diff d = diff(im, ref);
      worst = std::max(worst, d.max);
      if (d.max != 0)
        WARN(file << ": " << decoder << " vs Pillow (libjpeg-turbo) max |diff| " << d.max << ", " << d.count
                  << " of " << im.rgb.size() << " values differ");
      if (decoder == "libjpeg-turbo") {
        // Pillow's settings on the same library: the same pixels, colour conversions included
        CHECK(d.max == 0);
        CHECK(vision_test::crc32_hex(im.rgb) == e["decoded"].get<std::string>());
      } else {
        // stb_image's IDCT, chroma upsampling, YCbCr rounding and progressive block smoothing
        // differ from libjpeg-turbo's: measured max 7 LSB (jpeg_422.jpg, 8.5% of the values),
        // 6 LSB on 12.6% of the values (f3_progressive.jpg), 1-3 LSB on the rest. A wrong
        // orientation, colour order or CMYK polarity gives differences near 255 on these files.
        CHECK(d.max <= 7);
        CHECK(double(d.count) / double(im.rgb.size()) < 0.15);
      }
      ++jpegs;
      grey += mode == "L";
      cmyk += mode == "CMYK";
      progressive += file.find("progressive") != std::string::npos;
    } else {
      CHECK(vision_test::crc32_hex(im.rgb) == e["decoded"].get<std::string>());
      ++lossless;
    }
  }
  WARN(jpegs << " JPEGs decoded by " << decoder << ": max |diff| to Pillow " << worst);
  CHECK(jpegs >= 21);
  CHECK(grey >= 2);
  CHECK(cmyk >= 1);
  CHECK(progressive >= 2);
  CHECK(lossless >= 18);
}

TEST_CASE("EXIF orientation: the flag turns it off; malformed EXIF follows Pillow", "[vision][exif]") {
  DecodeOptions no_exif;
  no_exif.exif_transpose = false;
  const Image raw = load_image(fixture("src/card_exif6.png"), no_exif);
  CHECK(raw.width == 914);
  CHECK(raw.height == 508);
  CHECK(vision_test::crc32_hex(raw.rgb) ==
        vision_test::entry_for("src/gnupg-card-architecture.png")["decoded"].get<std::string>());
  // pngtest.png (libpng's own test image) carries orientation 5 in an eXIf chunk
  const Image t = load_image(fixture("src/pngtest.png"));
  CHECK(t.width == 69);
  CHECK(t.height == 91);
  // bounds: the parser never reads outside the segment, whatever the lengths claim
  std::vector<uint8_t> tiff = {'I', 'I', 42, 0, 8, 0, 0, 0, 0xff, 0xff};
  CHECK(deepseek::vision::tiff_orientation(tiff.data(), tiff.size()) == 1);
  tiff = {'M', 'M', 0, 42, 0xff, 0xff, 0xff, 0xf0};
  CHECK(deepseek::vision::tiff_orientation(tiff.data(), tiff.size()) == 1);
  const uint8_t jpeg_cut[] = {0xff, 0xd8, 0xff, 0xe1, 0xff, 0xff, 'E', 'x', 'i', 'f', 0, 0};
  CHECK(deepseek::vision::exif_orientation(jpeg_cut, sizeof jpeg_cut) == 1);
}

TEST_CASE("Alpha::white composites onto white like Pillow's alpha_composite (within 1 LSB)", "[vision][alpha]") {
  DecodeOptions white;
  white.alpha = Alpha::white;
  const Image im = load_image(fixture("src/pngtest.png"), white);
  const Image ref = load_image(fixture("pillow/pngtest_white.png"));
  REQUIRE(im.width == ref.width);
  REQUIRE(im.height == ref.height);
  const Diff d = diff(im, ref);
  WARN("Alpha::white vs Pillow alpha_composite: max " << d.max << ", " << d.count << " differ");
  CHECK(d.max <= 1);  // Pillow's composite uses its own fixed-point rounding
  const Image dropped = load_image(fixture("src/pngtest.png"));
  CHECK(diff(dropped, im).max > 50);  // the option does something on this semi-transparent image
}

TEST_CASE("bad image files are deepseek::Error naming the file", "[vision][errors]") {
  const std::string png_path = fixture("src/gnupg-card-architecture.png");
  const std::vector<uint8_t> png = vision_test::read_bytes(png_path);
  const std::vector<uint8_t> jpeg = vision_test::read_bytes(fixture("src/verify.jpeg"));
  const std::vector<uint8_t> gif = vision_test::read_bytes(fixture("src/logoLarge.gif"));
  const std::vector<uint8_t> bmp = vision_test::read_bytes(fixture("src/pilrc.bmp"));
  REQUIRE(png.size() > 1000);
  REQUIRE(jpeg.size() > 1000);

  expect_error([&] { decode_image(png.data(), 0, "empty.png"); }, "empty.png", "empty");
  expect_error([&] { decode_image(nullptr, 0, "null.png"); }, "null.png", "empty");
  for (double frac : {0.9, 0.5, 0.1}) {
    expect_error([&] { decode_image(png.data(), size_t(png.size() * frac), "cut.png"); }, "cut.png", "truncated");
    expect_error([&] { decode_image(jpeg.data(), size_t(jpeg.size() * frac), "cut.jpg"); }, "cut.jpg", "truncated");
    expect_error([&] { decode_image(gif.data(), size_t(gif.size() * frac), "cut.gif"); }, "cut.gif", "truncated");
    expect_error([&] { decode_image(bmp.data(), size_t(bmp.size() * frac), "cut.bmp"); }, "cut.bmp", "truncated");
  }
  {  // corrupt PNG: invalid colour type in IHDR
    std::vector<uint8_t> bad = png;
    bad[25] = 5;
    expect_error([&] { decode_image(bad, "ctype.png"); }, "ctype.png", "stb_image");
  }
  {  // corrupt JPEG: the scan's Huffman table selector byte of SOS destroyed
    std::vector<uint8_t> bad = jpeg;
    size_t sos = 2;
    while (sos + 4 < bad.size() && !(bad[sos] == 0xff && bad[sos + 1] == 0xda))
      sos += 2 + (size_t(bad[sos + 2]) << 8 | bad[sos + 3]);
    REQUIRE(sos + 4 < bad.size());
    std::memset(&bad[sos + 4], 0xff, 8);
    expect_error([&] { decode_image(bad, "sos.jpg"); }, "sos.jpg", "image");
  }
  {  // a Huffman table with 16 * 255 codes: stb 2.27 would write past its 257-entry table
    std::vector<uint8_t> bad = jpeg;
    size_t dht = 2;
    while (dht + 4 < bad.size() && !(bad[dht] == 0xff && bad[dht + 1] == 0xc4))
      dht += 2 + (size_t(bad[dht + 2]) << 8 | bad[dht + 3]);
    REQUIRE(dht + 21 < bad.size());
    std::memset(&bad[dht + 5], 0xff, 16);
    expect_error([&] { decode_image(bad, "dht.jpg"); }, "dht.jpg", "Huffman");
    bad.resize(dht + 21);  // the same, cut inside the table
    expect_error([&] { decode_image(bad, "dht_cut.jpg"); }, "dht_cut.jpg", "Huffman");
  }
  {  // random bytes, and text
    const std::string text = "this is not an image\n";
    expect_error([&] { decode_image(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "notes.txt"); },
                 "notes.txt", "not a readable");
  }
  expect_error([&] { load_image(fixture("manifest.json")); }, "manifest.json", "not a readable");
  {  // fuzz_image found this one: a fill byte before SOI (FF FF D8 FF ...) and a DHT declaring
     // more than 256 codes. Pillow refuses the signature; stb's looser probe used to accept it and
     // write past its Huffman size table.
    std::vector<uint8_t> fill = {0xff, 0xff, 0xd8, 0xff, 0xc4, 0x00, 0x13, 0x00};
    for (int i = 0; i < 16; ++i) fill.push_back(0xff);
    expect_error([&] { decode_image(fill, "fill.jpg"); }, "fill.jpg", "match none of their signatures");
  }
  expect_error([&] { load_image(fixture("src")); }, "src", "directory");
  expect_error([&] { load_image(fixture("no-such-file.png")); }, "no-such-file.png", "cannot open");
  expect_error([&] { load_image("/dev/null"); }, "/dev/null", "not a regular file");
}

TEST_CASE("decompression bombs are refused from the header, before any pixel buffer", "[vision][errors]") {
  // A PNG that is only a signature and an IHDR claiming 50000 x 50000 (2.5 G pixels, 7.5 GB RGB):
  // no pixel data at all, so the only way to get the limit error is the header check; a decoder
  // that tried to decode first would fail on the missing IDAT instead.
  std::vector<uint8_t> bomb = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (uint32_t v : {50000u, 50000u})
    for (int s = 24; s >= 0; s -= 8) bomb.push_back(uint8_t(v >> s));
  for (uint8_t b : {8, 2, 0, 0, 0}) bomb.push_back(b);
  for (int i = 0; i < 4; ++i) bomb.push_back(0);  // CRC (stb does not check it)
  expect_error([&] { decode_image(bomb, "bomb.png"); }, "bomb.png", "over the decode limit of 178956970");
  expect_error([&] { decode_image(bomb, "bomb.png"); }, "bomb.png", "50000x50000 = 2500000000 pixels");
  // fuzz_image found this one: an IHDR of 3276865474 x 3276802050, whose product passes int64;
  // the message used to multiply signed (UBSan: signed overflow)
  std::vector<uint8_t> wide = {0x89, 'P',  'N',  'G',  '\r', '\n', 0x1a, '\n', 0,    0,    0,    13,   'I', 'H', 'D', 'R',
                               0xc3, 0x50, 0xff, 0xc2, 0xc3, 0x50, 0x08, 0x02, 0x00, 0x00, 0x00, 0x7a, 0xaa, 0xaa, 0x9d};
  expect_error([&] { decode_image(wide, "wide.png"); }, "wide.png", "3276865474x3276802050 = 10737639502777421700 pixels");
  // and a valid image over a small limit is refused the same way
  DecodeOptions small;
  small.max_pixels = 1000;
  expect_error([&] { load_image(fixture("src/verify.jpeg"), small); }, "verify.jpeg", "over the decode limit of 1000");
  small.max_pixels = 720 * 477;
  CHECK(load_image(fixture("src/verify.jpeg"), small).width == 720);
}

TEST_CASE("damaged JPEGs: what Pillow makes of them", "[vision][errors][jpeg]") {
  // tests/reference/make_vision_fixtures.py: cut files (Pillow: "image file is truncated") and
  // corrupt entropy-coded data that libjpeg repairs with a warning (Pillow decodes it)
  int errors = 0, repaired = 0;
  for (const auto& e : manifest()["jpeg_edits"]) {
    std::vector<uint8_t> b = vision_test::read_bytes(fixture(e["file"].get<std::string>()));
    REQUIRE(b.size() > 10000);
    if (e.contains("offset")) {
      const std::string hex = e["bytes"];
      const size_t at = e["offset"];
      REQUIRE(at + hex.size() / 2 < b.size());
      for (size_t i = 0; i < hex.size() / 2; ++i) b[at + i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    }
    b.resize(b.size() - e["cut"].get<size_t>());
    INFO(e.dump());
    if (e.contains("error")) {
      expect_error([&] { decode_image(b, "damaged.jpg"); }, "damaged.jpg", "truncated");
      ++errors;
    } else {
#if DEEPSEEK_HAVE_LIBJPEG
      CHECK(vision_test::crc32_hex(decode_image(b, "damaged.jpg").rgb) == e["decoded"].get<std::string>());
#else
      // stb repairs or refuses differently (it refuses the stray restart marker Pillow decodes):
      // pixels or a deepseek::Error, nothing else
      try {
        const Image im = decode_image(b, "damaged.jpg");
        CHECK(im.rgb.size() > 0);
      } catch (const deepseek::Error& err) {
        CHECK(std::string(err.what()).find("damaged.jpg") != std::string::npos);
      }
#endif
      ++repaired;
    }
  }
  CHECK(errors >= 3);
  CHECK(repaired >= 3);
}

TEST_CASE("JPEG: the header's size is checked before decoding; endless scans are refused", "[vision][errors][jpeg]") {
  std::vector<uint8_t> jpeg = vision_test::read_bytes(fixture("src/verify.jpeg"));
  // find SOF0 and SOS by walking the marker segments
  size_t sof = 0, sos = 0;
  for (size_t pos = 2; pos + 4 < jpeg.size() && !sos; pos += 2 + (size_t(jpeg[pos + 2]) << 8 | jpeg[pos + 3])) {
    REQUIRE(jpeg[pos] == 0xff);
    if (jpeg[pos + 1] == 0xc0) sof = pos;
    if (jpeg[pos + 1] == 0xda) sos = pos;
  }
  REQUIRE(sof > 0);
  REQUIRE(sos > sof);
  // 60000 x 60000 (3.6 G pixels) and no entropy-coded data at all: only a header check can give
  // the limit error; a decoder that started would report the missing data instead
  std::vector<uint8_t> bomb(jpeg.begin(), jpeg.begin() + long(sos + 2 + (size_t(jpeg[sos + 2]) << 8 | jpeg[sos + 3])));
  for (size_t k : {sof + 5, sof + 7}) bomb[k] = 0xea, bomb[k + 1] = 0x60;
  expect_error([&] { decode_image(bomb, "bomb.jpg"); }, "bomb.jpg", "60000x60000 = 3600000000 pixels");
  // the same header at its real size is a truncated file
  std::vector<uint8_t> cut(jpeg.begin(), jpeg.begin() + long(bomb.size()));
  expect_error([&] { decode_image(cut, "cut.jpg"); }, "cut.jpg", "truncated");
#if DEEPSEEK_HAVE_LIBJPEG
  // a progressive file whose last scan repeats 1001 times: libjpeg only warns about the bogus
  // progression, and every scan is a pass over the whole image, so the count is capped
  std::vector<uint8_t> prog = vision_test::read_bytes(fixture("src/jpeg_progressive.jpg"));
  REQUIRE(prog.size() > 1000);
  size_t last_sos = 0;
  for (size_t i = 2; i + 1 < prog.size(); ++i)
    if (prog[i] == 0xff && prog[i + 1] == 0xda) last_sos = i;
  REQUIRE(prog[prog.size() - 2] == 0xff);
  REQUIRE(prog[prog.size() - 1] == 0xd9);
  const std::vector<uint8_t> scan(prog.begin() + long(last_sos), prog.end() - 2);
  std::vector<uint8_t> many(prog.begin(), prog.end() - 2);
  for (int k = 0; k < 1001; ++k) many.insert(many.end(), scan.begin(), scan.end());
  many.push_back(0xff), many.push_back(0xd9);
  expect_error([&] { decode_image(many, "scans.jpg"); }, "scans.jpg", "more than 1000 scans");
  // a few repeats decode (warnings only), as in Pillow
  std::vector<uint8_t> few(prog.begin(), prog.end() - 2);
  for (int k = 0; k < 3; ++k) few.insert(few.end(), scan.begin(), scan.end());
  few.push_back(0xff), few.push_back(0xd9);
  CHECK(decode_image(few, "few.jpg").width == 251);
#endif
}
