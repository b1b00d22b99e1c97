// DeepSeek-OCR's vision encoder (nn::DeepEncoder<cpu>) at the released sizes (SAM-B 768 x 12 with
// window 14 / global 2, 5, 8, 11, neck 256, net_2 512, net_3 1024; CLIP-L 1024 x 24; projector
// 2048 -> 1280) with random bf16 weights, per view: Tiny 512, Small 640 (= one Gundam tile), Base
// 1024, Large 1280, and a Gundam page (global 1024 + 6 tiles of 640, a 2 x 3 grid). Reported: ms per
// encode and GFLOP/s (2 x multiply-adds of the convolutions, linears and attention products).
//
//   DEEPSEEK_BENCH_DIR   where the synthetic checkpoint is written (default /tmp/deepseek-bench)
// Last argument: 0 = f32 activations (exact products), 1 = bf16 activations (inputs of every linear
// and convolution rounded to bf16, as the official bf16 run; AVX512-BF16 kernels where present).
// bench/ocr_encoder_vs_pytorch.py times the official PyTorch modules on the same sizes.
#include "synthetic_checkpoint.hpp"

#include <deepseek/deepseek.hpp>
#include <deepseek/nn/deep_encoder.hpp>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

using namespace deepseek;

namespace {

std::string env_or(const char* k, const std::string& d) {
  const char* v = std::getenv(k);
  return v && *v ? v : d;
}

nlohmann::ordered_json ocr_config() {
  return {{"architectures", {"DeepseekOCRForCausalLM"}},
          {"model_type", "deepseek_vl_v2"},
          {"projector_config", {{"input_dim", 2048}, {"n_embed", 1280}, {"projector_type", "linear"}}},
          {"vision_config",
           {{"image_size", 1024},
            {"width",
             {{"clip-l-14-224", {{"heads", 16}, {"image_size", 224}, {"layers", 24}, {"patch_size", 14}, {"width", 1024}}},
              {"sam_vit_b", {{"downsample_channels", {512, 1024}}, {"global_attn_indexes", {2, 5, 8, 11}}, {"heads", 12}, {"layers", 12}, {"width", 768}}}}}}},
          {"language_config",
           {{"model_type", "deepseek_v2"}, {"hidden_size", 1280}, {"num_hidden_layers", 1}, {"num_attention_heads", 10},
            {"num_key_value_heads", 10}, {"use_mla", false}, {"kv_lora_rank", nullptr}, {"q_lora_rank", nullptr},
            {"qk_nope_head_dim", 0}, {"qk_rope_head_dim", 0}, {"v_head_dim", 0}, {"intermediate_size", 6848},
            {"n_routed_experts", 0}, {"vocab_size", 129280}, {"bos_token_id", 0}, {"eos_token_id", 1}}}};
}

// The released vision tensors (bench::add_ocr_encoder) with the released config.
void make_encoder_checkpoint(const std::string& dir) {
  namespace fs = std::filesystem;
  const auto cfg = ocr_config();
  if (fs::exists(fs::path(dir) / "model.safetensors") && fs::exists(fs::path(dir) / "config.json")) {
    std::ifstream in(fs::path(dir) / "config.json");
    if (nlohmann::json::parse(in) == nlohmann::json::parse(cfg.dump())) return;
  }
  fs::create_directories(dir);
  bench::CheckpointWriter w;
  bench::add_ocr_encoder(w, 12, {2, 5, 8, 11}, 24);
  w.write((fs::path(dir) / "model.safetensors").string(), 2025);
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2);
}

std::shared_ptr<nn::DeepEncoder<cpu>> encoder(bool bf16_activations) {
  static std::map<bool, std::shared_ptr<nn::DeepEncoder<cpu>>> cache;
  auto& e = cache[bf16_activations];
  if (e) return e;
  const std::string dir = env_or("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench") + "/ocr-encoder-bf16";
  make_encoder_checkpoint(dir);
  auto ckpt = io::Checkpoint::open(dir);
  ckpt->populate();
  const auto root = io::parse_json(io::read_text_file(dir + "/config.json"), dir + "/config.json");
  io::Weights w(ckpt, "model.");
  if (bf16_activations) w = w.with_activations(ActivationDType::bf16);
  e = std::make_shared<nn::DeepEncoder<cpu>>(w, nn::DeepEncoderConfig::from(root, *ckpt));
  return e;
}

std::vector<float> image(int64_t S) {
  std::vector<float> p(size_t(3 * S * S));
  for (size_t i = 0; i < p.size(); ++i) p[i] = float(int64_t(i * 2654435761u % 2001) - 1000) / 1000.0f;
  return p;
}

// Views of one encode: {side, count}; 0 = a Gundam page (global 1024 + 6 tiles of 640).
std::vector<std::pair<int64_t, int>> views(int64_t S) {
  if (S == 0) return {{1024, 1}, {640, 6}};
  return {{S, 1}};
}

void BM_Encoder(benchmark::State& state) {
  const int64_t S = state.range(0);
  auto enc = encoder(state.range(1) != 0);
  std::map<int64_t, std::vector<float>> px;
  double flops = 0;
  int64_t tokens = 0;
  for (auto [s, n] : views(S)) {
    px[s] = image(s);
    flops += double(n) * double(enc->flops(s));
    tokens += n * enc->out_side(s) * enc->out_side(s);
  }
  std::vector<float> out;
  for (auto [s, n] : views(S)) enc->forward(px[s].data(), s, out);  // warm-up: position tables cached per size
  for (auto _ : state)
    for (auto [s, n] : views(S))
      for (int i = 0; i < n; ++i) {
        enc->forward(px[s].data(), s, out);
        benchmark::DoNotOptimize(out.data());
      }
  state.counters["GFLOP"] = flops / 1e9;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.counters["vision_tokens"] = double(tokens);
  state.counters["threads"] = num_threads();
}

}  // namespace

// S (0 = Gundam page), activations (0 = f32, 1 = bf16).
BENCHMARK(BM_Encoder)
    ->ArgsProduct({{512, 640, 1024, 1280, 0}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->MeasureProcessCPUTime()  // "CPU" = all threads: the steadier number on a shared machine
    ->UseRealTime();
BENCHMARK_MAIN();
