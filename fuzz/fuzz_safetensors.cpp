// libFuzzer target: arbitrary bytes as a whole .safetensors file -> parse_safetensors_header.
// A deepseek::Error is the expected answer to malformed input; any other exception, a crash or a
// sanitizer report is a bug. An accepted header is checked against the buffer: every tensor's
// byte range lies inside the data section, so views made from it never read out of bounds.
#include <deepseek/io/safetensors.hpp>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = deepseek::io::parse_safetensors_header(data, size, "fuzz.safetensors");
    if (h.data_offset > size) std::abort();
    for (const auto& t : h.tensors) {
      if (t.begin > t.end || t.end > size - h.data_offset) std::abort();
      if (uint64_t(t.shape.numel()) * uint64_t(deepseek::dtype_size(t.dtype)) != t.end - t.begin) std::abort();
    }
  } catch (const deepseek::Error&) {
  }
  return 0;
}
