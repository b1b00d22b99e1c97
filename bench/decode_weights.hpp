// The weights one decode step of models::DeepSeekV3 reads, as (pointer, bytes) pairs into the
// checkpoint's mapping: attention, norms, the dense MLP or the router + shared experts of each
// layer, num_experts_per_tok routed experts of each MoE layer (spread over the layer's experts,
// chosen afresh for each `step`), and lm_head (the embedding contributes one row: not counted).
// bench_model reports decode bandwidth against their sum; decode_bursts' `read` streams them.
#pragma once

#include <deepseek/io/checkpoint.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace deepseek::bench {

inline std::vector<std::pair<const uint8_t*, size_t>> decode_step_weights(const io::Checkpoint& ck, int64_t step) {
  const auto& c = ck.config();
  std::vector<std::pair<const uint8_t*, size_t>> parts;
  auto add = [&](const std::string& name) {
    for (const char* suffix : {".weight", ".weight_scale_inv"})
      if (ck.find(name + suffix)) {
        const TensorView v = ck.view(name + suffix);
        parts.push_back({static_cast<const uint8_t*>(v.data()), size_t(v.numel()) * dtype_size(v.dtype())});
      }
  };
  add("lm_head");
  add("model.norm");
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.q_a_proj",
                          "self_attn.q_b_proj", "self_attn.q_a_layernorm", "self_attn.kv_a_proj_with_mqa",
                          "self_attn.kv_a_layernorm", "self_attn.kv_b_proj", "self_attn.o_proj", "mlp.gate_proj",
                          "mlp.up_proj", "mlp.down_proj", "mlp.gate", "mlp.shared_experts.gate_proj",
                          "mlp.shared_experts.up_proj", "mlp.shared_experts.down_proj"})
      add(p + n);
    if (c.is_moe_layer(l))
      for (int k = 0; k < c.num_experts_per_tok; ++k) {
        const int64_t e = (int64_t(k) * 7 + step * 13 + l) % c.n_routed_experts;
        for (const char* n : {"gate_proj", "up_proj", "down_proj"}) add(p + "mlp.experts." + std::to_string(e) + "." + n);
      }
  }
  return parts;
}

// Their bytes (the same for every step: a layer's experts have one shape).
inline double decode_step_bytes(const io::Checkpoint& ck) {
  double total = 0;
  for (const auto& part : decode_step_weights(ck, 0)) total += double(part.second);
  return total;
}

}  // namespace deepseek::bench
