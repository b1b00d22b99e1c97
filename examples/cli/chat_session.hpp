// What `chat` needs of a loaded text model: one contiguous KV cache kept across the turns of a
// conversation, so a turn runs only the tokens after the prefix it shares with what the cache holds.
// Behind one interface so the chat loop is written once for every backend (as model_runner.hpp
// does for logits / generate): ChatSessionOn<cpu> is built in cmd_chat.cpp (model_loading.hpp),
// ChatSessionOn<cuda> in cmd_model_cuda.cu. Ids and logits are host memory; the model, its cache
// and the logits row it writes live on B's device (on the CPU the row is the host array itself).
#pragma once

#include <deepseek/core/error.hpp>
#include <deepseek/generate/host_rows.hpp>
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/nn/kv_cache.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace deepseek::cli {

class ChatSession {
 public:
  virtual ~ChatSession() = default;
  // Keeps the first n cached tokens (n at most the tokens cached): the prefix the next turn shares.
  virtual void truncate(int64_t n) = 0;
  // Runs ids[0:n) after the cached tokens and appends them to the cache; returns the logits
  // [vocab] of the last one on the host, valid until the next append.
  virtual const float* append(const int32_t* ids, int64_t n) = 0;
};

template <class B>
class ChatSessionOn final : public ChatSession {
 public:
  ChatSessionOn(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts, const models::CacheOptions& co)
      : model_(std::move(ckpt), opts), cache_(model_.make_cache(co)), logits_(size_t(model_.config().vocab_size)) {}

  void truncate(int64_t n) override {
    if (n < 0 || n > cache_.size())
      throw Error("cannot keep " + std::to_string(n) + " cached tokens of " + std::to_string(cache_.size()));
    cache_.resize(n);
  }

  const float* append(const int32_t* ids, int64_t n) override {
    model_.forward(ids, n, cache_, logits_.device());
    return logits_.host();
  }

 private:
  models::DeepSeekV3<B> model_;
  nn::KvCache cache_;
  generate::HostRows<B> logits_;  // [vocab]: the last appended token's
};

#if defined(DEEPSEEK_WITH_CUDA)
// The model and its cache on the current CUDA device (cmd_model_cuda.cu).
std::unique_ptr<ChatSession> make_cuda_chat_session(std::shared_ptr<io::Checkpoint> ckpt,
                                                    const models::LoadOptions& opts, const models::CacheOptions& co);
#endif

}  // namespace deepseek::cli
