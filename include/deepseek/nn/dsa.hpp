// DSA lightning indexer (DeepSeek-V3.2): picks, for each query, the index_topk earlier tokens MLA
// attends to. Per token x [d] (attention-normed hidden) and c_q [q_lora] (q_a_layernorm(q_a_proj x),
// the latent MLA's query already computes), index heads h < H_I, head dim D:
//   q_h  = (W_qb c_q)_h               [H_I, D]   indexer.wq_b [H_I D, q_lora]
//   k    = LayerNorm(W_k x)           [D]        indexer.wk [D, d], indexer.k_norm.{weight,bias} (eps 1e-6)
//   RoPE on dims [0, rope) of every q_h and of k: half-split pairs (x_i, x_{i+rope/2}), the MLA
//        angles (and YaRN attention factor) of qk_rope_head_dim; dims [rope, D) pass through
//   w_h  = (W_w x)_h * H_I^-0.5       [H_I]      indexer.weights_proj [H_I, d]
//   I(s,t) = sum_h w_h ReLU(D^-0.5 q_h(s) . k(t)),  t <= s
//   sel(s) = the min(index_topk, s + 1) positions of largest I(s, .); ties go to the lower position
//            (torch.topk's tie order depends on the tensor shape, so transformers' own cached decode
//            can select differently from its full forward when scores tie exactly, e.g. at 0)
// Keys live in the KV cache row beside the latent (columns [kv_lora + rope, + D), see mla.hpp), so
// paging and rollback cover them. A (query, key) score is computed by the same loop whatever the
// chunking; only the projections' rounding (~1e-7) differs between decode and prefill.
//
// IndexerPrecision::fp8_hadamard simulates the official kernel (spec §5.3): q heads and k are
// rotated by the orthonormal Walsh-Hadamard matrix (1/sqrt(D)) H_D, then quantized to e4m3 with one
// power-of-two (ue8m0) scale per block of 128 values (act_quant), and scored dequantized. Checked
// against a PyTorch port of the official path (tests/reference/make_dsa_fixtures.py,
// v32_dsa_fp8_indexer: D = 128, 8 index heads, index_topk 8): the selections are equal, and 26 of
// 640 selected entries (4.1%) differ from the f32 selection. The official code rounds the rotated
// vectors to bf16 before quantizing (its activations are bf16); with our f32 activations that step
// is absent. The default (f32) matches transformers' DeepseekV32 port, which skips the rotation and FP8.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/device.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/rope.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace deepseek::nn {

enum class IndexerPrecision { f32, fp8_hadamard };

struct IndexerConfig {
  int64_t hidden_size = 0, q_lora_rank = 0, n_heads = 0, head_dim = 0, rope_dim = 0, topk = 0;
  static IndexerConfig from(const io::ModelConfig& c) {
    return IndexerConfig{c.hidden_size,    c.q_lora_rank,      c.index_n_heads,
                         c.index_head_dim, c.qk_rope_head_dim, c.index_topk};
  }
};

// The selected positions of n queries on B's device: row s holds count[s] positions, ascending,
// in idx[s * k, s * k + count[s]) (the rest of the row is -1). Selection is the CPU's, whose rows
// the host reads directly.
template <class B>
struct BasicSelection {
  int64_t k = 0;
  backend::IndexBuffer<B> idx, count;
  const int32_t* row(int64_t s) const { return idx.data() + s * k; }
};
using Selection = BasicSelection<cpu>;

template <class B>
class Indexer {
 public:
  static constexpr float kNormEps = 1e-6f;

  Indexer() = default;
  // w: the `self_attn.indexer` scope; rope: half-split, qk_rope_head_dim dims.
  Indexer(const io::Weights& w, const IndexerConfig& c, const Rope& rope,
          IndexerPrecision precision = IndexerPrecision::f32)
      : c_(c),
        rope_(rope),
        precision_(precision) {
    if (precision == IndexerPrecision::fp8_hadamard && (c.head_dim & (c.head_dim - 1)) != 0)
      throw Error("the FP8 indexer needs a power-of-two index_head_dim (Hadamard rotation), got " +
                  std::to_string(c.head_dim));
    wq_b_ = w.matrix("wq_b", c.n_heads * c.head_dim, c.q_lora_rank);
    wk_ = w.matrix("wk", c.head_dim, c.hidden_size);
    weights_proj_ = w.matrix("weights_proj", c.n_heads, c.hidden_size);
    const std::initializer_list<DType> f = {DType::f32, DType::bf16, DType::f16};
    k_norm_weight_ = backend::Ops<B>::vector_f32(w.get("k_norm.weight", Shape{c.head_dim}, f));
    k_norm_bias_ = backend::Ops<B>::vector_f32(w.get("k_norm.bias", Shape{c.head_dim}, f));
  }

  const IndexerConfig& config() const { return c_; }
  IndexerPrecision precision() const { return precision_; }

  // Tokens at positions p0 .. p0+n-1 (x [n, d], cq [n, q_lora]): writes their keys to
  // columns [col, col + D) of cache row p, then selects for each query among [0, p0 + s].
  void forward(const float* x, const float* cq, int64_t n, int64_t p0, const CacheView& cache, int64_t col,
               BasicSelection<B>& sel) const {
    const int64_t H = c_.n_heads, D = c_.head_dim;
    using Ops = backend::Ops<B>;
    backend::Buffer<B> q(size_t(n * H * D)), k(size_t(n * D)), w(size_t(n * H));
    Ops::linear(wq_b_, cq, n, q.data());
    Ops::linear(wk_, x, n, k.data());
    Ops::linear(weights_proj_, x, n, w.data());
    Ops::scale(w.data(), n * H, 1.0f / std::sqrt(float(H)));
    const bool fp8 = precision_ == IndexerPrecision::fp8_hadamard;
    Ops::indexer_keys(k.data(), n, D, k_norm_weight_.data(), k_norm_bias_.data(), kNormEps, p0, rope_.params(), fp8);
    Ops::indexer_queries(q.data(), n, H, D, p0, rope_.params(), fp8);
    Ops::store_rows(cache, p0, col, k.data(), n, D, D);
    sel.k = c_.topk;
    sel.idx = backend::IndexBuffer<B>(size_t(n * c_.topk), -1);
    sel.count = backend::IndexBuffer<B>(size_t(n), 0);
    Ops::indexer_select(q.data(), w.data(), n, p0, H, D, 1.0f / std::sqrt(float(D)), cache, col, c_.topk, sel.idx.data(),
                        sel.count.data());
  }

 private:
  IndexerConfig c_;
  Rope rope_;
  IndexerPrecision precision_ = IndexerPrecision::f32;
  BlockQuantMatrix wq_b_, wk_, weights_proj_;
  backend::Buffer<B> k_norm_weight_, k_norm_bias_;
};

}  // namespace deepseek::nn
