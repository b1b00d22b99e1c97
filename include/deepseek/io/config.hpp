// HF config.json -> a typed ModelConfig for the DeepSeek text models: V2, V2-Lite, V3, R1, V3.1,
// V3.2 (index_*) and the DeepSeek-OCR language model (model_type deepseek_vl_v2, read from its
// "language_config"). DeepSeek-V4 (model_type deepseek_v4) reads only the fields it shares with
// them here (sizes, RoPE, eps, ids; head_dim as plain attention); its own fields and their
// checks are io/v4_config.hpp's.
//
// Both spellings of RoPE are accepted: the released one (`rope_scaling: {type, factor, ...}` with
// `rope_theta` at the top level) and the transformers-5 one (`rope_parameters: {rope_type,
// rope_theta, ...}`). A field that is absent takes the default of the transformers config class
// of that model_type (DeepseekV3Config, DeepseekV2Config, DeepseekV32Config). Fields that are
// present but of the wrong type, values out of range and contradictions (topk_group > n_group,
// experts not divisible into groups, both RoPE spellings disagreeing, ...) are errors naming the
// field. hidden_size, num_hidden_layers, num_attention_heads and vocab_size are required.
// Every integer is range-checked into its type (never truncated or wrapped) against the policy
// limits of core/limits.hpp (kMaxModelDim per width, kMaxVocab, kMaxPositions, kMaxLayers), and
// the parameter count the config implies must stay within kMaxParameters, so sizes derived from
// it (model_info, cache and buffer sizes) cannot overflow. Floats must be finite and in range
// (rms_norm_eps > 0, ...): a value that would only give NaN logits is refused where it is read.
#pragma once

#include "deepseek/core/checked.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/limits.hpp"
#include "deepseek/io/json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace deepseek::io {

enum class RopeType { none, yarn };

struct RopeScaling {
  RopeType type = RopeType::none;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 0.0;          // 0 = absent (transformers treats 0 and absent alike)
  double mscale_all_dim = 0.0;  // 0 = absent
};

struct QuantizationConfig {
  bool fp8 = false;                 // quant_method "fp8", fmt "e4m3"
  int block_rows = 128, block_cols = 128;  // weight_block_size
  bool scale_ue8m0 = false;         // scale_fmt "ue8m0" (V3.1 / V3.2)
};

struct ModelConfig {
  std::string model_type;    // deepseek_v2 | deepseek_v3 | deepseek_v32 | deepseek_vl_v2 (OCR)
  std::string architecture;  // architectures[0], if given

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense-layer SwiGLU width
  int64_t moe_intermediate_size = 0;  // per routed expert
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;  // plain-MHA configs only; meaningless for MLA

  // MoE
  int n_routed_experts = 0;
  int n_shared_experts = 0;
  int num_experts_per_tok = 0;
  int n_group = 1;
  int topk_group = 1;
  std::string topk_method;   // greedy | group_limited_greedy | noaux_tc
  std::string scoring_func;  // softmax | sigmoid
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int first_k_dense_replace = 0;
  int moe_layer_freq = 1;

  // Attention: MLA (use_mla) or plain multi-head attention.
  bool use_mla = true;
  int64_t q_lora_rank = 0;  // 0: no q compression (plain q_proj)
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t head_dim = 0;  // plain MHA head size
  bool attention_bias = false;
  bool rope_interleave = true;  // MLA rope dims stored as interleaved pairs (all released checkpoints)

  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  bool is_eos(int64_t id) const { return std::find(eos_token_ids.begin(), eos_token_ids.end(), id) != eos_token_ids.end(); }

  int num_nextn_predict_layers = 0;  // MTP modules stored after the main layers

  // V3.2 DSA lightning indexer (index_n_heads == 0: no indexer)
  int index_n_heads = 0;
  int64_t index_head_dim = 0;
  int64_t index_topk = 0;

  QuantizationConfig quantization;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool has_moe() const { return n_routed_experts > 0; }
  bool is_moe_layer(int layer) const {
    return has_moe() && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  bool has_indexer() const { return index_n_heads > 0; }
};

namespace detail {

class ConfigReader {
 public:
  ConfigReader(const Json& j, std::string file, std::string prefix = {})
      : j_(j), file_(std::move(file)), prefix_(std::move(prefix)) {}

  bool has(const char* k) const { return j_.contains(k) && !j_.at(k).is_null(); }
  ErrorWhere where(const std::string& k) const { return at_field(prefix_ + k, file_); }

