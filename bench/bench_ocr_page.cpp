// One DeepSeek-OCR page end to end (models::DeepSeekOcr<cpu>) at the released sizes with random bf16
// weights: decoder 1280 hidden x 12 layers (MHA 10 x 128, layer 0 dense 6848, then 64 routed experts
// of 896 top-6 + 2 shared fused to 1792), vocab 129280; SAM-B 768 x 12, CLIP-L 1024 x 24, projector
// 2048 -> 1280; the real DeepSeek-V3 tokenizer with the 12 OCR tokens at their released ids (spec 6.3).
// Per mode (Tiny 512, Small 640, Base 1024, Gundam 1024 + 640 tiles) on a real page
// (tests/fixtures/models/ocr_tiny/page.png, 700 x 940: Gundam cuts it into 2 x 3 tiles), prompt
// "<image>\n<|grounding|>Convert the document to markdown.", one iteration =
//   preprocess (resize / pad / tiles) -> encoder (every view, layout)  -> prefill of the prompt
//   -> NEW_TOKENS greedy tokens: the first from the prefill logits, then NEW_TOKENS - 1 decode steps.
// EOS is ignored (argmax is taken over all ids and generation never stops early), like
// min_new_tokens = max_new_tokens on the PyTorch side; no repetition penalty on either side.
// Reported: preprocess_ms, encoder_ms, prefill_ms and prefill tok/s (prompt tokens / s), decode
// tok/s ((NEW_TOKENS - 1) / decode time), page_s (all of it) and pages/s; and process CPU time (all
// threads) of the encoder, of a decode step and of the page, the steadier basis on a shared machine.
//
//   DEEPSEEK_BENCH_DIR         where the synthetic checkpoint is written (default /tmp/deepseek-bench)
//   DEEPSEEK_BENCH_OCR_SIZE    full (default; 6.7 GB) or reduced (2 decoder layers, SAM 3 layers with
//                              one global, CLIP 2 layers: the scripts' end-to-end check)
//   DEEPSEEK_BENCH_NEW_TOKENS  tokens generated per page (default 500)
//   DEEPSEEK_BENCH_PAGE        the page image (default the fixture page above)
// Second argument: 0 = f32 activations, 1 = bf16 activations (LoadOptions::activations).
// bench/ocr_page_vs_pytorch.py runs the official HF pipeline on the same folder and image and this
// binary after it, and prints the ratios. The folder loads in HF as it is (config.json in the released
// deepseek_vl_v2 format, released tensor names).
#include "synthetic_checkpoint.hpp"

#include <deepseek/deepseek.hpp>
#include <deepseek/models/deepseek_ocr.hpp>
#include <deepseek/vision/image.hpp>
#include <deepseek/vision/preprocess.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <ctime>
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

struct Sizes {
  int decoder_layers = 12, sam_layers = 12, clip_layers = 24;
  std::vector<int> sam_globals{2, 5, 8, 11};
};

Sizes sizes() {
  const std::string s = env_or("DEEPSEEK_BENCH_OCR_SIZE", "full");
  if (s == "full") return {};
  if (s == "reduced") return {2, 3, 2, {2}};
  throw Error("DEEPSEEK_BENCH_OCR_SIZE must be full or reduced, not '" + s + "'");
}

