// Sizes that follow from a ModelConfig alone: parameter counts (total, activated per token, MTP
// apart) and KV-cache bytes per token. `deepseek-cli info` prints them; they need no weights.
//
// Counting rules (per decoder layer, H heads, d = hidden_size):
//   MLA   q: d*q_lora + q_lora (q_a_layernorm) + q_lora*H*(nope+rope)   [or d*H*(nope+rope) without q_lora]
//         kv_a: d*(kv_lora+rope), kv_a_layernorm: kv_lora, kv_b: kv_lora*H*(nope+v), o: H*v*d
//         V3.2 indexer: q_lora*nI*dI + d*dI + 2*dI (k_norm) + d*nI
//   MHA   q, o: d*H*hd each; k, v: d*KVH*hd each (+ biases when attention_bias)
//   norms 2*d; dense MLP 3*d*intermediate; MoE gate E*d (+E bias for noaux_tc),
//         experts E*3*d*moe_inter, shared 3*d*moe_inter*n_shared
// Activated per token counts top-k routed experts instead of all E and the lm_head but not the
// embedding table, of which a token reads one row (DeepSeek's convention: V2-Lite "2.4B
// activated", V3 "37B"). MTP modules: enorm, hnorm, eh_proj [d, 2d], one MoE
// decoder layer and shared_head.norm ("unique"), plus their embedding and head copies.
#pragma once

#include "deepseek/nn/kv_cache.hpp"

#include "deepseek/io/config.hpp"
#include "deepseek/io/v4_config.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deepseek::models {

struct ModelInfo {
  int dense_layers = 0, moe_layers = 0;
  int64_t params_total = 0;        // main model, embedding and lm_head included
  int64_t params_activated = 0;    // per token
  int64_t mtp_params_unique = 0;   // all MTP modules, without their embedding/head copies
  int64_t mtp_params_copies = 0;   // the embedding and shared_head.head copies they carry
  int64_t mtp_params_activated = 0;
  int64_t kv_values_per_token_layer = 0;       // what our cache stores (MLA latent or MHA K+V)
  int64_t index_values_per_token_layer = 0;    // V3.2: the DSA index key in the same row (included above)
  int64_t full_kv_values_per_token_layer = 0;  // K and V expanded per head (naive MHA cache)
  int64_t kv_bytes_per_token_bf16 = 0;         // over all main layers, with a bf16 cache (CacheDType::bf16)
  int64_t kv_bytes_per_token_f32 = 0;          // ... with an f32 cache (CacheDType::f32, the exact one)
  int64_t kv_bytes_per_token_fp8 = 0;          // ... FP8 (FlashMLA's layout; 0: not available, plain attention)
  int64_t kv_bytes_per_token_fp8_index = 0;    // ... FP8 with V3.2's index key in e4m3 too (the FP8 indexer; 0: no indexer)
  int64_t full_kv_bytes_per_token_bf16 = 0;
};

namespace detail {
struct LayerParams {
  int64_t total = 0, activated = 0;
};

inline LayerParams layer_params(const io::ModelConfig& c, int layer) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  int64_t attn = 0;
  if (c.use_mla) {
    const int64_t qk = c.qk_head_dim();
    attn += c.q_lora_rank > 0 ? d * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * H * qk : d * H * qk;
    attn += d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank;
    attn += c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * d;
    if (c.has_indexer())
      attn += c.q_lora_rank * c.index_n_heads * c.index_head_dim + d * c.index_head_dim + 2 * c.index_head_dim +
              d * c.index_n_heads;
  } else {
    const int64_t hd = c.head_dim, kvh = c.num_key_value_heads;
    attn += 2 * d * H * hd + 2 * d * kvh * hd;
    if (c.attention_bias) attn += H * hd + 2 * kvh * hd + d;
  }
  LayerParams p;
  p.total = p.activated = attn + 2 * d;
  if (c.is_moe_layer(layer)) {
    const int64_t expert = 3 * d * c.moe_intermediate_size;
    const int64_t gate = int64_t(c.n_routed_experts) * d + (c.topk_method == "noaux_tc" ? c.n_routed_experts : 0);
    const int64_t shared = expert * c.n_shared_experts;
    p.total += gate + shared + expert * c.n_routed_experts;
    p.activated += gate + shared + expert * c.num_experts_per_tok;
  } else {
    p.total += 3 * d * c.intermediate_size;
    p.activated += 3 * d * c.intermediate_size;
  }
  return p;
}
}  // namespace detail

