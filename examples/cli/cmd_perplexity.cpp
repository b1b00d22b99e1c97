// deepseek-cli perplexity --model DIR --text FILE [--window 128] [--max-tokens N] [--tokenizer PATH] [--threads N]
//
// Perplexity of a text file under a checkpoint, defined exactly as tests/reference/make_demo_fixtures.py does:
//   ids = encode(FILE) without BOS (added-token text is matched as usual), truncated to the first N ids
//   (--max-tokens, 0 = all); consecutive non-overlapping windows of `window` ids (the last may be shorter);
//   each window runs from an empty KV cache as [BOS] + window and every window id is predicted (the first
//   from BOS alone). Without a BOS token a window runs as is and its first id is not predicted.
//   nll = mean over predicted ids of -log softmax(logits)[id] (natural log, double accumulation);
//   perplexity = exp(nll).
// Prints one JSON line: {"tokens": <predicted ids>, "windows": W, "nll": ..., "perplexity": ...}.
// The tokenizer is DIR/tokenizer.json (+ tokenizer_config.json) unless --tokenizer says otherwise.
#include "command.hpp"

#include <deepseek/deepseek.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace {

using namespace deepseek;

int run_perplexity(int argc, char** argv) {
  cli::Args args(argc, argv, {}, {"model", "text", "window", "max-tokens", "tokenizer", "threads", "activations", "cache-dtype"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli perplexity --model DIR --text FILE [--window 128] [--max-tokens N] [--tokenizer PATH] [--threads N]\n"
        "         [--activations f32|bf16] [--cache-dtype bf16|f32]\n"
        "  non-overlapping windows of `window` tokens, each evaluated as [BOS] + window from an empty cache;\n"
        "  prints {\"tokens\":..., \"windows\":..., \"nll\":..., \"perplexity\":...} (nll = mean nats/token)\n");
    return 0;
  }
  args.reject_positional();
  cli::apply_threads(args);
  const std::string dir = args.required("model");
  const std::string text_path = args.required("text");
  const int64_t window = args.get_int("window", 128, 1, kMaxPositions);
  const int64_t max_tokens = args.get_int("max-tokens", 0, 0, std::numeric_limits<int64_t>::max());
  const ActivationDType activations = cli::parse_activations(args);
  const nn::CacheDType cache_dtype = cli::parse_cache_dtype(args);

  // The window is checked against the model before any text is read or buffer sized from it.
  auto ckpt = io::Checkpoint::open(dir);
  const auto tok = tokenizer::Tokenizer::from_file(args.get("tokenizer", dir));
  const auto bos = tok.bos_id();
  const int64_t seq_max = window + (bos ? 1 : 0);
  if (seq_max > ckpt->config().max_position_embeddings)
    throw Error("--window " + std::to_string(window) + (bos ? " + BOS" : "") + " exceeds the model's max_position_embeddings " +
                std::to_string(ckpt->config().max_position_embeddings));
  const int64_t V = ckpt->config().vocab_size;
  check_fits_in_memory(double(seq_max) * double(V) * sizeof(float), "logits of a --window of " + std::to_string(window) + " tokens");
  const std::string text = read_regular_file(text_path, kMaxTextInputBytes, "kMaxTextInputBytes");
  std::vector<tokenizer::TokenId> ids = tok.encode(text);
  if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));

  models::LoadOptions opts;
  opts.activations = activations;
  models::DeepSeekV3<cpu> model(ckpt, opts);

  double nll = 0;
  int64_t predicted = 0, windows = 0;
  std::vector<int32_t> seq;
  std::vector<float> logits;
  for (size_t s = 0; s < ids.size(); s += size_t(window)) {
    const size_t e = std::min(ids.size(), s + size_t(window));
    seq.clear();
    if (bos) seq.push_back(int32_t(*bos));
    for (size_t i = s; i < e; ++i) seq.push_back(int32_t(ids[i]));
    const int64_t T = int64_t(seq.size());
    ++windows;
    if (T < 2) continue;
    auto cache = model.make_cache({T, nn::CacheLayout::contiguous, 16, cache_dtype});
    logits.resize(size_t(T * V));
    model.forward(seq.data(), T, cache, logits.data(), true);
    for (int64_t t = 0; t + 1 < T; ++t) {
      const float* row = logits.data() + t * V;
      const double mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
      nll += (mx + std::log(sum)) - double(row[seq[size_t(t + 1)]]);
      ++predicted;
    }
  }
  if (predicted == 0) throw Error("the text has too few tokens to predict any", in_file(text_path));
  const double mean = nll / double(predicted);
  nlohmann::ordered_json j = {{"tokens", predicted}, {"windows", windows}, {"nll", mean}, {"perplexity", std::exp(mean)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("perplexity", "perplexity of a text file (non-overlapping windows, each starting with BOS)", run_perplexity);
