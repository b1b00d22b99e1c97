// Writes a checkpoint with DeepSeek-V2-Lite's real layer shapes and random weights (bf16, or FP8
// e4m3 + 128x128 weight_scale_inv like the released V3 files) so decode and prefill can be
// timed at real sizes on a machine that cannot hold the real model. Only the benchmarks use it;
// bench/model_vs_transformers.py loads the same directory into transformers.
#pragma once

#include <deepseek/core/dtype.hpp>
#include <deepseek/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace deepseek::bench {

struct V2LiteShape {
  int64_t hidden = 2048, vocab = 102400, dense_inter = 10944, moe_inter = 1408, heads = 16;
  int64_t kv_lora = 512, nope = 128, rope = 64, v = 128;
  int experts = 64, top_k = 6, shared = 2;
};

inline nlohmann::ordered_json v2_lite_config(int layers, bool fp8, int64_t vocab = 102400) {
  nlohmann::ordered_json c = {
      {"architectures", {"DeepseekV2ForCausalLM"}}, {"model_type", "deepseek_v2"}, {"vocab_size", vocab},
      {"hidden_size", 2048}, {"intermediate_size", 10944}, {"moe_intermediate_size", 1408},
      {"num_hidden_layers", layers}, {"num_attention_heads", 16}, {"num_key_value_heads", 16},
      {"n_routed_experts", 64}, {"n_shared_experts", 2}, {"num_experts_per_tok", 6}, {"n_group", 1},
      {"topk_group", 1}, {"topk_method", "greedy"}, {"scoring_func", "softmax"}, {"norm_topk_prob", false},
      {"routed_scaling_factor", 1.0}, {"first_k_dense_replace", 1}, {"moe_layer_freq", 1},
      {"q_lora_rank", nullptr}, {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
      {"v_head_dim", 128}, {"max_position_embeddings", 163840}, {"rope_theta", 10000},
      {"rope_scaling", {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096},
                        {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 0.707}, {"mscale_all_dim", 0.707}}},
      {"rms_norm_eps", 1e-6}, {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"attention_bias", false},
      {"bos_token_id", 100000}, {"eos_token_id", 100001}, {"torch_dtype", "bfloat16"}};
  if (fp8)
    c["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"activation_scheme", "dynamic"}, {"weight_block_size", {128, 128}}};
  return c;
}

class CheckpointWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    float std;
  };
  void add(std::string name, DType dt, std::vector<int64_t> shape, float std) { entries_.push_back({std::move(name), dt, std::move(shape), std}); }

  // Data is written in dtype-size order (f32, bf16, u8) so every tensor is aligned.
  void write(const std::string& path, uint64_t seed) {
    std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return dtype_size(a.dtype) > dtype_size(b.dtype); });
    nlohmann::ordered_json h;
    h["__metadata__"] = {{"format", "pt"}};
    uint64_t off = 0;
    for (const auto& e : entries_) {
      uint64_t n = 1;
      for (auto d : e.shape) n *= uint64_t(d);
      const uint64_t bytes = n * uint64_t(dtype_size(e.dtype));
      h[e.name] = {{"dtype", dtype_info(e.dtype).safetensors}, {"shape", e.shape}, {"data_offsets", {off, off + bytes}}};
      off += bytes;
    }
    std::string hs = h.dump();
    hs.append((8 - hs.size() % 8) % 8, ' ');
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f) throw Error("cannot write", in_file(path));
    uint64_t hl = hs.size();
    f.write(reinterpret_cast<const char*>(&hl), 8);
    f << hs;
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    auto next = [&]() {  // xorshift64*: fast, reproducible
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      return state * 2685821657736338717ull;
    };
    std::vector<char> buf;
    for (const auto& e : entries_) {
      uint64_t n = 1;
      for (auto d : e.shape) n *= uint64_t(d);
      buf.resize(size_t(n) * size_t(dtype_size(e.dtype)));
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t r = next();
        // Uniform in [-sqrt(3) std, sqrt(3) std): the given standard deviation.
        const float u = (float((r >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * 1.7320508f * e.std;
        if (e.dtype == DType::bf16) {
          const uint16_t b = f32_to_bf16(e.name.find("norm") != std::string::npos ? 1.0f + u : u);
          std::memcpy(buf.data() + 2 * i, &b, 2);
        } else if (e.dtype == DType::f32) {
          const float v = std::fabs(u);
          std::memcpy(buf.data() + 4 * i, &v, 4);
        } else {
          buf[size_t(i)] = char(f32_to_f8_e4m3(u));
        }
      }
      f.write(buf.data(), std::streamsize(buf.size()));
    }
    if (!f) throw Error("write failed", in_file(path));
  }

 private:
  std::vector<Entry> entries_;
};

