// DeepSeek-V4 attention (V4_NOTES §5): one shared K = V head, H query heads of D, partial
// interleaved RoPE on the trailing rd channels of each head, attention sinks, a sliding window
// of W keys, and in CSA / HCA layers compressed entries appended after the window keys.
//   qr = rms(x . wq_a^T; q_norm)  [q_lora];  q = (qr . wq_b^T).view(H, D);  q = q rms(q) (no weight)
//   q = RoPE(q, t);  kv = RoPE(rms(x . wkv^T; kv_norm), t)  [D]   (key = value)
//   keys of query t: kv_j for t - W < j <= t, then the compressed entries (nn/v4_compressor.hpp):
//   HCA every w < (t + 1) / m, CSA the indexer's selection
//   p_j = exp(s_j) / (sum exp(s_j') + exp(attn_sink_h)),  s_j = q_h . k_j / sqrt(D);  o_h = sum p_j k_j
//   o = RoPE(o, -t) (V carries RoPE: rotate back);  groups o_j [H D / g] (heads j H/g ..):
//   y_j = o_j . wo_a[j r : (j + 1) r]^T;  out = concat(y) . wo_b^T  [d]
// Sliding layers rotate with rope_theta; CSA / HCA layers with compress_rope_theta + YaRN (no
// mscale), for q, kv, the entries and the indexer alike.
// Tensors under "layers.N.attn.": wq_a.weight [q_lora, d], q_norm.weight [q_lora],
// wq_b.weight [H D, q_lora], wkv.weight [D, d], kv_norm.weight [D], wo_a.weight [g r, H D / g],
// wo_b.weight [d, g r], attn_sink [H]; compressor.*, indexer.* (nn/v4_compressor.hpp).
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/v4_config.hpp"
#include "deepseek/nn/rope.hpp"
#include "deepseek/nn/v4_compressor.hpp"
#include "deepseek/nn/v4_weights.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::nn {

// The rotation tables of V4: forward, and negated (the inverse rotation V needs), on rd channels.
class V4Rope {
 public:
  V4Rope() = default;
  V4Rope(double theta, const io::RopeScaling& scaling, int64_t rd) {
    io::ModelConfig c;
    c.rope_theta = theta;
    c.rope_scaling = scaling;
    fwd_ = Rope(c, rd, RopeLayout::interleaved).inv_freq();
    inv_ = fwd_;
    for (double& f : inv_) f = -f;
    dim_ = rd;
  }
  // attention_factor 1: transformers forces it for V4 (no YaRN mscale).
  backend::RopeParams params(bool inverse = false) const {
    return {inverse ? inv_.data() : fwd_.data(), dim_, true, 1.0};
  }

 private:
  std::vector<double> fwd_, inv_;
  int64_t dim_ = 0;
};

// One layer's decode state (V4_NOTES §10): the last W - 1 window keys, and in CSA / HCA layers
// the compressor's (and in CSA the indexer's) state.
template <class B>
struct V4AttentionState {
  backend::Buffer<B> window;  // [rows, D], keys of positions (cache length - rows) ..
  int64_t window_rows = 0;
  V4CompressorState<B> compressed, index;
};

template <class B>
class V4Attention {
 public:
  using Ops = backend::Ops<B>;
  V4Attention() = default;
  V4Attention(const io::Weights& w, const io::ModelConfig& c, const io::V4Config& v, io::V4LayerType type, int64_t m,
              const V4Rope& rope)
      : type_(type),
        m_(m),
        H_(c.num_attention_heads),
        D_(c.head_dim),
        W_(v.sliding_window),
        g_(v.o_groups),
        r_(v.o_lora_rank),
        eps_(float(c.rms_norm_eps)),
        rope_(rope.params()),
        unrope_(rope.params(true)) {
    const int64_t d = c.hidden_size, q_lora = c.q_lora_rank, HD = H_ * D_;
    wq_a_ = v4_matrix(w, "wq_a", q_lora, d);
    q_norm_ = Ops::vector_f32(w.get("q_norm.weight", Shape{q_lora}, {DType::f32, DType::bf16}));
    wq_b_ = v4_matrix(w, "wq_b", HD, q_lora);
    wkv_ = v4_matrix(w, "wkv", D_, d);
    kv_norm_ = Ops::vector_f32(w.get("kv_norm.weight", Shape{D_}, {DType::f32, DType::bf16}));
    wo_a_ = v4_matrix(w, "wo_a", g_ * r_, HD / g_);
    wo_b_ = v4_matrix(w, "wo_b", d, g_ * r_);
    sinks_ = Ops::vector_f32(w.get("attn_sink", Shape{H_}, {DType::f32, DType::bf16}));
    ones_.resize(size_t(D_));
    Ops::fill(ones_.data(), D_, 1.0f);
    if (type != io::V4LayerType::sliding)
      compressor_ = V4Compressor<B>(w.sub("compressor"), d, D_, m, type == io::V4LayerType::csa, eps_, rope_);
    if (type == io::V4LayerType::csa)
      indexer_ = std::make_shared<V4Indexer<B>>(w.sub("indexer"), d, q_lora, v.index_n_heads, v.index_head_dim,
                                                v.index_topk, m, eps_, rope_);
  }

