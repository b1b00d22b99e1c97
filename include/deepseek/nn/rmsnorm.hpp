// RMSNorm: y = w * x / sqrt(mean(x^2) + eps) over the last dim (d).
//   weight: `<prefix>.weight` [d] (bf16 in V3/R1 checkpoints, f32 in V3.2), kept as f32.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/weights.hpp"


namespace deepseek::nn {

template <class B>
class RmsNorm {
 public:
  RmsNorm() = default;
  RmsNorm(const io::Weights& w, const std::string& name, int64_t d, float eps)
      : d_(d), eps_(eps), weight_(backend::Ops<B>::vector_f32(w.get(name + ".weight", Shape{d}, {DType::f32, DType::bf16, DType::f16}))) {}
  int64_t dim() const { return d_; }
  // x, y: [n, d] (row strides ldx, ldy); y may equal x.
  void forward(const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) const {
    backend::Ops<B>::rmsnorm(x, n, d_, weight_.data(), eps_, y, ldx, ldy);
  }

 private:
  int64_t d_ = 0;
  float eps_ = 1e-6f;
  backend::Buffer<B> weight_;  // f32 on B's device
};

}  // namespace deepseek::nn
