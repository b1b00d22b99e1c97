// DeepSeek-V4's own config.json fields (tests/fixtures/models/V4_NOTES.md §1), on top of the
// fields io/config.hpp reads for every DeepSeek model. Apart from config.hpp because none of it
// means anything to V2 / V3 and the layer schedule has two spellings to reconcile:
//   released:     compress_ratios [L (+ MTP layers)]: 0 sliding window, 4 CSA, any other m > 0 HCA
//   transformers: layer_types [L] (sliding_attention | compressed_sparse_attention |
//                 heavily_compressed_attention) + compress_rates {type: m} (or compress_rate_csa/hca)
// compress_ratios wins when both are present, and then they must agree (type and ratio per layer);
// neither gives transformers' default [HCA, HCA, HCA, CSA, HCA, CSA, ...]. The MTP layers' types are
// the entries of compress_ratios after the first L (sliding when absent).
#pragma once

#include "deepseek/io/config.hpp"

#include <string>
#include <vector>

namespace deepseek::io {

enum class V4LayerType { sliding, csa, hca };
enum class V4Scoring { sqrtsoftplus, sigmoid };

inline const char* v4_layer_type_name(V4LayerType t) {
  return t == V4LayerType::sliding ? "sliding_attention"
         : t == V4LayerType::csa   ? "compressed_sparse_attention"
                                   : "heavily_compressed_attention";
}

struct V4Config {
  std::vector<V4LayerType> layer_types;  // [num_hidden_layers + num_nextn_predict_layers]
  std::vector<int64_t> compress_ratios;  // m per layer (0 for sliding), same length
  int num_hash_layers = 3;               // layers 0 .. num_hash_layers - 1 route by tid2eid
  int64_t sliding_window = 128;
  int64_t o_groups = 8, o_lora_rank = 1024;
  int index_n_heads = 64;
  int64_t index_head_dim = 128, index_topk = 512;
  int hc_mult = 4, hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  double swiglu_limit = 10.0;
  V4Scoring scoring_func = V4Scoring::sqrtsoftplus;
  double routed_scaling_factor = 1.5;
  double compress_rope_theta = 160000.0;
};

namespace detail {

inline V4LayerType v4_type_of_ratio(int64_t m) {
  return m == 0 ? V4LayerType::sliding : m == 4 ? V4LayerType::csa : V4LayerType::hca;
}

inline std::vector<int64_t> int_list(const Json& j, const char* k, const std::string& file) {
  const Json& v = j.at(k);
  if (!v.is_array()) throw Error("expected an array of integers", at_field(k, file));
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string f = std::string(k) + "[" + std::to_string(i) + "]";
    if (!v[i].is_number_integer()) throw Error("expected an integer, found " + json_excerpt(v[i]), at_field(f, file));
    out.push_back(checked_cast<int64_t>(v[i].get<int64_t>(), 0, kMaxPositions, f, at_field(f, file)));
  }
  return out;
}

}  // namespace detail

