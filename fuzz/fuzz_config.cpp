// libFuzzer target: arbitrary bytes as config.json -> parse_json + parse_config, then the derived
// numbers deepseek-cli info prints (model_info), and for model_type deepseek_v4 its own fields
// (parse_v4_config: the layer schedule in both spellings) and what info prints of it
// (v4_model_info). Only deepseek::Error may escape.
#include <deepseek/io/config.hpp>
#include <deepseek/io/v4_config.hpp>
#include <deepseek/models/model_info.hpp>

#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  try {
    const auto j = deepseek::io::parse_json(p, p + size, "config.json");
    const auto c = deepseek::io::parse_config(j, "config.json");
    (void)deepseek::models::model_info(c);
    if (c.model_type == "deepseek_v4") (void)deepseek::models::v4_model_info(c, deepseek::io::parse_v4_config(j, c, "config.json"));
  } catch (const deepseek::Error&) {
  }
  return 0;
}
