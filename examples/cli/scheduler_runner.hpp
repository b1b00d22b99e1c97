// What `serve` needs of generate::Scheduler over a loaded text model, behind one interface so the
// server is written once for every backend (as model_runner.hpp does for logits / generate):
// SchedulerRunnerOn<cpu> is built in cmd_serve.cpp (model_loading.hpp), SchedulerRunnerOn<cuda> in
// cmd_model_cuda.cu. The methods are the Scheduler's own, with its threading (scheduler.hpp):
// submit / cancel / stats / notify from any thread, serve() on the one stepping thread, where the
// callbacks run. Requests and callbacks are host data; the model, the KV pool and the logits live
// on B's device. The tokenizer (streamed text, stop strings) is the caller's and outlives the
// runner; nvcc compiles it too (tokenizer/ is plain C++17: no intrinsics, no target attributes).
#pragma once

#include <deepseek/generate/scheduler.hpp>
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/nn/kv_cache.hpp>
#include <deepseek/tokenizer/tokenizer.hpp>

#include <atomic>
#include <cstdint>
#include <memory>

namespace deepseek::cli {

class SchedulerRunner {
 public:
  virtual ~SchedulerRunner() = default;
  virtual const io::ModelConfig& config() const = 0;
  virtual const std::shared_ptr<nn::KvPool>& pool() const = 0;
  // Throws Error for a request that can never run, generate::QueueFull when the queue is full.
  virtual uint64_t submit(generate::Request r) = 0;
  virtual void cancel(uint64_t id) = 0;
  virtual generate::SchedulerStats stats() const = 0;
  // Steps until `stop` is set (notify() wakes it).
  virtual void serve(const std::atomic<bool>& stop) = 0;
  virtual void notify() = 0;
};

template <class B>
class SchedulerRunnerOn final : public SchedulerRunner {
 public:
  SchedulerRunnerOn(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts,
                    const generate::SchedulerOptions& so, const tokenizer::Tokenizer* tok)
      : model_(std::move(ckpt), opts), sched_(model_, so, tok) {}

  const io::ModelConfig& config() const override { return model_.config(); }
  const std::shared_ptr<nn::KvPool>& pool() const override { return sched_.pool(); }
  uint64_t submit(generate::Request r) override { return sched_.submit(std::move(r)); }
  void cancel(uint64_t id) override { sched_.cancel(id); }
  generate::SchedulerStats stats() const override { return sched_.stats(); }
  void serve(const std::atomic<bool>& stop) override { sched_.serve(stop); }
  void notify() override { sched_.notify(); }

 private:
  models::DeepSeekV3<B> model_;
  generate::Scheduler<models::DeepSeekV3<B>> sched_;  // holds a reference to model_
};

#if defined(DEEPSEEK_WITH_CUDA)
// The model and the scheduler's KV pool on the current CUDA device (cmd_model_cuda.cu).
std::unique_ptr<SchedulerRunner> make_cuda_scheduler(std::shared_ptr<io::Checkpoint> ckpt,
                                                     const models::LoadOptions& opts,
                                                     const generate::SchedulerOptions& so,
                                                     const tokenizer::Tokenizer* tok);
#endif

}  // namespace deepseek::cli
