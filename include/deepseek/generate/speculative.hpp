// Speculative decoding with a draft that reads the main model's hidden states (the MTP module,
// spec §6.2). Prompt x_0..x_{n-1}; after the prefill the main cache holds positions 0..n-1 and
// x_n is sampled from the last row. Invariant at the top of each step: the main cache and the
// draft cache both hold positions 0..n-1 (all verified), x_n is the last emitted token, and the
// draft has proposed d for x_{n+1} from the pair (h_{n-1}, x_n).
//   verify   main forward of [x_n, d] at positions n, n+1 (one batched call, logits of both rows)
//            -> p_n, p_{n+1}, h_n, h_{n+1}
//   accept   greedy: argmax p_n == d; sampling: with probability min(1, p_n(d) / q(d))
//            -> x_{n+1} = d, bonus x_{n+2} ~ p_{n+1}; draft runs (h_n, x_{n+1}), (h_{n+1}, x_{n+2})
//               at positions n, n+1; n += 2
//   reject   x_{n+1} = argmax p_n, or ~ norm(max(0, p_n - q)) when sampling; the main cache drops
//            position n+1 (KvCache::resize); draft runs (h_n, x_{n+1}) at position n; n += 1
// The draft only ever sees verified pairs, so its cache never holds a rejected token and needs no
// rollback of its own. When one token is left to generate, a plain one-token forward replaces the step. Greedy output
// equals plain greedy decoding; sampled output has the main model's distribution (Leviathan et al. 2023), with p and q
// from the same Sampler::distribution().
//
// Duck-typed so tests can plug in toy models:
//   Model: config() (.vocab_size, .hidden_size, .max_position_embeddings, .eos_token_ids) and
//          forward(ids, n, nn::KvCache&, logits, all_logits, hidden)  (models::DeepSeekV3)
//   Draft: make_cache(max_tokens) -> nn::KvCache and
//          forward(hidden, next_ids, n, nn::KvCache&, logits_last_row)   (models::MtpHead)
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/generate/generator.hpp"
#include "deepseek/generate/sampler.hpp"
#include "deepseek/nn/kv_cache.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace deepseek::generate {

struct SpeculativeStats : GenerateStats {
  int64_t drafted = 0;        // draft tokens proposed to the main model
  int64_t accepted = 0;       // of those, accepted
  int64_t main_forwards = 0;  // verify forwards of the main model (after the prefill)
  double acceptance_rate() const { return drafted > 0 ? double(accepted) / double(drafted) : 0; }
  // Tokens produced per main-model decode forward (plain decoding: 1). The first new token comes
  // from the prefill and is not counted.
  double tokens_per_forward() const {
    return main_forwards > 0 ? double(std::max<int64_t>(generated_tokens - 1, 0)) / double(main_forwards) : 0;
  }
};

template <class Model, class Draft>
class SpeculativeGenerator {
 public:
  // The draft's cache is made here with the main cache's capacity.
  SpeculativeGenerator(const Model& model, const Draft& draft, nn::KvCache& cache, GenerateOptions o = {})
      : model_(model),
        draft_(draft),
        cache_(cache),
        draft_cache_(draft.make_cache(cache.capacity())),
        o_(o),
        sampler_(o.sampling) {}

