// LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last dim d (biased
// variance), as torch.nn.LayerNorm. SAM's LayerNorm2d normalises a [C, H, W] map over C at every
// pixel: on our channels-last maps ([H*W, C] rows) that is the same row-wise loop, so LayerNorm2d is
// this class with d = C (the official code's (x - u) / sqrt(s + eps) is the same formula).
//   tensors: `<name>.weight`, `<name>.bias` [d] (f32 / bf16 / f16, kept as f32)
//   eps: 1e-6 in SAM (blocks and neck), 1e-5 in CLIP (pre_layrnorm and the blocks)
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/weights.hpp"

#include <string>

namespace deepseek::nn {

template <class B>
class LayerNorm {
 public:
  LayerNorm() = default;
  LayerNorm(const io::Weights& w, const std::string& name, int64_t d, float eps)
      : d_(d),
        eps_(eps),
        weight_(backend::Ops<B>::vector_f32(w.get(name + ".weight", Shape{d}, {DType::f32, DType::bf16, DType::f16}))),
        bias_(backend::Ops<B>::vector_f32(w.get(name + ".bias", Shape{d}, {DType::f32, DType::bf16, DType::f16}))) {}
  int64_t dim() const { return d_; }
  float eps() const { return eps_; }
  // x, y: [n, d] (row strides ldx, ldy); y may equal x.
  void forward(const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) const {
    backend::Ops<B>::layernorm(x, n, d_, weight_.data(), bias_.data(), eps_, y, ldx, ldy);
  }

 private:
  int64_t d_ = 0;
  float eps_ = 1e-5f;
  backend::Buffer<B> weight_, bias_;  // f32 on B's device
};

// SAM's neck norm: a LayerNorm over channels of a channels-last map (see above).
template <class B>
using LayerNorm2d = LayerNorm<B>;

}  // namespace deepseek::nn
