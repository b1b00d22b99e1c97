// safetensors reader: header validation, mmap, zero-copy tensor views.
//
// File layout: [u64 little-endian n][n bytes of JSON header][data]. The header maps each tensor
// name to {dtype, shape, data_offsets: [begin, end)} relative to the data section, plus an
// optional "__metadata__" object of strings. Everything is validated before any view is made:
// header length within the file, valid JSON without duplicate keys, known dtypes, non-negative
// shapes of rank <= 4, numel x dtype size == end - begin (overflow-checked), offsets inside the
// data, regions that tile the data in order without overlap or holes (as the reference writer
// produces them), and data aligned for its dtype. Any violation is a deepseek::Error naming the
// file and tensor; nothing is read out of bounds.
#pragma once

#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/tensor.hpp"
#include "deepseek/io/json.hpp"
#include "deepseek/io/mapped_file.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace deepseek::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // byte range in the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // where the data section starts in the file (8 + header length)
  std::vector<TensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
};

// Parses and validates a header. `bytes` is the whole file (or at least its first `size` bytes,
// where `size` is the whole file's size); `file` is used in error messages.
inline SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size, const std::string& file) {
  if (size < 8)
    throw Error("file too short for a safetensors header (" + std::to_string(size) + " bytes)", in_file(file));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > kMaxSafetensorsHeader)
    throw Error("safetensors header length " + std::to_string(n) + " is larger than the " +
                    std::to_string(kMaxSafetensorsHeader) + "-byte (100 MiB) limit (kMaxSafetensorsHeader)",
                in_file(file));
  if (n > size - 8)
    throw Error("safetensors header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes)",
                in_file(file));
  if (n < 2) throw Error("safetensors header is empty", in_file(file));

  const char* hb = reinterpret_cast<const char*>(bytes + 8);
  Json j = parse_json(hb, hb + n, file);
  if (!j.is_object()) throw Error("safetensors header is not a JSON object", in_file(file));
  const size_t tensor_entries = j.size() - (j.contains("__metadata__") ? 1 : 0);
  if (tensor_entries > kMaxSafetensorsTensors)
    throw Error("safetensors header lists " + std::to_string(tensor_entries) + " tensors, more than the " +
                    std::to_string(kMaxSafetensorsTensors) + " limit (kMaxSafetensorsTensors)",
                in_file(file));

  SafetensorsHeader h;
  h.data_offset = 8 + n;
  h.tensors.reserve(j.size());
  const uint64_t data_size = size - h.data_offset;

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error("__metadata__ is not an object", at_field("__metadata__", file));
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error("__metadata__ values must be strings", at_field("__metadata__." + excerpt(m.key()), file));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto where = at_tensor(excerpt(name, 200), file);
    if (!v.is_object()) throw Error("tensor entry is not an object", where);
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) throw Error("missing or non-string \"dtype\"", where);
    if (sh == v.end() || !sh->is_array()) throw Error("missing or non-array \"shape\"", where);
    if (off == v.end() || !off->is_array() || off->size() != 2)
      throw Error("\"data_offsets\" must be an array [begin, end]", where);

    TensorInfo t;
    t.name = name;
    auto d = dtype_from_safetensors(dt->get<std::string>());
    if (!d) throw Error("unknown or unsupported dtype \"" + excerpt(dt->get<std::string>()) + "\"", where);
    t.dtype = *d;
    if (sh->size() > size_t(kMaxDims))
      throw Error("rank " + std::to_string(sh->size()) + " is above the supported 4", where);
    uint64_t numel = 1;
    t.shape.rank = static_cast<int>(sh->size());
    for (size_t i = 0; i < sh->size(); ++i) {
      const Json& x = (*sh)[i];
      if (!x.is_number_unsigned()) throw Error("shape entries must be non-negative integers", where);
      const uint64_t dim = x.get<uint64_t>();
      if (dim > (1ull << 40) || (dim && numel > (1ull << 50) / dim))
        throw Error("shape " + json_excerpt(*sh) + " is too large", where);
      numel *= dim;
      t.shape.dims[i] = static_cast<int64_t>(dim);
    }
    for (int i = 0; i < 2; ++i)
      if (!(*off)[i].is_number_unsigned()) throw Error("data_offsets must be non-negative integers", where);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end) throw Error("data_offsets begin > end", where);
    if (t.end > data_size) {
      ErrorWhere w = where;
      w.offset = static_cast<int64_t>(std::min<uint64_t>(t.end, 1ull << 62));
      throw Error("data_offsets end " + std::to_string(t.end) + " is past the data section (" +
                      std::to_string(data_size) + " bytes)",
                  w);
    }
    const uint64_t expect = numel * uint64_t(dtype_size(t.dtype));
    if (expect != t.end - t.begin)
      throw Error("shape " + t.shape.str() + " x " + dtype_name(t.dtype) + " needs " + std::to_string(expect) +
                      " bytes but data_offsets span " + std::to_string(t.end - t.begin),
                  where);
    if ((h.data_offset + t.begin) % uint64_t(dtype_size(t.dtype)) != 0)
      throw Error("tensor data is not aligned for its dtype", where);
    h.tensors.push_back(std::move(t));
  }

  std::vector<const TensorInfo*> order;
  order.reserve(h.tensors.size());
  for (const auto& t : h.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const TensorInfo* t : order) {
    if (t->begin < cursor) throw Error("tensor data overlaps the previous tensor", at_tensor(excerpt(t->name, 200), file));
    if (t->begin > cursor)
      throw Error("hole of " + std::to_string(t->begin - cursor) + " bytes before this tensor's data",
                  at_tensor(excerpt(t->name, 200), file));
    cursor = t->end;
  }
  if (cursor != data_size)
    throw Error(std::to_string(data_size - cursor) + " bytes after the last tensor are not described by the header",
                in_file(file));
  return h;
}

// One mmapped .safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path) {
    auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
    f->file_ = MappedFile::open(path);
    f->header_ = parse_safetensors_header(f->file_->data(), f->file_->size(), path);
    for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
    return f;
  }

  const std::string& path() const { return file_->path(); }
  void populate() const { file_->populate(); }
  size_t size() const { return file_->size(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const TensorInfo* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &header_.tensors[it->second];
  }
  // A zero-copy view; valid while this file object lives.
  TensorView view(const TensorInfo& t) const {
    const uint8_t* p = file_->data() + header_.data_offset + t.begin;
    return TensorView(const_cast<uint8_t*>(p), t.dtype, t.shape);
  }
  TensorView view(const std::string& name) const {
    const TensorInfo* t = find(name);
    if (!t) throw Error("no such tensor", at_tensor(name, path()));
    return view(*t);
  }

 private:
  SafetensorsFile() = default;
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace deepseek::io
