// DeepSeek-V4 MoE (V4_NOTES §8): E routed experts, top K, one shared expert, all clamped SwiGLUs.
//   s = score(x . gate^T) [E]: sqrtsoftplus sqrt(softplus(z)) or sigmoid(z)
//   routed layer: idx = top-K of s + gate.bias (the bias only selects)
//   hash layer (layer < num_hash_layers): idx = tid2eid[token id] (no bias)
//   w = s[idx] / (sum s[idx] + 1e-20) * routed_scaling_factor   (always renormalised)
//   y = sum_i w_i Expert_{idx_i}(x) + Shared(x)
//   Expert(x) = w2 (silu(min(w1 x, L)) * clamp(w3 x, -L, L)), L = swiglu_limit (shared expert too)
// Tensors under "layers.N.ffn.": gate.weight [E, d], gate.bias [E] (routed layers) or
// gate.tid2eid [vocab, K] I64 (hash layers), experts.E.w{1,3}.weight [I, d], experts.E.w2.weight
// [d, I], shared_experts.w{1,3}.weight [I, d], shared_experts.w2.weight [d, I].
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/v4_config.hpp"
#include "deepseek/nn/v4_weights.hpp"

#include <memory>
#include <string>
#include <vector>

namespace deepseek::nn {

template <class B>
class V4Moe {
 public:
  using Ops = backend::Ops<B>;
  V4Moe() = default;
  V4Moe(const io::Weights& w, const io::ModelConfig& c, const io::V4Config& v, bool hash)
      : E_(c.n_routed_experts),
        K_(c.num_experts_per_tok),
        d_(c.hidden_size),
        hash_(hash),
        sigmoid_(v.scoring_func == io::V4Scoring::sigmoid),
        scaling_(float(v.routed_scaling_factor)),
        limit_(float(v.swiglu_limit)) {
    const int64_t I = c.moe_intermediate_size;
    gate_ = v4_matrix(w, "gate", E_, d_);
    if (hash) {
      tid2eid_ = w.get("gate.tid2eid", Shape{c.vocab_size, K_}, {DType::i64});
      const int64_t* t = tid2eid_.data_as<const int64_t>();
      for (int64_t i = 0; i < tid2eid_.numel(); ++i)
        if (t[i] < 0 || t[i] >= E_)
          throw Error("expert id " + std::to_string(t[i]) + " (token " + std::to_string(i / K_) + ") is outside [0, " +
                          std::to_string(E_) + ") (n_routed_experts)",
                      at_tensor(w.prefix() + "gate.tid2eid", w.checkpoint().dir()));
    } else {
      bias_ = Ops::vector_f32(w.get("gate.bias", Shape{E_}, {DType::f32, DType::bf16}));
    }
    mats_ = std::make_shared<std::vector<BlockQuantMatrix>>();
    mats_->reserve(size_t(3 * (E_ + 1)));
    auto ffn = [&](const io::Weights& e) {
      mats_->push_back(v4_matrix(e, "w1", I, d_));
      mats_->push_back(v4_matrix(e, "w3", I, d_));
      mats_->push_back(v4_matrix(e, "w2", d_, I));
      const BlockQuantMatrix* p = &mats_->back() - 2;
      return backend::ExpertFfn{p, p + 1, p + 2};
    };
    for (int e = 0; e < E_; ++e) experts_.push_back(ffn(w.sub("experts." + std::to_string(e))));
    shared_ = ffn(w.sub("shared_experts"));
  }

  bool is_hash() const { return hash_; }
  int top_k() const { return K_; }

  // x [n, d] (after ffn_norm), ids [n] the tokens fed (host; checked by the model) -> y [n, d].
  // idx / weight: optional host copies of the routing [n, K] (experts ascending).
  void forward(const float* x, const int32_t* ids, int64_t n, float* y, int32_t* idx_out = nullptr,
               float* w_out = nullptr) const {
    backend::Buffer<B> logits(size_t(n * E_)), weight(size_t(n * K_));
    backend::IndexBuffer<B> idx(size_t(n * K_), 0);
    Ops::linear(gate_, x, n, logits.data());
    Ops::v4_route(logits.data(), n, E_, K_, sigmoid_, is_hash() ? nullptr : bias_.data(),
                  is_hash() ? tid2eid_.data_as<const int64_t>() : nullptr, ids, scaling_, idx.data(), weight.data());
    Ops::v4_moe_experts(experts_.data(), E_, shared_, x, n, d_, idx.data(), weight.data(), K_, limit_, y);
    if (idx_out) Ops::download(idx.data(), n * K_, idx_out);
    if (w_out) Ops::download(weight.data(), n * K_, w_out);
  }

 private:
  int E_ = 0, K_ = 0;
  int64_t d_ = 0;
  bool hash_ = false, sigmoid_ = false;
  float scaling_ = 1, limit_ = 0;
  BlockQuantMatrix gate_;
  backend::Buffer<B> bias_;
  TensorView tid2eid_;                                   // host (the token ids are host values)
  std::shared_ptr<std::vector<BlockQuantMatrix>> mats_;  // stable addresses for experts_ / shared_
  std::vector<backend::ExpertFfn> experts_;
  backend::ExpertFfn shared_;
};

}  // namespace deepseek::nn
