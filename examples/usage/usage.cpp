// The README's usage example: open a checkpoint, print its config and one FP8 weight, and
// tokenize a chat prompt with the DeepSeek-V3 tokenizer.
//   usage CHECKPOINT_DIR TOKENIZER   (e.g. tests/fixtures/models/v3_fp8 assets/tokenizers/deepseek-v3)
#include <deepseek/deepseek.hpp>
#include <deepseek/tokenizer.hpp>

#include <cstdio>

using nlohmann::literals::operator""_json;

int main(int argc, char** argv) try {
  if (argc != 3) return std::fprintf(stderr, "usage: %s CHECKPOINT_DIR TOKENIZER\n", argv[0]), 2;
  auto ckpt = deepseek::io::Checkpoint::open(argv[1]);  // config.json + (sharded) safetensors, mmapped
  const deepseek::io::ModelConfig& c = ckpt->config();
  std::printf("%s: %d layers, hidden %lld, %d routed experts, top-%d\n", c.model_type.c_str(), c.num_hidden_layers,
              static_cast<long long>(c.hidden_size), c.n_routed_experts, c.num_experts_per_tok);

  deepseek::io::Weights attn(ckpt, "model.layers.0.self_attn.");  // FP8 weight + weight_scale_inv as one matrix
  auto kv_a = attn.matrix("kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size);
  std::printf("kv_a_proj_with_mqa: %s %s, scales %s\n", deepseek::dtype_name(kv_a.weight.dtype()),
              kv_a.weight.shape().str().c_str(), kv_a.scale_inv.shape().str().c_str());

  auto tok = deepseek::tokenizer::Tokenizer::from_file(argv[2]);
  deepseek::chat::ChatOptions opts;
  opts.add_generation_prompt = true;
  const auto messages = deepseek::chat::messages_from_json(R"([{"role": "user", "content": "Hello, DeepSeek!"}])"_json);
  const auto ids = tok.encode(deepseek::chat::format_v3(messages, opts));
  std::printf("%zu tokens:", ids.size());
  for (auto id : ids) std::printf(" %d", static_cast<int>(id));
  std::printf("\n");
  return 0;
} catch (const deepseek::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
