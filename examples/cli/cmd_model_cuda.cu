// The CUDA halves of `logits` / `generate` (model_runner.hpp), `serve` (scheduler_runner.hpp) and
// `chat` (chat_session.hpp) with --backend cuda: the model, its caches and logits on the GPU. One
// translation unit, so DeepSeekV3<cuda> is compiled once for all of them; built only with the CUDA
// backend (examples/cli/CMakeLists.txt). No Eigen here: the headers above keep to core/, io/,
// nn/, models/, generate/ and tokenizer/ (plain C++17, which nvcc compiles).
#include "chat_session.hpp"
#include "model_runner.hpp"
#include "scheduler_runner.hpp"

#include <deepseek/cuda.hpp>

namespace deepseek::cli {

namespace {

// Before anything is uploaded: the same message for every command.
void require_gpu() {
  if (backend::cuda::device_count() == 0)
    throw Error("--backend cuda needs a GPU, and this machine has none (cudaGetDeviceCount: 0)");
}

}  // namespace

std::unique_ptr<ModelRunner> make_cuda_runner(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts) {
  require_gpu();
  return std::make_unique<ModelRunnerOn<cuda>>(std::move(ckpt), opts);
}

std::unique_ptr<SchedulerRunner> make_cuda_scheduler(std::shared_ptr<io::Checkpoint> ckpt,
                                                     const models::LoadOptions& opts,
                                                     const generate::SchedulerOptions& so,
                                                     const tokenizer::Tokenizer* tok) {
  require_gpu();
  return std::make_unique<SchedulerRunnerOn<cuda>>(std::move(ckpt), opts, so, tok);
}

std::unique_ptr<ChatSession> make_cuda_chat_session(std::shared_ptr<io::Checkpoint> ckpt,
                                                    const models::LoadOptions& opts, const models::CacheOptions& co) {
  require_gpu();
  return std::make_unique<ChatSessionOn<cuda>>(std::move(ckpt), opts, co);
}

}  // namespace deepseek::cli
