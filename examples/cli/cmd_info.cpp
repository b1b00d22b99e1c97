// deepseek-cli info --model DIR [--json]: architecture, layers, parameters (total, activated per
// token, MTP apart), dtypes and bytes on disk, KV-cache bytes per token (MLA latent vs the
// equivalent full multi-head cache; for DeepSeek-V4 its layer schedule and the compressed cache
// per token at long context beside its bounded window). Works on config-only directories.
#include "command.hpp"

#include <deepseek/io/checkpoint.hpp>
#include <deepseek/io/v4_config.hpp>
#include <deepseek/models/model_info.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace {

// 671.03B, 15.71M, ...
std::string count(int64_t n) {
  char buf[64];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
  else std::snprintf(buf, sizeof buf, "%.2fM", double(n) / 1e6);
  return buf;
}

// 13760, 112, 0.5: bytes per token are integral in the released configs, not always in small ones.
std::string number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

// "4" or "8, 128" (the distinct ratios of one layer type).
std::string ratios(const std::vector<int64_t>& r) {
  std::string s;
  for (size_t i = 0; i < r.size(); ++i) s += (i ? ", " : "") + std::to_string(r[i]);
  return s;
}

// The V4 parts of info (V4_NOTES.md; models::v4_model_info), in j and, unless json, on stdout.
void v4_info(const deepseek::io::ModelConfig& c, const deepseek::io::V4Config& v, bool json,
             nlohmann::ordered_json& j) {
  using namespace deepseek;
  const models::V4ModelInfo m = models::v4_model_info(c, v);
  j["layers"] = {{"total", c.num_hidden_layers}, {"sliding", m.sliding_layers},      {"csa", m.csa_layers},
                 {"hca", m.hca_layers},          {"csa_ratios", m.csa_ratios},       {"hca_ratios", m.hca_ratios},
                 {"hash", m.hash_layers},        {"mtp", c.num_nextn_predict_layers}};
  j["attention"] = {{"kind", "V4 sliding window + CSA / HCA"},
                    {"heads", c.num_attention_heads},
                    {"head_dim", c.head_dim},
                    {"qk_rope_head_dim", c.qk_rope_head_dim},
                    {"q_lora_rank", c.q_lora_rank},
                    {"o_groups", v.o_groups},
                    {"o_lora_rank", v.o_lora_rank},
                    {"sliding_window", v.sliding_window},
                    {"index_n_heads", v.index_n_heads},
                    {"index_head_dim", v.index_head_dim},
                    {"index_topk", v.index_topk},
                    {"hc_mult", v.hc_mult}};
  j["moe"] = {{"routed_experts", c.n_routed_experts},
              {"shared_experts", 1},
              {"experts_per_token", c.num_experts_per_tok},
              {"hash_layers", m.hash_layers},
              {"scoring_func", v.scoring_func == io::V4Scoring::sqrtsoftplus ? "sqrtsoftplus" : "sigmoid"},
              {"moe_intermediate_size", c.moe_intermediate_size}};
  j["parameters"] = {{"total", m.params_total},
                     {"activated_per_token", m.params_activated},
                     {"mtp", m.mtp_params},
                     {"mtp_activated_per_token", m.mtp_params_activated}};
  j["kv_cache_bytes_per_token"] = {{"f32", m.cache_bytes_per_token(4)},
                                   {"bf16", m.cache_bytes_per_token(2)},
                                   {"window_bytes_f32", m.window_bytes(4)},
                                   {"window_bytes_bf16", m.window_bytes(2)},
                                   {"uncompressed_bf16", 2 * m.uncompressed_values_per_token}};
  if (json) return;
  std::printf(
      "layers         %d: %d sliding window, %d CSA (m = %s, indexer top-%lld), %d HCA (m = %s); "
      "%d hash-routed + %d MTP module(s)\n",
      c.num_hidden_layers, m.sliding_layers, m.csa_layers, ratios(m.csa_ratios).c_str(), (long long)v.index_topk,
      m.hca_layers, ratios(m.hca_ratios).c_str(), m.hash_layers, c.num_nextn_predict_layers);
  std::printf(
      "attention      V4: %d heads x %lld (one shared K = V head, rope %lld), q_lora_rank %lld, "
      "output %lld groups x %lld, window %lld; indexer %d heads x %lld; hc_mult %d\n",
      c.num_attention_heads, (long long)c.head_dim, (long long)c.qk_rope_head_dim, (long long)c.q_lora_rank,
      (long long)v.o_groups, (long long)v.o_lora_rank, (long long)v.sliding_window, v.index_n_heads,
      (long long)v.index_head_dim, v.hc_mult);
  std::printf("moe            %d routed (top-%d, %s) + 1 shared, width %lld\n", c.n_routed_experts,
              c.num_experts_per_tok, v.scoring_func == io::V4Scoring::sqrtsoftplus ? "sqrtsoftplus" : "sigmoid",
              (long long)c.moe_intermediate_size);
  std::printf("parameters     %s total, %s activated per token (main model)\n", count(m.params_total).c_str(),
              count(m.params_activated).c_str());
  if (c.num_nextn_predict_layers)
    std::printf("               MTP: %s (embedding and head shared), %s activated per token\n",
                count(m.mtp_params).c_str(), count(m.mtp_params_activated).c_str());
  std::printf(
      "kv cache       bytes/token at long context (CSA entries + index keys, HCA entries; amortised): "
      "%s f32, %s bf16; plus a bounded window of %lld keys per layer: %lld bytes f32, %lld bf16; "
      "every token's key in every layer (bf16): %lld (%.1fx bf16)\n",
      number(m.cache_bytes_per_token(4)).c_str(), number(m.cache_bytes_per_token(2)).c_str(),
      (long long)v.sliding_window, (long long)m.window_bytes(4), (long long)m.window_bytes(2),
      (long long)(2 * m.uncompressed_values_per_token),
      double(2 * m.uncompressed_values_per_token) / m.cache_bytes_per_token(2));
}

