// DeepSeek-V4 text models (DeepseekV4ForCausalLM; V4_NOTES.md beside the v4 fixtures), on a backend B,
// loading the released tensor names as stored (f32 / bf16, and the FP8 e4m3 linears with their ue8m0
// `.scale` blocks: nn/v4_weights.hpp; the FP4 experts are refused by name).
//
//   X0[t, j] = embed[id_t] for each of the hc streams j      embed.weight [vocab, d]
//   X_{l+1} = Block_l(X_l):                                  layers.{l}.*
//     post, M, c = HC(X; hc_attn);  X = post a + M^T X,  a = Attention_l(rms(c; attn_norm))
//     post, M, c = HC(X; hc_ffn);   X = post f + M^T X,  f = MoE_l(rms(c; ffn_norm), ids)
//   logits = rms(HyperHead(X_L); norm) . head^T              hc_head_{fn,base,scale}, norm.weight, head.weight
// (nn/mhc.hpp, nn/v4_attention.hpp, nn/v4_compressor.hpp, nn/v4_moe.hpp.) Layer l attends with a
// sliding window, CSA (compressed entries picked by the lightning indexer) or HCA (all heavily
// compressed entries), from compress_ratios / layer_types (io/v4_config.hpp).
// A forward of n tokens runs at positions cache.size() .. and advances the cache (window keys,
// compressor blocks and entries, indexer keys), so prefill, decode and chunked prefill are the
// same call. The cache is contiguous host state per layer (no paged layout); it cannot be rolled
// back (the compressors' open blocks are not rewound). MTP (mtp.0.*): DeepSeekV4Mtp below. CPU only:
// Ops<cuda> has no V4 primitives, so nothing CUDA-side includes this header.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/v4_config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/models/deepseek_v3.hpp"  // LoadOptions
#include "deepseek/nn/mhc.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/v4_attention.hpp"
#include "deepseek/nn/v4_moe.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::models {

// A V4 sequence's decode state: one nn::V4AttentionState per layer, and its length.
template <class B>
struct V4Cache {
  std::vector<nn::V4AttentionState<B>> layers;
  int64_t tokens = 0, max_tokens = 0;
  int64_t size() const { return tokens; }
  int64_t capacity() const { return max_tokens; }
};

// Host copies of one forward's intermediates, per layer (what the tests compare with transformers).
struct V4Trace {
  std::vector<std::vector<int32_t>> index_topk;    // [n, index_topk] ascending, -1 padded (CSA layers)
  std::vector<std::vector<int32_t>> experts;       // [n, K] ascending
  std::vector<std::vector<float>> expert_weights;  // [n, K]
  std::vector<std::vector<float>> attn_out;        // [n, d]
  std::vector<float> streams;                      // [n, hc, d] after the last layer
};

// One decoder layer: attention and MoE, each inside its hyper-connection.
template <class B>
class V4Block {
 public:
  using Ops = backend::Ops<B>;
  V4Block(const io::Weights& w, const io::ModelConfig& c, const io::V4Config& v, int layer, const nn::V4Rope& rope)
      : d_(c.hidden_size),
        hc_attn_(w, "hc_attn", v.hc_mult, d_, v.hc_sinkhorn_iters, float(v.hc_eps), float(c.rms_norm_eps), false),
        hc_ffn_(w, "hc_ffn", v.hc_mult, d_, v.hc_sinkhorn_iters, float(v.hc_eps), float(c.rms_norm_eps), false),
        attn_norm_(w, "attn_norm", d_, float(c.rms_norm_eps)),
        ffn_norm_(w, "ffn_norm", d_, float(c.rms_norm_eps)),
        attn_(w.sub("attn"), c, v, v.layer_types[size_t(layer)], v.compress_ratios[size_t(layer)], rope),
        ffn_(w.sub("ffn"), c, v, layer < v.num_hash_layers) {}

  const nn::V4Attention<B>& attention() const { return attn_; }
  const nn::V4Moe<B>& moe() const { return ffn_; }

