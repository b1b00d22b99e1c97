// DeepSeek-V2 / V2-Lite / V3 / R1 / V3.1 / V3.2 text models, chosen by config.json, on a backend B.
//
//   h0 = embed_tokens[ids]                       model.embed_tokens.weight [vocab, d]
//   h_{l+1} = DecoderLayer_l(h_l), l < L          model.layers.{l}.*
//   logits = lm_head(RMSNorm(h_L))                model.norm.weight, lm_head.weight [vocab, d]
// Positions continue from the cache: a forward of n tokens runs at positions cache.size() ..
// cache.size()+n-1 and appends their cache rows (MLA: the latent; use_mla false, as the
// DeepSeek-OCR decoder: K and V), so prefill, decode and chunked prefill are the same call. MTP weights (model.layers.{L + k}.*) are not loaded here.
// V3.2 (DeepseekV32ForCausalLM, index_n_heads > 0): every layer's MLA attends only over the
// index_topk positions its lightning indexer selects (nn/dsa.hpp); the cache row grows by
// index_head_dim values for the indexer key.
#pragma once

#include "deepseek/core/checked.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/limits.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/decoder_layer.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/rope.hpp"

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::models {

struct CacheOptions {
  int64_t max_tokens = 4096;
  nn::CacheLayout layout = nn::CacheLayout::contiguous;
  int64_t block_size = 16;
  // bf16 (the default): half the bytes of f32, each cached value rounded once (logits move by
  // ~1e-2 relative on the fixtures, tests/models/test_long_context.cpp); f32: exact, what the
  // transformers fixtures are checked with (CacheOptions::exact); fp8_e4m3: FlashMLA's 656-byte
  // layout, MLA only (kv_cache.hpp).
  nn::CacheDType dtype = nn::CacheDType::bf16;

  // An f32 cache: the model's outputs then equal transformers' to float rounding.
  static CacheOptions exact(int64_t max_tokens, nn::CacheLayout layout = nn::CacheLayout::contiguous, int64_t block_size = 16) {
    return {max_tokens, layout, block_size, nn::CacheDType::f32};
  }
};

struct LoadOptions {
  // Called after each decoder layer is set up: (layers done, layers total).
  std::function<void(int, int)> progress;
  // V3.2 indexer arithmetic: f32 (as transformers) or the official FP8 + Hadamard simulation.
  nn::IndexerPrecision indexer_precision = nn::IndexerPrecision::f32;
  // What the inputs of every linear layer are rounded to (BlockQuantMatrix::activations): f32
  // (exact; what the transformers fixtures are checked against) or bf16 (as transformers in
  // bf16 and llama.cpp compute; bf16 checkpoints then run on AVX512-BF16 where the CPU has it).
  ActivationDType activations = ActivationDType::f32;
  // Prompts run through all layers this many tokens at a time (chunked prefill), so activation
  // memory stays bounded whatever the prompt length: 0 = automatic (kAutoPrefillChunk for prompts
  // longer than that, else one chunk), N > 0 = chunks of N. Logits equal the unchunked run up to
  // summation order (tests/models/test_long_context.cpp).
  int64_t prefill_chunk = 0;
};

// Chunk of the automatic chunked prefill: per chunk the tiled attention keeps n x H x v outputs and
// one expanded block, the MoE n x top-k expert rows; 512 keeps a V3 chunk's activations near 1 GB
// while leaving the tiled order's expansion cost (T H (nope + v) lora per chunk, mla.hpp) under a
// third of the chunk's attention work at any context.
inline constexpr int64_t kAutoPrefillChunk = 512;

template <class B>
class DeepSeekV3 {
 public:
  using Backend = B;  // the device its activations, caches and outputs live on
  explicit DeepSeekV3(std::shared_ptr<const io::Checkpoint> ckpt, const LoadOptions& opts = {})
      : ckpt_(std::move(ckpt)), c_(ckpt_->config()), opts_(opts) {
    if (!ckpt_->has_weights()) throw Error("checkpoint has no weights (config-only directory)", in_file(ckpt_->dir()));
    if (c_.model_type == "deepseek_v4")
      throw Error("a DeepSeek-V4 checkpoint: load it with models::DeepSeekV4 (models/deepseek_v4.hpp)", in_file(ckpt_->dir()));
    // On a GPU backend every tensor is uploaded once, in its checkpoint dtype (io/weights.hpp).
    weights_ = io::Weights(ckpt_).on(B::device).with_activations(opts.activations);
    const io::Weights& root = weights_;
    io::Weights model = root.sub("model");
    const int64_t d = c_.hidden_size, V = c_.vocab_size;
    embed_ = model.get("embed_tokens.weight", Shape{V, d}, {DType::f32, DType::bf16});
    rope_ = nn::Rope(c_, c_.qk_rope_head_dim, nn::RopeLayout::interleaved);
    const float scale = float(nn::mla_softmax_scale(c_));
    layers_.reserve(size_t(c_.num_hidden_layers));
    for (int l = 0; l < c_.num_hidden_layers; ++l) {
      layers_.emplace_back(model.sub("layers." + std::to_string(l)), c_, l, rope_, scale, opts.indexer_precision);
      if (opts.progress) opts.progress(l + 1, c_.num_hidden_layers);
    }
    norm_ = nn::RmsNorm<B>(model, "norm", d, float(c_.rms_norm_eps));
    if (c_.tie_word_embeddings) {
      lm_head_.weight = embed_;
      lm_head_.activations = opts.activations;
    } else {
      lm_head_ = root.matrix("lm_head", V, d);
    }
  }

  const io::ModelConfig& config() const { return c_; }
  const io::Checkpoint& checkpoint() const { return *ckpt_; }
  const LoadOptions& options() const { return opts_; }
  int num_layers() const { return int(layers_.size()); }
  const nn::DecoderLayer<B>& layer(int l) const { return layers_[size_t(l)]; }

  // Throws before allocating a cache this machine cannot hold (check_fits_in_memory).
  nn::KvCache make_cache(const CacheOptions& o = {}) const {
    if (o.max_tokens < 1) throw Error("CacheOptions::max_tokens must be at least 1, got " + std::to_string(o.max_tokens));
    const RowLayout r = row_layout(o.dtype);
    check_fits_in_memory(double(c_.num_hidden_layers) * double(nn::cache_row_bytes(o.dtype, r.width, r.fp8_values, r.index_fp8)) *
                             double(o.max_tokens),
                         "a KV cache of " + std::to_string(o.max_tokens) + " tokens");
    return nn::KvCache(c_.num_hidden_layers, r.width, o.max_tokens, o.layout, o.block_size, o.dtype, r.fp8_values, r.index_fp8,
                       B::device);
  }

  // A block pool shared by the pooled caches of many sequences (nn::KvPool; what
  // generate::Scheduler owns): rows for `tokens` tokens in blocks of block_size, in the cache
  // dtype of CacheOptions. Caches over it: nn::KvCache(pool, max_tokens).
  std::shared_ptr<nn::KvPool> make_pool(int64_t tokens, int64_t block_size = 16, nn::CacheDType dtype = nn::CacheDType::bf16) const {
    if (tokens < 1) throw Error("a KV pool needs at least 1 token, got " + std::to_string(tokens));
    if (block_size < 1) throw Error("a KV pool needs block_size >= 1, got " + std::to_string(block_size));
    const RowLayout r = row_layout(dtype);
    const int64_t blocks = (tokens + block_size - 1) / block_size;
    check_fits_in_memory(double(c_.num_hidden_layers) * double(nn::cache_row_bytes(dtype, r.width, r.fp8_values, r.index_fp8)) *
                             double(blocks) * double(block_size),
                         "a KV pool of " + std::to_string(tokens) + " tokens");
    return std::make_shared<nn::KvPool>(c_.num_hidden_layers, r.width, blocks, block_size, dtype, r.fp8_values, r.index_fp8,
                                        B::device);
  }

  // Runs ids[0:n) at positions cache.size() .. and appends them to the cache.
  //   logits: [n, vocab] if all_logits, else [1, vocab] for the last token (may be null)
  //   hidden: optional [n, d] final hidden states after model.norm (what the MTP module reads)
  void forward(const int32_t* ids, int64_t n, nn::KvCache& cache, float* logits, bool all_logits = false,
               float* hidden = nullptr, nn::MlaMode mode = nn::MlaMode::automatic) const {
    if (n <= 0) throw Error("forward needs at least one token");
    const int64_t p0 = cache.size(), d = c_.hidden_size;
    if (p0 + n > cache.capacity())
      throw Error("context of " + std::to_string(p0 + n) + " tokens exceeds the KV cache capacity of " +
                  std::to_string(cache.capacity()));
    if (p0 + n > c_.max_position_embeddings)
      throw Error("context of " + std::to_string(p0 + n) + " tokens exceeds max_position_embeddings " +
                  std::to_string(c_.max_position_embeddings));
    check_ids(ids, n, "");
    run_chunked(n, logits, all_logits, hidden, [&](int64_t i0, int64_t i1, backend::Buffer<B>& h) {
      h.resize(size_t((i1 - i0) * d));
      backend::Ops<B>::embedding(embed_, ids + i0, i1 - i0, h.data());
    }, cache, mode);
  }

  // The same forward from input embeddings x [n, d] instead of token ids: what a multimodal model
  // feeds (DeepSeek-OCR: embed_tokens rows with its image rows scattered in at the <image> positions).
  void forward_embeddings(const float* x, int64_t n, nn::KvCache& cache, float* logits, bool all_logits = false,
                          float* hidden = nullptr, nn::MlaMode mode = nn::MlaMode::automatic) const {
    if (n <= 0) throw Error("forward_embeddings needs at least one row");
    const int64_t p0 = cache.size(), d = c_.hidden_size;
    if (p0 + n > cache.capacity() || p0 + n > c_.max_position_embeddings)
      throw Error("context of " + std::to_string(p0 + n) + " tokens exceeds the KV cache capacity (" +
                  std::to_string(cache.capacity()) + ") or max_position_embeddings (" +
                  std::to_string(c_.max_position_embeddings) + ")");
    run_chunked(n, logits, all_logits, hidden, [&](int64_t i0, int64_t i1, backend::Buffer<B>& h) {
      h.resize(size_t((i1 - i0) * d));
      backend::Ops<B>::copy2d(x + i0 * d, d, h.data(), d, i1 - i0, d);
    }, cache, mode);
  }

  // One sequence of a batched step (forward_batch): its n new tokens run at positions
  // cache->size() .. and are appended to its own cache (contiguous, or paged over a pool).
  struct BatchSequence {
    const int32_t* ids = nullptr;
    int64_t n = 0;
    nn::KvCache* cache = nullptr;
    float* logits = nullptr;  // [1, vocab] for the sequence's last token, or null
  };

  // A step over several sequences at once, each at its own position with its own cache: prefill
  // chunks and single decode tokens may be mixed, and sequences may join or leave between steps
  // (the caches are the caller's). Equal to forward() on each sequence alone up to summation
  // order (tests/models/test_batched.cpp). Every linear layer sees the step's tokens as one matrix
  // (MLA's projections, the MoE, whose experts then read their weights once for the tokens of all
  // sequences that picked them, the final norm and lm_head); RoPE, the cache rows, the DSA indexer
  // and attention run per sequence over its own cache (plain attention, use_mla: false, also its
  // projections). The step's tokens are not chunked: callers bound them.
  void forward_batch(const std::vector<BatchSequence>& seqs, nn::MlaMode mode = nn::MlaMode::automatic) const {
    if (seqs.empty()) throw Error("forward_batch needs at least one sequence");
    const int64_t d = c_.hidden_size, V = c_.vocab_size, S = int64_t(seqs.size());
    std::vector<int64_t> off(size_t(S + 1), 0), p0(static_cast<size_t>(S), 0);
    for (int64_t s = 0; s < S; ++s) {
      const BatchSequence& q = seqs[size_t(s)];
      const std::string who = "forward_batch sequence " + std::to_string(s);
      if (!q.cache || !q.ids || q.n <= 0) throw Error(who + " needs ids, n >= 1 and a cache");
      for (int64_t t = 0; t < s; ++t)
        if (seqs[size_t(t)].cache == q.cache) throw Error(who + " shares its cache with sequence " + std::to_string(t));
      p0[size_t(s)] = q.cache->size();
      if (p0[size_t(s)] + q.n > q.cache->capacity() || p0[size_t(s)] + q.n > c_.max_position_embeddings)
        throw Error(who + ": context of " + std::to_string(p0[size_t(s)] + q.n) + " tokens exceeds the KV cache capacity (" +
                    std::to_string(q.cache->capacity()) + ") or max_position_embeddings (" +
                    std::to_string(c_.max_position_embeddings) + ")");
      if (q.cache->num_layers() != int(layers_.size()) || q.cache->width() != nn::DecoderLayer<B>::cache_row_width(c_))
        throw Error(who + ": the cache was not made for this model (make_cache)");
      check_ids(q.ids, q.n, who + ": ");
      off[size_t(s + 1)] = off[size_t(s)] + q.n;
    }
    const int64_t N = off[size_t(S)];
    backend::Buffer<B> h(size_t(N * d));
    for (int64_t s = 0; s < S; ++s)
      backend::Ops<B>::embedding(embed_, seqs[size_t(s)].ids, seqs[size_t(s)].n, h.data() + off[size_t(s)] * d);
    check_finite(h.data(), N, d, "the input embeddings (model.embed_tokens)");
    std::vector<typename nn::DecoderLayer<B>::Segment> segs(static_cast<size_t>(S));
    for (size_t l = 0; l < layers_.size(); ++l) {
      for (int64_t s = 0; s < S; ++s)
        segs[size_t(s)] = {off[size_t(s)], seqs[size_t(s)].n, p0[size_t(s)], seqs[size_t(s)].cache->view(int(l)), nullptr};
      layers_[l].attend_segments(h.data(), segs, mode);
      layers_[l].feed_forward(h.data(), N);
      check_finite(h.data(), N, d, "decoder layer", int(l));
    }
    for (int64_t s = 0; s < S; ++s) seqs[size_t(s)].cache->resize(p0[size_t(s)] + seqs[size_t(s)].n);
    // The last row of each sequence that wants logits, normed and projected as one matrix.
    std::vector<int64_t> want;
    for (int64_t s = 0; s < S; ++s)
      if (seqs[size_t(s)].logits) want.push_back(s);
    if (want.empty()) return;
    const int64_t R = int64_t(want.size());
    backend::Buffer<B> last(size_t(R * d)), lg(size_t(R * V));
    for (int64_t r = 0; r < R; ++r)
      backend::Ops<B>::copy2d(h.data() + (off[size_t(want[size_t(r)] + 1)] - 1) * d, d, last.data() + r * d, d, 1, d);
    norm_.forward(last.data(), R, last.data());
    check_finite(last.data(), R, d, "the final norm (model.norm)");
    backend::Ops<B>::linear(lm_head_, last.data(), R, lg.data());
    check_finite(lg.data(), R, V, c_.tie_word_embeddings ? "lm_head (tied to model.embed_tokens)" : "lm_head");
    for (int64_t r = 0; r < R; ++r) backend::Ops<B>::copy2d(lg.data() + r * V, V, seqs[size_t(want[size_t(r)])].logits, V, 1, V);
  }

  // Full-vocabulary logits of the final hidden states h [n, d] (the MTP head may share lm_head).
  void lm_head(const float* h, int64_t n, float* logits) const { backend::Ops<B>::linear(lm_head_, h, n, logits); }
  const TensorView& embedding() const { return embed_; }

 private:
  struct RowLayout {
    int64_t width, fp8_values, index_fp8;
  };
  // A cache row of this model in `dtype`: its values, and the FP8 prefix and suffix (kv_cache.hpp).
  RowLayout row_layout(nn::CacheDType dtype) const {
    if (dtype == nn::CacheDType::fp8_e4m3 && !c_.use_mla)
      throw Error("an FP8 KV cache quantizes the MLA latent; this model uses plain multi-head attention (use_mla false): use f32 or bf16",
                  in_file(ckpt_->dir()));
    const bool fp8 = dtype == nn::CacheDType::fp8_e4m3;
    // V3.2 under the FP8 indexer: its keys are already e4m3 values, cached as such (kv_cache.hpp).
    const int64_t index_fp8 =
        fp8 && c_.has_indexer() && opts_.indexer_precision == nn::IndexerPrecision::fp8_hadamard ? c_.index_head_dim : 0;
    return {nn::DecoderLayer<B>::cache_row_width(c_), fp8 ? c_.kv_lora_rank : 0, index_fp8};
  }

  // Splits n input rows into prefill chunks; fill(i0, i1, h) writes rows [i0, i1) of the input.
  // Each chunk runs every layer and appends to the cache; logits rows come from the chunks that
  // own them (all of them with all_logits, else the last chunk's last row).
  template <class Fill>
  void run_chunked(int64_t n, float* logits, bool all_logits, float* hidden, Fill&& fill, nn::KvCache& cache,
                   nn::MlaMode mode) const {
    const int64_t d = c_.hidden_size, V = c_.vocab_size;
    if (opts_.prefill_chunk < 0)
      throw Error("LoadOptions::prefill_chunk must be >= 0 (0 = automatic), got " + std::to_string(opts_.prefill_chunk));
    const int64_t chunk = opts_.prefill_chunk > 0 ? opts_.prefill_chunk : (n > kAutoPrefillChunk ? kAutoPrefillChunk : n);
    backend::Buffer<B> h;
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
      const int64_t i1 = std::min(n, i0 + chunk);
      const bool last = i1 == n;
      fill(i0, i1, h);
      float* lg = logits == nullptr ? nullptr : all_logits ? logits + i0 * V : last ? logits : nullptr;
      run_layers(h, i1 - i0, cache.size(), cache, lg, all_logits, hidden ? hidden + i0 * d : nullptr, mode);
    }
  }

  // Decoder layers over h [n, d] at positions p0 .., then model.norm and lm_head.
  void run_layers(backend::Buffer<B>& h, int64_t n, int64_t p0, nn::KvCache& cache, float* logits, bool all_logits,
                  float* hidden, nn::MlaMode mode) const {
    const int64_t d = c_.hidden_size;
    // NaN or inf (from the weights, or from inputs no check caught) would otherwise reach the
    // sampler as all-NaN logits and decode token 0 forever. Each stage's output is scanned once
    // (n*d values per layer, n*V for the logits: ~0.1% of the layer's own work) so the error names
    // where they first appear.
    check_finite(h.data(), n, d, "the input embeddings (model.embed_tokens)");
    for (size_t l = 0; l < layers_.size(); ++l) {
      layers_[l].forward(h.data(), n, p0, cache.view(int(l)), mode);
      check_finite(h.data(), n, d, "decoder layer", int(l));
    }
    cache.resize(p0 + n);
    norm_.forward(h.data(), n, h.data());
    check_finite(h.data(), n, d, "the final norm (model.norm)");
    if (hidden) backend::Ops<B>::copy2d(h.data(), d, hidden, d, n, d);
    if (logits) {
      const int64_t rows = all_logits ? n : 1;
      backend::Ops<B>::linear(lm_head_, h.data() + (n - rows) * d, rows, logits);
      check_finite(logits, rows, c_.vocab_size, c_.tie_word_embeddings ? "lm_head (tied to model.embed_tokens)" : "lm_head");
    }
  }

  // Every id in [0, vocab); `prefix` names the sequence in a batched step.
  void check_ids(const int32_t* ids, int64_t n, const std::string& prefix) const {
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || ids[i] >= c_.vocab_size)
        throw Error(prefix + "token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(c_.vocab_size) + ")");
  }

  // `layer` >= 0 names a decoder layer. Ops::all_finite answers on B's device; only a failure
  // copies the values to the host to name the first bad one.
  void check_finite(const float* x, int64_t rows, int64_t cols, const char* stage, int layer = -1) const {
    if (backend::Ops<B>::all_finite(x, rows * cols)) return;
    std::vector<float> host(size_t(rows * cols));
    backend::Ops<B>::download(x, rows * cols, host.data());
    deepseek::check_finite(
        host.data(), rows, cols,
        [&] {
          return std::string(stage) +
                 (layer >= 0 ? " " + std::to_string(layer) + " (model.layers." + std::to_string(layer) + ")" : std::string());
        },
        in_file(ckpt_->dir()));
  }

  std::shared_ptr<const io::Checkpoint> ckpt_;
  // On a GPU the blocks' views point into uploads that live as long as a view of their family
  // does (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  io::ModelConfig c_;
  LoadOptions opts_;
  TensorView embed_;
  nn::Rope rope_;
  std::vector<nn::DecoderLayer<B>> layers_;
  nn::RmsNorm<B> norm_;
  BlockQuantMatrix lm_head_;
};

}  // namespace deepseek::models
