// What `logits` and `generate` need of a loaded text model, behind one interface so the commands
// are written once for every backend: ModelRunnerOn<cpu> is built in cmd_model.cpp, and with the
// CUDA backend (DEEPSEEK_WITH_CUDA) ModelRunnerOn<cuda> in cmd_model_cuda.cu, the one translation
// unit nvcc compiles (no Eigen there, which warns under nvcc: it stays in the host files).
// serve and chat have interfaces of the same kind: scheduler_runner.hpp, chat_session.hpp.
// Inputs and outputs are host memory; the model's activations, cache and logits live on B's device.
#pragma once

#include <deepseek/generate/generator.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/io/checkpoint.hpp>
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/models/mtp_head.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace deepseek::cli {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const io::ModelConfig& config() const = 0;
  // Logits [T, vocab] of every position of ids, from an empty cache.
  virtual std::vector<float> logits(const std::vector<int32_t>& ids, const models::CacheOptions& co) = 0;
  // New tokens after the prompt (speculatively with the MTP head when mtp); on_token streams them.
  virtual std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const generate::GenerateOptions& go, bool mtp,
                                        const models::CacheOptions& co, const std::function<bool(int32_t)>& on_token,
                                        generate::SpeculativeStats& stats) = 0;
};

template <class B>
class ModelRunnerOn final : public ModelRunner {
 public:
  ModelRunnerOn(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts) : ckpt_(ckpt), model_(ckpt, opts) {}

  const io::ModelConfig& config() const override { return model_.config(); }

  std::vector<float> logits(const std::vector<int32_t>& ids, const models::CacheOptions& co) override {
    const int64_t T = int64_t(ids.size()), V = model_.config().vocab_size;
    auto cache = model_.make_cache(co);
    backend::Buffer<B> out(size_t(T * V));
    model_.forward(ids.data(), T, cache, out.data(), true);
    std::vector<float> host(size_t(T * V));
    backend::Ops<B>::download(out.data(), T * V, host.data());
    return host;
  }

  std::vector<int32_t> generate(const std::vector<int32_t>& prompt, const generate::GenerateOptions& go, bool mtp,
                                const models::CacheOptions& co, const std::function<bool(int32_t)>& on_token,
                                generate::SpeculativeStats& stats) override {
    auto cache = model_.make_cache(co);
    if (mtp) {
      if (!draft_) draft_.emplace(ckpt_, model_);  // throws if the MTP weights are missing
      generate::SpeculativeGenerator<models::DeepSeekV3<B>, models::MtpHead<B>> gen(model_, *draft_, cache, go);
      auto out = gen.run(prompt, on_token);
      stats = gen.stats();
      return out;
    }
    generate::Generator<models::DeepSeekV3<B>> gen(model_, cache, go);
    auto out = gen.run(prompt, on_token);
    stats = generate::SpeculativeStats();
    static_cast<generate::GenerateStats&>(stats) = gen.stats();
    return out;
  }

 private:
  std::shared_ptr<io::Checkpoint> ckpt_;
  models::DeepSeekV3<B> model_;
  std::optional<models::MtpHead<B>> draft_;
};

#if defined(DEEPSEEK_WITH_CUDA)
// The model on the current CUDA device: weights uploaded in their checkpoint dtype (cmd_model_cuda.cu).
std::unique_ptr<ModelRunner> make_cuda_runner(std::shared_ptr<io::Checkpoint> ckpt, const models::LoadOptions& opts);
#endif

}  // namespace deepseek::cli
