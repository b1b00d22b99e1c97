// A DeepSeek-style model composed by hand from nn:: blocks, over decoder layers the caller picks
// from any MLA checkpoint (V2, V2-Lite, V3, R1, V3.1), on a backend B:
//
//   h = embed_tokens[ids]                                   model.embed_tokens.weight [vocab, d]
//   for each chosen layer l, in the order given:            model.layers.{l}.
//     h += Mla(RMSNorm(h))                                    input_layernorm, self_attn.*
//     h += Moe(RMSNorm(h)), or Mlp(RMSNorm(h)) when dense     post_attention_layernorm, mlp.*
//   logits = lm_head(RMSNorm(h[last]))                      model.norm.weight, lm_head.weight [vocab, d]
//                                                           (or embed_tokens when tie_word_embeddings)
//
// With every layer in order this is models::DeepSeekV3: the same blocks on the same weights, so
// the same logits (tests/models/test_compose.cpp). A subset (layers 0 and 1 of 61, a layer run
// twice) is a model of its own, each entry with its own layer of the KV cache. The forward touches
// activations only through nn:: blocks, backend::Ops<B> and backend::Buffer<B>, so the source is
// the same for every backend. Out of scope: V3.2's DSA indexer, plain attention (use_mla: false)
// and the MTP layers (model.layers.{L + k}, never loaded).
#pragma once

#include <deepseek/backend/ops.hpp>
#include <deepseek/core/error.hpp>
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/io/weights.hpp>
#include <deepseek/nn/kv_cache.hpp>
#include <deepseek/nn/mla.hpp>
#include <deepseek/nn/mlp.hpp>
#include <deepseek/nn/moe.hpp>
#include <deepseek/nn/rmsnorm.hpp>
#include <deepseek/nn/rope.hpp>

#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace deepseek::examples {

template <class B>
class ComposedModel {
 public:
  // Every decoder layer, in order: equal to models::DeepSeekV3 on the same checkpoint.
  explicit ComposedModel(std::shared_ptr<const io::Checkpoint> ckpt)
      : ComposedModel(ckpt, all_layers(ckpt->config())) {}

  // The decoder layers model.layers.{l} for l in `layers`, in that order (repeats allowed).
  ComposedModel(std::shared_ptr<const io::Checkpoint> ckpt, const std::vector<int>& layers)
      : ckpt_(std::move(ckpt)), c_(ckpt_->config()) {
    const std::string config_json = ckpt_->dir() + "/config.json";
    if (!ckpt_->has_weights()) throw Error("checkpoint has no weights (config-only directory)", in_file(ckpt_->dir()));
    if (c_.has_indexer())
      throw Error("the V3.2 DSA indexer (index_n_heads > 0) is not composed here: use models::DeepSeekV3",
                  at_field("index_n_heads", config_json));
    if (!c_.use_mla)
      throw Error("plain multi-head attention (use_mla: false) is not composed here: use models::DeepSeekV3",
                  at_field("use_mla", config_json));
    const int64_t d = c_.hidden_size, V = c_.vocab_size;
    weights_ = io::Weights(ckpt_).on(B::device);  // uploaded once on a GPU, kept by weights_
    const io::Weights model = weights_.sub("model");
    embed_tokens_ = model.get("embed_tokens.weight", Shape{V, d}, {DType::f32, DType::bf16});
    const nn::Rope rope(c_, c_.qk_rope_head_dim, nn::RopeLayout::interleaved);
    const float scale = float(nn::mla_softmax_scale(c_)), eps = float(c_.rms_norm_eps);
    for (const int l : layers) {
      if (l < 0 || l >= c_.num_hidden_layers)
        throw Error("decoder layer " + std::to_string(l) + " is outside the checkpoint's layers [0, " +
                        std::to_string(c_.num_hidden_layers) + ") (num_hidden_layers)",
                    in_file(ckpt_->dir()));
      const io::Weights w = model.sub("layers." + std::to_string(l));
      Layer& L = layers_.emplace_back();
      L.index = l;
      L.input_layernorm = nn::RmsNorm<B>(w, "input_layernorm", d, eps);
      L.self_attn = nn::Mla<B>(w.sub("self_attn"), nn::MlaConfig::from(c_), rope, scale);
      L.post_attention_layernorm = nn::RmsNorm<B>(w, "post_attention_layernorm", d, eps);
      if (c_.is_moe_layer(l))
        L.moe.emplace(w.sub("mlp"), nn::MoeConfig::from(c_));
      else
        L.mlp.emplace(w.sub("mlp"), d, c_.intermediate_size);
    }
    norm_ = nn::RmsNorm<B>(model, "norm", d, eps);
    if (c_.tie_word_embeddings)
      lm_head_.weight = embed_tokens_;
    else
      lm_head_ = weights_.matrix("lm_head", V, d);
  }

