// The generation loop: prefill the prompt once, then decode one token per forward with the KV
// cache, sampling each next token, until max_new tokens or an end-of-sequence id. With
// no_repeat_ngram_size > 0 the logits pass through NoRepeatNGram (over prompt + generated ids)
// before each sample.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/generate/host_rows.hpp"
#include "deepseek/generate/no_repeat_ngram.hpp"
#include "deepseek/generate/sampler.hpp"
#include "deepseek/nn/kv_cache.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace deepseek::generate {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  int no_repeat_ngram_size = 0;  // 0: off; else transformers' no_repeat_ngram_size (no_repeat_ngram.hpp)
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0; }
  // Tokens produced by decode forwards (the first new token comes from the prefill's logits).
  double decode_tokens_per_second() const {
    return decode_seconds > 0 ? double(std::max<int64_t>(generated_tokens - 1, 0)) / decode_seconds : 0;
  }
};

// Model: anything with config() and forward(ids, n, cache, logits_last_row) (models::DeepSeekV3).
template <class Model>
class Generator {
 public:
  Generator(const Model& model, nn::KvCache& cache, GenerateOptions o = {})
      : model_(model), cache_(cache), o_(o), sampler_(o.sampling) {}

  // Generates after `prompt`, continuing the cache's sequence (pass an empty cache for a new one).
  // on_token(id) is called for each new token; return false to stop early.
  std::vector<int32_t> run(const std::vector<int32_t>& prompt, const std::function<bool(int32_t)>& on_token = {}) {
    return run(prompt, [&](float* logits) { model_.forward(prompt.data(), int64_t(prompt.size()), cache_, logits); }, on_token);
  }

  // Same, with the prompt's forward run by the caller: prefill(logits) appends the prompt to the
  // cache and writes its last row's logits [vocab] on the model's device (e.g. models::DeepSeekOcr, whose prompt is input
  // embeddings with image rows). `prompt` holds its ids (for the n-gram history and the stats).
  std::vector<int32_t> run(const std::vector<int32_t>& prompt, const std::function<void(float*)>& prefill,
                           const std::function<bool(int32_t)>& on_token) {
    using clock = std::chrono::steady_clock;
    const auto& c = model_.config();
    if (prompt.empty()) throw Error("the prompt is empty");
    // Bounded first, so the sum below cannot overflow (max_new_tokens may come from a user).
    if (o_.max_new_tokens < 0 || o_.max_new_tokens > c.max_position_embeddings)
      throw Error("max_new_tokens " + std::to_string(o_.max_new_tokens) + " is out of range [0, " +
                  std::to_string(c.max_position_embeddings) + "] (max_position_embeddings)");
    const int64_t need = cache_.size() + int64_t(prompt.size()) + o_.max_new_tokens;
    if (need > cache_.capacity())
      throw Error("prompt (" + std::to_string(prompt.size()) + " tokens) + max_new_tokens (" + std::to_string(o_.max_new_tokens) +
                  ") exceeds the KV cache capacity of " + std::to_string(cache_.capacity()) + " tokens");
    if (need > c.max_position_embeddings)
      throw Error("prompt + max_new_tokens = " + std::to_string(need) + " exceeds max_position_embeddings " +
                  std::to_string(c.max_position_embeddings));
    HostRows<backend_of_t<Model>> rows(size_t(c.vocab_size));  // logits [vocab], on the model's device
    std::vector<int32_t> out;
    std::optional<NoRepeatNGram> ngram;
    if (o_.no_repeat_ngram_size != 0) {
      ngram.emplace(o_.no_repeat_ngram_size);
      ngram->extend(prompt);
    }
    auto t0 = clock::now();
    prefill(rows.device());
    auto t1 = clock::now();
    stats_.prompt_tokens += int64_t(prompt.size());
    stats_.prefill_seconds += std::chrono::duration<double>(t1 - t0).count();
    // Decode time runs from the end of the prefill to the last token, sampling included (so it
    // compares with the speculative generator's wall time).
    for (int64_t i = 0; i < o_.max_new_tokens; ++i) {
      int32_t next;
      if (!ngram) {  // the id, or the sampler's candidates, leave the device; not the row
        next = sampler_.sample_on<backend_of_t<Model>>(rows.device(), c.vocab_size);
      } else {
        float* logits = rows.host();
        if (ngram) ngram->apply(logits, c.vocab_size);
        next = sampler_.sample(logits, c.vocab_size);
      }
      if (ngram) ngram->push(next);
      out.push_back(next);
      ++stats_.generated_tokens;
      if (on_token && !on_token(next)) break;
      if (o_.stop_at_eos && is_eos(next)) break;
      if (i + 1 == o_.max_new_tokens) break;
      model_.forward(&next, 1, cache_, rows.device());
    }
    stats_.decode_seconds += std::chrono::duration<double>(clock::now() - t1).count();
    return out;
  }

  const GenerateStats& stats() const { return stats_; }

 private:
  bool is_eos(int32_t id) const { return model_.config().is_eos(id); }

  const Model& model_;
  nn::KvCache& cache_;
  GenerateOptions o_;
  Sampler sampler_;
  GenerateStats stats_;
};

}  // namespace deepseek::generate
