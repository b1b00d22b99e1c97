// Plain multi-head attention (configs with use_mla: false, e.g. the DeepSeek-OCR decoder):
//   q = W_q x [H, hd], k = W_k x [KVH, hd], v = W_v x [KVH, hd]     (q_proj, k_proj, v_proj)
//   RoPE (half-split pairs (i, i + hd/2), as Llama / the OCR decoder) on q and k at position p
//   o_h(s) = sum_{t <= s} softmax_t(q_h(s) . k_g(t) / sqrt(hd)) v_g(t),  g = h / (H / KVH)
//   out = W_o [o_1 .. o_H]                                           (o_proj)
// The cache holds k (after RoPE) then v: 2 * KVH * hd values per token and layer.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/rope.hpp"

#include <cmath>
#include <vector>

namespace deepseek::nn {

struct AttentionConfig {
  int64_t hidden_size = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;

  int64_t cache_width() const { return 2 * num_kv_heads * head_dim; }
  static AttentionConfig from(const io::ModelConfig& c) {
    return AttentionConfig{c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim};
  }
};

template <class B>
class Attention {
 public:
  Attention() = default;
  Attention(const io::Weights& w, const AttentionConfig& c, const Rope& rope) : c_(c), rope_(rope) {
    if (c.num_kv_heads < 1 || c.num_heads % c.num_kv_heads)
      throw Error("num_attention_heads must be a multiple of num_key_value_heads", at_tensor(w.prefix() + "k_proj.weight"));
    q_proj_ = w.matrix("q_proj", c.num_heads * c.head_dim, c.hidden_size);
    k_proj_ = w.matrix("k_proj", c.num_kv_heads * c.head_dim, c.hidden_size);
    v_proj_ = w.matrix("v_proj", c.num_kv_heads * c.head_dim, c.hidden_size);
    o_proj_ = w.matrix("o_proj", c.hidden_size, c.num_heads * c.head_dim);
  }

  const AttentionConfig& config() const { return c_; }

  // Same contract as Mla::forward: x [n, d] at positions p0.., rows written to `cache`, y [n, d].
  void forward(const float* x, int64_t n, int64_t p0, const CacheView& cache, float* y) const {
    using Ops = backend::Ops<B>;
    const int64_t H = c_.num_heads, G = c_.num_kv_heads, hd = c_.head_dim, kvw = G * hd;
    backend::Buffer<B> q(static_cast<size_t>(n * H * hd)), kv(static_cast<size_t>(n * 2 * kvw));
    Ops::linear(q_proj_, x, n, q.data());
    Ops::linear(k_proj_, x, n, kv.data(), -1, 2 * kvw);
    Ops::linear(v_proj_, x, n, kv.data() + kvw, -1, 2 * kvw);
    Ops::rope(q.data(), n, H, H * hd, hd, p0, rope_.params());
    Ops::rope(kv.data(), n, G, 2 * kvw, hd, p0, rope_.params());
    Ops::store_rows(cache, p0, 0, kv.data(), n, 2 * kvw, 2 * kvw);
    backend::Buffer<B> o(static_cast<size_t>(n * H * hd));
    Ops::mha_attention(q.data(), n, p0, H, G, hd, 1.0f / std::sqrt(float(hd)), cache, o.data());
    Ops::linear(o_proj_, o.data(), n, y);
  }

 private:
  AttentionConfig c_;
  Rope rope_;
  BlockQuantMatrix q_proj_, k_proj_, v_proj_, o_proj_;
};

}  // namespace deepseek::nn
