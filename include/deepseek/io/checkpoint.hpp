// A Hugging Face checkpoint directory: config.json plus weights in one or many .safetensors
// files. Sharded checkpoints are read through model.safetensors.index.json ({"weight_map":
// {tensor: shard}}); the index is checked against the shards (missing shard files, tensors the
// index names but the shard lacks, shard names that leave the directory). Without an index the
// weights are model.safetensors, as transformers reads them; other *.safetensors files next to it
// are not weights of the model. A directory with config.json and no weights opens too
// (deepseek-cli info reads such). Every file is opened only if it is a regular file or a symlink
// to one (Hugging Face's cache is symlinks into its blob store); a FIFO, device or directory in
// its place is an error, never a blocking open (core/file.hpp).
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/json.hpp"
#include "deepseek/io/safetensors.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace deepseek::io {

// Validates an index file's JSON and returns tensor -> shard file name.
inline std::map<std::string, std::string> parse_safetensors_index(const Json& j, const std::string& file) {
  if (!j.is_object()) throw Error("index is not a JSON object", in_file(file));
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) throw Error("missing \"weight_map\" object", at_field("weight_map", file));
  std::map<std::string, std::string> out;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string())
      throw Error("shard name must be a string", at_field("weight_map." + excerpt(it.key()), file));
    const std::string shard = it.value().get<std::string>();
    // A NUL or other control byte would make the name the OS sees differ from the one checked
    // here ("a.safetensors\0x" opens a.safetensors).
    const bool control = std::any_of(shard.begin(), shard.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f; });
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard == "." || shard == ".." || control)
      throw Error("shard name \"" + excerpt(shard) + "\" must be a plain file name in the checkpoint directory" +
                      (control ? " (it contains a control character)" : ""),
                  at_field("weight_map." + excerpt(it.key()), file));
    out[it.key()] = shard;
  }
  return out;
}

class Checkpoint {
 public:
  static std::shared_ptr<Checkpoint> open(const std::string& dir) {
    namespace fs = std::filesystem;
    auto c = std::shared_ptr<Checkpoint>(new Checkpoint());
    c->dir_ = dir;
    if (!fs::is_directory(dir)) throw Error("checkpoint directory does not exist", in_file(dir));
    const fs::path config = fs::path(dir) / "config.json";
    if (!fs::exists(config)) throw Error("no config.json in the checkpoint directory", in_file(config.string()));
    c->config_ = load_config(config.string());

    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (fs::exists(index)) {
      const std::string ipath = index.string();
      auto map = parse_safetensors_index(parse_json(read_text_file(ipath), ipath), ipath);
      std::map<std::string, size_t> shard_ids;
      for (const auto& [name, shard] : map) {
        if (!shard_ids.count(shard)) {
          const fs::path sp = fs::path(dir) / shard;
          if (!fs::exists(sp))
            throw Error("index names shard \"" + shard + "\" which does not exist", at_tensor(excerpt(name, 200), ipath));
          shard_ids[shard] = c->files_.size();
          c->files_.push_back(SafetensorsFile::open(sp.string()));
        }
        const size_t f = shard_ids[shard];
        const TensorInfo* t = c->files_[f]->find(name);
        if (!t) throw Error("index places the tensor in \"" + shard + "\" but that shard lacks it", at_tensor(excerpt(name, 200), ipath));
        c->entries_.emplace(name, Entry{f, t});
      }
    } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
      c->files_.push_back(SafetensorsFile::open((fs::path(dir) / "model.safetensors").string()));
      for (const auto& t : c->files_[0]->tensors()) c->entries_.emplace(t.name, Entry{0, &t});
    }
    for (const auto& [name, e] : c->entries_) c->names_.push_back(name);
    std::sort(c->names_.begin(), c->names_.end());
    return c;
  }

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  bool has_weights() const { return !entries_.empty(); }
  // Bytes of all weight files, and mapping all of them now (MappedFile::populate): for
  // checkpoints that fit in RAM, so the first forward does not pay a page fault per 64 KB.
  int64_t file_bytes() const {
    int64_t b = 0;
    for (const auto& f : files_) b += int64_t(f->size());
    return b;
  }
  void populate() const {
    for (const auto& f : files_) f->populate();
  }
  const std::vector<std::string>& names() const { return names_; }  // sorted
  size_t num_files() const { return files_.size(); }
  const SafetensorsFile& file(size_t i) const { return *files_[i]; }

  const TensorInfo* find(const std::string& name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : it->second.info;
  }
  // The file a tensor lives in (for error messages).
  const std::string& file_of(const std::string& name) const { return files_[entries_.at(name).file]->path(); }
  TensorView view(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw Error("no such tensor in the checkpoint", at_tensor(name, dir_));
    return files_[it->second.file]->view(*it->second.info);
  }

 private:
  struct Entry {
    size_t file;
    const TensorInfo* info;
  };
  Checkpoint() = default;
  std::string dir_;
  ModelConfig config_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, Entry> entries_;
  std::vector<std::string> names_;
};

}  // namespace deepseek::io