  // X [n, hc, d] streams of positions p0 .., in place.
  void forward(float* X, const int32_t* ids, int64_t n, int64_t p0, nn::V4AttentionState<B>& st, V4Trace* tr,
               int layer) const {
    backend::Buffer<B> c(size_t(n * d_)), y(size_t(n * d_));
    const size_t l = size_t(layer);
    if (tr) {
      tr->index_topk[l].assign(size_t(n * attn_.index_topk()), -1);
      tr->experts[l].resize(size_t(n * ffn_.top_k()));
      tr->expert_weights[l].resize(size_t(n * ffn_.top_k()));
      tr->attn_out[l].resize(size_t(n * d_));
    }
    auto mix = hc_attn_.collapse(X, n, c.data());
    attn_norm_.forward(c.data(), n, c.data());
    attn_.forward(c.data(), n, p0, st, y.data(), tr && attn_.index_topk() ? tr->index_topk[l].data() : nullptr);
    if (tr) Ops::download(y.data(), n * d_, tr->attn_out[l].data());
    hc_attn_.expand(mix, y.data(), n, X);
    mix = hc_ffn_.collapse(X, n, c.data());
    ffn_norm_.forward(c.data(), n, c.data());
    ffn_.forward(c.data(), ids, n, y.data(), tr ? tr->experts[l].data() : nullptr,
                 tr ? tr->expert_weights[l].data() : nullptr);
    hc_ffn_.expand(mix, y.data(), n, X);
  }

 private:
  int64_t d_;
  nn::HyperConnection<B> hc_attn_, hc_ffn_;
  nn::RmsNorm<B> attn_norm_, ffn_norm_;
  nn::V4Attention<B> attn_;
  nn::V4Moe<B> ffn_;
};

template <class B>
class DeepSeekV4 {
 public:
  using Backend = B;
  using Ops = backend::Ops<B>;
  explicit DeepSeekV4(std::shared_ptr<const io::Checkpoint> ckpt, const LoadOptions& opts = {})
      : ckpt_(std::move(ckpt)),
        c_(ckpt_->config()),
        opts_(opts),
        v_(io::load_v4_config((std::filesystem::path(ckpt_->dir()) / "config.json").string(), c_)) {
    if (!ckpt_->has_weights()) throw Error("checkpoint has no weights (config-only directory)", in_file(ckpt_->dir()));
    weights_ = io::Weights(ckpt_).on(B::device).with_activations(opts.activations);
    const io::Weights& w = weights_;
    const int64_t d = c_.hidden_size, V = c_.vocab_size;
    const float eps = float(c_.rms_norm_eps);
    embed_ = w.get("embed.weight", Shape{V, d}, {DType::f32, DType::bf16});
    main_rope_ = std::make_shared<nn::V4Rope>(c_.rope_theta, io::RopeScaling{}, c_.qk_rope_head_dim);
    compress_rope_ = std::make_shared<nn::V4Rope>(v_.compress_rope_theta, c_.rope_scaling, c_.qk_rope_head_dim);
    for (int l = 0; l < c_.num_hidden_layers; ++l) {
      const bool sliding = v_.layer_types[size_t(l)] == io::V4LayerType::sliding;
      blocks_.emplace_back(w.sub("layers." + std::to_string(l)), c_, v_, l, sliding ? *main_rope_ : *compress_rope_);
      if (opts.progress) opts.progress(l + 1, c_.num_hidden_layers);
    }
    hc_head_ = nn::HyperConnection<B>(w, "hc_head", v_.hc_mult, d, v_.hc_sinkhorn_iters, float(v_.hc_eps), eps, true);
    norm_ = nn::RmsNorm<B>(w, "norm", d, eps);
    head_ = nn::v4_matrix(w, "head", V, d);
  }

  const io::ModelConfig& config() const { return c_; }
  const io::V4Config& v4_config() const { return v_; }
  int num_layers() const { return int(blocks_.size()); }
  const V4Block<B>& layer(int l) const { return blocks_[size_t(l)]; }

  // The state is f32 whatever o.dtype says (the compressors' blocks and entries are few); only the
  // contiguous layout exists.
  V4Cache<B> make_cache(const CacheOptions& o) const {
    if (o.layout != nn::CacheLayout::contiguous)
      throw Error("DeepSeek-V4 has no paged cache yet: use CacheLayout::contiguous");
    return make_cache(o.max_tokens);
  }
  V4Cache<B> make_cache(int64_t max_tokens) const {
    if (max_tokens < 1) throw Error("a V4 cache needs max_tokens >= 1, got " + std::to_string(max_tokens));
    V4Cache<B> cache;
    cache.layers.resize(blocks_.size());
    cache.max_tokens = max_tokens;
    return cache;
  }

