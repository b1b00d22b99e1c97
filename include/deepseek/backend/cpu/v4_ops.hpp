// The CPU primitives of DeepSeek-V4's blocks (the math is in the nn/ headers that call them:
// nn/mhc.hpp, nn/v4_compressor.hpp, nn/v4_attention.hpp, nn/v4_moe.hpp). Plain loops in f32, in
// the order transformers' DeepseekV4 computes; each is a reference first (no SIMD yet).
#pragma once

#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/moe.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/cpu/rope.hpp"
#include "deepseek/backend/params.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

namespace deepseek::backend::cpu {

// mHC weights of n tokens from mix [n, (2+hc)*hc] = rms(flatten X) . fn^T:
//   pre [n, hc] = sigmoid(mix_pre * scale[0] + base_pre) + eps
//   post [n, hc] = 2 sigmoid(mix_post * scale[1] + base_post)
//   comb [n, hc, hc] = Sinkhorn(softmax_row(mix_comb * scale[2] + base_comb) + eps): one column
//   normalisation, then (iters - 1) row + column pairs, eps added to every denominator.
inline void hc_mix(const float* mix, int64_t n, int64_t hc, const float* scale, const float* base, int iters, float eps,
                   float* pre, float* post, float* comb) {
  const int64_t w = (2 + hc) * hc;
  auto sigmoid = [](float v) { return 1.0f / (1.0f + std::exp(-v)); };
  for (int64_t t = 0; t < n; ++t) {
    const float* m = mix + t * w;
    for (int64_t j = 0; j < hc; ++j) {
      pre[t * hc + j] = sigmoid(m[j] * scale[0] + base[j]) + eps;
      post[t * hc + j] = 2.0f * sigmoid(m[hc + j] * scale[1] + base[hc + j]);
    }
    float* M = comb + t * hc * hc;
    for (int64_t j = 0; j < hc; ++j) {
      for (int64_t k = 0; k < hc; ++k) M[j * hc + k] = m[2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k];
      softmax(M + j * hc, hc);
      for (int64_t k = 0; k < hc; ++k) M[j * hc + k] += eps;
    }
    auto cols = [&] {
      for (int64_t k = 0; k < hc; ++k) {
        float s = 0;
        for (int64_t j = 0; j < hc; ++j) s += M[j * hc + k];
        for (int64_t j = 0; j < hc; ++j) M[j * hc + k] /= s + eps;
      }
    };
    cols();
    for (int it = 1; it < iters; ++it) {
      for (int64_t j = 0; j < hc; ++j) {
        float s = 0;
        for (int64_t k = 0; k < hc; ++k) s += M[j * hc + k];
        for (int64_t k = 0; k < hc; ++k) M[j * hc + k] /= s + eps;
      }
      cols();
    }
  }
}

// The hyper head's weights: pre [n, hc] = sigmoid(mix * scale[0] + base) + eps (not normalised).
inline void hc_head_mix(const float* mix, int64_t n, int64_t hc, const float* scale, const float* base, float eps,
                        float* pre) {
  for (int64_t i = 0; i < n * hc; ++i) pre[i] = 1.0f / (1.0f + std::exp(-(mix[i] * scale[0] + base[i % hc]))) + eps;
}

// y [n, d] = sum_j pre[t, j] * X[t, j, :] over the hc streams X [n, hc, d].
inline void hc_collapse(const float* pre, const float* X, int64_t n, int64_t hc, int64_t d, float* y) {
  for (int64_t t = 0; t < n; ++t) {
    float* yr = y + t * d;
    std::fill(yr, yr + d, 0.0f);
    for (int64_t j = 0; j < hc; ++j) axpy(pre[t * hc + j], X + (t * hc + j) * d, yr, d);
  }
}

// X'[t, k] = post[t, k] * f[t] + sum_j comb[t, j, k] * X[t, j], in place over X [n, hc, d].
inline void hc_expand(const float* post, const float* comb, const float* f, int64_t n, int64_t hc, int64_t d,
                      float* X) {
  std::vector<float> out(size_t(hc * d));
  for (int64_t t = 0; t < n; ++t) {
    float* Xt = X + t * hc * d;
    const float* M = comb + t * hc * hc;
    for (int64_t k = 0; k < hc; ++k) {
      float* o = out.data() + k * d;
      for (int64_t c = 0; c < d; ++c) o[c] = post[t * hc + k] * f[t * d + c];
      for (int64_t j = 0; j < hc; ++j) axpy(M[j * hc + k], Xt + j * d, o, d);
    }
    std::copy(out.begin(), out.end(), Xt);
  }
}

// Compressed entries of nb consecutive complete blocks w0 .. w0 + nb - 1 (ratio m, entry width Dc):
// a, z point at the first row of block w0 (row stride ld; z already holds + ape); with overlap
// (CSA) the rows of block w0 - 1 sit just before them whenever w0 > 0. Per channel c:
//   HCA: e[c] = sum_{r<m} softmax_r(z[wm + r, c]) a[wm + r, c]
//   CSA: the 2m slots {a[(w-1)m + r, c]} (first halves) and {a[wm + r, Dc + c]} (second halves)
// Then out[b] = RoPE(rms(e; norm_w), position w m) on its trailing rope.dim channels.
inline void v4_compress(const float* a, const float* z, int64_t ld, int64_t w0, int64_t nb, int64_t m, int64_t Dc,
                        bool overlap, const float* norm_w, float eps, const RopeParams& rope, float* out) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> za(size_t(2 * m)), ka(size_t(2 * m));
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t w = w0 + b;
    const float* ab = a + b * m * ld;
    const float* zb = z + b * m * ld;
    float* e = out + b * Dc;
    for (int64_t c = 0; c < Dc; ++c) {
      int64_t s = 0;
      if (overlap && w > 0)
        for (int64_t r = 0; r < m; ++r, ++s) {
          ka[size_t(s)] = ab[(r - m) * ld + c];
          za[size_t(s)] = zb[(r - m) * ld + c];
        }
      const int64_t col = overlap ? Dc + c : c;
      for (int64_t r = 0; r < m; ++r, ++s) {
        ka[size_t(s)] = ab[r * ld + col];
        za[size_t(s)] = zb[r * ld + col];
      }
      float mx = neg_inf;
      for (int64_t i = 0; i < s; ++i) mx = std::max(mx, za[size_t(i)]);
      float den = 0, num = 0;
      for (int64_t i = 0; i < s; ++i) {
        const float p = std::exp(za[size_t(i)] - mx);
        den += p;
        num += p * ka[size_t(i)];
      }
      e[c] = num / den;
    }
    rmsnorm(e, 1, Dc, norm_w, eps, e);
    rope_one(e + Dc - rope.dim, w * m, rope);
  }
}

