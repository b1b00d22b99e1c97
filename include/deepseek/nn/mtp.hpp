// Multi-token prediction (MTP) module of DeepSeek-V3 (spec §6.1): from the main model's final hidden
// state h_i (after model.norm) and the next token x_{i+1}, predict x_{i+2}.
//
//   e_i      = embed_tokens[x_{i+1}]                  layers.L.embed_tokens.weight [vocab, d] (else model.embed_tokens)
//   u_i      = eh_proj · [ enorm(e_i) ; hnorm(h_i) ]  layers.L.{enorm,hnorm}.weight [d], layers.L.eh_proj.weight [d,
//   2d] z_i      = DecoderLayer_L(u_i) at position i
//   layers.L.{input_layernorm,self_attn,post_attention_layernorm,mlp}.* logits_i =
//   shared_head.head(shared_head.norm(z_i)) layers.L.shared_head.norm.weight [d],
//                                                     layers.L.shared_head.head.weight [vocab, d] (else lm_head)
// L = num_hidden_layers + k for module k (61 in V3/R1). Concatenation order: the normed EMBEDDING comes
// first, as vLLM's deepseek_mtp.py and SGLang load the released eh_proj (the paper writes [h; emb]; spec
// §9.5). The block is a full decoder layer (MLA + MoE/MLP decided by its layer index, V3.2 indexer if
// configured) with its own one-layer latent KV cache: row i holds position i of the pairs (h_i, x_{i+1}).
// Released V3 carries copies of the embedding and head under layers.L; checkpoints that omit them share
// the main model's, which the caller passes in (this header knows nothing of the main model). With
// use_main_copies the main ones are used even where copies exist (models::MtpHead sets it when the copies
// are byte-identical: one head then stays in the CPU caches and in memory instead of two).
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/decoder_layer.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/mla.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/rope.hpp"

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace deepseek::nn {

template <class B>
class Mtp {
 public:
  // The main model's output head, used when the checkpoint has no shared_head.head copy:
  // logits [n, vocab] of hidden states [n, d].
  using Head = std::function<void(const float* h, int64_t n, float* logits)>;

  Mtp() = default;
  // w: scoped to "model.layers.<L>."; `layer` = L (decides dense vs MoE like any layer).
  Mtp(const io::Weights& w, const io::ModelConfig& c, int layer, const Rope& rope, float softmax_scale,
      const TensorView& main_embedding, Head main_head, bool use_main_copies = false)
      : d_(c.hidden_size),
        vocab_(c.vocab_size),
        layer_index_(layer),
        row_width_(DecoderLayer<B>::cache_row_width(c)),
        enorm_(w, "enorm", c.hidden_size, float(c.rms_norm_eps)),
        hnorm_(w, "hnorm", c.hidden_size, float(c.rms_norm_eps)),
        eh_proj_(w.matrix("eh_proj", c.hidden_size, 2 * c.hidden_size)),
        block_(w, c, layer, rope, softmax_scale),
        shared_head_norm_(w.sub("shared_head"), "norm", c.hidden_size, float(c.rms_norm_eps)),
        main_head_(std::move(main_head)) {
    const Shape table{vocab_, d_};
    if (w.has("embed_tokens.weight") && !use_main_copies) {
      embed_ = w.get("embed_tokens.weight", table, {DType::f32, DType::bf16});
      own_embed_ = true;
    } else {
      if (main_embedding.shape() != table)
        throw Error("MTP fallback embedding has shape " + main_embedding.shape().str() + ", expected " + table.str());
      embed_ = main_embedding;
    }
    if (w.has("shared_head.head.weight") && !(use_main_copies && main_head_))
      head_ = w.sub("shared_head").matrix("head", vocab_, d_);
    else if (!main_head_)
      throw Error("checkpoint has no " + w.prefix() + "shared_head.head.weight and no main head was given");
  }

  int layer_index() const { return layer_index_; }
  bool has_own_embedding() const { return own_embed_; }
  bool has_own_head() const { return head_.has_value(); }
  const DecoderLayer<B>& block() const { return block_; }

  // One-layer latent cache for the block (row i = position i).
  KvCache make_cache(int64_t max_tokens, CacheLayout layout = CacheLayout::contiguous, int64_t block_size = 16) const {
    return KvCache(1, row_width_, max_tokens, layout, block_size, CacheDType::f32, 0, 0, B::device);
  }

  // Runs the pairs (h[j], next_ids[j]), j < n, at positions cache.size() .. and appends them to the cache.
  //   h: [n, d] main final hidden states (after model.norm); z: [n, d] block output (before shared_head.norm).
  void forward(const float* h, const int32_t* next_ids, int64_t n, KvCache& cache, float* z,
               MlaMode mode = MlaMode::automatic) const {
    const int64_t p0 = cache.size();
    if (n <= 0) throw Error("MTP forward needs at least one pair");
    if (p0 + n > cache.capacity())
      throw Error("MTP context of " + std::to_string(p0 + n) + " tokens exceeds its KV cache capacity of " +
                  std::to_string(cache.capacity()));
    for (int64_t i = 0; i < n; ++i)
      if (next_ids[i] < 0 || next_ids[i] >= vocab_)
        throw Error("token id " + std::to_string(next_ids[i]) + " is outside the vocabulary [0, " +
                    std::to_string(vocab_) + ")");
    // cat: [n, 2d] = [enorm(e) | hnorm(h)] per row.
    backend::Buffer<B> e(size_t(n * d_)), cat(size_t(n * 2 * d_));
    backend::Ops<B>::embedding(embed_, next_ids, n, e.data());
    enorm_.forward(e.data(), n, cat.data(), d_, 2 * d_);
    hnorm_.forward(h, n, cat.data() + d_, d_, 2 * d_);
    backend::Ops<B>::linear(eh_proj_, cat.data(), n, z);
    block_.forward(z, n, p0, cache.view(0), mode);
    cache.resize(p0 + n);
  }

  // logits [n, vocab] for x_{i+2} from block outputs z [n, d].
  void logits(const float* z, int64_t n, float* out) const {
    backend::Buffer<B> a(size_t(n * d_));
    shared_head_norm_.forward(z, n, a.data());
    if (head_)
      backend::Ops<B>::linear(*head_, a.data(), n, out);
    else
      main_head_(a.data(), n, out);
  }

 private:
  int64_t d_ = 0, vocab_ = 0;
  int layer_index_ = 0;
  int64_t row_width_ = 0;
  TensorView embed_;
  bool own_embed_ = false;
  RmsNorm<B> enorm_, hnorm_;
  BlockQuantMatrix eh_proj_;
  DecoderLayer<B> block_;
  RmsNorm<B> shared_head_norm_;
  std::optional<BlockQuantMatrix> head_;
  Head main_head_;
};

}  // namespace deepseek::nn