// The released config.json (spec 7.1): decoder fields top-level and in language_config.
nlohmann::ordered_json ocr_config(const Sizes& z) {
  nlohmann::ordered_json dec = {
      {"vocab_size", 129280}, {"hidden_size", 1280}, {"intermediate_size", 6848}, {"moe_intermediate_size", 896},
      {"num_hidden_layers", z.decoder_layers}, {"num_attention_heads", 10}, {"num_key_value_heads", 10},
      {"n_shared_experts", 2}, {"n_routed_experts", 64}, {"num_experts_per_tok", 6}, {"ep_size", 1},
      {"routed_scaling_factor", 1.0}, {"kv_lora_rank", nullptr}, {"q_lora_rank", nullptr}, {"qk_rope_head_dim", 0},
      {"v_head_dim", 0}, {"qk_nope_head_dim", 0}, {"topk_method", "greedy"}, {"n_group", 1}, {"topk_group", 1},
      {"moe_layer_freq", 1}, {"first_k_dense_replace", 1}, {"norm_topk_prob", false}, {"scoring_func", "softmax"},
      {"hidden_act", "silu"}, {"max_position_embeddings", 8192}, {"rms_norm_eps", 1e-6}, {"bos_token_id", 0},
      {"eos_token_id", 1}, {"tie_word_embeddings", false}, {"rope_theta", 10000.0}, {"rope_scaling", nullptr},
      {"attention_bias", false}, {"attention_dropout", 0.0}, {"use_mla", false}};
  nlohmann::ordered_json lang = dec;
  lang["architectures"] = {"DeepseekV2ForCausalLM"};
  lang["lm_head"] = true;
  lang["rm_head"] = false;
  lang["model_type"] = "deepseek_v2";
  lang["torch_dtype"] = "bfloat16";
  nlohmann::ordered_json c = dec;
  c["architectures"] = {"DeepseekOCRForCausalLM"};
  c["model_type"] = "deepseek_vl_v2";
  c["tile_tag"] = "2D";
  c["global_view_pos"] = "head";
  c["candidate_resolutions"] = {{1024, 1024}};
  c["language_config"] = lang;
  c["projector_config"] = {{"input_dim", 2048}, {"model_type", "mlp_projector"}, {"n_embed", 1280}, {"projector_type", "linear"}};
  c["vision_config"] = {
      {"image_size", 1024},
      {"mlp_ratio", 3.7362},
      {"model_name", "deeplip_b_l"},
      {"model_type", "vision"},
      {"width",
       {{"clip-l-14-224", {{"heads", 16}, {"image_size", 224}, {"layers", z.clip_layers}, {"patch_size", 14}, {"width", 1024}}},
        {"sam_vit_b",
         {{"downsample_channels", {512, 1024}}, {"global_attn_indexes", z.sam_globals}, {"heads", 12}, {"layers", z.sam_layers}, {"width", 768}}}}}};
  c["torch_dtype"] = "bfloat16";
  return c;
}