inline ModelInfo model_info(const io::ModelConfig& c) {
  ModelInfo m;
  const int64_t d = c.hidden_size;
  const int64_t embed = c.vocab_size * d;
  const int64_t head = c.tie_word_embeddings ? 0 : c.vocab_size * d;
  m.params_total = embed + head + d;  // + final norm
  m.params_activated = (c.tie_word_embeddings ? embed : head) + d;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto p = detail::layer_params(c, l);
    m.params_total += p.total;
    m.params_activated += p.activated;
    (c.is_moe_layer(l) ? m.moe_layers : m.dense_layers) += 1;
  }
  for (int k = 0; k < c.num_nextn_predict_layers; ++k) {
    auto p = detail::layer_params(c, c.num_hidden_layers + k);
    const int64_t own = 3 * d + 2 * d * d;  // enorm, hnorm, shared_head.norm, eh_proj
    m.mtp_params_unique += own + p.total;
    m.mtp_params_activated += own + p.activated;
    m.mtp_params_copies += embed + c.vocab_size * d;
  }
  if (c.use_mla) {
    m.index_values_per_token_layer = c.has_indexer() ? c.index_head_dim : 0;
    m.kv_values_per_token_layer = c.kv_lora_rank + c.qk_rope_head_dim + m.index_values_per_token_layer;
    m.full_kv_values_per_token_layer = int64_t(c.num_attention_heads) * (c.qk_head_dim() + c.v_head_dim);
  } else {
    m.kv_values_per_token_layer = m.full_kv_values_per_token_layer = 2 * int64_t(c.num_key_value_heads) * c.head_dim;
  }
  m.kv_bytes_per_token_bf16 = nn::cache_row_bytes(nn::CacheDType::bf16, m.kv_values_per_token_layer, 0) * c.num_hidden_layers;
  m.kv_bytes_per_token_f32 = nn::cache_row_bytes(nn::CacheDType::f32, m.kv_values_per_token_layer, 0) * c.num_hidden_layers;
  if (c.use_mla && c.kv_lora_rank > 0 && c.kv_lora_rank % nn::kFp8CacheBlock == 0)
    m.kv_bytes_per_token_fp8 =
        nn::cache_row_bytes(nn::CacheDType::fp8_e4m3, m.kv_values_per_token_layer, c.kv_lora_rank) * c.num_hidden_layers;
  if (m.kv_bytes_per_token_fp8 && m.index_values_per_token_layer)
    m.kv_bytes_per_token_fp8_index = nn::cache_row_bytes(nn::CacheDType::fp8_e4m3, m.kv_values_per_token_layer, c.kv_lora_rank,
                                                         m.index_values_per_token_layer) *
                                     c.num_hidden_layers;
  m.full_kv_bytes_per_token_bf16 = 2 * m.full_kv_values_per_token_layer * c.num_hidden_layers;
  return m;
}

// DeepSeek-V4 (tests/fixtures/models/V4_NOTES.md): the layer schedule, parameters and cache size.
//
// Parameters, from the released tensors (§2; d = hidden, H heads x D, q = q_lora_rank, g x r output
// groups, c = index_head_dim, nI index heads, E experts of width I, K per token, hc streams):
//   attention  q d + q (q_norm) + H D q + D d + D (kv_norm) + g r (H D / g) + d g r + H (attn_sink)
//   CSA / HCA  compressor: 2 coff D d + m coff D (ape) + D (norm), coff = 2 (CSA) or 1 (HCA)
//   CSA        indexer: 2 (2c) d + 4 (2c) + c + nI c q + nI d (weights_proj)
//   mHC        2 x ((2 + hc) hc x hc d + (2 + hc) hc + 3); norms 2d
//   MoE        gate E d (+ E bias in routed layers; hash layers' tid2eid is ids, not counted),
//              E routed + 1 shared expert of 3 d I (n_shared_experts is not read, §1)
//   top level  embed V d, head V d, norm d, hc_head hc x hc d + hc + 1
//   MTP (§9)   e_proj, h_proj d x d, enorm / hnorm / norm 3d, its hc_head, and one block at layer L
// Activated per token: K routed experts instead of E, and no embedding table (as model_info).
//
// Cache per sequence (§10), in values; bytes = values x 4 (our state is f32) or x 2 (bf16, as
// transformers keeps it in a bf16 model):
//   bounded   every layer keeps at most W window keys of D (= values), whatever the context, and
//             each compressor an open block of < 2m tokens (not counted here);
//   growing   a CSA layer adds one compressed entry of D and one indexer key of c per 4 tokens, an
//             HCA layer one entry of D per m tokens; sliding layers add nothing. So at long context
//             values per token = sum over CSA layers (D + c) / 4 + sum over HCA layers D / m,
//             amortised (the entries arrive once per block).
//   baseline  every token's key (= value) in every layer, the cache without window or compression:
//             num_hidden_layers x D values per token.
struct V4ModelInfo {
  int sliding_layers = 0, csa_layers = 0, hca_layers = 0, hash_layers = 0;
  std::vector<int64_t> csa_ratios, hca_ratios;  // the distinct ratios of each type, ascending
  int64_t params_total = 0, params_activated = 0;
  int64_t mtp_params = 0, mtp_params_activated = 0;  // all MTP modules (they share embed and head)
  double cache_values_per_token = 0;                 // amortised, over all main layers
  int64_t window_values = 0;                         // bounded: W keys x D per main layer
  int64_t uncompressed_values_per_token = 0;         // the baseline: D per main layer
  double cache_bytes_per_token(int value_bytes) const { return cache_values_per_token * value_bytes; }
  int64_t window_bytes(int value_bytes) const { return window_values * value_bytes; }
};