  io::V4LayerType type() const { return type_; }
  int64_t index_topk() const { return indexer_ ? indexer_->topk() : 0; }

  // x [n, d] (after attn_norm) at positions p0 .. p0 + n - 1 -> out [n, d]; advances st.
  // selection: optional [n, index_topk] host copy of the indexer's choice (CSA layers).
  void forward(const float* x, int64_t n, int64_t p0, V4AttentionState<B>& st, float* out,
               int32_t* selection = nullptr) const {
    const int64_t HD = H_ * D_, q_lora = wq_a_.rows();
    backend::Buffer<B> qr(size_t(n * q_lora)), q(size_t(n * HD));
    Ops::linear(wq_a_, x, n, qr.data());
    Ops::rmsnorm(qr.data(), n, q_lora, q_norm_.data(), eps_, qr.data());
    Ops::linear(wq_b_, qr.data(), n, q.data());
    Ops::rmsnorm(q.data(), n * H_, D_, ones_.data(), eps_, q.data());
    Ops::rope(q.data() + D_ - rope_.dim, n, H_, HD, D_, p0, rope_);
    // Keys: the held window rows, then the n new ones.
    const int64_t held = st.window_rows, nk = held + n;
    backend::Buffer<B> keys(size_t(nk * D_));
    Ops::copy2d(st.window.data(), D_, keys.data(), D_, held, D_);
    float* kv = keys.data() + held * D_;
    Ops::linear(wkv_, x, n, kv);
    Ops::rmsnorm(kv, n, D_, kv_norm_.data(), eps_, kv);
    Ops::rope(kv + D_ - rope_.dim, n, 1, D_, D_, p0, rope_);

    backend::IndexBuffer<B> idx, count;
    if (type_ != io::V4LayerType::sliding) compressor_.update(x, n, p0, st.compressed);
    if (indexer_) {
      idx = backend::IndexBuffer<B>(size_t(n * indexer_->topk()), -1);
      count = backend::IndexBuffer<B>(size_t(n), 0);
      indexer_->select(qr.data(), x, n, p0, st.index, idx.data(), count.data());
      if (selection) Ops::download(idx.data(), n * indexer_->topk(), selection);
    }
    backend::Buffer<B> o(size_t(n * HD));
    Ops::v4_attention(q.data(), n, p0, H_, D_, float(1.0 / std::sqrt(double(D_))), keys.data(), p0 - held, nk, W_,
                      st.compressed.entries.data(), type_ == io::V4LayerType::hca ? m_ : 0,
                      indexer_ ? idx.data() : nullptr, indexer_ ? count.data() : nullptr, index_topk(), sinks_.data(),
                      o.data());
    Ops::rope(o.data() + D_ - rope_.dim, n, H_, HD, D_, p0, unrope_);
    const int64_t gw = HD / g_;
    backend::Buffer<B> y(size_t(n * g_ * r_));
    for (int64_t j = 0; j < g_; ++j)
      Ops::linear_rows(wo_a_, j * r_, (j + 1) * r_, o.data() + j * gw, n, y.data() + j * r_, HD, g_ * r_);
    Ops::linear(wo_b_, y.data(), n, out);

    const int64_t keep = std::min(W_ - 1, nk);  // the next query (t + 1) sees keys > t + 1 - W
    backend::Buffer<B> window(size_t(keep * D_));
    Ops::copy2d(keys.data() + (nk - keep) * D_, D_, window.data(), D_, keep, D_);
    st.window = std::move(window);
    st.window_rows = keep;
  }

 private:
  io::V4LayerType type_ = io::V4LayerType::sliding;
  int64_t m_ = 0, H_ = 0, D_ = 0, W_ = 0, g_ = 0, r_ = 0;
  float eps_ = 0;
  backend::RopeParams rope_, unrope_;
  BlockQuantMatrix wq_a_, wq_b_, wkv_, wo_a_, wo_b_;
  backend::Buffer<B> q_norm_, kv_norm_, sinks_, ones_;
  V4Compressor<B> compressor_;
  std::shared_ptr<const V4Indexer<B>> indexer_;  // CSA only
};

}  // namespace deepseek::nn
