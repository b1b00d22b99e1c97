// deepseek-cli logits | generate: run a V2/V3-family checkpoint on the CPU or (--backend cuda, in a
// build with the CUDA backend) on the current GPU.
//   logits   --model DIR --ids 1,2,3|@FILE --out FILE.npy [--backend cpu|cuda] [--threads N] [--activations f32|bf16] [--cache-dtype bf16|f32|fp8]
//            [--prefill-chunk N]
//            float32 [T, vocab], C order
//   generate --model DIR (--ids 1,2,3|@FILE | --prompt TEXT) [--max-new N] [--greedy | --temperature T
//            --top-p P --top-k K --seed S] [--no-repeat-ngram N] [--mtp] [--print-ids] [--stats] [--backend cpu|cuda]
//            [--threads N] [--max-context N]
//            [--activations f32|bf16] [--cache-dtype bf16|f32|fp8] [--prefill-chunk N]
//   --cache-dtype: bf16 (the default) stores each cached value rounded once, half the bytes of f32
//   (nn/kv_cache.hpp); f32 is exact (what the tests compare with transformers); fp8 is FlashMLA's
//   656-byte row (MLA models only). --prefill-chunk N runs the prompt through the layers N tokens at a time
//   (default: automatic, 512-token chunks for longer prompts), bounding activation memory.
//   --activations bf16 rounds the input of every linear layer to bf16 (as transformers in bf16 and
//   llama.cpp do; bf16 weights then multiply natively on AVX512-BF16 CPUs); f32 (the default) is exact.
//   --mtp decodes speculatively with the checkpoint's MTP module as the draft (spec §6.2): same output
//   as without it under --greedy, same distribution when sampling.
//   --stats prints one JSON line on stderr: prompt/generated tokens, prefill and decode tokens/s; with
//   --mtp also drafted/accepted tokens, acceptance_rate and tokens_per_forward (main decode forwards).
#include "command.hpp"
#include "model_loading.hpp"

#include <deepseek/deepseek.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/models/mtp_head.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

using namespace deepseek;
using cli::check_context;

// --ids 1,2,3, or --ids @FILE: the ids in FILE separated by commas and/or whitespace (a long
// prompt's ids do not fit in one command-line argument, at most 128 KiB on Linux).
std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::string text = s;
  if (!s.empty() && s[0] == '@') {
    text = read_regular_file(s.substr(1), uint64_t(12) * uint64_t(kMaxPositions), "12 bytes per id of kMaxPositions");
    for (char& c : text)
      if (c == ' ' || c == '\n' || c == '\r' || c == '\t') c = ',';
  }
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    if (int64_t(ids.size()) >= kMaxPositions)
      throw Error("--ids lists more than " + std::to_string(kMaxPositions) + " ids (kMaxPositions)");
    ids.push_back(int32_t(parse_integer(item, INT32_MIN, INT32_MAX, "--ids item")));
  }
  if (ids.empty()) throw Error("--ids is empty");
  return ids;
}

int run_logits(int argc, char** argv) {
  cli::Args args(argc, argv, {}, {"model", "ids", "out", "threads", "backend", "activations", "cache-dtype", "prefill-chunk"});
  if (args.help()) {
    std::printf("usage: deepseek-cli logits --model DIR --ids 1,2,3|@FILE --out FILE.npy [--backend cpu|cuda] [--threads N]\n"
                "         [--activations f32|bf16] [--cache-dtype bf16|f32|fp8] [--prefill-chunk N]\n");
    return 0;
  }
  args.reject_positional();
  cli::apply_threads(args);
  const ActivationDType activations = cli::parse_activations(args);
  const auto ids = parse_ids(args.required("ids"));
  const std::string out = args.required("out");
  auto ckpt = io::Checkpoint::open(args.required("model"));
  const int64_t T = int64_t(ids.size()), V = ckpt->config().vocab_size;
  // Sizes are checked against the model before the T x vocab logits and the cache are allocated.
  check_context(ckpt->config(), T, "--ids");
  check_fits_in_memory(double(T) * double(V) * sizeof(float), "logits of " + std::to_string(T) + " x " + std::to_string(V));
  const models::CacheOptions co{T, nn::CacheLayout::contiguous, 16, cli::parse_cache_dtype(args)};
  auto model = cli::load_runner(args.get("backend", "cpu"), ckpt, activations, args.get_int("prefill-chunk", 0, 0, kMaxPositions));
  const std::vector<float> logits = model->logits(ids, co);
  cli::write_npy(out, logits.data(), T, V);
  return 0;
}