// The DeepSeek-V3 tokenizer (ids 0..128814, identical to the OCR one, spec 6.3) plus the 12 OCR tokens.
void write_tokenizer(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string src = std::string(DEEPSEEK_ASSETS_DIR) + "/tokenizers/deepseek-v3";
  nlohmann::ordered_json t = nlohmann::ordered_json::parse(io::read_text_file(src + "/tokenizer.json"));
  static const char* kOcr[] = {"<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>", "<td>", "</td>",
                               "<tr>", "</tr>", "<|User|>", "<|Assistant|>"};
  for (const auto& a : t["added_tokens"])
    if (a["id"].get<int64_t>() >= 128815) throw Error("the DeepSeek-V3 tokenizer already has id 128815+", in_file(src + "/tokenizer.json"));
  for (int k = 0; k < 12; ++k)
    t["added_tokens"].push_back({{"id", 128815 + k}, {"content", kOcr[k]}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  std::ofstream(fs::path(dir) / "tokenizer.json") << t.dump();
  const nlohmann::ordered_json cfg = {{"add_bos_token", true}, {"add_eos_token", false}, {"bos_token", "<｜begin▁of▁sentence｜>"},
                                      {"eos_token", "<｜end▁of▁sentence｜>"}, {"pad_token", "<｜▁pad▁｜>"},
                                      {"clean_up_tokenization_spaces", false}, {"legacy", true}, {"model_max_length", 8192},
                                      {"tokenizer_class", "LlamaTokenizerFast"}, {"unk_token", nullptr}};
  std::ofstream(fs::path(dir) / "tokenizer_config.json") << cfg.dump(1);
}

// Released tensor names and shapes (spec 8), bf16, random: linears / convolutions std 1/sqrt(fan_in),
// norms around 1 (the writer adds 1 to names containing "norm"), embeddings std 1, tables 0.5.
void make_ocr_checkpoint(const std::string& dir, const Sizes& z) {
  namespace fs = std::filesystem;
  const auto cfg = ocr_config(z);
  if (fs::exists(fs::path(dir) / "model.safetensors") && fs::exists(fs::path(dir) / "config.json") &&
      fs::exists(fs::path(dir) / "tokenizer.json")) {
    std::ifstream in(fs::path(dir) / "config.json");
    if (nlohmann::json::parse(in) == nlohmann::json::parse(cfg.dump())) return;
  }
  fs::create_directories(dir);
  bench::CheckpointWriter w;
  const DType bf = DType::bf16;
  auto lin = [&](const std::string& n, int64_t out, int64_t in, bool bias) {
    w.add(n + ".weight", bf, {out, in}, 1.0f / std::sqrt(float(in)));
    if (bias) w.add(n + ".bias", bf, {out}, 0.1f);
  };
  bench::add_ocr_encoder(w, z.sam_layers, z.sam_globals, z.clip_layers);
  w.add("model.image_newline", bf, {1280}, 1.0f / std::sqrt(1280.0f));
  w.add("model.view_seperator", bf, {1280}, 1.0f / std::sqrt(1280.0f));
  // Decoder.
  const int64_t H = 1280, V = 129280;
  w.add("model.embed_tokens.weight", bf, {V, H}, 1.0f);
  w.add("lm_head.weight", bf, {V, H}, 1.0f / std::sqrt(float(H)));
  w.add("model.norm.weight", bf, {H}, 0.05f);
  for (int l = 0; l < z.decoder_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.add(p + "input_layernorm.weight", bf, {H}, 0.05f);
    w.add(p + "post_attention_layernorm.weight", bf, {H}, 0.05f);
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) lin(p + "self_attn." + n, H, H, false);
    auto mlp = [&](const std::string& q, int64_t inter) {
      lin(q + "gate_proj", inter, H, false);
      lin(q + "up_proj", inter, H, false);
      lin(q + "down_proj", H, inter, false);
    };
    if (l == 0) {
      mlp(p + "mlp.", 6848);
      continue;
    }
    w.add(p + "mlp.gate.weight", bf, {64, H}, 1.0f / std::sqrt(float(H)));
    for (int e = 0; e < 64; ++e) mlp(p + "mlp.experts." + std::to_string(e) + ".", 896);
    mlp(p + "mlp.shared_experts.", 1792);
  }
  w.write((fs::path(dir) / "model.safetensors").string(), 2026);
  write_tokenizer(dir);
  std::ofstream(fs::path(dir) / "config.json") << cfg.dump(2);  // last: a folder with it is complete
}

std::string checkpoint_dir() {
  const Sizes z = sizes();
  const std::string dir = env_or("DEEPSEEK_BENCH_DIR", "/tmp/deepseek-bench") + "/ocr-page-" + env_or("DEEPSEEK_BENCH_OCR_SIZE", "full");
  make_ocr_checkpoint(dir, z);
  return dir;
}

std::shared_ptr<models::DeepSeekOcr<cpu>> model(bool bf16_activations) {
  static std::map<bool, std::shared_ptr<models::DeepSeekOcr<cpu>>> cache;
  auto& m = cache[bf16_activations];
  if (m) return m;
  cache.clear();  // one model at a time: the machine may not hold two
  models::LoadOptions o;
  o.activations = bf16_activations ? ActivationDType::bf16 : ActivationDType::f32;
  auto ck = io::Checkpoint::open(checkpoint_dir());
  ck->populate();  // page the weights in before timing
  return cache[bf16_activations] = std::make_shared<models::DeepSeekOcr<cpu>>(ck, o);
}

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }
// Process CPU time (all threads), s: the steadier basis on a machine shared with other jobs.
double cpu_now() { return double(std::clock()) / CLOCKS_PER_SEC; }

constexpr vision::OcrMode kModes[] = {vision::OcrMode::tiny, vision::OcrMode::small, vision::OcrMode::base, vision::OcrMode::gundam};

