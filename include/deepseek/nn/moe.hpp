// DeepSeekMoE: y = sum_{k in TopK(x)} g_k E_k(x) + Shared(x)
//
//   gate.weight [E, d] (f32 math), experts.N.{gate,up,down}_proj (SwiGLU, width moe_inter),
//   shared_experts.{gate,up,down}_proj (width n_shared * moe_inter), V3: gate.e_score_correction_bias [E].
// Routing per token (logits = W_gate x in f32):
//   sigmoid / noaux_tc (V3):  s = sigmoid(logits); b = s + e_score_correction_bias (selection only);
//       group score = sum of the top-2 b in each of n_group groups; keep topk_group groups (others
//       -inf); idx = top-k of b; g = s[idx], divided by their sum (+1e-20) if norm_topk_prob;
//       g *= routed_scaling_factor
//   softmax / greedy (V2-Lite):  s = softmax(logits); idx = top-k of s
//   softmax / group_limited_greedy (V2): group score = max s in the group; keep topk_group
//       groups; idx = top-k of s
//     softmax weights: g = s[idx], normalised if norm_topk_prob (V2 remote code: instead of
//       scaling), else g *= routed_scaling_factor
// Ties in top-k go to the lower index (torch leaves them unspecified).
// The block is the router's linear, then Ops::moe_route (the rules above) and Ops::moe_experts (the
// shared expert's SwiGLU plus the routed ones, each token's routed experts summed in ascending
// expert order so results do not depend on how the backend schedules them; CPU:
// backend/cpu/moe.hpp groups tokens per expert, one GEMM per expert over its tokens, and runs a
// single token's experts, shared included, as two row-split jobs).
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/mlp.hpp"

#include <optional>
#include <string>
#include <vector>

namespace deepseek::nn {

struct MoeConfig {
  int64_t hidden_size = 0, moe_intermediate_size = 0;
  int n_routed_experts = 0, n_shared_experts = 0, num_experts_per_tok = 0, n_group = 1, topk_group = 1;
  std::string topk_method, scoring_func;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;

  static MoeConfig from(const io::ModelConfig& c) {
    MoeConfig m;
    m.hidden_size = c.hidden_size;
    m.moe_intermediate_size = c.moe_intermediate_size;
    m.n_routed_experts = c.n_routed_experts;
    m.n_shared_experts = c.n_shared_experts;
    m.num_experts_per_tok = c.num_experts_per_tok;
    m.n_group = c.n_group;
    m.topk_group = c.topk_group;
    m.topk_method = c.topk_method;
    m.scoring_func = c.scoring_func;
    m.norm_topk_prob = c.norm_topk_prob;
    m.routed_scaling_factor = float(c.routed_scaling_factor);
    return m;
  }
};

template <class B>
class Moe {
 public:
  Moe() = default;
  Moe(const io::Weights& w, const MoeConfig& c) : c_(c) {
    const int E = c.n_routed_experts;
    // The router scores in f32 whatever the model's activation dtype, as the reference does
    // (transformers casts both operands of the gate to float32): routing is a discrete choice.
    gate_ = w.with_activations(ActivationDType::f32).matrix("gate", E, c.hidden_size);
    if (c.topk_method == "noaux_tc") {
      bias_ = backend::Ops<B>::vector_f32(w.get("gate.e_score_correction_bias", Shape{E}, {DType::f32, DType::bf16}));
    } else if (w.has("gate.e_score_correction_bias")) {
      throw Error("e_score_correction_bias present but topk_method is " + c.topk_method,
                  at_tensor(w.prefix() + "gate.e_score_correction_bias", w.checkpoint().dir()));
    }
    // io::ModelConfig validates both strings; a hand-made MoeConfig maps as the rules always have
    // (anything but sigmoid scores by softmax, anything but greedy / noaux_tc limits groups by max).
    using R = backend::MoeRouting;
    routing_.n_experts = E;
    routing_.top_k = c.num_experts_per_tok;
    routing_.n_group = c.n_group;
    routing_.topk_group = c.topk_group;
    routing_.method = c.topk_method == "greedy"     ? R::Method::greedy
                      : c.topk_method == "noaux_tc" ? R::Method::noaux_tc
                                                    : R::Method::group_limited_greedy;
    routing_.scoring = c.scoring_func == "sigmoid" ? R::Scoring::sigmoid : R::Scoring::softmax;
    routing_.norm_topk_prob = c.norm_topk_prob;
    routing_.routed_scaling_factor = c.routed_scaling_factor;
    routing_.bias = c.topk_method == "noaux_tc" ? bias_.data() : nullptr;
    experts_.reserve(size_t(E));
    ffn_.reserve(size_t(E));
    for (int e = 0; e < E; ++e) {
      const Mlp<B>& m = experts_.emplace_back(w.sub("experts." + std::to_string(e)), c.hidden_size, c.moe_intermediate_size);
      ffn_.push_back({&m.gate_proj(), &m.up_proj(), &m.down_proj()});
    }
    if (c.n_shared_experts > 0)
      shared_.emplace(w.sub("shared_experts"), c.hidden_size, c.moe_intermediate_size * c.n_shared_experts);
  }
  // routing_.bias and ffn_ point into this object's own buffers, which a move carries along (a
  // copy would not: none is allowed).
  Moe(const Moe&) = delete;
  Moe& operator=(const Moe&) = delete;
  Moe(Moe&&) = default;
  Moe& operator=(Moe&&) = default;

  const MoeConfig& config() const { return c_; }

  // Routing for n tokens: idx [n, top_k] (descending selection score), weight [n, top_k], both on
  // B's device.
  void route(const float* x, int64_t n, int* idx, float* weight) const {
    backend::Buffer<B> logits(size_t(n * c_.n_routed_experts));
    backend::Ops<B>::linear(gate_, x, n, logits.data());
    backend::Ops<B>::moe_route(logits.data(), n, routing_, idx, weight);
  }

  // x: [n, d] -> y: [n, d] (overwritten).
  void forward(const float* x, int64_t n, float* y) const {
    const int K = c_.num_experts_per_tok;
    const int64_t d = c_.hidden_size;
    backend::IndexBuffer<B> idx(size_t(n * K));
    backend::Buffer<B> wt(size_t(n * K));
    route(x, n, idx.data(), wt.data());
    backend::ExpertFfn shared;  // read here: shared_ lives inside this object, which may have moved
    if (shared_) shared = {&shared_->gate_proj(), &shared_->up_proj(), &shared_->down_proj()};
    backend::Ops<B>::moe_experts(ffn_.data(), c_.n_routed_experts, shared_ ? &shared : nullptr, x, n, d, idx.data(),
                                 wt.data(), K, y);
  }

 private:
  MoeConfig c_;
  BlockQuantMatrix gate_;
  backend::Buffer<B> bias_;
  backend::MoeRouting routing_;
  std::vector<Mlp<B>> experts_;
  std::vector<backend::ExpertFfn> ffn_;  // experts_'s matrices, as Ops::moe_experts reads them
  std::optional<Mlp<B>> shared_;
};

}  // namespace deepseek::nn