  // An integer in [lo, hi] (by default a width: [0, kMaxModelDim]).
  int64_t integer(const char* k, int64_t def, int64_t lo = 0, int64_t hi = kMaxModelDim) const {
    if (!has(k)) return def;
    const Json& v = j_.at(k);
    if (v.is_number_unsigned()) return checked_cast<int64_t>(v.get<uint64_t>(), lo, hi, prefix_ + k, where(k));
    if (v.is_number_integer()) return checked_cast<int64_t>(v.get<int64_t>(), lo, hi, prefix_ + k, where(k));
    // Some configs write integral values as floats (e.g. 40.0); accept exact ones.
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) {
      const double d = v.get<double>();  // range-check before the cast: out-of-range casts are UB
      if (!(d >= double(lo) && d <= double(hi)))
        throw Error(prefix_ + k + " = " + json_excerpt(v) + " is out of range " + range_str(lo, hi), where(k));
      return int64_t(d);
    }
    throw Error("expected an integer, found " + json_excerpt(v), where(k));
  }
  int64_t required_integer(const char* k, int64_t lo = 1, int64_t hi = kMaxModelDim) const {
    if (!has(k)) throw Error("required field is missing", where(k));
    return integer(k, 0, lo, hi);
  }
  // A finite number in [lo, hi]; `lo_open` excludes lo itself (rms_norm_eps > 0).
  double number(const char* k, double def, double lo = -HUGE_VAL, double hi = HUGE_VAL, bool lo_open = false) const {
    if (!has(k)) return def;
    const Json& v = j_.at(k);
    if (!v.is_number()) throw Error("expected a number, found " + json_excerpt(v), where(k));
    const double d = v.get<double>();
    if (!std::isfinite(d)) throw Error("expected a finite number", where(k));
    if (d < lo || d > hi || (lo_open && d == lo))
      throw Error(prefix_ + k + " = " + json_excerpt(v) + " is out of range " + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + "]",
                  where(k));
    return d;
  }
  bool boolean(const char* k, bool def) const {
    if (!has(k)) return def;
    const Json& v = j_.at(k);
    if (!v.is_boolean()) throw Error("expected true or false, found " + json_excerpt(v), where(k));
    return v.get<bool>();
  }
  std::string string(const char* k, const std::string& def) const {
    if (!has(k)) return def;
    const Json& v = j_.at(k);
    if (!v.is_string()) throw Error("expected a string, found " + json_excerpt(v), where(k));
    return v.get<std::string>();
  }

