// JSON parsing with the checks every loader here needs: errors name the file and byte offset,
// and duplicate object keys are rejected (nlohmann/json would silently keep the last one, so a
// tensor listed twice in a safetensors header could hide).
#pragma once

#include "deepseek/core/error.hpp"

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <vector>

namespace deepseek::io {

using Json = nlohmann::json;

inline Json parse_json(const char* begin, const char* end, const std::string& file) {
  // One set of keys per open object; the callback sees keys in document order.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int /*depth*/, Json::parse_event_t ev, Json& parsed) {
    switch (ev) {
      case Json::parse_event_t::object_start: keys.emplace_back(); break;
      case Json::parse_event_t::object_end: keys.pop_back(); break;
      case Json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(begin, end, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const Json::parse_error& e) {
    ErrorWhere w = in_file(file);
    w.offset = static_cast<int64_t>(e.byte);
    throw Error(std::string("malformed JSON: ") + e.what(), w);
  } catch (const Json::exception& e) {  // out_of_range 406: a number such as 1e400 overflows double
    throw Error(std::string("malformed JSON: ") + e.what(), in_file(file));
  }
  if (!duplicate.empty()) throw Error("duplicate JSON key \"" + duplicate + "\"", in_file(file));
  return j;
}

inline Json parse_json(const std::string& text, const std::string& file) {
  return parse_json(text.data(), text.data() + text.size(), file);
}

}  // namespace deepseek::io