  // Runs ids[0:n) at positions cache.size() .. and advances the cache.
  //   logits: [n, vocab] if all_logits, else [1, vocab] for the last token (may be null)
  //   streams: optional [n, hc, d] streams after the last layer (before hc_head; the MTP's input)
  //   trace: optional host copies of the intermediates (V4Trace)
  void forward(const int32_t* ids, int64_t n, V4Cache<B>& cache, float* logits, bool all_logits = false,
               float* streams = nullptr, V4Trace* trace = nullptr) const {
    if (n <= 0) throw Error("forward needs at least one token");
    const int64_t p0 = cache.size(), d = c_.hidden_size, V = c_.vocab_size, hc = v_.hc_mult;
    if (cache.layers.size() != blocks_.size()) throw Error("the cache was not made for this model (make_cache)");
    if (p0 + n > cache.capacity() || p0 + n > c_.max_position_embeddings)
      throw Error("context of " + std::to_string(p0 + n) + " tokens exceeds the cache capacity (" +
                  std::to_string(cache.capacity()) + ") or max_position_embeddings (" +
                  std::to_string(c_.max_position_embeddings) + ")");
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= V)
        throw Error("token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(V) + ")");
    if (trace)
      *trace = V4Trace{std::vector<std::vector<int32_t>>(blocks_.size()),
                       std::vector<std::vector<int32_t>>(blocks_.size()),
                       std::vector<std::vector<float>>(blocks_.size()),
                       std::vector<std::vector<float>>(blocks_.size()),
                       {}};
    backend::Buffer<B> e(size_t(n * d)), X(size_t(n * hc * d));
    Ops::embedding(embed_, ids, n, e.data());
    for (int64_t j = 0; j < hc; ++j) Ops::copy2d(e.data(), d, X.data() + j * d, hc * d, n, d);
    for (size_t l = 0; l < blocks_.size(); ++l) {
      blocks_[l].forward(X.data(), ids, n, p0, cache.layers[l], trace, int(l));
      check_finite(X.data(), n * hc * d, "decoder layer " + std::to_string(l) + " (layers." + std::to_string(l) + ")");
    }
    cache.tokens = p0 + n;
    if (streams) Ops::copy2d(X.data(), hc * d, streams, hc * d, n, hc * d);
    if (trace) {
      trace->streams.resize(size_t(n * hc * d));
      Ops::download(X.data(), n * hc * d, trace->streams.data());
    }
    if (logits) head_logits(X.data(), n, all_logits, hc_head_, norm_, logits, "head (head.weight)");
  }

  const io::Checkpoint& checkpoint() const { return *ckpt_; }
  std::shared_ptr<const io::Checkpoint> checkpoint_ptr() const { return ckpt_; }
  const TensorView& embedding() const { return embed_; }
  const LoadOptions& options() const { return opts_; }
  const nn::V4Rope& rope(io::V4LayerType t) const {
    return t == io::V4LayerType::sliding ? *main_rope_ : *compress_rope_;
  }

  // logits [rows, vocab] = head(rms(hyper head(X); norm)) of the last row of X [n, hc, d], or of all
  // rows: shared by the main model and the MTP module (each with its own hyper head and norm).
  void head_logits(const float* X, int64_t n, bool all_rows, const nn::HyperConnection<B>& hc_head,
                   const nn::RmsNorm<B>& norm, float* logits, const std::string& stage) const {
    const int64_t d = c_.hidden_size, hc = v_.hc_mult, rows = all_rows ? n : 1;
    backend::Buffer<B> y(size_t(rows * d));
    hc_head.collapse(X + (n - rows) * hc * d, rows, y.data());
    norm.forward(y.data(), rows, y.data());
    Ops::linear(head_, y.data(), rows, logits);
    check_finite(logits, rows * c_.vocab_size, stage);
  }
  void check_finite(const float* x, int64_t n, const std::string& stage) const {
    if (!Ops::all_finite(x, n)) throw Error("non-finite values after " + stage, in_file(ckpt_->dir()));
  }

 private:
  std::shared_ptr<const io::Checkpoint> ckpt_;
  // On a GPU the views point into uploads that live as long as a view of their family does
  // (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  io::ModelConfig c_;
  LoadOptions opts_;
  io::V4Config v_;
  TensorView embed_;
  std::shared_ptr<const nn::V4Rope> main_rope_, compress_rope_;  // the blocks point into their tables
  std::vector<V4Block<B>> blocks_;
  nn::HyperConnection<B> hc_head_;
  nn::RmsNorm<B> norm_;
  BlockQuantMatrix head_;
};

