// Shared by the tests/vision files: the Pillow fixture manifest (tests/reference/make_vision_fixtures.py)
// and the CRC-32 (zlib's polynomial) its hashes use.
#pragma once

#include <deepseek/vision/image.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace vision_test {

inline std::string fixture(const std::string& rel) { return std::string(DEEPSEEK_FIXTURES_DIR) + "/vision/" + rel; }

inline const nlohmann::json& manifest() {
  static const nlohmann::json j = [] {
    std::ifstream f(fixture("manifest.json"));
    return nlohmann::json::parse(f);
  }();
  return j;
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline std::string crc32_hex(const std::vector<uint8_t>& b) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t v : b) c = table[(c ^ v) & 0xFF] ^ (c >> 8);
  char s[9];
  std::snprintf(s, sizeof s, "%08x", c ^ 0xFFFFFFFFu);
  return s;
}

// Pillow's decoded RGB of a manifest entry: our decode of the source, which test_image proves
// equal to Pillow's, except JPEG without libjpeg-turbo (stb is a few LSB off): then the stored
// lossless PNG of Pillow's decode. With libjpeg-turbo the preprocessing tests thus run end to end
// from the JPEG file.
inline deepseek::vision::Image pillow_pixels(const nlohmann::json& entry) {
  if (entry.contains("pillow_png") && std::string(deepseek::vision::jpeg_decoder()) != "libjpeg-turbo")
    return deepseek::vision::load_image(fixture(entry["pillow_png"].get<std::string>()));
  return deepseek::vision::load_image(fixture(entry["file"].get<std::string>()));
}

inline const nlohmann::json& entry_for(const std::string& file) {
  for (const auto& e : manifest()["images"])
    if (e["file"] == file) return e;
  throw std::runtime_error("no manifest entry " + file);
}

}  // namespace vision_test
