// Loads a DeepSeek checkpoint directory (config.json + safetensors + tokenizer.json) and continues a
// prompt: usage MODEL_DIR "prompt"   e.g. examples/models/deepseek-v3-demo "The Python interpreter"
#include <deepseek/deepseek.hpp>

#include <cstdio>

int main(int argc, char** argv) try {
  if (argc != 3) return std::fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]), 2;
  auto ckpt = deepseek::io::Checkpoint::open(argv[1]);  // config.json + (sharded) safetensors, mmapped
  deepseek::models::DeepSeekV3<deepseek::cpu> model(ckpt);  // V2 / V3 / R1 / V3.2, bf16 or FP8
  auto tok = deepseek::tokenizer::Tokenizer::from_file(argv[1]);

  std::vector<int32_t> prompt;
  for (auto id : tok.encode(argv[2], /*add_bos=*/true)) prompt.push_back(int32_t(id));
  auto cache = model.make_cache({/*max_tokens=*/512});  // MLA latent cache, bf16: kv_lora + rope values per token
  deepseek::generate::GenerateOptions opts;
  opts.max_new_tokens = 40;  // greedy by default; set opts.sampling for temperature / top-p
  deepseek::generate::Generator<deepseek::models::DeepSeekV3<deepseek::cpu>> gen(model, cache, opts);

  deepseek::tokenizer::Tokenizer::StreamDecoder text(tok);  // never splits a UTF-8 character
  std::printf("%s", argv[2]);
  gen.run(prompt, [&](int32_t id) { return std::printf("%s", text.push(deepseek::tokenizer::TokenId(id)).c_str()) >= 0; });
  std::printf("%s\n", text.finish().c_str());
  return 0;
} catch (const deepseek::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