// The V2 / V3 / V3.2 parts of info (models::model_info), in j and, unless json, on stdout.
void mla_info(const deepseek::io::ModelConfig& c, bool json, nlohmann::ordered_json& j) {
  using namespace deepseek;
  const models::ModelInfo m = models::model_info(c);
  j["layers"] = {{"total", c.num_hidden_layers}, {"dense", m.dense_layers}, {"moe", m.moe_layers},
                 {"mtp", c.num_nextn_predict_layers}};
  j["attention"] = c.use_mla ? nlohmann::ordered_json{{"kind", c.has_indexer() ? "MLA+DSA" : "MLA"},
                                                      {"heads", c.num_attention_heads},
                                                      {"q_lora_rank", c.q_lora_rank},
                                                      {"kv_lora_rank", c.kv_lora_rank},
                                                      {"qk_nope_head_dim", c.qk_nope_head_dim},
                                                      {"qk_rope_head_dim", c.qk_rope_head_dim},
                                                      {"v_head_dim", c.v_head_dim}}
                             : nlohmann::ordered_json{{"kind", "MHA"},
                                                      {"heads", c.num_attention_heads},
                                                      {"kv_heads", c.num_key_value_heads},
                                                      {"head_dim", c.head_dim}};
  if (c.has_moe())
    j["moe"] = {{"routed_experts", c.n_routed_experts}, {"shared_experts", c.n_shared_experts},
                {"experts_per_token", c.num_experts_per_tok}, {"groups", c.n_group}, {"topk_group", c.topk_group},
                {"topk_method", c.topk_method}, {"scoring_func", c.scoring_func},
                {"moe_intermediate_size", c.moe_intermediate_size}};
  j["parameters"] = {{"total", m.params_total}, {"activated_per_token", m.params_activated},
                     {"mtp_unique", m.mtp_params_unique}, {"mtp_embedding_and_head_copies", m.mtp_params_copies},
                     {"mtp_activated_per_token", m.mtp_params_activated}};
  j["kv_cache_bytes_per_token_bf16"] = {{"latent", m.kv_bytes_per_token_bf16}, {"full_mha", m.full_kv_bytes_per_token_bf16}};
  // What the cache stores per token with each --cache-dtype (V3.2's index key included).
  j["kv_cache_bytes_per_token"] = {{"f32", m.kv_bytes_per_token_f32}, {"bf16", m.kv_bytes_per_token_bf16},
                                   {"fp8", m.kv_bytes_per_token_fp8 ? nlohmann::ordered_json(m.kv_bytes_per_token_fp8) : nullptr},
                                   {"fp8_with_fp8_index_key",
                                    m.kv_bytes_per_token_fp8_index ? nlohmann::ordered_json(m.kv_bytes_per_token_fp8_index) : nullptr},
                                   {"index_key_values_per_layer", m.index_values_per_token_layer}};
  if (json) return;
  std::printf("layers         %d (%d dense, %d MoE) + %d MTP module(s)\n", c.num_hidden_layers, m.dense_layers,
              m.moe_layers, c.num_nextn_predict_layers);
  if (c.use_mla)
    std::printf("attention      %s: %d heads, q_lora_rank %lld, kv_lora_rank %lld, qk nope/rope %lld/%lld, v %lld\n",
                c.has_indexer() ? "MLA + DSA indexer" : "MLA", c.num_attention_heads, (long long)c.q_lora_rank,
                (long long)c.kv_lora_rank, (long long)c.qk_nope_head_dim, (long long)c.qk_rope_head_dim,
                (long long)c.v_head_dim);
  else
    std::printf("attention      MHA: %d heads (%d KV), head_dim %lld\n", c.num_attention_heads, c.num_key_value_heads,
                (long long)c.head_dim);
  if (c.has_moe())
    std::printf("moe            %d routed (top-%d, %s %s, %d groups keep %d) + %d shared, width %lld\n",
                c.n_routed_experts, c.num_experts_per_tok, c.topk_method.c_str(), c.scoring_func.c_str(), c.n_group,
                c.topk_group, c.n_shared_experts, (long long)c.moe_intermediate_size);
  std::printf("parameters     %s total, %s activated per token (main model)\n", count(m.params_total).c_str(),
              count(m.params_activated).c_str());
  if (c.num_nextn_predict_layers)
    std::printf("               MTP: %s unique + %s embedding/head copies, %s activated per token\n",
                count(m.mtp_params_unique).c_str(), count(m.mtp_params_copies).c_str(),
                count(m.mtp_params_activated).c_str());
  std::printf("kv cache       bytes/token (%s%s): %lld with --cache-dtype f32, %lld bf16", c.use_mla ? "latent c_kv + k_pe" : "K + V",
              m.index_values_per_token_layer ? " + DSA index key" : "", (long long)m.kv_bytes_per_token_f32,
              (long long)m.kv_bytes_per_token_bf16);
  if (m.kv_bytes_per_token_fp8) std::printf(", %lld fp8", (long long)m.kv_bytes_per_token_fp8);
  if (m.kv_bytes_per_token_fp8_index)
    std::printf(" (%lld with the FP8 indexer, its index key in e4m3)", (long long)m.kv_bytes_per_token_fp8_index);
  std::printf("; a full bf16 multi-head cache: %lld (%.1fx bf16)\n", (long long)m.full_kv_bytes_per_token_bf16,
              double(m.full_kv_bytes_per_token_bf16) / double(m.kv_bytes_per_token_bf16));
}