// Creates `dir` (config.json + model.safetensors) unless it already holds this many layers.
// `vocab` is V2-Lite's 102400 unless a side-by-side needs a real tokenizer's ids to fit: llama.cpp's
// converter wants a tokenizer.json in the folder, and the only one here is V3's (129280 ids).
inline void make_v2_lite_checkpoint(const std::string& dir, int layers, bool fp8, int64_t vocab = 102400) {
  namespace fs = std::filesystem;
  const auto cfg = v2_lite_config(layers, fp8, vocab);
  if (fs::exists(fs::path(dir) / "model.safetensors") && fs::exists(fs::path(dir) / "config.json")) {
    std::ifstream in(fs::path(dir) / "config.json");
    if (nlohmann::json::parse(in) == nlohmann::json::parse(cfg.dump())) return;
  }
  fs::create_directories(dir);
  V2LiteShape s;
  s.vocab = vocab;
  CheckpointWriter w;
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    const float std = 1.0f / std::sqrt(float(in));
    if (fp8) {
      w.add(name + ".weight", DType::f8_e4m3, {out, in}, 448.0f / 3.0f);
      w.add(name + ".weight_scale_inv", DType::f32, {(out + 127) / 128, (in + 127) / 128}, std * 3.0f / 448.0f);
    } else {
      w.add(name + ".weight", DType::bf16, {out, in}, std);
    }
  };
  w.add("model.embed_tokens.weight", DType::bf16, {s.vocab, s.hidden}, 1.0f);
  w.add("lm_head.weight", DType::bf16, {s.vocab, s.hidden}, 1.0f / std::sqrt(float(s.hidden)));
  w.add("model.norm.weight", DType::bf16, {s.hidden}, 0.05f);
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.add(p + "input_layernorm.weight", DType::bf16, {s.hidden}, 0.05f);
    w.add(p + "post_attention_layernorm.weight", DType::bf16, {s.hidden}, 0.05f);
    linear(p + "self_attn.q_proj", s.heads * (s.nope + s.rope), s.hidden);
    linear(p + "self_attn.kv_a_proj_with_mqa", s.kv_lora + s.rope, s.hidden);
    w.add(p + "self_attn.kv_a_layernorm.weight", DType::bf16, {s.kv_lora}, 0.05f);
    linear(p + "self_attn.kv_b_proj", s.heads * (s.nope + s.v), s.kv_lora);
    linear(p + "self_attn.o_proj", s.hidden, s.heads * s.v);
    if (l == 0) {
      linear(p + "mlp.gate_proj", s.dense_inter, s.hidden);
      linear(p + "mlp.up_proj", s.dense_inter, s.hidden);
      linear(p + "mlp.down_proj", s.hidden, s.dense_inter);
      continue;
    }
    w.add(p + "mlp.gate.weight", DType::bf16, {s.experts, s.hidden}, 1.0f / std::sqrt(float(s.hidden)));
    for (int e = 0; e < s.experts; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      linear(q + "gate_proj", s.moe_inter, s.hidden);
      linear(q + "up_proj", s.moe_inter, s.hidden);
      linear(q + "down_proj", s.hidden, s.moe_inter);
    }
    linear(p + "mlp.shared_experts.gate_proj", s.moe_inter * s.shared, s.hidden);
    linear(p + "mlp.shared_experts.up_proj", s.moe_inter * s.shared, s.hidden);
    linear(p + "mlp.shared_experts.down_proj", s.hidden, s.moe_inter * s.shared);
  }
  w.write((fs::path(dir) / "model.safetensors").string(), 1234);
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2);
}

