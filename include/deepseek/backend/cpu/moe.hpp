// The CPU backend's MoE primitives (nn/moe.hpp's header states the math): the router's selection
// and weights from its logits, and the routed experts' SwiGLU FFNs over the tokens grouped per
// expert.
#pragma once

#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/params.hpp"
#include "deepseek/core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

namespace deepseek::backend::cpu {

// y[0:n) = v.
inline void fill(float* y, int64_t n, float v) { std::fill(y, y + n, v); }

// Indices of the k largest values (ties: lower index first), in descending order of value.
inline void topk_indices(const float* v, int n, int k, int* out) {
  std::vector<int> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(idx.begin(), idx.begin() + k, out);
}

// logits [n, E] -> idx [n, top_k] (descending selection score), weight [n, top_k].
inline void moe_route(const float* logits, int64_t n, const MoeRouting& r, int* idx, float* weight) {
  using Method = MoeRouting::Method;
  const int E = r.n_experts, K = r.top_k;
  const bool sigmoid = r.scoring == MoeRouting::Scoring::sigmoid;
  std::vector<float> s(static_cast<size_t>(E)), choice(static_cast<size_t>(E)), group_score(static_cast<size_t>(r.n_group));
  std::vector<int> groups(size_t(r.topk_group));
  const int per_group = E / r.n_group;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) {
    const float* l = logits + t * E;
    if (sigmoid) {
      for (int e = 0; e < E; ++e) s[size_t(e)] = 1.0f / (1.0f + std::exp(-l[e]));
    } else {
      std::copy(l, l + E, s.begin());
      softmax(s.data(), E);
    }
    for (int e = 0; e < E; ++e) choice[size_t(e)] = s[size_t(e)] + (r.bias ? r.bias[e] : 0.0f);
    if (r.method != Method::greedy && r.n_group > 1) {
      for (int g = 0; g < r.n_group; ++g) {
        const float* v = choice.data() + g * per_group;
        if (r.method == Method::noaux_tc) {  // sum of the group's two best
          int top2[2];
          const int k2 = std::min(2, per_group);
          topk_indices(v, per_group, k2, top2);
          group_score[size_t(g)] = v[top2[0]] + (k2 > 1 ? v[top2[1]] : 0.0f);
        } else {
          group_score[size_t(g)] = *std::max_element(v, v + per_group);
        }
      }
      topk_indices(group_score.data(), r.n_group, r.topk_group, groups.data());
      std::vector<bool> keep(size_t(r.n_group), false);
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
      if (r.norm_topk_prob)
        for (int k = 0; k < K; ++k) wt[k] /= (sum + 1e-20f);
      for (int k = 0; k < K; ++k) wt[k] *= r.routed_scaling_factor;
    } else if (r.norm_topk_prob && K > 1) {
      for (int k = 0; k < K; ++k) wt[k] /= (sum + 1e-20f);
    } else {
      for (int k = 0; k < K; ++k) wt[k] *= r.routed_scaling_factor;
    }
  }
}

// y [n, d] = down(silu(gate x) * up x): one SwiGLU FFN (nn::Mlp's forward, as the shared expert).
inline void swiglu(const ExpertFfn& f, const float* x, int64_t n, float* y) {
  const int64_t inter = f.gate_proj->rows();
  std::vector<float> g(size_t(n * inter)), u(size_t(n * inter));
  linear(*f.gate_proj, x, n, g.data());
  linear(*f.up_proj, x, n, u.data());
  silu_mul(g.data(), u.data(), n * inter);
  linear(*f.down_proj, g.data(), n, y);
}

// y [n, d] += sum_k weight[t, k] * expert_{idx[t, k]}(x[t]) over E SwiGLU experts
// (down(silu(gate x) * up x)). Tokens are grouped per expert so each expert runs one GEMM over its
// tokens; experts with no tokens cost nothing. With at least two active experts per thread, whole
// experts run one per thread; each token sums its experts in ascending order either way, so
// results do not depend on the thread count.
inline void moe_experts_grouped(const ExpertFfn* experts, int E, const float* x, int64_t n, int64_t d, const int* idx,
                                const float* weight, int K, float* y) {
  // Tokens per expert with their gate weights, in token order; slot[e][i]: where token i of
  // expert e goes among its token's K outputs, which are kept in ascending expert order.
  std::vector<std::vector<std::pair<int64_t, float>>> tokens(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t)
    for (int k = 0; k < K; ++k) tokens[size_t(idx[t * K + k])].push_back({t, weight[t * K + k]});
  std::vector<std::vector<int>> slot(static_cast<size_t>(E));
  std::vector<int> used(size_t(n), 0);
  std::vector<float> weight_of(size_t(n * K));
  for (int e = 0; e < E; ++e)
    for (const auto& [t, w] : tokens[size_t(e)]) {
      const int k = used[size_t(t)]++;
      slot[size_t(e)].push_back(k);
      weight_of[size_t(t * K + k)] = w;
    }
  std::vector<float> out(size_t(n * K * d));
  auto run = [&](int e) {
    const auto& toks = tokens[size_t(e)];
    const ExpertFfn& f = experts[e];
    const int64_t m = int64_t(toks.size());
    static thread_local std::vector<float> xin, xout;
    xin.resize(size_t(m * d));
    xout.resize(size_t(m * d));
    for (int64_t i = 0; i < m; ++i) std::copy(x + toks[size_t(i)].first * d, x + (toks[size_t(i)].first + 1) * d, xin.data() + i * d);
    swiglu(f, xin.data(), m, xout.data());
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
        axpy(weight_of[size_t(t * K + k)], out.data() + (t * K + k) * d, routed.data(), d);
      float* yt = y + t * d;
      for (int64_t i = 0; i < d; ++i) yt[i] += routed[size_t(i)];
    }
  });
}