// DeepSeek-V4's MTP module 0 (V4_NOTES §9; DeepSeek's MTPBlock): a full decoder block at layer id
// L = num_hidden_layers (attention type compress_ratios[L], never a hash layer) around which
//   e = rms(embed[x_{i+1}]; mtp.0.enorm);  h_j = rms(X_L[i, j]; mtp.0.hnorm) for each stream j
//   u_j = e . e_proj^T + h_j . h_proj^T  [hc, d];  Z = Block_L(u) at positions i (its own cache)
//   logits_i = head(rms(HyperHead_mtp(Z); mtp.0.norm))  (predicts x_{i+2}; embed and head shared)
// Tensors: mtp.0.{e_proj,h_proj}.weight [d, d], mtp.0.{enorm,hnorm,norm}.weight [d],
// mtp.0.hc_head_{fn,base,scale}, and the block's mtp.0.{attn,ffn,attn_norm,ffn_norm,hc_attn_*,hc_ffn_*}.
// The main model must outlive this object.
template <class B>
class DeepSeekV4Mtp {
 public:
  using Ops = backend::Ops<B>;
  explicit DeepSeekV4Mtp(const DeepSeekV4<B>& model) : model_(&model) {
    const io::ModelConfig& c = model.config();
    const io::V4Config& v = model.v4_config();
    if (c.num_nextn_predict_layers < 1)
      throw Error("checkpoint has no MTP module (num_nextn_predict_layers is 0)",
                  at_field("num_nextn_predict_layers", model.checkpoint().dir() + "/config.json"));
    weights_ = io::Weights(model.checkpoint_ptr()).on(B::device).with_activations(model.options().activations);
    const io::Weights w = weights_.sub("mtp.0");
    const int64_t d = c.hidden_size;
    const float eps = float(c.rms_norm_eps);
    const int L = c.num_hidden_layers;
    block_ = std::make_shared<V4Block<B>>(w, c, v, L, model.rope(v.layer_types[size_t(L)]));
    e_proj_ = nn::v4_matrix(w, "e_proj", d, d);
    h_proj_ = nn::v4_matrix(w, "h_proj", d, d);
    enorm_ = nn::RmsNorm<B>(w, "enorm", d, eps);
    hnorm_ = nn::RmsNorm<B>(w, "hnorm", d, eps);
    norm_ = nn::RmsNorm<B>(w, "norm", d, eps);
    hc_head_ = nn::HyperConnection<B>(w, "hc_head", v.hc_mult, d, v.hc_sinkhorn_iters, float(v.hc_eps), eps, true);
  }

  V4Cache<B> make_cache(int64_t max_tokens) const {
    V4Cache<B> cache;
    cache.layers.resize(1);
    cache.max_tokens = max_tokens;
    return cache;
  }

  // Pairs (streams[i], next_ids[i]) at positions cache.size() ..: streams [n, hc, d] from the main
  // forward, next_ids [n] the tokens after them; logits [n or 1, vocab] (all_logits or the last).
  void forward(const float* streams, const int32_t* next_ids, int64_t n, V4Cache<B>& cache, float* logits,
               bool all_logits = false) const {
    const io::ModelConfig& c = model_->config();
    const int64_t d = c.hidden_size, hc = model_->v4_config().hc_mult, p0 = cache.size();
    if (n <= 0 || cache.layers.size() != 1 || p0 + n > cache.capacity())
      throw Error("MTP forward needs n >= 1 and a cache from DeepSeekV4Mtp::make_cache with room for " +
                  std::to_string(p0 + n) + " tokens");
    for (int64_t i = 0; i < n; ++i)
      if (next_ids[i] < 0 || next_ids[i] >= c.vocab_size)
        throw Error("token id " + std::to_string(next_ids[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary");
    backend::Buffer<B> e(size_t(n * d)), h(size_t(n * hc * d)), X(size_t(n * hc * d)), pe(size_t(n * d));
    Ops::embedding(model_->embedding(), next_ids, n, e.data());
    enorm_.forward(e.data(), n, e.data());
    Ops::linear(e_proj_, e.data(), n, pe.data());
    hnorm_.forward(streams, n * hc, h.data());
    backend::Buffer<B> hp(size_t(n * hc * d));
    Ops::linear(h_proj_, h.data(), n * hc, hp.data());
    for (int64_t j = 0; j < hc; ++j) Ops::copy2d(pe.data(), d, X.data() + j * d, hc * d, n, d);
    Ops::add(X.data(), hp.data(), n * hc * d);
    block_->forward(X.data(), next_ids, n, p0, cache.layers[0], nullptr, 0);
    model_->check_finite(X.data(), n * hc * d, "the MTP block (mtp.0)");
    cache.tokens = p0 + n;
    model_->head_logits(X.data(), n, all_logits, hc_head_, norm_, logits, "the MTP head (mtp.0.norm, head.weight)");
  }

 private:
  const DeepSeekV4<B>* model_;
  // On a GPU the views point into uploads that live as long as a view of their family does
  // (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  std::shared_ptr<const V4Block<B>> block_;
  BlockQuantMatrix e_proj_, h_proj_;
  nn::RmsNorm<B> enorm_, hnorm_, norm_;
  nn::HyperConnection<B> hc_head_;
};

}  // namespace deepseek::models
