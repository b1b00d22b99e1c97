// Weights: name -> tensor lookup scoped to a prefix ("model.layers.3.self_attn."), with shape
// checks and errors that name the tensor, the expected and the found shape, and suggest the
// nearest existing name when a tensor is missing.
//
// FP8 checkpoints pair every quantized `X.weight` (f8_e4m3, [out, in]) with `X.weight_scale_inv`
// (f32, [ceil(out/128), ceil(in/128)]); `matrix()` returns both as one BlockQuantMatrix, so blocks
// see a bf16, f32 or FP8 weight through one type and the kernel dequantizes on the fly.
//
// on(Device::cuda) gives a view whose get() / matrix() return device tensors: each tensor is
// uploaded in its checkpoint dtype the first time any view of that family asks for it, and kept
// while any of them lives: the blocks hold plain TensorViews into the uploads, so a model keeps its
// root view as a member (models::DeepSeekV3::weights_ and the others) to own its device weights.
// The checks (names, shapes, dtypes) run on the checkpoint's header first, as on the CPU.
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/tensor.hpp"
#include "deepseek/io/checkpoint.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace deepseek::io {

namespace detail {
inline size_t edit_distance(const std::string& a, const std::string& b, size_t cap) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    size_t row_min = cur[0];
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
      row_min = std::min(row_min, cur[j]);
    }
    if (row_min > cap) return cap + 1;
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace detail

class Weights {
 public:
  Weights() = default;
  Weights(std::shared_ptr<const Checkpoint> ckpt, std::string prefix = {}) : ckpt_(std::move(ckpt)), prefix_(std::move(prefix)) {}

  // A view scoped one level deeper: w.sub("self_attn") looks names up under "<prefix>self_attn.".
  Weights sub(const std::string& p) const {
    Weights w = *this;
    w.prefix_ += p + ".";
    return w;
  }
  // The same view, with every matrix() it returns multiplying inputs rounded to `a` (see
  // BlockQuantMatrix::activations); sub() views inherit it.
  Weights with_activations(ActivationDType a) const {
    Weights w = *this;
    w.activations_ = a;
    return w;
  }
  ActivationDType activations() const { return activations_; }
  // The same view, with every tensor it returns on `d` (Device::cuda needs <deepseek/cuda.hpp>).
  Weights on(Device d) const {
    Weights w = *this;
    w.device_ = d;
    if (d != Device::cpu && !w.uploads_) w.uploads_ = std::make_shared<Uploads>();
    return w;
  }
  Device device() const { return device_; }
  const std::string& prefix() const { return prefix_; }
  const Checkpoint& checkpoint() const { return *ckpt_; }

  bool has(const std::string& name) const { return ckpt_->find(prefix_ + name) != nullptr; }

  TensorView get(const std::string& name) const { return place(prefix_ + name, host_view(name)); }
  TensorView get(const std::string& name, const Shape& expected) const {
    return place(prefix_ + name, host_view(name, expected));
  }
  TensorView get(const std::string& name, const Shape& expected, std::initializer_list<DType> allowed) const {
    return place(prefix_ + name, host_view(name, expected, allowed));
  }

