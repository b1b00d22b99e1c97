// The MTP modules of a DeepSeek-V3-family checkpoint (model.layers.<num_hidden_layers + k>.*, k <
// num_nextn_predict_layers), wired to the main model's embedding and lm_head where the checkpoint
// omits its own copies, and usable as the draft of generate::SpeculativeGenerator (spec §6.2):
//   make_cache(max_tokens)                         one-layer latent cache of module 0
//   forward(hidden, next_ids, n, cache, logits)    pairs (h_i, x_{i+1}) at positions cache.size()..;
//                                                  logits [1, vocab] of the last pair (the draft of x_{i+2})
// Drafting uses module 0 only (one draft token per step, as V3/R1 ship D = 1); further modules are
// loaded and reachable through module(k).
// When the checkpoint's copies (layers.L.embed_tokens, layers.L.shared_head.head) are byte-identical to
// model.embed_tokens / lm_head (as in the released V3 files), the main tensors are used: a small model
// then keeps one head in the CPU caches, a large one one head in memory. The comparison reads both
// copies once at load.
// The main model must outlive this object (the fallback head calls it).
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/models/deepseek_v3.hpp"
#include "deepseek/nn/mtp.hpp"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::models {

template <class B>
class MtpHead {
 public:
  using Backend = B;  // the device its activations, caches and outputs live on
  // ckpt: the checkpoint `model` was loaded from.
  MtpHead(std::shared_ptr<const io::Checkpoint> ckpt, const DeepSeekV3<B>& model) : model_(&model), c_(model.config()) {
    if (ckpt.get() != &model.checkpoint())
      throw Error("MtpHead: the checkpoint is not the one the main model was loaded from");
    const std::string where = ckpt->dir() + "/config.json";
    if (c_.num_nextn_predict_layers < 1)
      throw Error("checkpoint has no MTP module (num_nextn_predict_layers is 0)",
                  at_field("num_nextn_predict_layers", where));
    weights_ = io::Weights(ckpt).on(B::device).with_activations(model.options().activations);
    const io::Weights layers = weights_.sub("model").sub("layers");
    const nn::Rope rope(c_, c_.qk_rope_head_dim, nn::RopeLayout::interleaved);
    const float scale = float(nn::mla_softmax_scale(c_));
    for (int k = 0; k < c_.num_nextn_predict_layers; ++k) {
      const int L = c_.num_hidden_layers + k;
      io::Weights w = layers.sub(std::to_string(L));
      if (!w.has("eh_proj.weight"))
        throw Error("config.json declares num_nextn_predict_layers = " + std::to_string(c_.num_nextn_predict_layers) +
                        " but the weights have no MTP module (model.layers." + std::to_string(L) +
                        ".eh_proj.weight is missing; were the MTP weights stripped?)",
                    in_file(ckpt->dir()));
      const std::string p = "model.layers." + std::to_string(L) + ".";
      const bool copies_equal = same_bytes(*ckpt, "model.embed_tokens.weight", p + "embed_tokens.weight") &&
                                same_bytes(*ckpt, "lm_head.weight", p + "shared_head.head.weight");
      const DeepSeekV3<B>* m = model_;
      modules_.emplace_back(
          w, c_, L, rope, scale, model.embedding(),
          [m](const float* h, int64_t n, float* logits) { m->lm_head(h, n, logits); }, copies_equal);
    }
  }

  const io::ModelConfig& config() const { return c_; }
  int num_modules() const { return int(modules_.size()); }
  const nn::Mtp<B>& module(int k) const { return modules_[size_t(k)]; }

  nn::KvCache make_cache(int64_t max_tokens) const { return modules_[0].make_cache(max_tokens); }

  // Draft interface of generate::SpeculativeGenerator: hidden [n, d] (main, after model.norm),
  // next_ids [n]; logits [1, vocab] for the token after the last pair.
  // As the main model does, each stage's output is checked for NaN or inf, so a broken MTP module
  // is an error naming it instead of drafts that are silently always rejected.
  void forward(const float* hidden, const int32_t* next_ids, int64_t n, nn::KvCache& cache, float* logits) const {
    const int64_t d = c_.hidden_size;
    backend::Buffer<B> z(size_t(n * d));
    modules_[0].forward(hidden, next_ids, n, cache, z.data());
    const std::string layer = std::to_string(c_.num_hidden_layers);
    const ErrorWhere where = in_file(model_->checkpoint().dir());
    if (!backend::Ops<B>::all_finite(z.data(), n * d))
      check_finite(on_host(z.data(), n * d).data(), n, d, [&] { return "MTP module 0 (model.layers." + layer + ")"; }, where);
    modules_[0].logits(z.data() + (n - 1) * d, 1, logits);
    if (!backend::Ops<B>::all_finite(logits, c_.vocab_size))
      check_finite(on_host(logits, c_.vocab_size).data(), 1, c_.vocab_size,
                   [&] { return "MTP module 0's head (model.layers." + layer + ".shared_head)"; }, where);
  }

 private:
  // On a GPU the blocks' views point into uploads that live as long as a view of their family
  // does (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  // A copy of x [n] in host memory (the failure path of a NaN check names the first bad value).
  static std::vector<float> on_host(const float* x, int64_t n) {
    std::vector<float> h(static_cast<size_t>(n));
    backend::Ops<B>::download(x, n, h.data());
    return h;
  }
  static bool same_bytes(const io::Checkpoint& ck, const std::string& a, const std::string& b) {
    if (!ck.find(a) || !ck.find(b) || ck.find(a + "_scale_inv") || ck.find(b + "_scale_inv")) return false;
    const TensorView va = ck.view(a), vb = ck.view(b);
    return va.dtype() == vb.dtype() && va.shape() == vb.shape() &&
           std::memcmp(va.data(), vb.data(), size_t(va.nbytes())) == 0;
  }

  const DeepSeekV3<B>* model_;
  io::ModelConfig c_;
  std::vector<nn::Mtp<B>> modules_;
};

}  // namespace deepseek::models