int run_generate(int argc, char** argv) {
  cli::Args args(argc, argv, {"greedy", "print-ids", "stats", "mtp"},
                 {"model", "ids", "prompt", "max-new", "temperature", "top-p", "top-k", "seed", "threads", "max-context", "backend", "no-repeat-ngram",
                  "activations", "cache-dtype", "prefill-chunk"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli generate --model DIR (--ids 1,2,3|@FILE | --prompt TEXT) [--max-new N]\n"
        "         [--greedy | --temperature T --top-p P --top-k K --seed S] [--no-repeat-ngram N] [--mtp] [--print-ids] [--stats]\n"
        "         [--backend cpu|cuda] [--threads N] [--max-context N] [--activations f32|bf16] [--cache-dtype bf16|f32|fp8]\n"
        "         [--prefill-chunk N]\n");
    return 0;
  }
  args.reject_positional();
  cli::apply_threads(args);
  if (args.has("ids") == args.has("prompt")) throw Error("give exactly one of --ids and --prompt");
  const std::string dir = args.required("model");
  const ActivationDType activations = cli::parse_activations(args);

  generate::GenerateOptions go;
  go.max_new_tokens = args.get_int("max-new", 64, 1, kMaxPositions);
  cli::parse_sampling(args, go.sampling);
  // transformers' no_repeat_ngram_size over prompt + output (generate/no_repeat_ngram.hpp); 0: off.
  go.no_repeat_ngram_size = int(args.get_int("no-repeat-ngram", 0, 0, kMaxPositions));
  if (go.no_repeat_ngram_size > 0 && args.flag("mtp")) throw Error("--no-repeat-ngram is not supported with --mtp");

  std::optional<tokenizer::Tokenizer> tok;
  std::vector<int32_t> prompt;
  if (args.has("prompt")) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
      throw Error("--prompt needs a tokenizer.json in the model directory (or use --ids)", in_file(dir));
    tok = tokenizer::Tokenizer::from_file(dir);
    for (auto id : tok->encode(args.get("prompt"), tok->add_bos_token())) prompt.push_back(int32_t(id));
  } else {
    prompt = parse_ids(args.get("ids"));
  }

  auto ckpt = io::Checkpoint::open(dir);
  const bool mtp = args.flag("mtp");
  if (mtp && ckpt->config().num_nextn_predict_layers < 1)
    throw Error("--mtp needs a checkpoint with an MTP module, but num_nextn_predict_layers is 0",
                at_field("num_nextn_predict_layers", dir + "/config.json"));
  // Every size is checked against the model before the cache is allocated.
  const io::ModelConfig& cfg = ckpt->config();
  const int64_t need = int64_t(prompt.size()) + go.max_new_tokens;
  check_context(cfg, need, "the prompt (" + std::to_string(prompt.size()) + " tokens) + --max-new");
  const int64_t max_ctx = args.get_int("max-context", need, 1, cfg.max_position_embeddings);
  if (max_ctx < need)
    throw Error("--max-context " + std::to_string(max_ctx) + " is smaller than the prompt (" + std::to_string(prompt.size()) +
                " tokens) + --max-new (" + std::to_string(go.max_new_tokens) + ")");
  const nn::CacheDType cache_dtype = cli::parse_cache_dtype(args);
  const std::string backend = args.get("backend", "cpu");
  auto model = cli::load_runner(backend, ckpt, activations, args.get_int("prefill-chunk", 0, 0, kMaxPositions));
  const models::CacheOptions co{max_ctx, nn::CacheLayout::contiguous, 16, cache_dtype};
  std::optional<tokenizer::Tokenizer::StreamDecoder> stream;
  if (tok && !args.flag("print-ids")) {
    stream.emplace(*tok);
    std::fputs(args.get("prompt").c_str(), stdout);
    std::fflush(stdout);
  }
  auto on_token = [&](int32_t id) {
    if (stream) {
      std::fputs(stream->push(tokenizer::TokenId(id)).c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  generate::SpeculativeStats s;
  const std::vector<int32_t> out = model->generate(prompt, go, mtp, co, on_token, s);
  if (stream) std::printf("%s\n", stream->finish().c_str());
  if (args.flag("print-ids")) {
    for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
    std::printf("\n");
  }
  std::fflush(stdout);  // the text first, then the stats line on stderr
  if (args.flag("stats")) {
    nlohmann::ordered_json j = {{"prompt_tokens", s.prompt_tokens},
                                {"generated_tokens", s.generated_tokens},
                                {"prefill_tokens_per_s", s.prefill_tokens_per_second()},
                                {"decode_tokens_per_s", s.decode_tokens_per_second()},
                                {"backend", backend},
                                {"threads", num_threads()},
                                {"activations", activations == ActivationDType::bf16 ? "bf16" : "f32"},
                                {"cache_dtype", nn::cache_dtype_name(cache_dtype)}};
    if (mtp) {
      j["mtp"] = true;
      j["drafted"] = s.drafted;
      j["accepted"] = s.accepted;
      j["acceptance_rate"] = s.acceptance_rate();
      j["tokens_per_forward"] = s.tokens_per_forward();
    }
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("logits", "float32 logits [T, vocab] of a token sequence as .npy", run_logits);
DEEPSEEK_CLI_COMMAND("generate", "generate tokens (greedy or sampled) from ids or a text prompt", run_generate);
