// MLA: multi-head latent attention (DeepSeek-V2/V3), H heads, per token x [d]:
//   q   = W_qb RMSNorm(W_qa x)   [H, nope + rope]   (q_a_proj, q_a_layernorm, q_b_proj)
//       or W_q x without q_lora                     (q_proj)
//   [c ; k_pe_raw] = W_kva x     [kv_lora + rope]   (kv_a_proj_with_mqa)
//   c_kv = RMSNorm(c)            [kv_lora]          (kv_a_layernorm), k_pe = RoPE(k_pe_raw, p)
//   kv_b_proj [H (nope + v), kv_lora]: per head W_UK[h] = rows [h(nope+v), h(nope+v)+nope),
//                                               W_UV[h] = the next v rows
//   score_h(s,t) = scale (q_nope_h(s) . W_UK[h] c_kv(t) + RoPE(q_pe_h(s)) . k_pe(t)), t <= s
//   o_h(s) = sum_t softmax_t(score_h) W_UV[h] c_kv(t);  out = W_o [o_1 .. o_H]   (o_proj)
// Two exact evaluation orders:
//   naive     expand k_nope, v = kv_b_proj(c_kv) for every cached token, then attend per head
//             (cheapest for a long prefill from an empty cache)
//   absorbed  fold W_UK into the query (q~ = W_UK[h]^T q_nope, 512 values) and W_UV into the
//             output; attend over the cached latent rows [c_kv ; k_pe] directly (decode)
// The cache holds kv_lora + rope values per token (see kv_cache.hpp). scale: rope.hpp.
// DSA (V3.2, self_attn.indexer.*, dsa.hpp): an Indexer picks index_topk positions per query and
// attention runs over those rows only. The cache row then holds [c_kv ; k_pe ; index key] (kv_lora
// + rope + index_head_dim values), so one block table pages both. Sparse orders:
//   absorbed  gathers the addresses of the selected rows once per query and attends over them
//             only: O(k) per query and head; unselected rows are never read
//   naive     the plain reference: expands every cached row, masks all but the selected ones
//             (transformers' masked-dense semantics: the set is the top-k among positions <= s)
#pragma once

#include "deepseek/backend/cpu/backend.hpp"
#include "deepseek/core/parallel.hpp"
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

