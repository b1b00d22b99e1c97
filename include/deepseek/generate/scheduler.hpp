// Continuous batching: many requests decoded together, one batched forward per step, over one
// shared pool of paged KV blocks (what an inference server runs; `deepseek-cli serve` is built on it).
//
//   submit(request)   thread-safe; a request that can never run (a prompt + max_new_tokens beyond
//                     the context or the whole pool, bad sampling options) is refused at once with
//                     an Error naming why; QueueFull when max_waiting requests already wait
//   step()            one forward over the running sequences (Model::forward_batch): each running
//                     sequence contributes its pending tokens (a prompt chunk, or the one token
//                     sampled last step) within a budget of max_step_tokens (decode tokens first,
//                     then prompt chunks in admission order); then samples, streams and retires
//
// Admission (FIFO): the oldest waiting request joins while fewer than max_batch run and the pool
// has free blocks for all its pending tokens and the token it will sample. A running sequence
// takes a block whenever its rows cross a block boundary; when the pool is out of blocks the
// newest running sequence is preempted (vLLM's recompute policy): its blocks go back to the pool
// and it waits again at the front of the queue with prompt + generated tokens as its new prompt,
// which it recomputes when readmitted. Its sampler state, text and counts carry over, so its
// output is the same as without preemption (up to the summation order of the recomputed rows:
// tests/generate/test_scheduler.cpp). The oldest sequence always fits the pool alone (checked at
// submit), so every step makes progress.
//
// Per-request stop conditions: EOS (stop_at_eos), max_new_tokens, stop strings (matched on the
// decoded text; text that may be the start of a stop string is held back until it is decided, and
// the stop string itself is not returned, as OpenAI's API), and on_token returning false (a client
// gone, Ctrl-C). Callbacks run on the thread that calls step(); they must be quick and must not call
// step(). A forward that throws (NaN in some layer, ...) finishes every sequence of that step with
// FinishReason::error and the message.
//
// MTP speculative decoding is not used in batched steps (an MTP checkpoint runs its main model here;
// generate/speculative.hpp is the batch-1 path).
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/generate/host_rows.hpp"
#include "deepseek/generate/sampler.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/tokenizer/tokenizer.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace deepseek::generate {

enum class FinishReason { stop, length, cancelled, error };  // stop: EOS or a stop string
inline const char* finish_reason_name(FinishReason r) {
  return r == FinishReason::stop ? "stop" : r == FinishReason::length ? "length" : r == FinishReason::cancelled ? "cancelled" : "error";
}

struct RequestOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  std::vector<std::string> stop;  // stop strings: need the scheduler's tokenizer
};

// One generated token, as streamed to on_token.
struct TokenOutput {
  int32_t id = 0;
  std::string text;  // newly visible text (whole UTF-8 characters, stop-string holdback applied); empty without a tokenizer
};

struct FinishOutput {
  FinishReason reason = FinishReason::stop;
  std::string text;   // visible text held back until now (the rest of a partial stop-string match)
  std::string error;  // FinishReason::error: what failed
  int64_t prompt_tokens = 0, completion_tokens = 0, preemptions = 0;
};

struct Request {
  std::vector<int32_t> prompt;
  RequestOptions options;
  std::function<bool(const TokenOutput&)> on_token;  // false: stop now (FinishReason::cancelled)
  std::function<void(const FinishOutput&)> on_finish;
  // Optional: the logits [vocab] each token is sampled from (logprobs, tests).
  std::function<void(const float*, int64_t)> on_logits;
};

struct SchedulerOptions {
  int64_t pool_tokens = 16384;   // KV rows in the shared pool, all sequences together
  int64_t block_size = 16;       // rows per pool block
  nn::CacheDType cache_dtype = nn::CacheDType::bf16;
  int max_batch = 8;             // running sequences
  int64_t max_step_tokens = 512; // tokens per forward: decode tokens, then prompt chunks
  int64_t max_context = 0;       // prompt + max_new_tokens per request; 0: max_position_embeddings
  int64_t max_waiting = 64;      // requests queued beyond the running ones; more get QueueFull
};

