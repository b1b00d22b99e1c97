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

#include "deepseek/backend/cpu/backend.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/parallel.hpp"
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

// The selected positions of n queries: row s holds count[s] positions, ascending, in
// idx[s * k, s * k + count[s]).
struct Selection {
  int64_t k = 0;
  std::vector<int32_t> idx, count;
  const int32_t* row(int64_t s) const { return idx.data() + s * k; }
};

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
        precision_(precision),
        k_norm_weight_(size_t(c.head_dim)),
        k_norm_bias_(size_t(c.head_dim)) {
    if (precision == IndexerPrecision::fp8_hadamard && (c.head_dim & (c.head_dim - 1)) != 0)
      throw Error("the FP8 indexer needs a power-of-two index_head_dim (Hadamard rotation), got " +
                  std::to_string(c.head_dim));
    wq_b_ = w.matrix("wq_b", c.n_heads * c.head_dim, c.q_lora_rank);
    wk_ = w.matrix("wk", c.head_dim, c.hidden_size);
    weights_proj_ = w.matrix("weights_proj", c.n_heads, c.hidden_size);
    const std::initializer_list<DType> f = {DType::f32, DType::bf16, DType::f16};
    backend::cpu::to_f32(w.get("k_norm.weight", Shape{c.head_dim}, f), k_norm_weight_.data());
    backend::cpu::to_f32(w.get("k_norm.bias", Shape{c.head_dim}, f), k_norm_bias_.data());
  }

  const IndexerConfig& config() const { return c_; }
  IndexerPrecision precision() const { return precision_; }

  // Tokens at positions p0 .. p0+n-1 (x [n, d], cq [n, q_lora]): writes their keys to
  // columns [col, col + D) of cache row p, then selects for each query among [0, p0 + s].
  void forward(const float* x, const float* cq, int64_t n, int64_t p0, const CacheView& cache, int64_t col,
               Selection& sel) const {
    const int64_t H = c_.n_heads, D = c_.head_dim;
    using Ops = backend::Ops<B>;
    std::vector<float> q(size_t(n * H * D)), k(size_t(n * D)), w(size_t(n * H));
    Ops::linear(wq_b_, cq, n, q.data());
    Ops::linear(wk_, x, n, k.data());
    Ops::linear(weights_proj_, x, n, w.data());
    const float head_scale = 1.0f / std::sqrt(float(H));
    for (auto& v : w) v *= head_scale;
    for (int64_t t = 0; t < n; ++t) {
      float* kt = k.data() + t * D;
      layer_norm(kt);
      rope_.apply(kt, p0 + t);
      for (int64_t h = 0; h < H; ++h) rope_.apply(q.data() + (t * H + h) * D, p0 + t);
      if (precision_ == IndexerPrecision::fp8_hadamard) {
        fp8_hadamard(kt);
        for (int64_t h = 0; h < H; ++h) fp8_hadamard(q.data() + (t * H + h) * D);
      }
      cache.store(p0 + t, col, kt, D);
    }

    sel.k = c_.topk;
    sel.idx.assign(size_t(n * c_.topk), -1);
    sel.count.assign(size_t(n), 0);
    const float scale = 1.0f / std::sqrt(float(D));
    const auto key_format = cache.dtype == CacheDType::f32 ? Ops::KeyFormat::f32
                            : cache.index_fp8 > 0          ? Ops::KeyFormat::fp8
                                                           : Ops::KeyFormat::bf16;
    std::vector<float> score;
    std::vector<const void*> keys;
    std::vector<int32_t> order;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t len = p0 + s + 1;
      const float* qs = q.data() + s * H * D;
      const float* ws = w.data() + s * H;
      int32_t* out = sel.idx.data() + s * c_.topk;
      if (len <= c_.topk) {  // everything is selected: no need to score
        for (int64_t t = 0; t < len; ++t) out[t] = int32_t(t);
        sel.count[size_t(s)] = int32_t(len);
        continue;
      }
      score.resize(size_t(len));
      if (keys.empty())  // the key addresses of rows [0, p0 + n), gathered once for every query
        for (int64_t t = 0; t < p0 + n; ++t) keys.push_back(cache.values_at(t, col));
      Ops::indexer_scores(qs, ws, H, D, scale, keys.data(), key_format, len, score.data());
      order.resize(size_t(len));
      for (int64_t t = 0; t < len; ++t) order[size_t(t)] = int32_t(t);
      auto before = [&](int32_t a, int32_t b) {
        return score[size_t(a)] > score[size_t(b)] || (score[size_t(a)] == score[size_t(b)] && a < b);
      };
      std::nth_element(order.begin(), order.begin() + c_.topk, order.end(), before);
      std::sort(order.begin(), order.begin() + c_.topk);
      std::copy(order.begin(), order.begin() + c_.topk, out);
      sel.count[size_t(s)] = int32_t(c_.topk);
    }
  }

 private:
  void layer_norm(float* v) const {
    const int64_t D = c_.head_dim;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < D; ++i) mean += v[i];
    mean /= double(D);
    for (int64_t i = 0; i < D; ++i) var += (v[i] - mean) * (v[i] - mean);
    const float inv = float(1.0 / std::sqrt(var / double(D) + double(kNormEps)));
    for (int64_t i = 0; i < D; ++i)
      v[i] = (v[i] - float(mean)) * inv * k_norm_weight_[size_t(i)] + k_norm_bias_[size_t(i)];
  }

  // In place: v <- e4m3 round trip of (1/sqrt(D)) H_D v, one ue8m0 scale per block of 128 values.
  void fp8_hadamard(float* v) const {
    // DeepSeek-V3.2-Exp inference: rotate_activation = hadamard_transform(x, scale = D^-0.5) (Sylvester
    // order, the butterfly below), then kernel.py act_quant(x, block_size = 128, scale_fmt = "ue8m0"):
    // per block of 128 values, amax = max(|x|, 1e-4), s = 2^ceil(log2(amax * (1/448))) exactly (its
    // fast_round_scale reads the exponent bits, + 1 if any mantissa bit is set), x <- e4m3(clamp(x / s,
    // +-448)) s. fp8_index's relu(q8 . k8) q_s k_s w / sqrt(D) is then the dequantized score forward()
    // computes (power-of-two scales: only f32 summation order differs). Dims below 128 form one block.
    const int64_t D = c_.head_dim;
    constexpr int64_t kBlock = 128;
    for (int64_t len = 1; len < D; len *= 2)
      for (int64_t i = 0; i < D; i += 2 * len)
        for (int64_t j = i; j < i + len; ++j) {
          const float a = v[j], b = v[j + len];
          v[j] = a + b;
          v[j + len] = a - b;
        }
    const float norm = 1.0f / std::sqrt(float(D));
    for (int64_t i = 0; i < D; ++i) v[i] *= norm;
    for (int64_t b0 = 0; b0 < D; b0 += kBlock) {
      const int64_t b1 = std::min(D, b0 + kBlock);
      float amax = 1e-4f;
      for (int64_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float sigma = pow2_ceil(amax * (1.0f / 448.0f));
      for (int64_t i = b0; i < b1; ++i)
        v[i] = f8_e4m3_to_f32(f32_to_f8_e4m3(std::clamp(v[i] / sigma, -448.0f, 448.0f))) * sigma;
    }
  }

  IndexerConfig c_;
  Rope rope_;
  IndexerPrecision precision_ = IndexerPrecision::f32;
  BlockQuantMatrix wq_b_, wk_, weights_proj_;
  std::vector<float> k_norm_weight_, k_norm_bias_;
};

}  // namespace deepseek::nn