enum class MlaMode { automatic, naive, absorbed };

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
               Selection* selection = nullptr) const {
    const int64_t H = c_.num_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim;
    const int64_t lora = c_.kv_lora_rank, W = c_.cache_width();
    using Ops = backend::Ops<B>;

    // Queries [n, H, qk]; RoPE on each head's last `rope` dims.
    std::vector<float> q(size_t(n * H * qk)), qa;
    if (c_.q_lora_rank > 0) {
      qa.resize(size_t(n * c_.q_lora_rank));
      Ops::linear(q_a_proj_, x, n, qa.data());
      q_a_layernorm_.forward(qa.data(), n, qa.data());
      Ops::linear(q_b_proj_, qa.data(), n, q.data());
    } else {
      Ops::linear(q_proj_, x, n, q.data());
    }
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < H; ++h) rope_.apply(q.data() + (t * H + h) * qk + nope, p0 + t);

    // New latent rows straight into the cache.
    std::vector<float> kv(size_t(n * W));
    Ops::linear(kv_a_proj_with_mqa_, x, n, kv.data());
    for (int64_t t = 0; t < n; ++t) {
      float* row = cache.row(p0 + t);
      kv_a_layernorm_.forward(kv.data() + t * W, 1, row);
      std::copy(kv.data() + t * W + lora, kv.data() + (t + 1) * W, row + lora);
      rope_.apply(row + lora, p0 + t);
    }

    const int64_t T = p0 + n;
    std::vector<float> o(size_t(n * H * c_.v_head_dim));
    if (indexer_) {
      Selection local;
      Selection& sel = selection ? *selection : local;
      indexer_->forward(x, qa.data(), n, p0, cache, W, sel);
      if (mode == MlaMode::naive) attend_naive(q.data(), n, p0, T, cache, o.data(), &sel);
      else attend_sparse(q.data(), n, sel, cache, o.data());
      Ops::linear(o_proj_, o.data(), n, y);
      return;
    }
    if (mode == MlaMode::automatic) mode = (n >= 16 && p0 == 0) ? MlaMode::naive : MlaMode::absorbed;
    if (mode == MlaMode::naive) {
      attend_naive(q.data(), n, p0, T, cache, o.data());
    } else {
      attend_absorbed(q.data(), n, p0, T, cache, o.data());
    }
    Ops::linear(o_proj_, o.data(), n, y);
  }

 private:
  // Expands k_nope and v for all T cached tokens, then attends head by head (over the selected
  // positions only when `sel` is given).
  void attend_naive(const float* q, int64_t n, int64_t p0, int64_t T, const CacheView& cache, float* o,
                    const Selection* sel = nullptr) const {
    const int64_t H = c_.num_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim, rope = c_.qk_rope_head_dim;
    const int64_t lora = c_.kv_lora_rank, vd = c_.v_head_dim, kvw = nope + vd;
    using Ops = backend::Ops<B>;
    std::vector<float> latent(size_t(T * lora)), kpe(size_t(T * rope));
    for (int64_t t = 0; t < T; ++t) {
      const float* row = cache.row(t);
      std::copy(row, row + lora, latent.data() + t * lora);
      std::copy(row + lora, row + lora + rope, kpe.data() + t * rope);
    }
    std::vector<float> kvb(size_t(T * H * kvw));  // [T, H, nope + v]
    Ops::linear(kv_b_proj_, latent.data(), T, kvb.data());
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      std::vector<float> p(static_cast<size_t>(T));
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t s = 0; s < n; ++s) {
          const float* qs = q + (s * H + h) * qk;
          const int32_t* ix = sel ? sel->row(s) : nullptr;
          const int64_t len = sel ? int64_t(sel->count[size_t(s)]) : p0 + s + 1;
          for (int64_t j = 0; j < len; ++j) {
            const int64_t t = ix ? int64_t(ix[j]) : j;
            const float* k = kvb.data() + (t * H + h) * kvw;
            p[size_t(j)] = float(scale_) * (Ops::dot(qs, k, nope) + Ops::dot(qs + nope, kpe.data() + t * rope, rope));
          }
          Ops::softmax(p.data(), len);
          float* os = o + (s * H + h) * vd;
          std::fill(os, os + vd, 0.0f);
          for (int64_t j = 0; j < len; ++j)
            Ops::axpy(p[size_t(j)], kvb.data() + ((ix ? int64_t(ix[j]) : j) * H + h) * kvw + nope, os, vd);
        }
    });
  }

  // Attends over the cached latent rows with W_UK folded into the query and W_UV into the output.
  void attend_absorbed(const float* q, int64_t n, int64_t p0, int64_t T, const CacheView& cache, float* o) const {
    const int64_t H = c_.num_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim, rope = c_.qk_rope_head_dim;
    const int64_t lora = c_.kv_lora_rank, vd = c_.v_head_dim, kvw = nope + vd;
    using Ops = backend::Ops<B>;
    (void)T;
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      std::vector<float> qt(size_t(n * lora)), ot(size_t(n * lora)), p;
      for (int64_t h = h0; h < h1; ++h) {
        // q~[s] = W_UK[h]^T q_nope_h[s]
        Ops::linear_transposed_rows(kv_b_proj_, h * kvw, h * kvw + nope, q + h * qk, n, qt.data(), H * qk, lora);
        for (int64_t s = 0; s < n; ++s) {
          const float* qs = q + (s * H + h) * qk;
          const float* qts = qt.data() + s * lora;
          const int64_t len = p0 + s + 1;
          p.resize(size_t(len));
          for (int64_t t = 0; t < len; ++t) {
            const float* row = cache.row(t);
            p[size_t(t)] = float(scale_) * (Ops::dot(qts, row, lora) + Ops::dot(qs + nope, row + lora, rope));
          }
          Ops::softmax(p.data(), len);
          float* os = ot.data() + s * lora;
          std::fill(os, os + lora, 0.0f);
          for (int64_t t = 0; t < len; ++t) Ops::axpy(p[size_t(t)], cache.row(t), os, lora);
        }
        // o_h[s] = W_UV[h] o~[s]
        Ops::linear_rows(kv_b_proj_, h * kvw + nope, (h + 1) * kvw, ot.data(), n, o + h * vd, lora, H * vd);
      }
    });
  }

  // Absorbed attention over the selected rows only. Per query the selected row addresses are
  // gathered once; heads then sweep them in blocks of kSparseBlock rows (a block stays in cache
  // while every head of the thread's range reads it): scores, softmax, then o~ = sum_j p_j c_kv(j).
  void attend_sparse(const float* q, int64_t n, const Selection& sel, const CacheView& cache, float* o) const {
    const int64_t H = c_.num_heads, qk = c_.qk_head_dim(), nope = c_.qk_nope_head_dim, rope = c_.qk_rope_head_dim;
    const int64_t lora = c_.kv_lora_rank, vd = c_.v_head_dim, kvw = nope + vd;
    constexpr int64_t kSparseBlock = 64;
    using Ops = backend::Ops<B>;
    std::vector<float> qt(size_t(n * H * lora)), ot(size_t(n * H * lora));  // [n, H, lora]
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h)  // q~[s, h] = W_UK[h]^T q_nope_h[s]
        Ops::linear_transposed_rows(kv_b_proj_, h * kvw, h * kvw + nope, q + h * qk, n, qt.data() + h * lora, H * qk, H * lora);
    });
    std::vector<const float*> rows;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t len = sel.count[size_t(s)];
      rows.resize(size_t(len));
      for (int64_t j = 0; j < len; ++j) rows[size_t(j)] = cache.row(sel.row(s)[j]);
      parallel_for(H, [&](int64_t h0, int64_t h1) {
        std::vector<float> p(size_t((h1 - h0) * len));
        for (int64_t j0 = 0; j0 < len; j0 += kSparseBlock)
          for (int64_t h = h0; h < h1; ++h) {
            const float* qs = q + (s * H + h) * qk;
            const float* qts = qt.data() + (s * H + h) * lora;
            for (int64_t j = j0; j < std::min(len, j0 + kSparseBlock); ++j) {
              const float* row = rows[size_t(j)];
              p[size_t((h - h0) * len + j)] = float(scale_) * (Ops::dot(qts, row, lora) + Ops::dot(qs + nope, row + lora, rope));
            }
          }
        for (int64_t h = h0; h < h1; ++h) {
          Ops::softmax(p.data() + (h - h0) * len, len);
          std::fill(ot.data() + (s * H + h) * lora, ot.data() + (s * H + h + 1) * lora, 0.0f);
        }
        for (int64_t j0 = 0; j0 < len; j0 += kSparseBlock)
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t j = j0; j < std::min(len, j0 + kSparseBlock); ++j)
              Ops::axpy(p[size_t((h - h0) * len + j)], rows[size_t(j)], ot.data() + (s * H + h) * lora, lora);
      });
    }
    parallel_for(H, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h)  // o_h[s] = W_UV[h] o~[s, h]
        Ops::linear_rows(kv_b_proj_, h * kvw + nope, (h + 1) * kvw, ot.data() + h * lora, n, o + h * vd, H * lora, H * vd);
    });
  }

  MlaConfig c_;
  Rope rope_;
  double scale_ = 1.0;
  std::optional<Indexer<B>> indexer_;
  BlockQuantMatrix q_a_proj_, q_b_proj_, q_proj_, kv_a_proj_with_mqa_, kv_b_proj_, o_proj_;
  RmsNorm<B> q_a_layernorm_, kv_a_layernorm_;
};

}  // namespace deepseek::nn