// V4 attention of n queries q [n, H, D] at positions p0 .. over one shared K = V head:
//   the window keys[j] (position kpos0 + j, j < nk) with t - W < position <= t, then the
//   compressed entries comp[w]: the selection sel_idx[i, 0:sel_count[i]) when sel_idx is given
//   (CSA), else every w < (t + 1) / m (HCA; m = 0: none, sliding layers);
//   p = exp(s) / (sum exp(s) + exp(sink_h)), s = q.k * scale; o[i, h] = sum p v.
inline void v4_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t D, float scale, const float* keys,
                         int64_t kpos0, int64_t nk, int64_t W, const float* comp, int64_t m, const int32_t* sel_idx,
                         const int32_t* sel_count, int64_t sel_k, const float* sinks, float* o) {
  std::vector<const float*> rows;
  std::vector<float> s;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = p0 + i;
    rows.clear();
    for (int64_t j = std::max<int64_t>(0, t - W + 1 - kpos0); j < nk && kpos0 + j <= t; ++j)
      rows.push_back(keys + j * D);
    if (sel_idx) {
      for (int32_t k = 0; k < sel_count[i]; ++k) rows.push_back(comp + int64_t(sel_idx[i * sel_k + k]) * D);
    } else if (m > 0) {
      for (int64_t w = 0; w < (t + 1) / m; ++w) rows.push_back(comp + w * D);
    }
    s.resize(rows.size());
    for (int64_t h = 0; h < H; ++h) {
      const float* qh = q + (i * H + h) * D;
      float mx = sinks[h];
      for (size_t j = 0; j < rows.size(); ++j) mx = std::max(mx, s[j] = dot(qh, rows[j], D) * scale);
      float den = std::exp(sinks[h] - mx);
      float* oh = o + (i * H + h) * D;
      std::fill(oh, oh + D, 0.0f);
      for (size_t j = 0; j < rows.size(); ++j) {
        const float p = std::exp(s[j] - mx);
        den += p;
        axpy(p, rows[j], oh, D);
      }
      for (int64_t c = 0; c < D; ++c) oh[c] /= den;
    }
  }
}

