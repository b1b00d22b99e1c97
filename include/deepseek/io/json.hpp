// JSON for the io/ loaders: deepseek::parse_json (core/json.hpp: file and byte offset in errors,
// duplicate keys rejected, nesting bounded, linear time) under the io namespace, and the reading
// of a whole JSON file (regular files only, at most kMaxJsonFileBytes).
#pragma once

#include "deepseek/core/file.hpp"
#include "deepseek/core/json.hpp"

#include <string>

namespace deepseek::io {

using deepseek::Json;
using deepseek::json_excerpt;
using deepseek::parse_json;

inline std::string read_text_file(const std::string& path) {
  return read_regular_file(path, kMaxJsonFileBytes, "kMaxJsonFileBytes");
}

}  // namespace deepseek::io
