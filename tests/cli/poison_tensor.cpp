// Test helper for tests/cli: copies a single-file checkpoint directory (config.json and
// model.safetensors; the other files are not needed) and sets every element of one f32 tensor
// to NaN or inf, so `deepseek-cli generate` can be shown to stop with an error that names the
// layer where non-finite values first appear.
//   poison_tensor SRC_DIR DST_DIR TENSOR nan|inf
#include <deepseek/io/safetensors.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  if (argc != 5) return std::fprintf(stderr, "usage: %s SRC_DIR DST_DIR TENSOR nan|inf\n", argv[0]), 2;
  namespace fs = std::filesystem;
  const fs::path src = argv[1], dst = argv[2];
  fs::remove_all(dst);
  fs::create_directories(dst);
  fs::copy_file(src / "config.json", dst / "config.json");
  const std::string st = (src / "model.safetensors").string();
  std::ifstream in(st, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto h = deepseek::io::parse_safetensors_header(bytes.data(), bytes.size(), st);
  const float v =
      std::string(argv[4]) == "inf" ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  bool found = false;
  for (const auto& t : h.tensors) {
    if (t.name != argv[3]) continue;
    if (t.dtype != deepseek::DType::f32) throw deepseek::Error("not an f32 tensor", deepseek::at_tensor(t.name, st));
    for (uint64_t o = t.begin; o < t.end; o += 4) std::memcpy(bytes.data() + h.data_offset + o, &v, 4);
    found = true;
  }
  if (!found) throw deepseek::Error("no such tensor", deepseek::at_tensor(argv[3], st));
  std::ofstream out(dst / "model.safetensors", std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return out ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "poison_tensor: %s\n", e.what());
  return 1;
}
