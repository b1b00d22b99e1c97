// Builds safetensors bytes in memory (and on disk) for tests of the reader's validation.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace deepseek::test {

// The header is padded with spaces to a multiple of 8 bytes, as the reference writer does, unless
// `declared_len` overrides the length field.
inline std::vector<uint8_t> safetensors_bytes(std::string header, const std::vector<uint8_t>& data,
                                              int64_t declared_len = -1) {
  if (declared_len < 0) header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<uint8_t> out(8);
  const uint64_t n = declared_len >= 0 ? uint64_t(declared_len) : header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

}  // namespace deepseek::test