 private:
  static std::string num(double d) {
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", d);
    return buf;
  }
  const Json& j_;
  std::string file_, prefix_;
};

inline RopeScaling parse_rope(const Json& r, const std::string& file, const std::string& field, double* theta_out) {
  if (!r.is_object()) throw Error("expected an object", at_field(field, file));
  ConfigReader rd(r, file, field + ".");
  RopeScaling s;
  std::string type = rd.has("rope_type") ? rd.string("rope_type", "") : rd.string("type", "default");
  if (rd.has("rope_type") && rd.has("type") && rd.string("type", "") != type)
    throw Error("\"type\" and \"rope_type\" disagree", at_field(field, file));
  if (theta_out && rd.has("rope_theta")) *theta_out = rd.number("rope_theta", *theta_out, 0.0, HUGE_VAL, /*lo_open=*/true);
  if (type == "default") return s;
  if (type != "yarn")
    throw Error("unsupported rope type \"" + excerpt(type) + "\" (supported: default, yarn)", at_field(field + ".type", file));
  s.type = RopeType::yarn;
  if (!rd.has("factor")) throw Error("yarn needs a factor", at_field(field + ".factor", file));
  s.factor = rd.number("factor", 1.0);
  if (s.factor < 1.0) throw Error("yarn factor must be >= 1", at_field(field + ".factor", file));
  s.original_max_position_embeddings = rd.integer("original_max_position_embeddings", 0, 1, kMaxPositions);
  s.beta_fast = rd.number("beta_fast", 32.0, 0.0, HUGE_VAL, /*lo_open=*/true);
  s.beta_slow = rd.number("beta_slow", 1.0, 0.0, HUGE_VAL, /*lo_open=*/true);
  s.mscale = rd.number("mscale", 0.0, 0.0);
  s.mscale_all_dim = rd.number("mscale_all_dim", 0.0, 0.0);
  return s;
}

inline bool same_rope(const RopeScaling& a, const RopeScaling& b) {
  return a.type == b.type && a.factor == b.factor &&
         a.original_max_position_embeddings == b.original_max_position_embeddings && a.beta_fast == b.beta_fast &&
         a.beta_slow == b.beta_slow && a.mscale == b.mscale && a.mscale_all_dim == b.mscale_all_dim;
}

// An upper bound on the parameters the config implies (main layers, MTP modules, embedding and
// head), in double so it cannot overflow; models::model_info counts them exactly in int64, which
// this bound keeps from overflowing.
inline double parameter_bound(const ModelConfig& c) {
  const double d = double(c.hidden_size), H = double(c.num_attention_heads), V = double(c.vocab_size);
  double attn;
  if (c.use_mla) {
    const double qk = double(c.qk_nope_head_dim + c.qk_rope_head_dim), q = double(c.q_lora_rank), kv = double(c.kv_lora_rank);
    attn = d * q + q + std::max(q, d) * H * qk + d * (kv + double(c.qk_rope_head_dim)) + kv +
           kv * H * double(c.qk_nope_head_dim + c.v_head_dim) + H * double(c.v_head_dim) * d +
           (q + 2 * d + 2) * double(c.index_n_heads + 1) * double(c.index_head_dim + 1);
  } else {
    attn = 2 * d * (H + double(c.num_key_value_heads)) * double(c.head_dim + 1) + d;
  }
  const double E = double(c.n_routed_experts);
  const double mlp = std::max(3 * d * double(c.intermediate_size),
                              E * (d + 1) + 3 * d * double(c.moe_intermediate_size) * (E + double(c.n_shared_experts)));
  const double layer = attn + mlp + 2 * d;
  const double mtp = double(c.num_nextn_predict_layers);
  return 2 * V * d + d + (double(c.num_hidden_layers) + mtp) * layer + mtp * (3 * d + 2 * d * d + 2 * V * d);
}

}  // namespace detail

