// libFuzzer target: arbitrary bytes as the body of POST /v1/chat/completions and /v1/completions
// -> serve::parse_request (examples/cli/openai_api.hpp), then the chat template over the parsed
// messages as deepseek-cli serve renders them. Only serve::ApiError (a 400) and deepseek::Error
// may escape.
#include "../examples/cli/openai_api.hpp"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (auto endpoint : {deepseek::serve::Endpoint::chat, deepseek::serve::Endpoint::completions}) {
    try {
      const auto r = deepseek::serve::parse_request(body, endpoint);
      if (endpoint == deepseek::serve::Endpoint::chat) {
        deepseek::chat::ChatOptions co;
        co.add_generation_prompt = true;
        (void)deepseek::chat::format_v3(r.messages, co);
        (void)deepseek::chat::format_r1(r.messages, co);
      }
    } catch (const deepseek::serve::ApiError&) {
    } catch (const deepseek::Error&) {
    }
  }
  return 0;
}
