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
// Tokens are grouped per expert so each expert runs one GEMM over its tokens; experts with no
// tokens cost nothing. With at least two active experts per thread, whole experts run one per
// thread; each token sums its experts in ascending order either way, so results do not depend on
// the thread count.
#pragma once

#include "deepseek/backend/cpu/backend.hpp"
#include "deepseek/core/parallel.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/mlp.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
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

// Indices of the k largest values (ties: lower index first), in descending order of value.
inline void topk_indices(const float* v, int n, int k, int* out) {
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(idx.begin(), idx.begin() + k, out);
}

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
      bias_.resize(size_t(E));
      backend::cpu::to_f32(w.get("gate.e_score_correction_bias", Shape{E}, {DType::f32, DType::bf16}), bias_.data());
    } else if (w.has("gate.e_score_correction_bias")) {
      throw Error("e_score_correction_bias present but topk_method is " + c.topk_method,
                  at_tensor(w.prefix() + "gate.e_score_correction_bias", w.checkpoint().dir()));
    }
    experts_.reserve(size_t(E));
    for (int e = 0; e < E; ++e) experts_.emplace_back(w.sub("experts." + std::to_string(e)), c.hidden_size, c.moe_intermediate_size);
    if (c.n_shared_experts > 0)
      shared_.emplace(w.sub("shared_experts"), c.hidden_size, c.moe_intermediate_size * c.n_shared_experts);
  }

  const MoeConfig& config() const { return c_; }

  // Routing for n tokens: idx [n, top_k] (descending selection score), weight [n, top_k].
  void route(const float* x, int64_t n, int* idx, float* weight) const {
    const int E = c_.n_routed_experts, K = c_.num_experts_per_tok;
    std::vector<float> logits(size_t(n * E));
    backend::Ops<B>::linear(gate_, x, n, logits.data());
    std::vector<float> s(static_cast<size_t>(E)), choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(c_.n_group));
    std::vector<int> groups(size_t(c_.topk_group));
    const int per_group = E / c_.n_group;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < n; ++t) {
      const float* l = logits.data() + t * E;
      const bool sigmoid = c_.scoring_func == "sigmoid";
      if (sigmoid) {
        for (int e = 0; e < E; ++e) s[size_t(e)] = 1.0f / (1.0f + std::exp(-l[e]));
      } else {
        std::copy(l, l + E, s.begin());
        backend::Ops<B>::softmax(s.data(), E);
      }
      for (int e = 0; e < E; ++e) choice[size_t(e)] = s[size_t(e)] + (bias_.empty() ? 0.0f : bias_[size_t(e)]);
      if (c_.topk_method != "greedy" && c_.n_group > 1) {
        for (int g = 0; g < c_.n_group; ++g) {
          const float* v = choice.data() + g * per_group;
          if (c_.topk_method == "noaux_tc") {  // sum of the group's two best
            int top2[2];
            const int k2 = std::min(2, per_group);
            topk_indices(v, per_group, k2, top2);
            group_score[size_t(g)] = v[top2[0]] + (k2 > 1 ? v[top2[1]] : 0.0f);
          } else {
            group_score[size_t(g)] = *std::max_element(v, v + per_group);
          }
        }
        topk_indices(group_score.data(), c_.n_group, c_.topk_group, groups.data());
        std::vector<bool> keep(size_t(c_.n_group), false);
        for (int g : groups) keep[size_t(g)] = true;
        for (int e = 0; e < E; ++e)
          if (!keep[size_t(e / per_group)]) choice[size_t(e)] = neg_inf;
      }
      int* it = idx + t * K;
      float* wt = weight + t * K;
      topk_indices(choice.data(), E, K, it);
      float sum = 0;
      for (int k = 0; k < K; ++k) sum += (wt[k] = s[size_t(it[k])]);
      if (sigmoid) {
        if (c_.norm_topk_prob)
          for (int k = 0; k < K; ++k) wt[k] /= (sum + 1e-20f);
        for (int k = 0; k < K; ++k) wt[k] *= c_.routed_scaling_factor;
      } else if (c_.norm_topk_prob && K > 1) {
        for (int k = 0; k < K; ++k) wt[k] /= (sum + 1e-20f);
      } else {
        for (int k = 0; k < K; ++k) wt[k] *= c_.routed_scaling_factor;
      }
    }
  }

  // x: [n, d] -> y: [n, d] (overwritten).
  void forward(const float* x, int64_t n, float* y) const {
    const int E = c_.n_routed_experts, K = c_.num_experts_per_tok;
    const int64_t d = c_.hidden_size;
    std::vector<int> idx(size_t(n * K));
    std::vector<float> wt(size_t(n * K));
    route(x, n, idx.data(), wt.data());
    // Tokens per expert with their gate weights, in token order; slot[e][i]: where token i of
    // expert e goes among its token's K outputs, which are kept in ascending expert order.
    std::vector<std::vector<std::pair<int64_t, float>>> tokens(static_cast<size_t>(E));
    for (int64_t t = 0; t < n; ++t)
      for (int k = 0; k < K; ++k) tokens[size_t(idx[size_t(t * K + k)])].push_back({t, wt[size_t(t * K + k)]});
    std::vector<std::vector<int>> slot(static_cast<size_t>(E));
    std::vector<int> used(size_t(n), 0);
    std::vector<float> weight_of(size_t(n * K));
    for (int e = 0; e < E; ++e)
      for (const auto& [t, w] : tokens[size_t(e)]) {
        const int k = used[size_t(t)]++;
        slot[size_t(e)].push_back(k);
        weight_of[size_t(t * K + k)] = w;
      }
    if (shared_) {
      shared_->forward(x, n, y);
    } else {
      std::fill(y, y + n * d, 0.0f);
    }
    std::vector<float> out(size_t(n * K * d));
    auto run = [&](int e) {
      const auto& toks = tokens[size_t(e)];
      const int64_t m = int64_t(toks.size());
      static thread_local std::vector<float> xin, xout;
      xin.resize(size_t(m * d));
      xout.resize(size_t(m * d));
      for (int64_t i = 0; i < m; ++i) std::copy(x + toks[size_t(i)].first * d, x + (toks[size_t(i)].first + 1) * d, xin.data() + i * d);
      experts_[size_t(e)].forward(xin.data(), m, xout.data());
      for (int64_t i = 0; i < m; ++i)
        std::copy(xout.data() + i * d, xout.data() + (i + 1) * d,
                  out.data() + (toks[size_t(i)].first * K + slot[size_t(e)][size_t(i)]) * d);
    };
    std::vector<int> active;
    for (int e = 0; e < E; ++e)
      if (!tokens[size_t(e)].empty()) active.push_back(e);
    const int threads = num_threads();
    if (threads > 1 && int(active.size()) >= 2 * threads) {
      // Each thread runs whole experts, one at a time, largest first, taken from a shared
      // counter. Every expert's GEMM streams its weights once on one core; splitting each small
      // GEMM over the threads instead costs a fork and join per matrix (3 per expert) and leaves
      // cores idle at every join. Measured on the V2-Lite-shaped models: 128-token prefill MoE
      // 0.83 -> 0.70 s; decode bf16 +5-7%, FP8 +4-9%; the demo model +12%.
      std::stable_sort(active.begin(), active.end(),
                       [&](int a, int b) { return tokens[size_t(a)].size() > tokens[size_t(b)].size(); });
      std::atomic<size_t> next{0};
      parallel_for(threads, [&](int64_t, int64_t) {
        for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < active.size();) run(active[i]);
      });
    } else {
      for (int e : active) run(e);
    }
    // Sum each token's experts in ascending expert order (the same order whatever ran where).
    parallel_for(n, [&](int64_t t0, int64_t t1) {
      std::vector<float> routed(static_cast<size_t>(d));
      for (int64_t t = t0; t < t1; ++t) {
        std::fill(routed.begin(), routed.end(), 0.0f);
        for (int k = 0; k < used[size_t(t)]; ++k)
          backend::Ops<B>::axpy(weight_of[size_t(t * K + k)], out.data() + (t * K + k) * d, routed.data(), d);
        float* yt = y + t * d;
        for (int64_t i = 0; i < d; ++i) yt[i] += routed[size_t(i)];
      }
    });
  }

 private:
  MoeConfig c_;
  BlockQuantMatrix gate_;
  std::vector<float> bias_;
  std::vector<Mlp<B>> experts_;
  std::optional<Mlp<B>> shared_;
};

}  // namespace deepseek::nn