// The lightning indexer's choice for n queries at positions p0 ..: over the entries w < (t + 1) / m
// of keys [*, c], score(w) = sum_h wt[i, h] ReLU(q[i, h] . keys[w]) * scale; idx[i, 0:count[i]) =
// the topk best (all visible when at most topk), ascending; the rest of the row is -1.
inline void v4_indexer_select(const float* q, const float* wt, int64_t n, int64_t p0, int64_t nI, int64_t c,
                              float scale, const float* keys, int64_t m, int64_t topk, int32_t* idx, int32_t* count) {
  std::vector<float> sc;
  std::vector<int32_t> order;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t nvis = (p0 + i + 1) / m;
    sc.assign(size_t(nvis), 0.0f);
    for (int64_t w = 0; w < nvis; ++w) {
      float acc = 0;
      for (int64_t h = 0; h < nI; ++h)
        acc += wt[i * nI + h] * std::max(0.0f, dot(q + (i * nI + h) * c, keys + w * c, c)) * scale;
      sc[size_t(w)] = acc;
    }
    order.resize(size_t(nvis));
    std::iota(order.begin(), order.end(), 0);
    const int64_t k = std::min(nvis, topk);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t x, int32_t y) {
      return sc[size_t(x)] > sc[size_t(y)] || (sc[size_t(x)] == sc[size_t(y)] && x < y);
    });
    std::sort(order.begin(), order.begin() + k);
    int32_t* row = idx + i * topk;
    std::fill(row, row + topk, -1);
    std::copy(order.begin(), order.begin() + k, row);
    count[i] = int32_t(k);
  }
}

// V4 routing from the gate logits [n, E]: s = sqrt(softplus(z)) (torch: z for z > 20) or sigmoid(z);
// experts = top-K of s + bias (bias may be null), or the row tid2eid[ids[t]] of a hash layer
// (tid2eid not null); idx ascending, weight = s[idx] / (sum s[idx] + 1e-20) * routed_scaling_factor.
inline void v4_route(const float* logits, int64_t n, int E, int K, bool sigmoid, const float* bias,
                     const int64_t* tid2eid, const int32_t* ids, float routed_scaling_factor, int* idx, float* weight) {
  std::vector<float> s(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t) {
    const float* l = logits + t * E;
    for (int e = 0; e < E; ++e)
      s[size_t(e)] =
          sigmoid ? 1.0f / (1.0f + std::exp(-l[e])) : std::sqrt(l[e] > 20.0f ? l[e] : std::log1p(std::exp(l[e])));
    int* it = idx + t * K;
    if (tid2eid) {
      for (int k = 0; k < K; ++k) it[k] = int(tid2eid[int64_t(ids[t]) * K + k]);
    } else {
      for (int e = 0; e < E; ++e) choice[size_t(e)] = s[size_t(e)] + (bias ? bias[e] : 0.0f);
      topk_indices(choice.data(), E, K, it);
    }
    std::sort(it, it + K);
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += s[size_t(it[k])];
    for (int k = 0; k < K; ++k) weight[t * K + k] = s[size_t(it[k])] / (sum + 1e-20f) * routed_scaling_factor;
  }
}

// One SwiGLU with V4's clamp over the rows x [n, d] -> y [n, d]:
//   y = w2 (silu(min(w1 x, L)) * clamp(w3 x, -L, L)); L <= 0 clamps nothing (the official code).
inline void v4_swiglu(const ExpertFfn& f, const float* x, int64_t n, float limit, float* y) {
  const int64_t I = f.gate_proj->rows();
  std::vector<float> g(size_t(n * I)), u(size_t(n * I));
  linear(*f.gate_proj, x, n, g.data());
  linear(*f.up_proj, x, n, u.data());
  if (limit > 0)
    for (size_t i = 0; i < g.size(); ++i) {
      g[i] = std::min(g[i], limit);
      u[i] = std::clamp(u[i], -limit, limit);
    }
  silu_mul(g.data(), u.data(), n * I);
  linear(*f.down_proj, g.data(), n, y);
}

// y [n, d] = shared(x) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]): each expert runs once over
// the rows that chose it (gathered), its output scaled and added back row by row.
inline void v4_moe_experts(const ExpertFfn* experts, int E, const ExpertFfn& shared, const float* x, int64_t n,
                           int64_t d, const int* idx, const float* weight, int K, float limit, float* y) {
  v4_swiglu(shared, x, n, limit, y);
  std::vector<std::vector<int64_t>> slots(static_cast<size_t>(E));  // (t * K + k) of the rows choosing expert e
  for (int64_t i = 0; i < n * K; ++i) slots[size_t(idx[i])].push_back(i);
  std::vector<float> xs, ys;
  for (int e = 0; e < E; ++e) {
    const auto& sl = slots[size_t(e)];
    if (sl.empty()) continue;
    const int64_t r = int64_t(sl.size());
    xs.resize(size_t(r * d));
    ys.resize(size_t(r * d));
    for (int64_t j = 0; j < r; ++j)
      std::copy(x + (sl[size_t(j)] / K) * d, x + (sl[size_t(j)] / K + 1) * d, xs.data() + j * d);
    v4_swiglu(experts[e], xs.data(), r, limit, ys.data());
    for (int64_t j = 0; j < r; ++j) axpy(weight[sl[size_t(j)]], ys.data() + j * d, y + (sl[size_t(j)] / K) * d, d);
  }
}

}  // namespace deepseek::backend::cpu