int run_info(int argc, char** argv) {
  using namespace deepseek;
  cli::Args args(argc, argv, {"json"}, {"model"});
  if (args.help()) {
    std::printf("usage: deepseek-cli info --model DIR [--json]\n");
    return 0;
  }
  args.reject_positional();
  auto ckpt = io::Checkpoint::open(args.required("model"));
  const io::ModelConfig& c = ckpt->config();
  const bool json = args.flag("json");

  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (tensors, bytes)
  int64_t tensor_bytes = 0;
  for (const auto& name : ckpt->names()) {
    const io::TensorInfo* t = ckpt->find(name);
    auto& e = by_dtype[dtype_name(t->dtype)];
    e.first += 1;
    e.second += int64_t(t->end - t->begin);
    tensor_bytes += int64_t(t->end - t->begin);
  }

  nlohmann::ordered_json j;
  j["architecture"] = c.architecture;
  j["model_type"] = c.model_type;
  if (!json) std::printf("architecture   %s (%s)\n", c.architecture.c_str(), c.model_type.c_str());
  if (c.model_type == "deepseek_v4")
    v4_info(c, io::load_v4_config((std::filesystem::path(ckpt->dir()) / "config.json").string(), c), json, j);
  else
    mla_info(c, json, j);
  nlohmann::ordered_json w = {{"files", ckpt->num_files()}, {"tensors", ckpt->names().size()}, {"bytes", tensor_bytes}};
  for (auto& [dt, e] : by_dtype) w["dtypes"][dt] = {{"tensors", e.first}, {"bytes", e.second}};
  j["weights"] = w;

  if (json) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  if (ckpt->has_weights()) {
    std::printf("weights        %zu tensors in %zu file(s), %.3f GB\n", ckpt->names().size(), ckpt->num_files(),
                double(tensor_bytes) / 1e9);
    for (auto& [dt, e] : by_dtype)
      std::printf("               %-8s %6lld tensors %12.3f MB\n", dt.c_str(), (long long)e.first, double(e.second) / 1e6);
  } else {
    std::printf("weights        none (config-only directory)\n");
  }
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("info", "architecture, parameters, dtypes and KV-cache size of a checkpoint", run_info);
