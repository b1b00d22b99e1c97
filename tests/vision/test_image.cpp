// decode_image / load_image against Pillow (official load_image: exif_transpose + convert('RGB')),
// and every kind of bad input.
#include "vision_fixture.hpp"

#include <deepseek/vision/image.hpp>

#include <catch2/catch.hpp>

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

TEST_CASE("decode matches Pillow: lossless formats exactly, JPEG within the libjpeg difference", "[vision][decode]") {
  int jpegs = 0, lossless = 0;
  for (const auto& e : manifest()["images"]) {
    const std::string file = e["file"];
    INFO(file << " (" << e["format"].get<std::string>() << " " << e["mode"].get<std::string>() << ")");
    const Image im = load_image(fixture(file));
    REQUIRE(im.width == e["width"].get<int64_t>());
    REQUIRE(im.height == e["height"].get<int64_t>());
    REQUIRE(im.rgb.size() == size_t(im.width * im.height * 3));
    if (e.contains("pillow_png")) {
      const Image ref = load_image(fixture(e["pillow_png"].get<std::string>()));
      // the stored PNG is Pillow's decode bit for bit (its CRC is the one Pillow computed)
      REQUIRE(vision_test::crc32_hex(ref.rgb) == e["decoded"].get<std::string>());
      const Diff d = diff(im, ref);
      // stb_image's JPEG IDCT, chroma upsampling and YCbCr rounding differ from libjpeg-turbo's:
      // measured max 3 LSB, at most 3.6% of the values (pyparsing_diagram.jpg), see the WARN
      // lines. A wrong orientation or colour order gives differences near 255 on these files.
      WARN(file << ": stb vs Pillow(libjpeg) max |diff| " << d.max << ", " << d.count << " of " << im.rgb.size()
                << " values differ");
      CHECK(d.max <= 4);
      CHECK(double(d.count) / double(im.rgb.size()) < 0.05);
      ++jpegs;
    } else {
      CHECK(vision_test::crc32_hex(im.rgb) == e["decoded"].get<std::string>());
      ++lossless;
    }
  }
  CHECK(jpegs >= 12);
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
  // and a valid image over a small limit is refused the same way
  DecodeOptions small;
  small.max_pixels = 1000;
  expect_error([&] { load_image(fixture("src/verify.jpeg"), small); }, "verify.jpeg", "over the decode limit of 1000");
  small.max_pixels = 720 * 477;
  CHECK(load_image(fixture("src/verify.jpeg"), small).width == 720);
}
