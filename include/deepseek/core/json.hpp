// JSON parsing with the checks every loader here needs (config.json, the shard index, safetensors
// headers, tokenizer.json, chat messages):
//   - errors name the file and, for syntax errors, the byte offset;
//   - duplicate object keys are rejected (nlohmann/json would silently keep the last one, so a
//     tensor listed twice in a safetensors header, or a vocab entry given twice, could hide);
//   - nesting deeper than kMaxJsonDepth is rejected, so nothing recursive (dump, destruction,
//     our own readers) can run out of stack on a hostile file;
//   - time is linear in the input: the document is built by our own SAX handler, which sees a
//     duplicate key as a failed insert into the open object (nlohmann's callback parser instead
//     rescans the parent object after every nested object: quadratic on a header of many tensors).
// json_excerpt(v) is what an error message may show of a parsed value.
#pragma once

#include "deepseek/core/checked.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/limits.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace deepseek {

using Json = nlohmann::json;

namespace detail {

class JsonBuilder : public nlohmann::json_sax<Json> {
 public:
  explicit JsonBuilder(Json& root) : root_(root) {}

  bool null() override { return put(Json(nullptr)); }
  bool boolean(bool v) override { return put(Json(v)); }
  bool number_integer(number_integer_t v) override { return put(Json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(Json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(Json(v)); }
  bool string(string_t& v) override { return put(Json(std::move(v))); }
  bool binary(binary_t& v) override { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t) override { return open(Json::value_t::object); }
  bool start_array(std::size_t) override { return open(Json::value_t::array); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    auto& obj = stack_.back()->get_ref<Json::object_t&>();
    auto r = obj.emplace(k, Json());
    if (!r.second) {
      error_ = "duplicate JSON key \"" + excerpt(k) + "\"";
      return false;
    }
    pending_ = &r.first->second;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) override {
    error_ = std::string("malformed JSON: ") + excerpt(ex.what(), 200);
    offset_ = int64_t(position);
    return false;
  }

  const std::string& error() const { return error_; }
  int64_t offset() const { return offset_; }

 private:
  // Places v where the document is: the root, the next array element or the value of the last key.
  Json* place(Json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& top = *stack_.back();
    if (top.is_array()) {
      auto& arr = top.get_ref<Json::array_t&>();
      arr.push_back(std::move(v));
      return &arr.back();
    }
    *pending_ = std::move(v);
    return pending_;
  }
  bool put(Json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(Json::value_t t) {
    if (int(stack_.size()) >= kMaxJsonDepth) {
      error_ = "JSON nesting is deeper than " + std::to_string(kMaxJsonDepth) + " levels (kMaxJsonDepth)";
      return false;
    }
    stack_.push_back(place(Json(t)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  Json& root_;
  std::vector<Json*> stack_;
  Json* pending_ = nullptr;
  std::string error_;
  int64_t offset_ = -1;
};

}  // namespace detail

inline Json parse_json(const char* begin, const char* end, const std::string& file) {
  Json j;
  detail::JsonBuilder b(j);
  if (!Json::sax_parse(begin, end, &b, nlohmann::detail::input_format_t::json, /*strict=*/true)) {
    ErrorWhere w = in_file(file);
    w.offset = b.offset();
    throw Error(b.error().empty() ? std::string("malformed JSON") : b.error(), w);
  }
  return j;
}

inline Json parse_json(const std::string& text, const std::string& file) {
  return parse_json(text.data(), text.data() + text.size(), file);
}

// A parsed value as an error message may show it: its JSON text, cut short.
inline std::string json_excerpt(const Json& v, size_t max = 80) { return excerpt(v.dump(), max); }

}  // namespace deepseek
