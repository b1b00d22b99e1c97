// Loading a checkpoint for the commands that run a model (generate, logits, serve, chat), on the
// backend --backend names.
#pragma once

#include "chat_session.hpp"
#include "command.hpp"
#include "model_runner.hpp"
#include "scheduler_runner.hpp"

#include <deepseek/deepseek.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include <unistd.h>

namespace deepseek::cli {

// A progress bar on stderr while the layers are set up; shown for checkpoints of 1 GB and more.
// A checkpoint that fits in 3/4 of RAM is mapped in full first (Checkpoint::populate), so the
// first forward is not slowed by page faults (or, on a GPU, the uploads); a larger one pages in as
// the kernels (or uploads) touch it.
inline models::LoadOptions load_options(const std::shared_ptr<io::Checkpoint>& ckpt, ActivationDType activations,
                                        int64_t prefill_chunk) {
  const int64_t bytes = ckpt->file_bytes();
  const double ram = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  if (double(bytes) < 0.75 * ram) {
    if (bytes >= (int64_t(1) << 30)) std::fprintf(stderr, "mapping %.2f GB of weights\n", double(bytes) / 1e9);
    ckpt->populate();
  }
  models::LoadOptions opts;
  opts.activations = activations;
  opts.prefill_chunk = prefill_chunk;
  if (bytes >= (int64_t(1) << 30) || isatty(2)) {
    opts.progress = [bytes](int done, int total) {
      const int width = 40, filled = width * done / total;
      std::fprintf(stderr, "\rloading %.2f GB [%s%s] %d/%d layers", double(bytes) / 1e9, std::string(size_t(filled), '#').c_str(),
                   std::string(size_t(width - filled), '.').c_str(), done, total);
      if (done == total) std::fprintf(stderr, "\n");
    };
  }
  return opts;
}

// The model of each command on --backend cpu (the default) or cuda (parse_backend; the cuda halves
// are built in cmd_model_cuda.cu, which refuses a machine without a GPU). A checkpoint larger than
// the GPU is not split: the upload stops with cudaMalloc's out-of-memory Error (memory.cuh).
//   logits / generate: model_runner.hpp
inline std::unique_ptr<ModelRunner> load_runner(const std::string& backend, const std::shared_ptr<io::Checkpoint>& ckpt,
                                                ActivationDType activations, int64_t prefill_chunk) {
  [[maybe_unused]] const Backend b = parse_backend(backend);
  const models::LoadOptions opts = load_options(ckpt, activations, prefill_chunk);
#if defined(DEEPSEEK_WITH_CUDA)
  if (b == Backend::cuda) return make_cuda_runner(ckpt, opts);
#endif
  return std::make_unique<ModelRunnerOn<cpu>>(ckpt, opts);
}

//   serve: generate::Scheduler over the model (scheduler_runner.hpp); `tok` outlives the runner
inline std::unique_ptr<SchedulerRunner> load_scheduler([[maybe_unused]] Backend backend,
                                                       const std::shared_ptr<io::Checkpoint>& ckpt,
                                                       ActivationDType activations,
                                                       const generate::SchedulerOptions& so,
                                                       const tokenizer::Tokenizer* tok) {
  const models::LoadOptions opts = load_options(ckpt, activations, 0);
#if defined(DEEPSEEK_WITH_CUDA)
  if (backend == Backend::cuda) return make_cuda_scheduler(ckpt, opts, so, tok);
#endif
  return std::make_unique<SchedulerRunnerOn<cpu>>(ckpt, opts, so, tok);
}

//   chat: the model and one contiguous cache kept across turns (chat_session.hpp)
inline std::unique_ptr<ChatSession> load_chat_session([[maybe_unused]] Backend backend,
                                                      const std::shared_ptr<io::Checkpoint>& ckpt,
                                                      ActivationDType activations, const models::CacheOptions& co) {
  const models::LoadOptions opts = load_options(ckpt, activations, 0);
#if defined(DEEPSEEK_WITH_CUDA)
  if (backend == Backend::cuda) return make_cuda_chat_session(ckpt, opts, co);
#endif
  return std::make_unique<ChatSessionOn<cpu>>(ckpt, opts, co);
}

// A context of `tokens` positions must fit the model before anything is sized from it.
inline void check_context(const io::ModelConfig& c, int64_t tokens, const std::string& what) {
  if (tokens > c.max_position_embeddings)
    throw Error(what + " needs " + std::to_string(tokens) + " positions but the model's max_position_embeddings is " +
                std::to_string(c.max_position_embeddings));
}

}  // namespace deepseek::cli