namespace detail {
inline LayerParams v4_layer_params(const io::ModelConfig& c, const io::V4Config& v, int layer) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, D = c.head_dim, q = c.q_lora_rank;
  const int64_t g = v.o_groups, r = v.o_lora_rank, ci = v.index_head_dim, nI = v.index_n_heads, hc = v.hc_mult;
  const io::V4LayerType t = v.layer_types[size_t(layer)];
  const int64_t m = v.compress_ratios[size_t(layer)];
  int64_t p = q * d + q + H * D * q + D * d + D + g * r * (H * D / g) + d * g * r + H;
  if (t != io::V4LayerType::sliding) {
    const int64_t coff = t == io::V4LayerType::csa ? 2 : 1;
    p += 2 * coff * D * d + m * coff * D + D;
  }
  if (t == io::V4LayerType::csa) p += 2 * (2 * ci) * d + 4 * (2 * ci) + ci + nI * ci * q + nI * d;
  p += 2 * ((2 + hc) * hc * hc * d + (2 + hc) * hc + 3) + 2 * d;
  const int64_t E = c.n_routed_experts, expert = 3 * d * c.moe_intermediate_size;
  p += E * d + (layer < v.num_hash_layers ? 0 : E) + expert;  // gate (+ bias), the shared expert
  return LayerParams{p + E * expert, p + int64_t(c.num_experts_per_tok) * expert};
}
}  // namespace detail

inline V4ModelInfo v4_model_info(const io::ModelConfig& c, const io::V4Config& v) {
  V4ModelInfo m;
  const int64_t d = c.hidden_size, D = c.head_dim, hc = v.hc_mult, hc_head = hc * hc * d + hc + 1;
  m.params_total = 2 * c.vocab_size * d + d + hc_head;
  m.params_activated = c.vocab_size * d + d + hc_head;
  auto add_ratio = [](std::vector<int64_t>& list, int64_t r) {
    if (std::find(list.begin(), list.end(), r) == list.end())
      list.insert(std::upper_bound(list.begin(), list.end(), r), r);
  };
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const auto p = detail::v4_layer_params(c, v, l);
    m.params_total += p.total;
    m.params_activated += p.activated;
    const int64_t ratio = v.compress_ratios[size_t(l)];
    m.window_values += v.sliding_window * D;
    m.uncompressed_values_per_token += D;
    switch (v.layer_types[size_t(l)]) {
      case io::V4LayerType::sliding:
        ++m.sliding_layers;
        break;
      case io::V4LayerType::csa:
        ++m.csa_layers;
        add_ratio(m.csa_ratios, ratio);
        m.cache_values_per_token += double(D + v.index_head_dim) / double(ratio);
        break;
      case io::V4LayerType::hca:
        ++m.hca_layers;
        add_ratio(m.hca_ratios, ratio);
        m.cache_values_per_token += double(D) / double(ratio);
        break;
    }
  }
  m.hash_layers = v.num_hash_layers;
  for (int k = 0; k < c.num_nextn_predict_layers; ++k) {
    const auto p = detail::v4_layer_params(c, v, c.num_hidden_layers + k);
    const int64_t own = 2 * d * d + 3 * d + hc_head;
    m.mtp_params += own + p.total;
    m.mtp_params_activated += own + p.activated;
  }
  return m;
}

}  // namespace deepseek::models
