// mHC, manifold-constrained hyper-connections (DeepSeek-V4; V4_NOTES §7): every token carries
// hc residual streams X [hc, d] instead of one residual vector. Around a block f (attention, MoE):
//   u = rms(flatten X) (no weight);  mix = u . fn^T  [(2+hc) hc] = [pre | post | comb]
//   pre = sigmoid(mix_pre scale[0] + base_pre) + eps_hc;  post = 2 sigmoid(mix_post scale[1] + base_post)
//   M = Sinkhorn(softmax_row(mix_comb scale[2] + base_comb) + eps_hc)   [hc, hc], doubly stochastic
//   y = f(sum_j pre_j X_j);  X'_k = post_k y + sum_j M[j, k] X_j     (M applied transposed)
// The hyper head before the final norm keeps only pre (sigmoid + eps, not normalised):
//   y = sum_j pre_j X_j with pre = sigmoid(rms(flatten X) . head_fn^T scale + base) + eps_hc
// Tensors (prefix p = "layers.N.hc_attn" / "hc_ffn"; head: "hc_head", "mtp.0.hc_head"):
//   p_fn [(2+hc) hc, hc d], p_base [(2+hc) hc], p_scale [3]; head: _fn [hc, hc d], _base [hc], _scale [1]
// All f32 (transformers keeps them f32 in every load dtype).
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/nn/v4_weights.hpp"

#include <string>

namespace deepseek::nn {

template <class B>
class HyperConnection {
 public:
  using Ops = backend::Ops<B>;
  HyperConnection() = default;
  // head: the hyper head's shapes (only pre); else a block's.
  HyperConnection(const io::Weights& w, const std::string& p, int hc, int64_t d, int iters, float eps_hc, float rms_eps,
                  bool head)
      : hc_(hc), d_(d), iters_(iters), eps_hc_(eps_hc), rms_eps_(rms_eps), head_(head) {
    const int64_t k = head ? hc : (2 + hc) * hc;
    fn_ = v4_tensor_matrix(w, p + "_fn", k, hc * d);
    base_ = Ops::vector_f32(w.get(p + "_base", Shape{k}, {DType::f32, DType::bf16}));
    scale_ = Ops::vector_f32(w.get(p + "_scale", Shape{head ? 1 : 3}, {DType::f32, DType::bf16}));
    ones_.resize(size_t(hc * d));
    Ops::fill(ones_.data(), hc * d, 1.0f);
  }

  // The weights of n tokens' streams X [n, hc, d]: pre, post [n, hc], comb [n, hc, hc] (M[j, k]),
  // and the collapsed block input y [n, d]. The hyper head fills only pre and y.
  struct Mix {
    backend::Buffer<B> pre, post, comb;
  };
  Mix collapse(const float* X, int64_t n, float* y) const {
    const int64_t hd = hc_ * d_, k = fn_.rows();
    backend::Buffer<B> u(size_t(n * hd)), mix(size_t(n * k));
    Ops::rmsnorm(X, n, hd, ones_.data(), rms_eps_, u.data());
    Ops::linear(fn_, u.data(), n, mix.data());
    Mix m;
    m.pre.resize(size_t(n * hc_));
    if (head_) {
      Ops::hc_head_mix(mix.data(), n, hc_, scale_.data(), base_.data(), eps_hc_, m.pre.data());
    } else {
      m.post.resize(size_t(n * hc_));
      m.comb.resize(size_t(n * hc_ * hc_));
      Ops::hc_mix(mix.data(), n, hc_, scale_.data(), base_.data(), iters_, eps_hc_, m.pre.data(), m.post.data(),
                  m.comb.data());
    }
    Ops::hc_collapse(m.pre.data(), X, n, hc_, d_, y);
    return m;
  }
  // X [n, hc, d] <- post (x) f + comb^T X, with f [n, d] the block's output.
  void expand(const Mix& m, const float* f, int64_t n, float* X) const {
    Ops::hc_expand(m.post.data(), m.comb.data(), f, n, hc_, d_, X);
  }

 private:
  int hc_ = 0;
  int64_t d_ = 0;
  int iters_ = 0;
  float eps_hc_ = 0, rms_eps_ = 0;
  bool head_ = false;
  BlockQuantMatrix fn_;
  backend::Buffer<B> base_, scale_, ones_;
};

}  // namespace deepseek::nn
