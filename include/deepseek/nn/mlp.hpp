// SwiGLU MLP (dense layers, shared experts, each routed expert):
//   y = W_down( silu(W_gate x) * (W_up x) )
//   gate_proj, up_proj: [inter, d]; down_proj: [d, inter]; any of f32 / bf16 / FP8 + block scales.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/weights.hpp"

namespace deepseek::nn {

template <class B>
class Mlp {
 public:
  Mlp() = default;
  Mlp(const io::Weights& w, int64_t d, int64_t inter)
      : d_(d), inter_(inter),
        gate_proj_(w.matrix("gate_proj", inter, d)),
        up_proj_(w.matrix("up_proj", inter, d)),
        down_proj_(w.matrix("down_proj", d, inter)) {}

  int64_t intermediate_size() const { return inter_; }
  const BlockQuantMatrix& gate_proj() const { return gate_proj_; }
  const BlockQuantMatrix& up_proj() const { return up_proj_; }
  const BlockQuantMatrix& down_proj() const { return down_proj_; }

  // x: [n, d] -> y: [n, d] (overwritten).
  void forward(const float* x, int64_t n, float* y) const {
    backend::Buffer<B> g(size_t(n * inter_)), u(size_t(n * inter_));
    backend::Ops<B>::linear(gate_proj_, x, n, g.data());
    backend::Ops<B>::linear(up_proj_, x, n, u.data());
    backend::Ops<B>::silu_mul(g.data(), u.data(), n * inter_);
    backend::Ops<B>::linear(down_proj_, g.data(), n, y);
  }

 private:
  int64_t d_ = 0, inter_ = 0;
  BlockQuantMatrix gate_proj_, up_proj_, down_proj_;
};

}  // namespace deepseek::nn