// `c` is what parse_config read from the same file (num_hidden_layers, num_nextn_predict_layers,
// n_routed_experts, qk_rope_head_dim, head_dim, num_attention_heads).
inline V4Config parse_v4_config(const Json& j, const ModelConfig& c, const std::string& file) {
  if (c.model_type != "deepseek_v4")
    throw Error("not a DeepSeek-V4 config (model_type \"" + excerpt(c.model_type) + "\")",
                at_field("model_type", file));
  detail::ConfigReader r(j, file);
  V4Config v;
  const size_t L = size_t(c.num_hidden_layers), total = L + size_t(c.num_nextn_predict_layers);

  // The per-type ratios transformers' form names (compress_rates, or the flat spellings).
  int64_t m_csa = r.integer("compress_rate_csa", 4, 1, kMaxPositions),
          m_hca = r.integer("compress_rate_hca", 128, 1, kMaxPositions);
  if (r.has("compress_rates")) {
    const Json& cr = j.at("compress_rates");
    if (!cr.is_object()) throw Error("expected an object", at_field("compress_rates", file));
    detail::ConfigReader rr(cr, file, "compress_rates.");
    for (auto it = cr.begin(); it != cr.end(); ++it)
      if (it.key() != "compressed_sparse_attention" && it.key() != "heavily_compressed_attention")
        throw Error("unknown layer type \"" + excerpt(it.key()) +
                        "\" (compressed_sparse_attention, heavily_compressed_attention)",
                    at_field("compress_rates." + excerpt(it.key()), file));
    m_csa = rr.integer("compressed_sparse_attention", m_csa, 1, kMaxPositions);
    m_hca = rr.integer("heavily_compressed_attention", m_hca, 1, kMaxPositions);
  }
  std::vector<V4LayerType> named;  // layer_types, if given
  if (r.has("layer_types")) {
    const Json& lt = j.at("layer_types");
    if (!lt.is_array()) throw Error("expected an array of strings", at_field("layer_types", file));
    if (lt.size() != L)
      throw Error("has " + std::to_string(lt.size()) + " entries but num_hidden_layers is " + std::to_string(L),
                  at_field("layer_types", file));
    for (size_t i = 0; i < lt.size(); ++i) {
      const std::string f = "layer_types[" + std::to_string(i) + "]";
      const std::string s = lt[i].is_string() ? lt[i].get<std::string>() : json_excerpt(lt[i]);
      if (s == "sliding_attention")
        named.push_back(V4LayerType::sliding);
      else if (s == "compressed_sparse_attention")
        named.push_back(V4LayerType::csa);
      else if (s == "heavily_compressed_attention")
        named.push_back(V4LayerType::hca);
      else
        throw Error("unknown layer type \"" + excerpt(s) +
                        "\" (sliding_attention, compressed_sparse_attention, heavily_compressed_attention)",
                    at_field(f, file));
    }
  }
  auto ratio_of = [&](V4LayerType t) { return t == V4LayerType::sliding ? 0 : t == V4LayerType::csa ? m_csa : m_hca; };
  if (r.has("compress_ratios")) {
    v.compress_ratios = detail::int_list(j, "compress_ratios", file);
    if (v.compress_ratios.size() != L && v.compress_ratios.size() != total)
      throw Error("has " + std::to_string(v.compress_ratios.size()) + " entries; expected num_hidden_layers (" +
                      std::to_string(L) + ") or num_hidden_layers + num_nextn_predict_layers (" +
                      std::to_string(total) + ")",
                  at_field("compress_ratios", file));
    v.compress_ratios.resize(total, 0);
    for (int64_t m : v.compress_ratios) v.layer_types.push_back(detail::v4_type_of_ratio(m));
    for (size_t i = 0; i < named.size(); ++i)
      if (named[i] != v.layer_types[i] || (r.has("compress_rates") && ratio_of(named[i]) != v.compress_ratios[i]))
        throw Error("layer " + std::to_string(i) + ": compress_ratios says " + v4_layer_type_name(v.layer_types[i]) +
                        " with ratio " + std::to_string(v.compress_ratios[i]) + ", layer_types / compress_rates say " +
                        v4_layer_type_name(named[i]) + " with ratio " + std::to_string(ratio_of(named[i])),
                    at_field("layer_types[" + std::to_string(i) + "]", file));
  } else {
    if (named.empty())
      for (size_t i = 0; i < L; ++i) named.push_back(i < 2 || (i - 2) % 2 == 0 ? V4LayerType::hca : V4LayerType::csa);
    v.layer_types = named;
    v.layer_types.resize(total, V4LayerType::sliding);
    for (V4LayerType t : v.layer_types) v.compress_ratios.push_back(ratio_of(t));
  }
  // The CSA overlap and the indexer's ape [4, 2c] are built for ratio 4 (V4_NOTES §6.1).
  for (size_t i = 0; i < total; ++i)
    if (v.layer_types[i] == V4LayerType::csa && v.compress_ratios[i] != 4)
      throw Error("layer " + std::to_string(i) + ": compressed sparse attention with ratio " +
                      std::to_string(v.compress_ratios[i]) +
                      " is not supported (the CSA compressor and its indexer run at ratio 4)",
                  at_field(r.has("compress_ratios") ? "compress_ratios" : "compress_rates", file));

  v.num_hash_layers = int(r.integer("num_hash_layers", 3, 0, c.num_hidden_layers));
  v.sliding_window = r.integer("sliding_window", 128, 1, kMaxPositions);
  v.o_groups = r.integer("o_groups", 8, 1);
  v.o_lora_rank = r.integer("o_lora_rank", 1024, 1);
  v.index_n_heads = int(r.integer("index_n_heads", 64, 1, 4096));
  v.index_head_dim = r.integer("index_head_dim", 128, 1);
  v.index_topk = r.integer("index_topk", 512, 1, kMaxPositions);
  v.hc_mult = int(r.integer("hc_mult", 4, 1, 64));
  v.hc_sinkhorn_iters = int(r.integer("hc_sinkhorn_iters", 20, 1, 10000));
  v.hc_eps = r.number("hc_eps", 1e-6, 0.0, 1.0);
  v.swiglu_limit = r.number("swiglu_limit", 10.0, 0.0);
  v.routed_scaling_factor = r.number("routed_scaling_factor", 1.5, 0.0, HUGE_VAL, /*lo_open=*/true);
  v.compress_rope_theta = r.number("compress_rope_theta", 160000.0, 0.0, HUGE_VAL, /*lo_open=*/true);
  const std::string sf = r.string("scoring_func", "sqrtsoftplus");
  if (sf == "sqrtsoftplus")
    v.scoring_func = V4Scoring::sqrtsoftplus;
  else if (sf == "sigmoid")
    v.scoring_func = V4Scoring::sigmoid;
  else
    throw Error("unsupported scoring_func \"" + excerpt(sf) +
                    "\" (DeepSeek-V4: sqrtsoftplus or sigmoid; transformers cannot build softmax either)",
                r.where("scoring_func"));

  const int64_t H = c.num_attention_heads, D = c.head_dim, rd = c.qk_rope_head_dim;
  if (rd < 2 || rd % 2 || rd > D) throw Error("must be even, >= 2 and <= head_dim", r.where("qk_rope_head_dim"));
  if (rd > v.index_head_dim) throw Error("qk_rope_head_dim exceeds index_head_dim", r.where("index_head_dim"));
  if ((H * D) % v.o_groups || H % v.o_groups)
    throw Error("num_attention_heads (" + std::to_string(H) + ") is not divisible into o_groups", r.where("o_groups"));
  if (c.q_lora_rank < 1) throw Error("DeepSeek-V4 needs q_lora_rank >= 1", r.where("q_lora_rank"));
  if (c.n_routed_experts < 1 || c.num_experts_per_tok < 1 || c.num_experts_per_tok > c.n_routed_experts)
    throw Error("num_experts_per_tok must be in [1, n_routed_experts]", r.where("num_experts_per_tok"));
  return v;
}

inline V4Config load_v4_config(const std::string& path, const ModelConfig& c) {
  return parse_v4_config(parse_json(read_text_file(path), path), c, path);
}

}  // namespace deepseek::io
