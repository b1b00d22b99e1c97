// libFuzzer target: arbitrary bytes as model.safetensors.index.json -> parse_json +
// parse_safetensors_index. Only deepseek::Error may escape the parsers; an accepted index must
// name plain file names (no path separators, never "." or ".."), so a shard cannot leave the
// checkpoint directory.
#include <deepseek/io/checkpoint.hpp>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  try {
    const auto j = deepseek::io::parse_json(p, p + size, "model.safetensors.index.json");
    const auto map = deepseek::io::parse_safetensors_index(j, "model.safetensors.index.json");
    for (const auto& [name, shard] : map) {
      if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
          shard.find('\\') != std::string::npos)
        std::abort();
    }
  } catch (const deepseek::Error&) {
  }
  return 0;
}