inline ModelConfig parse_config(const Json& root, const std::string& file = "config.json") {
  if (!root.is_object()) throw Error("config is not a JSON object", in_file(file));
  ModelConfig c;
  {
    detail::ConfigReader top(root, file);
    c.model_type = top.string("model_type", "");
    if (root.contains("architectures")) {
      const Json& a = root.at("architectures");
      if (!a.is_array() || (!a.empty() && !a[0].is_string()))
        throw Error("expected an array of strings", at_field("architectures", file));
      if (!a.empty()) c.architecture = a[0].get<std::string>();
    }
  }
  if (c.model_type.empty()) {
    if (c.architecture == "DeepseekV3ForCausalLM") c.model_type = "deepseek_v3";
    else if (c.architecture == "DeepseekV32ForCausalLM") c.model_type = "deepseek_v32";
    else if (c.architecture == "DeepseekV2ForCausalLM") c.model_type = "deepseek_v2";
    else if (c.architecture == "DeepseekV4ForCausalLM") c.model_type = "deepseek_v4";
    else throw Error("required field is missing (and architectures does not name a DeepSeek model)", at_field("model_type", file));
  }

  // The OCR checkpoint nests its decoder's config under "language_config".
  const Json* jp = &root;
  std::string prefix;
  if (c.model_type == "deepseek_vl_v2") {
    if (!root.contains("language_config") || !root.at("language_config").is_object())
      throw Error("deepseek_vl_v2 config needs a language_config object", at_field("language_config", file));
    jp = &root.at("language_config");
    prefix = "language_config.";
  } else if (c.model_type != "deepseek_v2" && c.model_type != "deepseek_v3" && c.model_type != "deepseek_v32" &&
             c.model_type != "deepseek_v4") {
    throw Error("unsupported model_type \"" + excerpt(c.model_type) +
                    "\" (supported: deepseek_v2, deepseek_v3, deepseek_v32, deepseek_v4, deepseek_vl_v2)",
                at_field("model_type", file));
  }
  const Json& j = *jp;
  detail::ConfigReader r(j, file, prefix);
  const bool v2_like = c.model_type == "deepseek_v2" || c.model_type == "deepseek_vl_v2";
  const bool v4 = c.model_type == "deepseek_v4";

  c.vocab_size = r.required_integer("vocab_size", 1, kMaxVocab);
  c.hidden_size = r.required_integer("hidden_size");
  c.num_hidden_layers = static_cast<int>(r.required_integer("num_hidden_layers", 1, kMaxLayers));
  c.num_attention_heads = static_cast<int>(r.required_integer("num_attention_heads", 1, 100000));
  c.num_key_value_heads = static_cast<int>(r.integer("num_key_value_heads", v4 ? 1 : c.num_attention_heads, 1, 100000));
  c.intermediate_size = r.integer("intermediate_size", v2_like ? 11008 : 18432, 1);
  c.moe_intermediate_size = r.integer("moe_intermediate_size", v2_like ? 1407 : 2048, 1);

  c.n_routed_experts = static_cast<int>(r.integer("n_routed_experts", v2_like ? 64 : 256, 0, 1 << 20));
  c.n_shared_experts = static_cast<int>(r.integer("n_shared_experts", v2_like ? 2 : 1, 0, 1 << 20));
  c.num_experts_per_tok = static_cast<int>(r.integer("num_experts_per_tok", v2_like ? 0 : 8, 0, 1 << 20));
  c.n_group = static_cast<int>(r.integer("n_group", v2_like ? 1 : 8, 1, 1 << 20));
  c.topk_group = static_cast<int>(r.integer("topk_group", v2_like ? 1 : 4, 1, 1 << 20));
  c.topk_method = r.string("topk_method", v2_like ? "greedy" : "noaux_tc");
  c.scoring_func = r.string("scoring_func", v2_like ? "softmax" : "sigmoid");
  c.norm_topk_prob = r.boolean("norm_topk_prob", !v2_like);
  c.routed_scaling_factor = r.number("routed_scaling_factor", v2_like ? 1.0 : 2.5, 0.0, HUGE_VAL, /*lo_open=*/true);
  c.first_k_dense_replace = static_cast<int>(r.integer("first_k_dense_replace", v2_like ? 0 : 3, 0, kMaxLayers));
  c.moe_layer_freq = static_cast<int>(r.integer("moe_layer_freq", 1, 1, kMaxLayers));

  c.use_mla = r.boolean("use_mla", true);
  // null (V2-Lite) means no q compression; absent means the config class default.
  c.q_lora_rank = j.contains("q_lora_rank") ? r.integer("q_lora_rank", 0, 0) : (v4 ? 1024 : 1536);
  c.kv_lora_rank = r.integer("kv_lora_rank", 512, 0);
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim", 128, 0);
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim", 64, 0);
  c.v_head_dim = r.integer("v_head_dim", 128, 0);
  c.attention_bias = r.boolean("attention_bias", false);
  c.rope_interleave = r.boolean("rope_interleave", true);
  c.max_position_embeddings =
      r.integer("max_position_embeddings", c.model_type == "deepseek_v32" ? 163840 : (v2_like ? 2048 : 4096), 1, kMaxPositions);
  // eps <= 0 makes 1/sqrt(mean(x^2) + eps) infinite or NaN for small rows: NaN logits, not an error.
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, 0.0, 1.0, /*lo_open=*/true);
  c.hidden_act = r.string("hidden_act", "silu");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  // -1 (or null) means none; ids are checked against vocab_size below.
  c.bos_token_id = r.integer("bos_token_id", v2_like ? 1 : 0, -1, kMaxVocab);
  if (j.contains("eos_token_id") && j.at("eos_token_id").is_array()) {
    const Json& arr = j.at("eos_token_id");
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string f = "eos_token_id[" + std::to_string(i) + "]";
      if (!arr[i].is_number_integer()) throw Error("expected an integer, found " + json_excerpt(arr[i]), r.where(f));
      c.eos_token_ids.push_back(arr[i].is_number_unsigned()
                                    ? checked_cast<int64_t>(arr[i].get<uint64_t>(), 0, c.vocab_size - 1, prefix + f, r.where(f))
                                    : checked_cast<int64_t>(arr[i].get<int64_t>(), 0, c.vocab_size - 1, prefix + f, r.where(f)));
    }
  } else {
    c.eos_token_ids.push_back(r.integer("eos_token_id", v2_like ? 2 : 1, -1, kMaxVocab));
  }
  c.num_nextn_predict_layers = static_cast<int>(r.integer("num_nextn_predict_layers", r.integer("num_mtp_layers", 0, 0, 64), 0, 64));

  // RoPE: released style (rope_scaling + top-level rope_theta) and/or transformers-5 style.
  c.rope_theta = r.number("rope_theta", 10000.0, 0.0, HUGE_VAL, /*lo_open=*/true);
  bool have_scaling = r.has("rope_scaling"), have_params = r.has("rope_parameters");
  RopeScaling from_scaling, from_params;
  double theta_params = c.rope_theta;
  if (have_scaling) from_scaling = detail::parse_rope(j.at("rope_scaling"), file, prefix + "rope_scaling", nullptr);
  if (have_params) from_params = detail::parse_rope(j.at("rope_parameters"), file, prefix + "rope_parameters", &theta_params);
  if (have_scaling && have_params && !detail::same_rope(from_scaling, from_params))
    throw Error("rope_scaling and rope_parameters disagree", r.where("rope_parameters"));
  if (have_params && r.has("rope_theta") && theta_params != c.rope_theta)
    throw Error("rope_theta and rope_parameters.rope_theta disagree", r.where("rope_parameters.rope_theta"));
  c.rope_theta = theta_params;
  c.rope_scaling = have_params ? from_params : from_scaling;
  if (c.rope_theta <= 0) throw Error("rope_theta must be positive", r.where("rope_theta"));
  if (c.rope_scaling.type == RopeType::yarn && c.rope_scaling.original_max_position_embeddings == 0) {
    // transformers falls back to max_position_embeddings / factor when the original length is absent.
    c.rope_scaling.original_max_position_embeddings =
        static_cast<int64_t>(double(c.max_position_embeddings) / c.rope_scaling.factor);
    if (c.rope_scaling.original_max_position_embeddings < 1)
      throw Error("yarn factor " + std::to_string(c.rope_scaling.factor) +
                      " leaves no original context (max_position_embeddings / factor < 1); give original_max_position_embeddings",
                  r.where((have_params ? "rope_parameters" : "rope_scaling") + std::string(".factor")));
  }

  // V3.2 indexer
  c.index_n_heads = static_cast<int>(r.integer("index_n_heads", c.model_type == "deepseek_v32" ? 64 : 0, 0, 4096));
  c.index_head_dim = r.integer("index_head_dim", c.model_type == "deepseek_v32" ? 128 : 0, 0);
  c.index_topk = r.integer("index_topk", c.model_type == "deepseek_v32" ? 2048 : 0, 0, kMaxPositions);

  // The OCR decoder is plain multi-head attention: use_mla false, head_dim = hidden / heads.
  if (v4) {  // one shared K = V head of head_dim (nn/v4_attention.hpp), no latent
    c.use_mla = false;
    c.head_dim = r.integer("head_dim", 512, 1);
  } else if (!c.use_mla) {
    c.head_dim = r.integer("head_dim", c.hidden_size / c.num_attention_heads, 1);
    c.q_lora_rank = 0;
  }

  // quantization_config sits at the top level of the file.
  if (root.contains("quantization_config") && !root.at("quantization_config").is_null()) {
    const Json& q = root.at("quantization_config");
    if (!q.is_object()) throw Error("expected an object", at_field("quantization_config", file));
    detail::ConfigReader qr(q, file, "quantization_config.");
    const std::string method = qr.string("quant_method", "");
    if (method != "fp8")
      throw Error("unsupported quantization method \"" + excerpt(method) + "\" (supported: fp8)", qr.where("quant_method"));
    const std::string fmt = qr.string("fmt", "e4m3");
    if (fmt != "e4m3") throw Error("unsupported fp8 format \"" + excerpt(fmt) + "\" (supported: e4m3)", qr.where("fmt"));
    c.quantization.fp8 = true;
    if (q.contains("weight_block_size")) {
      const Json& b = q.at("weight_block_size");
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer())
        throw Error("expected [rows, cols] of positive integers", qr.where("weight_block_size"));
      int* out[2] = {&c.quantization.block_rows, &c.quantization.block_cols};
      for (int i = 0; i < 2; ++i) {
        const std::string f = "quantization_config.weight_block_size[" + std::to_string(i) + "]";
        *out[i] = b[i].is_number_unsigned() ? checked_cast<int>(b[i].get<uint64_t>(), 1, kMaxModelDim, f, qr.where("weight_block_size"))
                                            : checked_cast<int>(b[i].get<int64_t>(), 1, kMaxModelDim, f, qr.where("weight_block_size"));
      }
    }
    const std::string sf = qr.string("scale_fmt", "");
    if (!sf.empty() && sf != "ue8m0") throw Error("unsupported scale_fmt \"" + excerpt(sf) + "\"", qr.where("scale_fmt"));
    c.quantization.scale_ue8m0 = sf == "ue8m0";
  }

  // Contradictions.
  if (c.hidden_act != "silu") throw Error("unsupported hidden_act \"" + excerpt(c.hidden_act) + "\" (DeepSeek models use silu)", r.where("hidden_act"));
  if (c.use_mla) {
    if (c.kv_lora_rank < 1) throw Error("MLA needs kv_lora_rank >= 1", r.where("kv_lora_rank"));
    if (c.qk_rope_head_dim < 2 || c.qk_rope_head_dim % 2) throw Error("qk_rope_head_dim must be even and >= 2", r.where("qk_rope_head_dim"));
    if (c.v_head_dim < 1) throw Error("v_head_dim must be >= 1", r.where("v_head_dim"));
  } else {
    if (c.hidden_size % c.num_attention_heads && !r.has("head_dim"))
      throw Error("hidden_size is not divisible by num_attention_heads", r.where("num_attention_heads"));
    if (c.num_key_value_heads > c.num_attention_heads || c.num_attention_heads % c.num_key_value_heads)
      throw Error("num_attention_heads (" + std::to_string(c.num_attention_heads) + ") is not a multiple of num_key_value_heads (" +
                      std::to_string(c.num_key_value_heads) + ")",
                  r.where("num_key_value_heads"));
  }
  if (c.has_moe() && !v4) {  // V4's router: io/v4_config.hpp
    if (c.num_experts_per_tok < 1 || c.num_experts_per_tok > c.n_routed_experts)
      throw Error("num_experts_per_tok must be in [1, n_routed_experts]", r.where("num_experts_per_tok"));
    if (c.n_routed_experts % c.n_group)
      throw Error("n_routed_experts (" + std::to_string(c.n_routed_experts) + ") is not divisible by n_group (" + std::to_string(c.n_group) + ")",
                  r.where("n_group"));
    if (c.topk_group > c.n_group) throw Error("topk_group is larger than n_group", r.where("topk_group"));
    if (c.scoring_func != "softmax" && c.scoring_func != "sigmoid")
      throw Error("unsupported scoring_func \"" + excerpt(c.scoring_func) + "\"", r.where("scoring_func"));
    if (c.topk_method != "greedy" && c.topk_method != "group_limited_greedy" && c.topk_method != "noaux_tc")
      throw Error("unsupported topk_method \"" + excerpt(c.topk_method) + "\"", r.where("topk_method"));
    if (c.topk_method == "noaux_tc" && c.scoring_func != "sigmoid")
      throw Error("topk_method noaux_tc needs scoring_func sigmoid", r.where("scoring_func"));
    if (c.topk_method != "greedy" && c.topk_group * (c.n_routed_experts / c.n_group) < c.num_experts_per_tok)
      throw Error("topk_group groups hold fewer experts than num_experts_per_tok", r.where("topk_group"));
  }
  if (c.first_k_dense_replace > c.num_hidden_layers)
    throw Error("first_k_dense_replace exceeds num_hidden_layers", r.where("first_k_dense_replace"));
  if (c.has_indexer() && (c.index_head_dim < c.qk_rope_head_dim || c.index_topk < 1 || c.q_lora_rank < 1))
    throw Error("the V3.2 indexer needs index_head_dim >= qk_rope_head_dim, index_topk >= 1 and q_lora_rank >= 1",
                r.where("index_head_dim"));
  for (int64_t e : c.eos_token_ids)
    if (e >= c.vocab_size)
      throw Error("eos_token_id " + std::to_string(e) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")",
                  r.where("eos_token_id"));
  if (c.bos_token_id >= c.vocab_size)
    throw Error("bos_token_id " + std::to_string(c.bos_token_id) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")",
                r.where("bos_token_id"));
  const double params = detail::parameter_bound(c);
  if (params > double(kMaxParameters))
    throw Error("the config describes " + std::to_string(params) + " parameters, more than the limit of " +
                    std::to_string(kMaxParameters) + " (kMaxParameters)",
                r.where("hidden_size"));
  return c;
}

inline ModelConfig load_config(const std::string& path) {
  return parse_config(parse_json(read_text_file(path), path), path);
}

}  // namespace deepseek::io