struct SchedulerStats {
  int64_t steps = 0, step_tokens = 0, generated_tokens = 0, preemptions = 0, finished = 0;
  int64_t running = 0, waiting = 0, pool_blocks = 0, free_blocks = 0;
};

// submit() when the queue is full: a server answers 503.
class QueueFull : public Error {
 public:
  using Error::Error;
};

// Model: config(), make_pool(tokens, block_size, dtype) and forward_batch(vector<BatchSequence>)
// (models::DeepSeekV3).
template <class Model>
class Scheduler {
 public:
  Scheduler(const Model& model, SchedulerOptions o, const tokenizer::Tokenizer* tok = nullptr)
      : model_(model), o_(o), tok_(tok) {
    const auto& c = model.config();
    if (o_.max_batch < 1) throw Error("SchedulerOptions::max_batch must be >= 1, got " + std::to_string(o_.max_batch));
    if (o_.max_step_tokens < 1) throw Error("SchedulerOptions::max_step_tokens must be >= 1, got " + std::to_string(o_.max_step_tokens));
    if (o_.max_waiting < 0) throw Error("SchedulerOptions::max_waiting must be >= 0, got " + std::to_string(o_.max_waiting));
    if (o_.max_context == 0) o_.max_context = c.max_position_embeddings;
    if (o_.max_context < 2 || o_.max_context > c.max_position_embeddings)
      throw Error("SchedulerOptions::max_context " + std::to_string(o_.max_context) + " is outside [2, " +
                  std::to_string(c.max_position_embeddings) + "] (max_position_embeddings)");
    pool_ = model.make_pool(o_.pool_tokens, o_.block_size, o_.cache_dtype);
  }
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const SchedulerOptions& options() const { return o_; }
  const std::shared_ptr<nn::KvPool>& pool() const { return pool_; }

  // Queues a request; returns its id (for cancel). Thread-safe.
  uint64_t submit(Request r) {
    validate(r);
    auto seq = std::make_unique<Sequence>(std::move(r), tok_);
    std::lock_guard<std::mutex> lock(mu_);
    if (int64_t(incoming_.size()) + waiting_count_ >= o_.max_waiting + std::max<int64_t>(0, o_.max_batch - running_count_))
      throw QueueFull("the server is busy: " + std::to_string(running_count_) + " sequences running and " +
                      std::to_string(waiting_count_ + int64_t(incoming_.size())) + " waiting (max_batch " + std::to_string(o_.max_batch) +
                      ", max_waiting " + std::to_string(o_.max_waiting) + ")");
    seq->id = next_id_++;
    const uint64_t id = seq->id;
    incoming_.push_back(std::move(seq));
    cv_.notify_all();
    return id;
  }

  // Stops a request; its on_finish (FinishReason::cancelled) comes from the next step. Thread-safe.
  void cancel(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.insert(id);
    cv_.notify_all();
  }

  bool idle() const {
    std::lock_guard<std::mutex> lock(mu_);
    return incoming_.empty() && running_count_ == 0 && waiting_count_ == 0;
  }

  SchedulerStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    SchedulerStats s = stats_;
    s.running = running_count_;
    s.waiting = waiting_count_ + int64_t(incoming_.size());
    s.pool_blocks = pool_->num_blocks();
    s.free_blocks = free_blocks_;
    return s;
  }

  // One batched forward; false when there was nothing to run. Call from one thread only.
  bool step() {
    take_incoming();
    admit();
    if (running_.empty()) {
      publish();
      return false;
    }
    // The step's tokens: every decode token, then prompt chunks within the budget.
    std::vector<Sequence*> batch;
    std::vector<int64_t> take;
    int64_t budget = o_.max_step_tokens;
    for (auto& s : running_)
      if (s->pending() == 1) {
        batch.push_back(s.get());
        take.push_back(1);
        --budget;
      }
    for (auto& s : running_)
      if (s->pending() > 1 && budget > 0) {
        const int64_t n = std::min(s->pending(), budget);
        batch.push_back(s.get());
        take.push_back(n);
        budget -= n;
      }
    // Blocks for the new rows, preempting the newest sequences while the pool is short.
    for (size_t i = 0; i < batch.size();) {
      if (batch[i]->cache.reserve(batch[i]->cache.size() + take[i])) {
        ++i;
        continue;
      }
      // The oldest sequence fits the pool alone (validate), so this ends before the batch is empty.
      const auto at = std::find(batch.begin(), batch.end(), running_.back().get());
      if (at != batch.end()) {
        const size_t j = size_t(at - batch.begin());
        take.erase(take.begin() + std::ptrdiff_t(j));
        batch.erase(at);
        if (j < i) --i;  // j == i: batch[i] is now the next sequence
      }
      preempt_newest();
    }
    if (!batch.empty()) run_batch(batch, take);
    retire();
    publish();
    return true;
  }

  // Steps until every request has finished.
  void run() {
    while (step()) {
    }
  }

  // Steps until `stop` is set, sleeping while there is nothing to run (a server's loop).
  void serve(const std::atomic<bool>& stop) {
    while (!stop.load()) {
      if (step()) continue;
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(50), [&] { return stop.load() || !incoming_.empty() || !cancelled_.empty(); });
    }
  }
  // Wakes serve() (after setting its stop flag).
  void notify() { cv_.notify_all(); }

 private:
  // Stop-string matching over the streamed text: `held` is text not yet returned because it may
  // begin a stop string.
  struct TextState {
    std::optional<tokenizer::Tokenizer::StreamDecoder> decoder;
    std::string held;
  };

  struct Sequence {
    Sequence(Request r, const tokenizer::Tokenizer* tok) : req(std::move(r)), sampler(req.options.sampling), tokens(req.prompt) {
      if (tok) text.decoder.emplace(*tok);
    }
    int64_t pending() const { return int64_t(tokens.size()) - cache.size(); }

    uint64_t id = 0;
    Request req;
    Sampler sampler;
    std::vector<int32_t> tokens;  // prompt + generated so far; rows [0, cache.size()) are cached
    nn::KvCache cache;
    TextState text;
    int64_t generated = 0, preemptions = 0;
    std::optional<FinishOutput> done;
  };

  void validate(const Request& r) const {
    const auto& c = model_.config();
    const int64_t P = int64_t(r.prompt.size()), N = r.options.max_new_tokens;
    if (P < 1) throw Error("the prompt is empty");
    if (N < 1) throw Error("max_new_tokens must be at least 1, got " + std::to_string(N));
    if (P > o_.max_context || N > o_.max_context - P)
      throw Error("the prompt (" + std::to_string(P) + " tokens) + max_new_tokens (" + std::to_string(N) + ") exceeds the context of " +
                  std::to_string(o_.max_context) + " tokens");
    if (pool_->blocks_for(P + N) > pool_->num_blocks())
      throw Error("the prompt (" + std::to_string(P) + " tokens) + max_new_tokens (" + std::to_string(N) + ") needs more than the KV pool's " +
                  std::to_string(pool_->num_blocks() * pool_->block_size()) + " rows");
    for (size_t i = 0; i < r.prompt.size(); ++i)
      if (r.prompt[i] < 0 || r.prompt[i] >= c.vocab_size)
        throw Error("prompt token " + std::to_string(i) + " is " + std::to_string(r.prompt[i]) + ", outside [0, " +
                    std::to_string(c.vocab_size) + ") (vocab_size)");
    if (!r.options.stop.empty() && !tok_) throw Error("stop strings need a tokenizer (the scheduler was made without one)");
    for (const auto& s : r.options.stop)
      if (s.empty()) throw Error("a stop string is empty");
    Sampler check(r.options.sampling);  // throws on bad temperature / top_p / top_k
    (void)check;
  }

  void take_incoming() {
    std::set<uint64_t> cancel;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& s : incoming_) waiting_.push_back(std::move(s));
      incoming_.clear();
      cancel.swap(cancelled_);
      waiting_count_ = int64_t(waiting_.size());
    }
    if (cancel.empty()) return;
    for (auto* q : {&running_, &waiting_})
      for (auto& s : *q)
        if (cancel.count(s->id) && !s->done) finish(*s, FinishReason::cancelled);
    retire();
  }

  void admit() {
    while (!waiting_.empty() && int(running_.size()) < o_.max_batch) {
      Sequence& s = *waiting_.front();
      const int64_t need = pool_->blocks_for(int64_t(s.tokens.size()) + 1);
      if (need > pool_->free_blocks()) break;
      s.cache = nn::KvCache(pool_, std::min<int64_t>(o_.max_context, int64_t(s.req.prompt.size()) + s.req.options.max_new_tokens));
      if (!s.cache.reserve(int64_t(s.tokens.size()))) break;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }

  void preempt_newest() {
    std::unique_ptr<Sequence> s = std::move(running_.back());
    running_.pop_back();
    s->cache.release();
    ++s->preemptions;
    ++stats_preemptions_;
    waiting_.push_front(std::move(s));
  }

  void run_batch(const std::vector<Sequence*>& batch, const std::vector<int64_t>& take) {
    const int64_t V = model_.config().vocab_size;
    std::vector<typename Model::BatchSequence> seqs(batch.size());
    // One logits row per batch slot, on the model's device (read on the host to sample).
    if (batch_logits_.size() < batch.size() * size_t(V)) batch_logits_ = HostRows<backend_of_t<Model>>(batch.size() * size_t(V));
    int64_t tokens = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Sequence& s = *batch[i];
      const bool last = take[i] == s.pending();  // the chunk reaches the newest token: sample after it
      seqs[i] = {s.tokens.data() + s.cache.size(), take[i], &s.cache, last ? batch_logits_.device() + i * size_t(V) : nullptr};
      tokens += take[i];
    }
    try {
      model_.forward_batch(seqs);
    } catch (const std::exception& e) {
      for (Sequence* s : batch) finish(*s, FinishReason::error, e.what());
      return;
    }
    ++stats_steps_;
    stats_step_tokens_ += tokens;
    // The rows reach the host only for a request that watches its logits (on the CPU: no copy).
    bool watched = false;
    for (size_t i = 0; i < batch.size(); ++i) watched = watched || (seqs[i].logits && batch[i]->req.on_logits);
    const float* lg = watched ? batch_logits_.host() : nullptr;
    for (size_t i = 0; i < batch.size(); ++i)
      if (seqs[i].logits) emit(*batch[i], seqs[i].logits, lg ? lg + i * size_t(V) : nullptr);
  }

  // Samples the sequence's next token from its logits (on the model's device; `host`: the same row
  // on the host when the request watches it) and streams it.
  void emit(Sequence& s, const float* logits, const float* host) {
    const auto& c = model_.config();
    try {
      if (s.req.on_logits) s.req.on_logits(host, c.vocab_size);
      const int32_t next = s.sampler.template sample_on<backend_of_t<Model>>(logits, c.vocab_size);
      s.tokens.push_back(next);
      ++s.generated;
      ++stats_generated_;
      const bool eos = s.req.options.stop_at_eos && is_eos(next);
      TokenOutput out{next, {}};
      bool stopped = false;
      if (s.text.decoder && !eos) stopped = add_text(s, s.text.decoder->push(tokenizer::TokenId(next)), out.text);
      if (s.req.on_token && !s.req.on_token(out)) return finish(s, FinishReason::cancelled);
      if (eos || stopped) return finish(s, FinishReason::stop);
      if (s.generated >= s.req.options.max_new_tokens) return finish(s, FinishReason::length);
    } catch (const std::exception& e) {
      finish(s, FinishReason::error, e.what());
    }
  }

  // Appends decoded text; moves what is decided into `out`. True when a stop string matched (the
  // text before it is in `out`, the rest dropped).
  bool add_text(Sequence& s, const std::string& piece, std::string& out) {
    std::string& held = s.text.held;
    held += piece;
    const auto& stops = s.req.options.stop;
    size_t first = std::string::npos;
    for (const auto& st : stops) first = std::min(first, held.find(st));
    if (first != std::string::npos) {
      out = held.substr(0, first);
      held.clear();
      return true;
    }
    // Hold back the longest suffix that is a proper prefix of some stop string.
    size_t keep = 0;
    for (const auto& st : stops)
      for (size_t k = std::min(st.size() - 1, held.size()); k > keep; --k)
        if (held.compare(held.size() - k, k, st, 0, k) == 0) {
          keep = k;
          break;
        }
    // Never split a UTF-8 character: held text starts at a character boundary.
    while (keep < held.size() && (static_cast<unsigned char>(held[held.size() - keep]) & 0xC0) == 0x80) ++keep;
    out = held.substr(0, held.size() - keep);
    held.erase(0, held.size() - keep);
    return false;
  }

  void finish(Sequence& s, FinishReason reason, const std::string& error = {}) {
    if (s.done) return;
    FinishOutput f;
    f.reason = reason;
    f.error = error;
    f.prompt_tokens = int64_t(s.req.prompt.size());
    f.completion_tokens = s.generated;
    f.preemptions = s.preemptions;
    if (reason == FinishReason::length || reason == FinishReason::stop) {
      // A partial stop-string match that never completed is text after all.
      if (s.text.decoder) f.text = s.text.held + s.text.decoder->finish();
    }
    s.text.held.clear();
    s.cache.release();
    s.done = f;
  }

  // Drops finished sequences and calls their on_finish.
  void retire() {
    std::vector<std::unique_ptr<Sequence>> gone;
    for (auto* q : {&running_, &waiting_}) {
      for (auto it = q->begin(); it != q->end();) {
        if ((*it)->done) {
          gone.push_back(std::move(*it));
          it = q->erase(it);
        } else {
          ++it;
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.finished += int64_t(gone.size());
    }
    for (auto& s : gone)
      if (s->req.on_finish) {
        try {
          s->req.on_finish(*s->done);
        } catch (...) {
          // A callback that throws must not take the other sequences down with it.
        }
      }
  }

  void publish() {
    std::lock_guard<std::mutex> lock(mu_);
    running_count_ = int64_t(running_.size());
    waiting_count_ = int64_t(waiting_.size());
    free_blocks_ = pool_->free_blocks();
    stats_.steps = stats_steps_;
    stats_.step_tokens = stats_step_tokens_;
    stats_.generated_tokens = stats_generated_;
    stats_.preemptions = stats_preemptions_;
  }

  bool is_eos(int32_t id) const { return model_.config().is_eos(id); }

  const Model& model_;
  SchedulerOptions o_;
  const tokenizer::Tokenizer* tok_;
  std::shared_ptr<nn::KvPool> pool_;
  HostRows<backend_of_t<Model>> batch_logits_{0};
  // The stepping thread's own state.
  std::deque<std::unique_ptr<Sequence>> running_, waiting_;  // running_ in admission order
  int64_t stats_steps_ = 0, stats_step_tokens_ = 0, stats_generated_ = 0, stats_preemptions_ = 0;
  // Shared with submit() / cancel() / stats().
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Sequence>> incoming_;
  std::set<uint64_t> cancelled_;
  uint64_t next_id_ = 1;
  int64_t running_count_ = 0, waiting_count_ = 0, free_blocks_ = 0;
  SchedulerStats stats_;
};

}  // namespace deepseek::generate