  // Generates after `prompt`, starting a new sequence (the main cache must be empty).
  // on_token(id) is called for each new token; return false to stop early.
  std::vector<int32_t> run(const std::vector<int32_t>& prompt, const std::function<bool(int32_t)>& on_token = {}) {
    using clock = std::chrono::steady_clock;
    const auto& c = model_.config();
    const int64_t V = c.vocab_size, d = c.hidden_size, n = int64_t(prompt.size());
    if (prompt.empty()) throw Error("the prompt is empty");
    if (cache_.size() != 0) throw Error("speculative generation starts a new sequence: the KV cache must be empty");
    if (o_.no_repeat_ngram_size != 0) throw Error("no_repeat_ngram_size is not supported with speculative decoding");
    // Bounded first, so the sum below cannot overflow (max_new_tokens may come from a user).
    if (o_.max_new_tokens < 0 || o_.max_new_tokens > c.max_position_embeddings)
      throw Error("max_new_tokens " + std::to_string(o_.max_new_tokens) + " is out of range [0, " +
                  std::to_string(c.max_position_embeddings) + "] (max_position_embeddings)");
    const int64_t need = n + o_.max_new_tokens;
    if (need > cache_.capacity())
      throw Error("prompt (" + std::to_string(n) + " tokens) + max_new_tokens (" + std::to_string(o_.max_new_tokens) +
                  ") exceeds the KV cache capacity of " + std::to_string(cache_.capacity()) + " tokens");
    if (need > c.max_position_embeddings)
      throw Error("prompt + max_new_tokens = " + std::to_string(need) + " exceeds max_position_embeddings " +
                  std::to_string(c.max_position_embeddings));
    draft_cache_.clear();
    std::vector<int32_t> out;
    auto emit = [&](int32_t id) {  // false: stop
      out.push_back(id);
      ++stats_.generated_tokens;
      if (on_token && !on_token(id)) return false;
      if (o_.stop_at_eos && is_eos(id)) return false;
      return int64_t(out.size()) < o_.max_new_tokens;
    };

    // Prefill: main over the prompt (hidden of every row), x_n from the last row, then the draft over
    // the pairs (h_i, x_{i+1}), i < n.
    // Logits on the model's device, read on the host; the hidden states stay on the device.
    using B = backend_of_t<Model>;
    HostRows<B> logits_rows(size_t(2 * V)), q_rows(static_cast<size_t>(V));
    backend::Buffer<B> hidden(size_t(std::max<int64_t>(n, 2) * d));
    const float* logits = nullptr;
    const float* q_logits = nullptr;
    std::vector<float> p, q;
    auto t0 = clock::now();
    model_.forward(prompt.data(), n, cache_, logits_rows.device(), false, hidden.data());
    logits = logits_rows.host();
    int32_t x = sampler_.sample(logits, V);
    bool go = emit(x);
    if (go) {
      std::vector<int32_t> next(prompt.begin() + 1, prompt.end());
      next.push_back(x);
      draft_.forward(hidden.data(), next.data(), n, draft_cache_, q_rows.device());
      q_logits = q_rows.host();
    }
    stats_.prompt_tokens += n;
    stats_.prefill_seconds += std::chrono::duration<double>(clock::now() - t0).count();

    while (go) {
      auto a = clock::now();
      if (int64_t(out.size()) + 1 == o_.max_new_tokens) {  // one token left: a plain decode step
        model_.forward(&x, 1, cache_, logits_rows.device(), false, nullptr);
        ++stats_.main_forwards;
        emit(sampler_.sample(logits_rows.host(), V));
        stats_.decode_seconds += std::chrono::duration<double>(clock::now() - a).count();
        break;
      }
      // Draft d for x_{n+1}.
      int32_t dft;
      if (o_.sampling.greedy) {
        dft = argmax(q_logits, V);
      } else {
        sampler_.distribution(q_logits, V, q);
        dft = sampler_.draw(q);
      }
      // Verify [x_n, d] at positions n, n+1.
      const int32_t pair[2] = {x, dft};
      model_.forward(pair, 2, cache_, logits_rows.device(), true, hidden.data());
      logits = logits_rows.host();
      ++stats_.main_forwards;
      ++stats_.drafted;
      bool accept;
      if (o_.sampling.greedy) {
        accept = argmax(logits, V) == dft;
      } else {
        sampler_.distribution(logits, V, p);
        accept = sampler_.uniform() * double(q[size_t(dft)]) < double(p[size_t(dft)]);  // u < p(d)/q(d), q(d) > 0
      }
      int32_t verified[2];
      int64_t m;
      if (accept) {
        ++stats_.accepted;
        verified[0] = dft;
        verified[1] = sampler_.sample(logits + V, V);  // bonus token from p_{n+1}
        m = 2;
      } else {
        verified[0] = o_.sampling.greedy ? argmax(logits, V) : residual_draw(p, q);
        cache_.resize(cache_.size() - 1);  // drop d at position n+1
        m = 1;
      }
      for (int64_t i = 0; i < m && go; ++i) go = emit(verified[i]);
      if (go) {
        draft_.forward(hidden.data(), verified, m, draft_cache_, q_rows.device());
        q_logits = q_rows.host();
        x = verified[m - 1];
      }
      stats_.decode_seconds += std::chrono::duration<double>(clock::now() - a).count();
    }
    return out;
  }

  const SpeculativeStats& stats() const { return stats_; }

 private:
  // One draw from norm(max(0, p - q)); p itself if that is empty (p == q up to rounding).
  int32_t residual_draw(const std::vector<float>& p, const std::vector<float>& q) {
    residual_.assign(p.size(), 0.0f);
    double sum = 0;
    for (size_t i = 0; i < p.size(); ++i) sum += (residual_[i] = std::max(0.0f, p[i] - q[i]));
    if (!(sum > 0)) return sampler_.draw(p);
    for (auto& r : residual_) r = float(r / sum);
    return sampler_.draw(residual_);
  }

  bool is_eos(int32_t id) const { return model_.config().is_eos(id); }

  const Model& model_;
  const Draft& draft_;
  nn::KvCache& cache_;
  nn::KvCache draft_cache_;
  GenerateOptions o_;
  Sampler sampler_;
  SpeculativeStats stats_;
  std::vector<float> residual_;
};

}  // namespace deepseek::generate
