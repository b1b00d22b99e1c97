// CLIP-L vision transformer as DeepSeek-OCR runs it: fed with SAM's features instead of its own
// patch convolution (embeddings.patch_embedding is in the checkpoint but never used).
//   x = [class_embedding ; F_sam rows] + pos      F_sam [side * side, D] row-major grid (D = 1024);
//       pos = position_embedding.weight [1 + g*g, D] (g = 16): row 0 (CLS) kept, rows 1.. as a g x g grid
//       bicubic-antialias resampled to side x side in f32 when side != g (sam_vit.hpp round_tables: bf16)
//   x = pre_layrnorm(x)                           (eps 1e-5; no post-layernorm)
//   layers (24), pre-LN:  h = x + out_proj(MHA(LN1(x)));  x = h + fc2(quick_gelu(fc1(LN2(h))))
//     qkv_proj [3D, D] output viewed as (3, heads, hd): q | k | v, head-major (16 heads x 64);
//     softmax(q.k / sqrt(hd)) over all 1 + side^2 tokens, no mask; quick_gelu(x) = x sigmoid(1.702 x)
//   -> [1 + side^2, D] (DeepEncoder drops the CLS row)
// Tensors (prefix vision_model.): embeddings.class_embedding [D], embeddings.position_embedding.weight,
//   pre_layrnorm.{weight, bias}, transformer.layers.{j}.{layer_norm1, layer_norm2}.{weight, bias},
//   transformer.layers.{j}.self_attn.{qkv_proj, out_proj}.{weight, bias}, transformer.layers.{j}.mlp.{fc1, fc2}.{weight, bias}.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/conv2d.hpp"
#include "deepseek/nn/layernorm.hpp"
#include "deepseek/nn/sam_vit.hpp"

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace deepseek::nn {

struct ClipVisionConfig {
  int64_t width = 1024, layers = 24, heads = 16, ffn = 4096;
  int64_t positions = 257;  // 1 + (224 / 14)^2
  float eps = 1e-5f;

  int64_t head_dim() const { return width / heads; }
  int64_t pos_grid() const { return int64_t(std::lround(std::sqrt(double(positions - 1)))); }
};

template <class B>
class ClipBlock {
 public:
  ClipBlock() = default;
  ClipBlock(const io::Weights& w, const ClipVisionConfig& c) : c_(c) {
    const int64_t D = c.width;
    layer_norm1_ = LayerNorm<B>(w, "layer_norm1", D, c.eps);
    layer_norm2_ = LayerNorm<B>(w, "layer_norm2", D, c.eps);
    qkv_proj_ = LinearBias<B>(w, "self_attn.qkv_proj", 3 * D, D);
    out_proj_ = LinearBias<B>(w, "self_attn.out_proj", D, D);
    fc1_ = LinearBias<B>(w, "mlp.fc1", c.ffn, D);
    fc2_ = LinearBias<B>(w, "mlp.fc2", D, c.ffn);
  }
  // x [n, D] in place.
  void forward(float* x, int64_t n) const {
    using Ops = backend::Ops<B>;
    const int64_t D = c_.width, hd = c_.head_dim();
    backend::Buffer<B> t(size_t(n * D)), qkv(size_t(n * 3 * D)), a(size_t(n * D));
    layer_norm1_.forward(x, n, t.data());
    qkv_proj_.forward(t.data(), n, qkv.data());
    // One region of 1 x n tokens, no bias: plain softmax attention (nothing is padded).
    Ops::vit_attention(qkv.data(), 1, n, c_.heads, hd, 0, nullptr, nullptr, nullptr, 1.0f / std::sqrt(float(hd)), a.data());
    out_proj_.forward(a.data(), n, t.data());
    Ops::add(x, t.data(), n * D);
    layer_norm2_.forward(x, n, t.data());
    backend::Buffer<B> u(size_t(n * c_.ffn));
    fc1_.forward(t.data(), n, u.data());
    Ops::quick_gelu(u.data(), n * c_.ffn);
    fc2_.forward(u.data(), n, t.data());
    Ops::add(x, t.data(), n * D);
  }
  int64_t flops(int64_t n) const { return 2 * n * c_.width * (4 * c_.width + 2 * c_.ffn) + 4 * n * n * c_.width; }

 private:
  ClipVisionConfig c_;
  LayerNorm<B> layer_norm1_, layer_norm2_;
  LinearBias<B> qkv_proj_, out_proj_, fc1_, fc2_;
};

template <class B>
class ClipVision {
 public:
  ClipVision() = default;
  // w: view with prefix "model.vision_model.".
  ClipVision(const io::Weights& w, const ClipVisionConfig& c) : c_(c), round_(round_tables(w)), cache_(std::make_shared<Cache>()) {
    const int64_t D = c.width, g = c.pos_grid();
    if (c.heads < 1 || D % c.heads)
      throw Error("CLIP width " + std::to_string(D) + " is not divisible by heads " + std::to_string(c.heads),
                  at_tensor(w.prefix() + "transformer.layers.0.self_attn.qkv_proj.weight"));
    if (g * g + 1 != c.positions)
      throw Error("position table of " + std::to_string(c.positions) + " rows is not 1 + a square grid",
                  at_tensor(w.prefix() + "embeddings.position_embedding.weight"));
    const std::initializer_list<DType> fl = {DType::f32, DType::bf16, DType::f16};
    class_embedding_ = backend::Ops<B>::vector_f32(w.get("embeddings.class_embedding", Shape{D}, fl));
    const TensorView pos = w.get("embeddings.position_embedding.weight", Shape{c.positions, D}, fl);
    pos_dtype_ = pos.dtype();
    position_embedding_ = backend::Ops<B>::vector_f32(pos);
    pre_layrnorm_ = LayerNorm<B>(w, "pre_layrnorm", D, c.eps);
    for (int64_t j = 0; j < c.layers; ++j) layers_.emplace_back(w.sub("transformer.layers." + std::to_string(j)), c);
  }

  const ClipVisionConfig& config() const { return c_; }

  // feats [side * side, D] (SAM's output grid, channels last) -> out [1 + side^2, D], CLS first.
  void forward(const float* feats, int64_t side, backend::Buffer<B>& out) const {
    using Ops = backend::Ops<B>;
    const int64_t D = c_.width, n = 1 + side * side;
    out.resize(size_t(n * D));
    Ops::copy2d(class_embedding_.data(), D, out.data(), D, 1, D);
    Ops::copy2d(feats, D, out.data() + D, D, n - 1, D);
    const auto resampled = positions_for(side);
    Ops::add(out.data(), resampled->empty() ? position_embedding_.data() : resampled->data(), n * D);
    pre_layrnorm_.forward(out.data(), n, out.data());
    for (const auto& l : layers_) l.forward(out.data(), n);
  }

  int64_t flops(int64_t side) const {
    int64_t f = 0;
    for (const auto& l : layers_) f += l.flops(1 + side * side);
    return f;
  }

 private:
  struct Cache {
    std::mutex mutex;
    std::map<int64_t, std::shared_ptr<const backend::Buffer<B>>> by_side;
  };
  // [1 + side^2, D] on B's device: CLS + the resampled grid, computed once per side; empty at the
  // pretrain grid (the stored table is used as is).
  std::shared_ptr<const backend::Buffer<B>> positions_for(int64_t side) const {
    using Ops = backend::Ops<B>;
    std::lock_guard<std::mutex> lock(cache_->mutex);
    auto& slot = cache_->by_side[side];
    if (slot) return slot;
    const int64_t D = c_.width, g = c_.pos_grid();
    auto t = std::make_shared<backend::Buffer<B>>();
    if (side != g) {
      t->resize(size_t((1 + side * side) * D));
      Ops::copy2d(position_embedding_.data(), D, t->data(), D, 1, D);
      Ops::resize_bicubic_aa(position_embedding_.data() + D, g, g, D, side, side, t->data() + D);
      if (round_) Ops::round_to_dtype(t->data() + D, side * side * D, pos_dtype_);
    }
    slot = t;
    return slot;
  }

  ClipVisionConfig c_;
  backend::Buffer<B> class_embedding_, position_embedding_;  // f32 on B's device
  DType pos_dtype_ = DType::f32;
  bool round_ = false;
  LayerNorm<B> pre_layrnorm_;
  std::vector<ClipBlock<B>> layers_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace deepseek::nn
