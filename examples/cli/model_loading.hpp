// Loading a checkpoint for the commands that run a model (generate, logits, serve, chat).
#pragma once

#include <deepseek/deepseek.hpp>

#include <cstdio>
#include <memory>
#include <string>

#include <unistd.h>

namespace deepseek::cli {

// A progress bar on stderr while the layers are set up; shown for checkpoints of 1 GB and more.
// A checkpoint that fits in 3/4 of RAM is mapped in full first (Checkpoint::populate), so the
// first forward is not slowed by page faults; a larger one pages in as the kernels touch it.
inline std::shared_ptr<models::DeepSeekV3<cpu>> load_model(const std::shared_ptr<io::Checkpoint>& ckpt, ActivationDType activations,
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
  return std::make_shared<models::DeepSeekV3<cpu>>(ckpt, opts);
}

// A context of `tokens` positions must fit the model before anything is sized from it.
inline void check_context(const io::ModelConfig& c, int64_t tokens, const std::string& what) {
  if (tokens > c.max_position_embeddings)
    throw Error(what + " needs " + std::to_string(tokens) + " positions but the model's max_position_embeddings is " +
                std::to_string(c.max_position_embeddings));
}

}  // namespace deepseek::cli
