// The CUDA half of `logits` / `generate --backend cuda` (model_runner.hpp): the model, its caches
// and logits on the GPU. Built only with the CUDA backend (examples/cli/CMakeLists.txt).
#include "model_runner.hpp"

#include <deepseek/cuda.hpp>

namespace deepseek::cli {

std::unique_ptr<ModelRunner> make_cuda_runner(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts) {
  if (backend::cuda::device_count() == 0)
    throw Error("--backend cuda needs a GPU, and this machine has none (cudaGetDeviceCount: 0)");
  return std::make_unique<ModelRunnerOn<cuda>>(std::move(ckpt), opts);
}

}  // namespace deepseek::cli
