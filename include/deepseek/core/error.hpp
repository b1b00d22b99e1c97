// deepseek::Error: the one exception type of the library.
//
// Thrown where input enters (files, JSON, token ids, images); kernels assume validated input.
// The message always says what failed and, where known, where: the file, the tensor, the JSON
// field and the byte offset. The parts are also kept apart so a caller can act on them.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace deepseek {

struct ErrorWhere {
  std::string file;    // path of the file being read, if any
  std::string tensor;  // tensor name, if any
  std::string field;   // JSON field path such as "rope_scaling.factor", if any
  int64_t offset = -1; // byte offset into the file or buffer, if known
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, ErrorWhere where = {})
      : std::runtime_error(compose(what, where)), what_(what), where_(std::move(where)) {}

  const std::string& reason() const noexcept { return what_; }
  const ErrorWhere& where() const noexcept { return where_; }

 private:
  static std::string compose(const std::string& what, const ErrorWhere& w) {
    std::string s = what;
    std::string loc;
    auto add = [&](const char* key, const std::string& v) {
      if (v.empty()) return;
      loc += loc.empty() ? "" : ", ";
      loc += key;
      loc += v;
    };
    add("file ", w.file);
    add("tensor ", w.tensor);
    add("field ", w.field);
    if (w.offset >= 0) add("byte offset ", std::to_string(w.offset));
    if (!loc.empty()) s += " [" + loc + "]";
    return s;
  }

  std::string what_;
  ErrorWhere where_;
};

// Builders so call sites stay one line: throw Error("bad", in_file(path).with_field("x")).
inline ErrorWhere in_file(std::string file) { return ErrorWhere{std::move(file), {}, {}, -1}; }
inline ErrorWhere at_field(std::string field, std::string file = {}) {
  return ErrorWhere{std::move(file), {}, std::move(field), -1};
}
inline ErrorWhere at_tensor(std::string tensor, std::string file = {}) {
  return ErrorWhere{std::move(file), std::move(tensor), {}, -1};
}

}  // namespace deepseek