  // `<name>.weight` of shape [rows, cols] in f32, bf16 or f8_e4m3 (+ `<name>.weight_scale_inv`).
  BlockQuantMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const {
    BlockQuantMatrix m;
    m.activations = activations_;
    m.weight = host_view(name + ".weight", Shape{rows, cols}, {DType::f32, DType::bf16, DType::f8_e4m3});
    if (m.weight.dtype() == DType::f8_e4m3) {
      const auto& q = ckpt_->config().quantization;
      m.block_rows = q.block_rows;
      m.block_cols = q.block_cols;
      const int64_t sr = (rows + m.block_rows - 1) / m.block_rows, sc = (cols + m.block_cols - 1) / m.block_cols;
      if (!has(name + ".weight_scale_inv"))
        throw Error("f8_e4m3 weight without its weight_scale_inv", at_tensor(prefix_ + name + ".weight", ckpt_->dir()));
      const TensorView scale = host_view(name + ".weight_scale_inv");
      if (scale.shape() != Shape{sr, sc})
        throw Error("expected shape " + Shape{sr, sc}.str() + " (the weight's " + Shape{rows, cols}.str() + " in " +
                        std::to_string(m.block_rows) + "x" + std::to_string(m.block_cols) +
                        " blocks, from quantization_config.weight_block_size) but the checkpoint has " + scale.shape().str(),
                    at_tensor(prefix_ + name + ".weight_scale_inv", ckpt_->file_of(prefix_ + name + ".weight_scale_inv")));
      m.scale_inv = place(prefix_ + name + ".weight_scale_inv", host_view(name + ".weight_scale_inv", Shape{sr, sc}, {DType::f32}));
    } else if (has(name + ".weight_scale_inv")) {
      throw Error(std::string("weight_scale_inv present but the weight is ") + dtype_name(m.weight.dtype()) + ", not f8_e4m3",
                  at_tensor(prefix_ + name + ".weight", ckpt_->dir()));
    }
    m.weight = place(prefix_ + name + ".weight", m.weight);  // after every check
    return m;
  }

 private:
  // The checkpoint's (host) view, checked: present, of the expected shape, of an allowed dtype.
  TensorView host_view(const std::string& name) const {
    const std::string full = prefix_ + name;
    if (!ckpt_->find(full)) {
      std::string msg = "missing tensor";
      const std::string near = nearest(full);
      if (!near.empty()) msg += " (nearest existing name: " + near + ")";
      throw Error(msg, at_tensor(full, ckpt_->dir()));
    }
    return ckpt_->view(full);
  }
  TensorView host_view(const std::string& name, const Shape& expected) const {
    TensorView v = host_view(name);
    if (v.shape() != expected)
      throw Error("expected shape " + expected.str() + " but the checkpoint has " + v.shape().str(),
                  at_tensor(prefix_ + name, ckpt_->file_of(prefix_ + name)));
    return v;
  }
  TensorView host_view(const std::string& name, const Shape& expected, std::initializer_list<DType> allowed) const {
    TensorView v = host_view(name, expected);
    if (std::find(allowed.begin(), allowed.end(), v.dtype()) == allowed.end())
      throw Error(std::string("unsupported dtype ") + dtype_name(v.dtype()) + " for this tensor",
                  at_tensor(prefix_ + name, ckpt_->file_of(prefix_ + name)));
    return v;
  }
  // The view on device_: the checkpoint's own on the CPU, else its upload (made once, shared).
  TensorView place(const std::string& full, const TensorView& host) const {
    if (device_ == Device::cpu) return host;
    std::lock_guard<std::mutex> lock(uploads_->mutex);
    auto it = uploads_->tensors.find(full);
    if (it == uploads_->tensors.end()) it = uploads_->tensors.emplace(full, Tensor::copy_to(host, device_)).first;
    return it->second.view();
  }

  std::string nearest(const std::string& full) const {
    std::string best;
    size_t best_d = std::max<size_t>(full.size() / 3, 3);
    for (const auto& n : ckpt_->names()) {
      const size_t d = detail::edit_distance(full, n, best_d);
      if (d <= best_d) {
        if (d < best_d || best.empty()) best = n;
        best_d = d;
      }
    }
    return best;
  }

  struct Uploads {
    std::mutex mutex;
    std::map<std::string, Tensor> tensors;  // full name -> its copy on device_
  };

  std::shared_ptr<const Checkpoint> ckpt_;
  std::string prefix_;
  ActivationDType activations_ = ActivationDType::f32;
  Device device_ = Device::cpu;
  std::shared_ptr<Uploads> uploads_;
};

}  // namespace deepseek::io
