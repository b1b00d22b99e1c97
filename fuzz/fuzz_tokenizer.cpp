// libFuzzer target for the tokenizer layer. The first input byte picks what the rest feeds:
//   0: encode (arbitrary bytes, incl. invalid UTF-8) with the shipped DeepSeek-V3 tokenizer;
//      checks decode(encode(x)) == the U+FFFD-repaired x, and the non-special/as-text modes
//   1: decode / stream-decode the bytes read as little-endian uint32 ids (unknown ids must throw
//      deepseek::Error, nothing else)
//   2: load the bytes as a tokenizer.json (arbitrary JSON: only deepseek::Error may escape)
//   3: parse the bytes as chat messages JSON and render both templates
// The shipped tokenizer comes from $DEEPSEEK_TOKENIZER or, since fuzz targets do not get
// DEEPSEEK_ASSETS_DIR, from ../assets/tokenizers/deepseek-v3 relative to this source file.
#include <deepseek/tokenizer.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

const deepseek::tokenizer::Tokenizer& shipped() {
  static const deepseek::tokenizer::Tokenizer tok = [] {
    const char* env = std::getenv("DEEPSEEK_TOKENIZER");
    const std::string path = env ? std::string(env)
                                 : (std::filesystem::path(__FILE__).parent_path() / ".." / "assets" / "tokenizers" / "deepseek-v3").string();
    return deepseek::tokenizer::Tokenizer::from_file(path);
  }();
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  using deepseek::tokenizer::EncodeOptions;
  using deepseek::tokenizer::SpecialTokens;
  switch (data[0] % 4) {
    case 0: {
      const auto& tok = shipped();
      const auto ids = tok.encode(rest);
      if (tok.decode(ids) != deepseek::tokenizer::unicode::to_valid(rest)) std::abort();
      EncodeOptions o;
      o.special_tokens = SpecialTokens::kParseNonSpecial;
      (void)tok.encode(rest, o);
      o.special_tokens = SpecialTokens::kAsText;
      o.add_bos = true;
      if (tok.decode(tok.encode(rest, o), true) != deepseek::tokenizer::unicode::to_valid(rest)) std::abort();
      break;
    }
    case 1: {
      const auto& tok = shipped();
      std::vector<deepseek::tokenizer::TokenId> ids(rest.size() / 4);
      for (size_t i = 0; i < ids.size(); ++i) {
        std::memcpy(&ids[i], rest.data() + 4 * i, 4);
        ids[i] %= 130000;  // mostly valid ids, some unknown ones
      }
      try {
        const std::string text = tok.decode(ids);
        deepseek::tokenizer::Tokenizer::StreamDecoder sd(tok);
        std::string streamed;
        for (auto id : ids) streamed += sd.push(id);
        streamed += sd.finish();
        if (streamed != text) std::abort();
      } catch (const deepseek::Error&) {
      }
      break;
    }
    case 2: {
      try {
        const auto t = deepseek::tokenizer::Tokenizer::from_json_text(rest);
        (void)t.decode(t.encode("hello 123 世界 \xff"));
      } catch (const deepseek::Error&) {
      }
      break;
    }
    case 3: {
      const auto j = nlohmann::json::parse(rest, nullptr, false);
      if (j.is_discarded()) break;
      try {
        const auto messages = deepseek::chat::messages_from_json(j);
        deepseek::chat::ChatOptions o;
        o.add_generation_prompt = true;
        (void)shipped().encode(deepseek::chat::format_v3(messages, o));
        (void)deepseek::chat::format_r1(messages, o);
      } catch (const deepseek::Error&) {
      }
      break;
    }
  }
  return 0;
}