void BM_Page(benchmark::State& state) {
  const vision::OcrMode mode = kModes[state.range(0)];
  const bool bf16 = state.range(1) != 0;
  const int64_t new_tokens = std::atoll(env_or("DEEPSEEK_BENCH_NEW_TOKENS", "500").c_str());
  if (new_tokens < 1) throw Error("DEEPSEEK_BENCH_NEW_TOKENS must be >= 1");
  const std::string page = env_or("DEEPSEEK_BENCH_PAGE", std::string(DEEPSEEK_FIXTURES_DIR) + "/models/ocr_tiny/page.png");
  const vision::Image img = vision::load_image(page);
  auto m = model(bf16);
  const std::string prompt = "<image>\n<|grounding|>Convert the document to markdown.";
  const int64_t V = m->config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(V));
  double pre = 0, enc = 0, fill = 0, dec = 0, total = 0, enc_cpu = 0, dec_cpu = 0, total_cpu = 0;
  int64_t prompt_tokens = 0, vision_tokens = 0, eos_hits = 0, tiles = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    const double c0 = cpu_now();
    const vision::PreparedImage prep = vision::preprocess(img, mode);
    pre += since(t0);
    const auto t1 = clock_type::now();
    const double c1 = cpu_now();
    const models::OcrPrompt p = m->make_prompt(prompt, std::vector<vision::PreparedImage>{prep});
    enc += since(t1);
    enc_cpu += cpu_now() - c1;
    auto cache = m->make_cache({int64_t(p.ids.size()) + new_tokens});
    const auto t2 = clock_type::now();
    m->prefill(p, cache, logits.data());
    int32_t next = generate::argmax(logits.data(), V);
    fill += since(t2);
    const auto t3 = clock_type::now();
    const double c3 = cpu_now();
    for (int64_t i = 1; i < new_tokens; ++i) {
      for (int64_t e : m->config().eos_token_ids) eos_hits += next == e;  // counted, not obeyed
      m->decoder().forward(&next, 1, cache, logits.data());
      next = generate::argmax(logits.data(), V);
    }
    benchmark::DoNotOptimize(next);
    dec += since(t3);
    dec_cpu += cpu_now() - c3;
    total += since(t0);
    total_cpu += cpu_now() - c0;
    prompt_tokens = int64_t(p.ids.size());
    vision_tokens = p.vision_rows();
    tiles = prep.tiles.size();
  }
  const double n = double(state.iterations());
  state.counters["preprocess_ms"] = pre / n * 1e3;
  state.counters["encoder_ms"] = enc / n * 1e3;
  state.counters["prefill_ms"] = fill / n * 1e3;
  state.counters["prefill_tok/s"] = double(prompt_tokens) * n / fill;
  state.counters["decode_tok/s"] = new_tokens > 1 ? double(new_tokens - 1) * n / dec : 0.0;
  state.counters["decode_ms"] = dec / n * 1e3;
  state.counters["page_s"] = total / n;
  state.counters["encoder_cpu_ms"] = enc_cpu / n * 1e3;
  state.counters["decode_cpu_ms_per_tok"] = new_tokens > 1 ? dec_cpu / n / double(new_tokens - 1) * 1e3 : 0.0;
  state.counters["page_cpu_s"] = total_cpu / n;
  state.counters["pages/s"] = n / total;
  state.counters["prompt_tokens"] = double(prompt_tokens);
  state.counters["vision_tokens"] = double(vision_tokens);
  state.counters["tiles"] = double(tiles);
  state.counters["new_tokens"] = double(new_tokens);
  state.counters["eos_argmax"] = double(eos_hits);
  state.counters["threads"] = num_threads();
  state.counters["decoder_layers"] = m->config().num_hidden_layers;
  state.SetLabel(std::string(vision::mode_name(mode)) + (bf16 ? ", bf16 activations" : ", f32 activations"));
}

}  // namespace

// Mode (0 tiny, 1 small, 2 base, 3 gundam), activations (0 = f32, 1 = bf16). The bf16 runs come
// first, then f32, so the model loads twice at most.
BENCHMARK(BM_Page)
    ->ArgsProduct({{0, 1, 2, 3}, {1}})
    ->ArgsProduct({{0, 1, 2, 3}, {0}})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK_MAIN();