  static std::vector<int> all_layers(const io::ModelConfig& c) {
    std::vector<int> l(size_t(c.num_hidden_layers));
    std::iota(l.begin(), l.end(), 0);
    return l;
  }

  const io::ModelConfig& config() const { return c_; }
  // The checkpoint's index of each composed layer, in order.
  std::vector<int> layers() const {
    std::vector<int> out;
    for (const Layer& L : layers_) out.push_back(L.index);
    return out;
  }

  // One cache layer per composed layer, each row the MLA latent [c_kv ; k_pe] (kv_lora + rope
  // values) in f32, bf16 or FP8 (its first kv_lora values quantized), in B's device memory.
  nn::KvCache make_cache(int64_t max_tokens, nn::CacheDType dtype = nn::CacheDType::bf16) const {
    return nn::KvCache(int(layers_.size()), nn::MlaConfig::from(c_).row_width(), max_tokens,
                       nn::CacheLayout::contiguous, 16, dtype, c_.kv_lora_rank, 0, B::device);
  }

  // ids[0, n) (host) at positions cache.size() .. cache.size() + n - 1, appended to the cache;
  // logits [vocab] (on B's device) of the last one.
  void forward(const int32_t* ids, int64_t n, nn::KvCache& cache, float* logits) const {
    check_input(ids, n, cache);
    using Ops = backend::Ops<B>;
    const int64_t d = c_.hidden_size, p0 = cache.size();
    backend::Buffer<B> h(size_t(n * d)), x(size_t(n * d)), y(size_t(n * d));  // [n, d] each
    Ops::embedding(embed_tokens_, ids, n, h.data());
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& L = layers_[i];
      L.input_layernorm.forward(h.data(), n, x.data());
      L.self_attn.forward(x.data(), n, p0, cache.view(int(i)), y.data());
      Ops::add(h.data(), y.data(), n * d);
      L.post_attention_layernorm.forward(h.data(), n, x.data());
      if (L.moe)
        L.moe->forward(x.data(), n, y.data());
      else
        L.mlp->forward(x.data(), n, y.data());
      Ops::add(h.data(), y.data(), n * d);
    }
    cache.resize(p0 + n);
    // RMSNorm is per row: norming the last row alone gives its row of the full norm.
    norm_.forward(h.data() + (n - 1) * d, 1, x.data());
    Ops::linear(lm_head_, x.data(), 1, logits);
  }

 private:
  struct Layer {
    int index = 0;  // l of model.layers.{l}
    nn::RmsNorm<B> input_layernorm, post_attention_layernorm;
    nn::Mla<B> self_attn;
    std::optional<nn::Moe<B>> moe;  // mlp.gate, mlp.experts.*, mlp.shared_experts.*
    std::optional<nn::Mlp<B>> mlp;  // mlp.{gate,up,down}_proj: layers below first_k_dense_replace
  };

  // Where input enters: the ids, and a cache made by make_cache with room for them.
  void check_input(const int32_t* ids, int64_t n, const nn::KvCache& cache) const {
    if (n < 1) throw Error("forward needs at least one token");
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= c_.vocab_size)
        throw Error("token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(c_.vocab_size) + ")");
    if (cache.num_layers() != int(layers_.size()) || cache.width() != nn::MlaConfig::from(c_).row_width())
      throw Error("the KV cache was not made for this model (make_cache)");
    const int64_t end = cache.size() + n;
    if (end > cache.capacity() || end > c_.max_position_embeddings)
      throw Error("context of " + std::to_string(end) + " tokens exceeds the KV cache capacity (" +
                  std::to_string(cache.capacity()) + ") or max_position_embeddings (" +
                  std::to_string(c_.max_position_embeddings) + ")");
  }

  std::shared_ptr<const io::Checkpoint> ckpt_;  // owns the mapped weights the blocks view
  // On a GPU the blocks' views point into uploads that live as long as a view of their family
  // does (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  io::ModelConfig c_;
  TensorView embed_tokens_;
  std::vector<Layer> layers_;
  nn::RmsNorm<B> norm_;
  BlockQuantMatrix lm_head_;
};

}  // namespace deepseek::examples