// The DeepSeek-OCR vision tensors (spec section 8: SAM-B 768 wide, CLIP-L 1024, projector 2048 -> 1280)
// in bf16, random: linears / convolutions with std 1 / sqrt(fan_in), norms around 1 (add() adds 1 to
// names containing "norm"), tables 0.5. sam_globals: the SAM blocks with global attention (their
// rel-pos tables are [127, 64], the windowed ones [27, 64]).
inline void add_ocr_encoder(CheckpointWriter& w, int sam_layers, const std::vector<int>& sam_globals, int clip_layers) {
  const DType bf = DType::bf16;
  auto lin = [&](const std::string& n, int64_t out, int64_t in, bool bias = true) {
    w.add(n + ".weight", bf, {out, in}, 1.0f / std::sqrt(float(in)));
    if (bias) w.add(n + ".bias", bf, {out}, 0.1f);
  };
  auto conv = [&](const std::string& n, int64_t out, int64_t in, int64_t k) {
    w.add(n + ".weight", bf, {out, in, k, k}, 1.0f / std::sqrt(float(in * k * k)));
  };
  auto norm = [&](const std::string& n, int64_t d) {
    w.add(n + ".weight", bf, {d}, 0.05f);
    w.add(n + ".bias", bf, {d}, 0.05f);
  };
  const std::string s = "model.sam_model.", v = "model.vision_model.";
  conv(s + "patch_embed.proj", 768, 3, 16);
  w.add(s + "patch_embed.proj.bias", bf, {768}, 0.1f);
  w.add(s + "pos_embed", bf, {1, 64, 64, 768}, 0.5f);
  for (int i = 0; i < sam_layers; ++i) {
    const std::string p = s + "blocks." + std::to_string(i) + ".";
    const bool global = std::find(sam_globals.begin(), sam_globals.end(), i) != sam_globals.end();
    norm(p + "norm1", 768);
    norm(p + "norm2", 768);
    lin(p + "attn.qkv", 2304, 768);
    lin(p + "attn.proj", 768, 768);
    w.add(p + "attn.rel_pos_h", bf, {global ? 127 : 27, 64}, 0.5f);
    w.add(p + "attn.rel_pos_w", bf, {global ? 127 : 27, 64}, 0.5f);
    lin(p + "mlp.lin1", 3072, 768);
    lin(p + "mlp.lin2", 768, 3072);
  }
  conv(s + "neck.0", 256, 768, 1);
  w.add(s + "neck.1.weight", bf, {256}, 1.0f);
  w.add(s + "neck.1.bias", bf, {256}, 0.1f);
  conv(s + "neck.2", 256, 256, 3);
  w.add(s + "neck.3.weight", bf, {256}, 1.0f);
  w.add(s + "neck.3.bias", bf, {256}, 0.1f);
  conv(s + "net_2", 512, 256, 3);
  conv(s + "net_3", 1024, 512, 3);
  w.add(v + "embeddings.class_embedding", bf, {1024}, 1.0f);
  conv(v + "embeddings.patch_embedding", 1024, 3, 14);
  w.add(v + "embeddings.position_embedding.weight", bf, {257, 1024}, 0.5f);
  norm(v + "pre_layrnorm", 1024);
  for (int j = 0; j < clip_layers; ++j) {
    const std::string p = v + "transformer.layers." + std::to_string(j) + ".";
    norm(p + "layer_norm1", 1024);
    norm(p + "layer_norm2", 1024);
    lin(p + "self_attn.qkv_proj", 3072, 1024);
    lin(p + "self_attn.out_proj", 1024, 1024);
    lin(p + "mlp.fc1", 4096, 1024);
    lin(p + "mlp.fc2", 1024, 4096);
  }
  lin("model.projector.layers", 1280, 2048);
}

}  // namespace deepseek::bench
