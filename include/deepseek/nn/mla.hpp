// MLA: multi-head latent attention (DeepSeek-V2/V3), H heads, per token x [d]:
//   q   = W_qb RMSNorm(W_qa x)   [H, nope + rope]   (q_a_proj, q_a_layernorm, q_b_proj)
//       or W_q x without q_lora                     (q_proj)
//   [c ; k_pe_raw] = W_kva x     [kv_lora + rope]   (kv_a_proj_with_mqa)
//   c_kv = RMSNorm(c)            [kv_lora]          (kv_a_layernorm), k_pe = RoPE(k_pe_raw, p)
//   kv_b_proj [H (nope + v), kv_lora]: per head W_UK[h] = rows [h(nope+v), h(nope+v)+nope),
//                                               W_UV[h] = the next v rows
//   score_h(s,t) = scale (q_nope_h(s) . W_UK[h] c_kv(t) + RoPE(q_pe_h(s)) . k_pe(t)), t <= s
//   o_h(s) = sum_t softmax_t(score_h) W_UV[h] c_kv(t);  out = W_o [o_1 .. o_H]   (o_proj)
// Three exact evaluation orders (the same sums; rounding differs by summation order only):
//   naive     expand k_nope, v = kv_b_proj(c_kv) for every cached token, then attend per head: the
//             plain reference (T x H x (nope + v) floats at once: 4.3 GB at T = 32K, V3 shapes)
//   tiled     the same arithmetic one block of kTileRows cached rows at a time: expand the block,
//             then a flash-attention step per head (online softmax; Ops::mla_tiled_attention);
//             memory n x H x v for the outputs + one expanded block, never T x H x (nope + v) or T x T
//   absorbed  fold W_UK into the query (q~ = W_UK[h]^T q_nope, 512 values) and W_UV into the
//             output; attend over the cached latent rows [c_kv ; k_pe] directly, every row read
//             once for all heads (Ops::mla_absorb, mla_latent_attention, mla_unabsorb; split-K at decode)
// Cost per call, n queries over T cached rows (T~ = the mean visible length), in multiply-adds:
//   tiled     T H (nope + v) lora  +  n T~ H (qk + v)            (expansion + attention)
//   absorbed  n H (nope + v) lora  +  n T~ H (2 lora + rope)      (absorption + attention)
// `automatic` takes the smaller: absorbed for decode and short chunks, tiled for prefill (from an
// empty cache tiled always wins: n = T makes the first terms equal and qk + v < 2 lora + rope).
// With V3 shapes tiled wins from about n = 170 queries a chunk at any context.
// The cache holds kv_lora + rope values per token, bf16 (default), f32 or FP8 (see kv_cache.hpp).
// With bf16 activations (the projections' inputs rounded to bf16) the absorbed order over a bf16
// cache rounds q~ and the softmax weights too and multiplies the rows natively on AVX512-BF16
// (LatentRows::bf16_products): the attention FLOPs then run at the bf16 rate. scale: rope.hpp.
// DSA (V3.2, self_attn.indexer.*, dsa.hpp): an Indexer picks index_topk positions per query and
// attention runs over those rows only. The cache row then holds [c_kv ; k_pe ; index key] (kv_lora
// + rope + index_head_dim values), so one block table pages both. Sparse orders:
//   absorbed  gathers the addresses of the selected rows once per query and attends over them
//             only: O(k) per query and head; unselected rows are never read
//   naive     the plain reference: expands every cached row, masks all but the selected ones
//             (transformers' masked-dense semantics: the set is the top-k among positions <= s)
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/dsa.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/rope.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace deepseek::nn {

enum class MlaMode { automatic, naive, tiled, absorbed };

struct MlaConfig {
  int64_t hidden_size = 0, num_heads = 0, q_lora_rank = 0, kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  int64_t index_head_dim = 0;  // > 0: V3.2, the cache row also holds the indexer key

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t cache_width() const { return kv_lora_rank + qk_rope_head_dim; }  // the latent part of a row
  int64_t row_width() const { return cache_width() + index_head_dim; }
  static MlaConfig from(const io::ModelConfig& c) {
    return MlaConfig{c.hidden_size, c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank,
                     c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.has_indexer() ? c.index_head_dim : 0};
  }
};

template <class B>
class Mla {
 public:
  // Latent norms use eps 1e-6 in the official code and in transformers, whatever rms_norm_eps says.
  static constexpr float kLatentNormEps = 1e-6f;

  Mla() = default;
  // `indexer` (V3.2) makes attention sparse; it needs q_lora_rank > 0 and c.index_head_dim set.
  Mla(const io::Weights& w, const MlaConfig& c, const Rope& rope, float softmax_scale,
      std::optional<Indexer<B>> indexer = std::nullopt)
      : c_(c), rope_(rope), scale_(softmax_scale), indexer_(std::move(indexer)) {
    if (indexer_ && (c.q_lora_rank <= 0 || c.index_head_dim != indexer_->config().head_dim))
      throw Error("the DSA indexer needs q_lora_rank > 0 and MlaConfig::index_head_dim == index_head_dim");
    const int64_t H = c.num_heads, qk = c.qk_head_dim();
    if (c.q_lora_rank > 0) {
      q_a_proj_ = w.matrix("q_a_proj", c.q_lora_rank, c.hidden_size);
      q_a_layernorm_ = RmsNorm<B>(w, "q_a_layernorm", c.q_lora_rank, kLatentNormEps);
      q_b_proj_ = w.matrix("q_b_proj", H * qk, c.q_lora_rank);
    } else {
      q_proj_ = w.matrix("q_proj", H * qk, c.hidden_size);
    }
    kv_a_proj_with_mqa_ = w.matrix("kv_a_proj_with_mqa", c.cache_width(), c.hidden_size);
    kv_a_layernorm_ = RmsNorm<B>(w, "kv_a_layernorm", c.kv_lora_rank, kLatentNormEps);
    kv_b_proj_ = w.matrix("kv_b_proj", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    o_proj_ = w.matrix("o_proj", c.hidden_size, H * c.v_head_dim);
  }

  const MlaConfig& config() const { return c_; }
  const Indexer<B>* indexer() const { return indexer_ ? &*indexer_ : nullptr; }

  // Queries for tokens at positions p0 .. p0+n-1 (x: [n, d], already normed). Writes their latent
  // rows into `cache` (which must have room for p0 + n rows), attends causally over [0, p0 + n)
  // and writes y: [n, d]. With an indexer, each query attends over its selected rows only (the
  // selection is copied to `selection` when given) and `automatic` means the sparse absorbed order.
  void forward(const float* x, int64_t n, int64_t p0, const CacheView& cache, float* y, MlaMode mode = MlaMode::automatic,
               BasicSelection<B>* selection = nullptr) const {
    forward_segments(x, {Segment{0, n, p0, cache, selection}}, y, mode);
  }

  // One sequence's rows of a batched step: rows [off, off + n) of x at positions p0 .., its cache.
  struct Segment {
    int64_t off = 0, n = 0, p0 = 0;
    CacheView cache;
    BasicSelection<B>* selection = nullptr;
  };

  // forward() for several sequences in one call (x, y: [N, d], N = the segments' rows, in order):
  // the projections (q, kv_a, o) see all N rows as one matrix; RoPE, the cache rows, the indexer and
  // the attention order are per segment, each over its own cache.
  void forward_segments(const float* x, const std::vector<Segment>& segs, float* y, MlaMode mode = MlaMode::automatic) const {
    const int64_t H = c_.num_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim, d = c_.hidden_size;
    const int64_t lora = c_.kv_lora_rank, W = c_.cache_width(), vd = c_.v_head_dim;
    using Ops = backend::Ops<B>;
    int64_t N = 0;
    for (const Segment& g : segs) {
      if (g.off != N || g.n <= 0) throw Error("Mla::forward_segments: segments must cover the rows in order, each non-empty");
      N += g.n;
    }

    // Queries [N, H, qk]; RoPE on each head's last `rope` dims at each token's own position.
    backend::Buffer<B> q(size_t(N * H * qk)), qa;
    if (c_.q_lora_rank > 0) {
      qa.resize(size_t(N * c_.q_lora_rank));
      Ops::linear(q_a_proj_, x, N, qa.data());
      q_a_layernorm_.forward(qa.data(), N, qa.data());
      Ops::linear(q_b_proj_, qa.data(), N, q.data());
    } else {
      Ops::linear(q_proj_, x, N, q.data());
    }
    // New latent rows [c_kv ; k_pe] [N, W], then straight into each segment's cache.
    backend::Buffer<B> kv(size_t(N * W));
    Ops::linear(kv_a_proj_with_mqa_, x, N, kv.data());
    kv_a_layernorm_.forward(kv.data(), N, kv.data(), W, W);
    const backend::RopeParams rp = rope_.params();
    for (const Segment& g : segs) {
      Ops::rope(q.data() + g.off * H * qk + nope, g.n, H, H * qk, qk, g.p0, rp);
      Ops::rope(kv.data() + g.off * W + lora, g.n, 1, W, 0, g.p0, rp);
      Ops::store_rows(g.cache, g.p0, 0, kv.data() + g.off * W, g.n, W, W);  // rounded once here when the cache is bf16
    }

    backend::Buffer<B> o(size_t(N * H * vd));
    for (const Segment& g : segs) {
      const float* qs = q.data() + g.off * H * qk;
      float* os = o.data() + g.off * H * vd;
      if (indexer_) {
        BasicSelection<B> local;
        BasicSelection<B>& sel = g.selection ? *g.selection : local;
        indexer_->forward(x + g.off * d, qa.size() == 0 ? nullptr : qa.data() + g.off * c_.q_lora_rank, g.n, g.p0, g.cache, W, sel);
        if (mode == MlaMode::naive) {
          Ops::mla_expanded_attention(kv_b_proj_, dims(), float(scale_), qs, g.n, g.p0, g.cache, sel.idx.data(), sel.count.data(),
                                      sel.k, os);
        } else {
          attend_absorbed(qs, g.n, g.p0, g.cache, &sel, os);
        }
        continue;
      }
      const MlaMode m = mode == MlaMode::automatic ? choose_order(g.n, g.p0) : mode;
      if (m == MlaMode::naive) {
        Ops::mla_expanded_attention(kv_b_proj_, dims(), float(scale_), qs, g.n, g.p0, g.cache, nullptr, nullptr, 0, os);
      } else if (m == MlaMode::tiled) {
        Ops::mla_tiled_attention(kv_b_proj_, dims(), float(scale_), qs, g.n, g.p0, g.cache, os);
      } else {
        attend_absorbed(qs, g.n, g.p0, g.cache, nullptr, os);
      }
    }
    Ops::linear(o_proj_, o.data(), N, y);
  }

 private:
  backend::MlaDims dims() const {
    return backend::MlaDims{c_.num_heads, c_.qk_nope_head_dim, c_.qk_rope_head_dim, c_.kv_lora_rank, c_.v_head_dim};
  }

  // The cost rule of the header comment (multiply-adds; both orders read the same rows).
  MlaMode choose_order(int64_t n, int64_t p0) const {
    const double H = double(c_.num_heads), lora = double(c_.kv_lora_rank), nope = double(c_.qk_nope_head_dim);
    const double v = double(c_.v_head_dim), qk = double(c_.qk_head_dim()), rope = double(c_.qk_rope_head_dim);
    const double T = double(p0 + n), mean_len = double(p0) + double(n + 1) / 2;
    const double tiled = T * H * (nope + v) * lora + double(n) * mean_len * H * (qk + v);
    const double absorbed = double(n) * H * (nope + v) * lora + double(n) * mean_len * H * (2 * lora + rope);
    return tiled < absorbed ? MlaMode::tiled : MlaMode::absorbed;
  }

  // Absorbed order: qa[s, h] = [W_UK[h]^T q_nope ; q_pe] [n, H, lora + rope], one pass over the
  // latent rows for all heads (query s sees rows [0, p0 + s], or only its selected rows with DSA:
  // unselected rows are never read), then o_h = W_UV[h] o~[s, h]. bf16 activations
  // (LoadOptions::activations) round the inputs of every product to bf16: with a bf16 cache that
  // includes attention's q~ and p, so the cached rows multiply natively.
  void attend_absorbed(const float* q, int64_t n, int64_t p0, const CacheView& cache, const BasicSelection<B>* sel, float* o) const {
    const int64_t H = c_.num_heads, lora = c_.kv_lora_rank, Wq = lora + c_.qk_rope_head_dim;
    using Ops = backend::Ops<B>;
    backend::Buffer<B> qa(size_t(n * H * Wq)), ot(size_t(n * H * lora));
    Ops::mla_absorb(kv_b_proj_, dims(), q, n, qa.data());
    const bool bf16_products = kv_b_proj_.activations == ActivationDType::bf16;
    Ops::mla_latent_attention(dims(), float(scale_), qa.data(), n, p0, cache, sel ? sel->idx.data() : nullptr,
                              sel ? sel->count.data() : nullptr, sel ? sel->k : 0, bf16_products, ot.data());
    Ops::mla_unabsorb(kv_b_proj_, dims(), ot.data(), n, o);
  }

  MlaConfig c_;
  Rope rope_;
  double scale_ = 1.0;
  std::optional<Indexer<B>> indexer_;
  BlockQuantMatrix q_a_proj_, q_b_proj_, q_proj_, kv_a_proj_with_mqa_, kv_b_proj_, o_proj_;
  RmsNorm<B> q_a_layernorm_, kv_a_layernorm_;
};

}  // namespace deepseek::nn