// The same for one token (decode), as two jobs over all of its experts and the shared one: whole
// experts per thread left the other thread waiting for the last expert taken (up to a sixth of the
// routed weights at V2-Lite's 6 of 64), and row-split GEMVs cost a fork and join per matrix.
//   job 1: units of gate_proj / up_proj rows (64, FP8: one 128-row scale block) of every expert:
//          h_m[r] = silu(gate_m x)[r] * (up_m x)[r]
//   job 2: units of 32 output rows (FP8: 128): the shared expert's down_proj rows into y, then every routed
//          expert's down_proj rows summed in ascending expert order and added, the order
//          moe_experts_grouped sums in. Each row's products are those of one whole-matrix linear
//          (the GEMV kernels chunk rows from 32-row-aligned starts), so the two agree bit for bit
//          (tests/nn/test_linear.cpp).
// y [d] is overwritten (shared may be null: no shared expert).
inline void moe_experts_token(const ExpertFfn* experts, const ExpertFfn* shared, const float* x, int64_t d,
                              const int* idx, const float* weight, int K, float* y) {
  struct Part {
    const ExpertFfn* f;
    float w;
    int64_t inter, h, unit;  // h: offset in hs
  };
  std::vector<Part> parts;
  if (shared) parts.push_back({shared, 1.0f, 0, 0, 0});
  std::vector<std::pair<int, float>> routed(static_cast<size_t>(K));
  for (int k = 0; k < K; ++k) routed[size_t(k)] = {idx[k], weight[k]};
  std::sort(routed.begin(), routed.end());  // by expert (top-k ids are distinct)
  for (const auto& [e, w] : routed) parts.push_back({&experts[e], w, 0, 0, 0});
  int64_t h_total = 0;
  for (Part& p : parts) {
    p.inter = p.f->gate_proj->rows();
    p.h = h_total;
    h_total += p.inter;
    p.unit = p.f->gate_proj->dtype() == DType::f8_e4m3 ? p.f->gate_proj->block_rows : 64;
  }
  std::vector<int64_t> first_unit;  // job 1: part m's units are [first_unit[m], first_unit[m + 1])
  first_unit.assign(parts.size() + 1, 0);
  for (size_t m = 0; m < parts.size(); ++m)
    first_unit[m + 1] = first_unit[m] + (parts[m].inter + parts[m].unit - 1) / parts[m].unit;
  std::vector<float> hs(static_cast<size_t>(h_total));
  const int64_t units1 = first_unit.back();
  auto gate_up = [&](int64_t b, int64_t e) {
    float u[128];
    size_t m = size_t(std::upper_bound(first_unit.begin(), first_unit.end(), b) - first_unit.begin()) - 1;
    for (int64_t i = b; i < e; ++i) {
      while (i >= first_unit[m + 1]) ++m;
      const Part& p = parts[m];
      const int64_t r0 = (i - first_unit[m]) * p.unit, r1 = std::min(p.inter, r0 + p.unit);
      float* h = hs.data() + p.h + r0;
      for (int64_t c0 = r0; c0 < r1; c0 += 128) {  // u holds 128 rows
        const int64_t c1 = std::min(r1, c0 + 128);
        linear_rows(*p.f->gate_proj, c0, c1, x, 1, h + (c0 - r0));
        linear_rows(*p.f->up_proj, c0, c1, x, 1, u);
        silu_mul(h + (c0 - r0), u, c1 - c0);
      }
    }
  };
  parallel_for(units1, gate_up, 1, units1);
  const size_t first_routed = shared ? 1 : 0;
  // FP8: units of one 128-row scale block, since every linear_rows call of the e4m3 kernel first
  // prepares the input (inter floats); at 32 rows that was an eighth of the weights' bytes again.
  const int64_t u2 = parts.back().f->down_proj->dtype() == DType::f8_e4m3 ? 128 : 32;
  const int64_t units2 = (d + u2 - 1) / u2;
  auto down = [&](int64_t b, int64_t e) {
    float out[128], sum[128];
    for (int64_t i = b; i < e; ++i) {
      const int64_t a = i * u2, len = std::min<int64_t>(u2, d - a);
      if (shared) linear_rows(*shared->down_proj, a, a + len, hs.data(), 1, y + a);
      else fill(y + a, len, 0.0f);
      fill(sum, len, 0.0f);
      for (size_t m = first_routed; m < parts.size(); ++m) {
        linear_rows(*parts[m].f->down_proj, a, a + len, hs.data() + parts[m].h, 1, out);
        axpy(parts[m].w, out, sum, len);
      }
      for (int64_t r = 0; r < len; ++r) y[a + r] += sum[r];
    }
  };
  parallel_for(units2, down, 1, units2);
}

// y [n, d] = shared(x) (when given) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]).
inline void moe_experts(const ExpertFfn* experts, int E, const ExpertFfn* shared, const float* x, int64_t n, int64_t d,
                        const int* idx, const float* weight, int K, float* y) {
  if (n == 1) {
    moe_experts_token(experts, shared, x, d, idx, weight, K, y);
    return;
  }
  if (shared) swiglu(*shared, x, n, y);
  else fill(y, n * d, 0.0f);
  moe_experts_grouped(experts, E, x, n, d, idx, weight, K, y);
}

}  // namespace deepseek::backend::cpu

