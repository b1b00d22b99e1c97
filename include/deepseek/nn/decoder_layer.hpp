// One decoder layer of the V2/V3 family:
//   h = x + Attn(RMSNorm_attn(x));  y = h + FFN(RMSNorm_ffn(h))
//   input_layernorm, self_attn.*, post_attention_layernorm, mlp.* (dense SwiGLU for layers below
//   first_k_dense_replace or off the moe_layer_freq grid, DeepSeekMoE otherwise).
// Attn is MLA (mla.hpp), or plain multi-head attention for use_mla: false (attention.hpp: the
// DeepSeek-OCR decoder; q/k/v/o_proj, rotate-half RoPE over the whole head_dim).
// The MTP module reuses it as its transformer block. V3.2 configs (index_n_heads > 0) give MLA its
// DSA indexer (self_attn.indexer.*, dsa.hpp).
#pragma once

#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/attention.hpp"
#include "deepseek/nn/dsa.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/mla.hpp"
#include "deepseek/nn/mlp.hpp"
#include "deepseek/nn/moe.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/rope.hpp"

#include <optional>
#include <string>
#include <vector>

namespace deepseek::nn {

template <class B>
class DecoderLayer {
 public:
  DecoderLayer() = default;
  // `layer` decides dense vs MoE through the config (first_k_dense_replace, moe_layer_freq).
  DecoderLayer(const io::Weights& w, const io::ModelConfig& c, int layer, const Rope& rope, float softmax_scale,
               IndexerPrecision indexer_precision = IndexerPrecision::f32)
      : d_(c.hidden_size),
        input_layernorm_(w, "input_layernorm", c.hidden_size, float(c.rms_norm_eps)),
        post_attention_layernorm_(w, "post_attention_layernorm", c.hidden_size, float(c.rms_norm_eps)) {
    if (c.use_mla) {
      mla_.emplace(w.sub("self_attn"), MlaConfig::from(c), rope, softmax_scale, make_indexer(w, c, indexer_precision));
    } else {
      const std::string config_json = w.checkpoint().dir() + "/config.json";
      if (c.has_indexer())
        throw Error("the DSA indexer (index_n_heads > 0) needs MLA, but use_mla is false", at_field("use_mla", config_json));
      if (c.attention_bias)
        throw Error("attention_bias: true with plain multi-head attention (use_mla: false) is not supported",
                    at_field("attention_bias", config_json));
      mha_.emplace(w.sub("self_attn"), AttentionConfig::from(c), Rope(c, c.head_dim, RopeLayout::half_split));
    }
    if (c.is_moe_layer(layer)) {
      moe_.emplace(w.sub("mlp"), MoeConfig::from(c));
    } else {
      mlp_.emplace(w.sub("mlp"), c.hidden_size, c.intermediate_size);
    }
  }

  bool is_moe() const { return moe_.has_value(); }
  const Moe<B>* moe() const { return moe_ ? &*moe_ : nullptr; }
  bool is_mla() const { return mla_.has_value(); }
  // The MLA block (V2/V3 checkpoints); an error for use_mla: false layers.
  const Mla<B>& self_attention() const {
    if (!mla_) throw Error("this decoder layer has plain multi-head attention (use_mla: false), not MLA");
    return *mla_;
  }
  // Values per token this layer keeps in the KV cache.
  static int64_t cache_row_width(const io::ModelConfig& c) {
    return c.use_mla ? MlaConfig::from(c).row_width() : AttentionConfig::from(c).cache_width();
  }

  // h: [n, d] residual stream, updated in place; tokens at positions p0 .. p0+n-1.
  // `selection` (V3.2): receives the positions each query attended to.
  void forward(float* h, int64_t n, int64_t p0, const CacheView& cache, MlaMode mode = MlaMode::automatic,
               BasicSelection<B>* selection = nullptr) const {
    attend(h, n, p0, cache, mode, selection);
    feed_forward(h, n);
  }

  // The two residual halves, apart so tests and tools can look between them.
  void attend(float* h, int64_t n, int64_t p0, const CacheView& cache, MlaMode mode = MlaMode::automatic,
              BasicSelection<B>* selection = nullptr) const {
    attend_segments(h, {Segment{0, n, p0, cache, selection}}, mode);
  }
  // attend() for several sequences in one call (h: [N, d], the segments' rows in order; each
  // segment its own positions and cache): MLA's projections see all N rows as one matrix
  // (Mla::forward_segments); plain attention (use_mla: false) runs segment by segment (`mode`
  // and the selections are MLA's).
  using Segment = typename Mla<B>::Segment;
  void attend_segments(float* h, const std::vector<Segment>& segs, MlaMode mode = MlaMode::automatic) const {
    const int64_t N = segs.empty() ? 0 : segs.back().off + segs.back().n;
    backend::Buffer<B> a(static_cast<size_t>(N * d_)), b(static_cast<size_t>(N * d_));
    input_layernorm_.forward(h, N, a.data());
    if (mla_) {
      mla_->forward_segments(a.data(), segs, b.data(), mode);
    } else {
      for (const Segment& g : segs) mha_->forward(a.data() + g.off * d_, g.n, g.p0, g.cache, b.data() + g.off * d_);
    }
    backend::Ops<B>::add(h, b.data(), N * d_);
  }
  // out = post_attention_layernorm(h): what the MLP / MoE reads.
  void ffn_input(const float* h, int64_t n, float* out) const { post_attention_layernorm_.forward(h, n, out); }
  void feed_forward(float* h, int64_t n) const {
    backend::Buffer<B> a(static_cast<size_t>(n * d_)), b(static_cast<size_t>(n * d_));
    ffn_input(h, n, a.data());
    if (moe_) moe_->forward(a.data(), n, b.data());
    else mlp_->forward(a.data(), n, b.data());
    backend::Ops<B>::add(h, b.data(), n * d_);
  }

 private:
  static std::optional<Indexer<B>> make_indexer(const io::Weights& w, const io::ModelConfig& c, IndexerPrecision precision) {
    if (!c.has_indexer()) return std::nullopt;
    return Indexer<B>(w.sub("self_attn").sub("indexer"), IndexerConfig::from(c),
                      Rope(c, c.qk_rope_head_dim, RopeLayout::half_split), precision);
  }

  int64_t d_ = 0;
  RmsNorm<B> input_layernorm_, post_attention_layernorm_;
  std::optional<Mla<B>> mla_;
  std::optional<Attention<B>> mha_;
  std::optional<Mlp<B>> mlp_;
  std::optional<Moe<B>> moe_;
};

}  // namespace deepseek::nn
