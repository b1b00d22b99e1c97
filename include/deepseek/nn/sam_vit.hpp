// SAM-B image encoder (ViTDet) with DeepSeek-OCR's 16x token compressor, one square view [3, S, S]:
//   x = PatchEmbed(pixels) + pos          conv p x p stride p (p = 16) -> [h, h, C], h = S / p (C = 768);
//                                         pos = pos_embed [1, G, G, C] (G = 64), bicubic-antialias resampled
//                                         to h x h in f32 when h != G (see round_tables for bf16)
//   depth blocks (12):  y = LN1(x) (eps 1e-6); windowed blocks zero-pad y bottom/right to a multiple of
//                       the window (14) AFTER the norm and attend inside each window with the pads
//                       unmasked; global blocks (global_attn_indexes 2, 5, 8, 11) attend over all h x h
//     qkv = W_qkv y + b [3, heads, hd] (hd = 64); logit = q.k / sqrt(hd) + q.Rh[qy - ky] + q.Rw[qx - kx]
//     (unscaled q; Rh/Rw = rel_pos_h/w [2K - 1, hd] for regions of K x K tokens, linearly resampled
//     along their length when the stored table is not 2K - 1 long: global blocks at h != G)
//     x = x + proj(softmax(logit) v);  x = x + lin2(GELU_erf(lin1(LN2(x))))   (mlp 4C)
//   neck: conv 1x1 C -> 256 (no bias), LayerNorm2d, conv 3x3 pad 1 (no bias), LayerNorm2d (eps 1e-6)
//   net_2: conv 3x3 stride 2 pad 1 256 -> 512, net_3: 512 -> 1024 (no bias, no activation)
//   -> F_sam [side, side, 1024], side = ceil(ceil(h / 2) / 2) (16 at S = 1024)
// Tensors (prefix sam_model.): patch_embed.proj.{weight [C, 3, p, p], bias}, pos_embed,
//   blocks.{i}.{norm1, norm2}.{weight, bias}, blocks.{i}.attn.{qkv, proj}.{weight, bias},
//   blocks.{i}.attn.rel_pos_{h, w}, blocks.{i}.mlp.{lin1, lin2}.{weight, bias}, neck.{0, 2}.weight,
//   neck.{1, 3}.{weight, bias}, net_2.weight, net_3.weight.
// Activations are channels-last [tokens, channels] f32 rows throughout.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/conv2d.hpp"
#include "deepseek/nn/layernorm.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace deepseek::nn {

struct SamConfig {
  int64_t width = 768, depth = 12, heads = 12;
  int64_t patch = 16, window = 14, pos_grid = 64, mlp_dim = 3072, neck = 256;
  std::vector<int64_t> global_attn_indexes = {2, 5, 8, 11};
  std::array<int64_t, 2> downsample_channels = {512, 1024};
  float eps = 1e-6f;

  int64_t head_dim() const { return width / heads; }
  bool is_global(int64_t block) const {
    return std::find(global_attn_indexes.begin(), global_attn_indexes.end(), block) != global_attn_indexes.end();
  }
  int64_t out_channels() const { return downsample_channels[1]; }
  int64_t grid(int64_t S) const { return S / patch; }
  // Feature-map side after net_2 and net_3 (each 3x3, stride 2, pad 1: ceil(n / 2)).
  int64_t out_side(int64_t S) const { return ((grid(S) + 1) / 2 + 1) / 2; }
};

// The official code resamples position tables in f32 and casts them back to the parameters' dtype
// (`.to(dtype)`): in its bf16 run (bf16 weights, as released) the resampled tables are bf16. With
// bf16 activations (Weights::with_activations, the bf16 run's arithmetic) we round them to the stored
// dtype too; with f32 activations we keep f32 tables, which is what the official code computes when
// run in f32 on the same weights. The tables are resampled and rounded on B's device (Ops::resize_*,
// Ops::round_to_dtype), once per input size.
inline bool round_tables(const io::Weights& w) { return w.activations() == ActivationDType::bf16; }

template <class B>
class SamBlock {
 public:
  SamBlock() = default;
  SamBlock(const io::Weights& w, const SamConfig& c, bool global) : c_(c), global_(global), round_(round_tables(w)) {
    const int64_t C = c.width, hd = c.head_dim();
    norm1_ = LayerNorm<B>(w, "norm1", C, c.eps);
    norm2_ = LayerNorm<B>(w, "norm2", C, c.eps);
    qkv_ = LinearBias<B>(w, "attn.qkv", 3 * C, C);
    proj_ = LinearBias<B>(w, "attn.proj", C, C);
    lin1_ = LinearBias<B>(w, "mlp.lin1", c.mlp_dim, C);
    lin2_ = LinearBias<B>(w, "mlp.lin2", C, c.mlp_dim);
    // The official Attention sizes its tables for input_size = the pretrain grid (global) or the window.
    const int64_t L = 2 * (global ? c.pos_grid : c.window) - 1;
    const std::initializer_list<DType> fl = {DType::f32, DType::bf16, DType::f16};
    const TensorView th = w.get("attn.rel_pos_h", Shape{L, hd}, fl), tw = w.get("attn.rel_pos_w", Shape{L, hd}, fl);
    rel_dtype_ = th.dtype();
    rel_pos_h_ = backend::Ops<B>::vector_f32(th);
    rel_pos_w_ = backend::Ops<B>::vector_f32(tw);
  }

  bool global() const { return global_; }
  int64_t table_length() const { return int64_t(rel_pos_h_.size()) / c_.head_dim(); }
  // The tables for a region of K x K tokens: the stored ones when 2K - 1 matches, else resampled
  // (1-D linear, f32, rounded to the stored dtype) into h, w.
  void tables_for(int64_t K, backend::Buffer<B>& h, backend::Buffer<B>& w) const {
    using Ops = backend::Ops<B>;
    const int64_t L = table_length(), M = 2 * K - 1, hd = c_.head_dim();
    h.resize(size_t(M * hd));
    w.resize(size_t(M * hd));
    Ops::resize_linear(rel_pos_h_.data(), L, hd, M, h.data());
    Ops::resize_linear(rel_pos_w_.data(), L, hd, M, w.data());
    if (round_) {
      Ops::round_to_dtype(h.data(), M * hd, rel_dtype_);
      Ops::round_to_dtype(w.data(), M * hd, rel_dtype_);
    }
  }
  const float* rel_pos_h() const { return rel_pos_h_.data(); }
  const float* rel_pos_w() const { return rel_pos_w_.data(); }

  // x [H*W, C] in place. rel_h / rel_w: tables for this block's regions (2K - 1 rows).
  void forward(float* x, int64_t H, int64_t W, const float* rel_h, const float* rel_w) const {
    using Ops = backend::Ops<B>;
    const int64_t N = H * W, C = c_.width, hd = c_.head_dim();
    backend::Buffer<B> t(size_t(N * C)), qkv(size_t(N * 3 * C)), a(size_t(N * C));
    norm1_.forward(x, N, t.data());
    qkv_.forward(t.data(), N, qkv.data());
    // A zero-padded token's q, k and v: the qkv projection of a zero vector, i.e. its bias (attn.qkv
    // always has one).
    Ops::vit_attention(qkv.data(), H, W, c_.heads, hd, global_ ? 0 : c_.window, qkv_.bias(), rel_h, rel_w,
                       1.0f / std::sqrt(float(hd)), a.data());
    proj_.forward(a.data(), N, t.data());
    Ops::add(x, t.data(), N * C);
    norm2_.forward(x, N, t.data());
    backend::Buffer<B> u(size_t(N * c_.mlp_dim));
    lin1_.forward(t.data(), N, u.data());
    Ops::gelu_erf(u.data(), N * c_.mlp_dim);
    lin2_.forward(u.data(), N, t.data());
    Ops::add(x, t.data(), N * C);
  }

  int64_t flops(int64_t H, int64_t W) const {
    const int64_t N = H * W, C = c_.width, K = global_ ? H : c_.window;
    const int64_t regions = global_ ? 1 : ((H + K - 1) / K) * ((W + K - 1) / K), n = global_ ? N : K * K;
    const int64_t attn = regions * c_.heads * (4 * n * n * c_.head_dim() + 2 * n * 2 * K * c_.head_dim());
    return 2 * N * C * (3 * C + C + 2 * c_.mlp_dim) + attn;
  }

 private:
  SamConfig c_;
  bool global_ = false;
  LayerNorm<B> norm1_, norm2_;
  LinearBias<B> qkv_, proj_, lin1_, lin2_;
  backend::Buffer<B> rel_pos_h_, rel_pos_w_;  // [L, hd] f32 copies of the stored tables on B's device
  DType rel_dtype_ = DType::f32;
  bool round_ = false;
};

template <class B>
class SamVit {
 public:
  SamVit() = default;
  // w: view with prefix "model.sam_model." (or any prefix holding the names above).
  SamVit(const io::Weights& w, const SamConfig& c) : c_(c), round_(round_tables(w)), cache_(std::make_shared<Cache>()) {
    if (c.heads < 1 || c.width % c.heads)
      throw Error("SAM width " + std::to_string(c.width) + " is not divisible by heads " + std::to_string(c.heads),
                  at_tensor(w.prefix() + "blocks.0.attn.qkv.weight"));
    patch_embed_ = Conv2d<B>(w, "patch_embed.proj", 3, c.width, c.patch, c.patch, 0, true, ConvInput::chw);
    const TensorView pos = w.get("pos_embed", Shape{1, c.pos_grid, c.pos_grid, c.width}, {DType::f32, DType::bf16, DType::f16});
    pos_dtype_ = pos.dtype();
    pos_embed_ = backend::Ops<B>::vector_f32(pos);
    for (int64_t i = 0; i < c.depth; ++i) blocks_.emplace_back(w.sub("blocks." + std::to_string(i)), c, c.is_global(i));
    neck0_ = Conv2d<B>(w, "neck.0", c.width, c.neck, 1, 1, 0, false);
    neck1_ = LayerNorm2d<B>(w, "neck.1", c.neck, c.eps);
    neck2_ = Conv2d<B>(w, "neck.2", c.neck, c.neck, 3, 1, 1, false);
    neck3_ = LayerNorm2d<B>(w, "neck.3", c.neck, c.eps);
    net_2_ = Conv2d<B>(w, "net_2", c.neck, c.downsample_channels[0], 3, 2, 1, false);
    net_3_ = Conv2d<B>(w, "net_3", c.downsample_channels[0], c.downsample_channels[1], 3, 2, 1, false);
  }

  const SamConfig& config() const { return c_; }

  // pixels [3, S, S] (normalised) -> F_sam [side * side, out_channels] (row-major grid, channels
  // last); returns side. trunk, if given, receives the blocks' output [h * h, width] (before the neck).
  int64_t forward(const float* pixels, int64_t S, backend::Buffer<B>& out, backend::Buffer<B>* trunk = nullptr) const {
    using Ops = backend::Ops<B>;
    check_size(S);
    const int64_t h = c_.grid(S), N = h * h;
    const auto tables = tables_for(h);
    backend::Buffer<B> x;
    patch_embed_.forward_chw(pixels, S, S, x);
    Ops::add(x.data(), tables->pos.empty() ? pos_embed_.data() : tables->pos.data(), N * c_.width);
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const auto& b = blocks_[i];
      const bool native = !b.global() || tables->rel_h[i].empty();
      b.forward(x.data(), h, h, native ? b.rel_pos_h() : tables->rel_h[i].data(), native ? b.rel_pos_w() : tables->rel_w[i].data());
    }
    if (trunk) {
      trunk->resize(size_t(N * c_.width));
      Ops::copy2d(x.data(), c_.width, trunk->data(), c_.width, N, c_.width);
    }
    backend::Buffer<B> y;
    neck0_.forward(x.data(), h, h, y);
    neck1_.forward(y.data(), N, y.data());
    neck2_.forward(y.data(), h, h, x);
    neck3_.forward(x.data(), N, x.data());
    const int64_t h2 = net_2_.out_size(h);
    net_2_.forward(x.data(), h, h, y);
    net_3_.forward(y.data(), h2, h2, out);
    return net_3_.out_size(h2);
  }

  // Multiply-adds x 2 of one forward at input side S.
  int64_t flops(int64_t S) const {
    const int64_t h = c_.grid(S), h2 = net_2_.out_size(h);
    int64_t f = patch_embed_.flops(S, S);
    for (const auto& b : blocks_) f += b.flops(h, h);
    return f + neck0_.flops(h, h) + neck2_.flops(h, h) + net_2_.flops(h, h) + net_3_.flops(h2, h2);
  }

  void check_size(int64_t S) const {
    if (S < c_.patch || S % c_.patch)
      throw Error("SAM input side " + std::to_string(S) + " is not a positive multiple of the patch size " + std::to_string(c_.patch));
  }

 private:
  struct Tables {
    backend::Buffer<B> pos;                         // [h, h, C]; empty when h == pos_grid
    std::vector<backend::Buffer<B>> rel_h, rel_w;   // per block; empty when native or windowed
  };
  struct Cache {
    std::mutex mutex;
    std::map<int64_t, std::shared_ptr<const Tables>> by_grid;
  };

  // Resampled position tables for grid h, computed once per size.
  std::shared_ptr<const Tables> tables_for(int64_t h) const {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    auto& slot = cache_->by_grid[h];
    if (slot) return slot;
    auto t = std::make_shared<Tables>();
    if (h != c_.pos_grid) {
      t->pos.resize(size_t(h * h * c_.width));
      backend::Ops<B>::resize_bicubic_aa(pos_embed_.data(), c_.pos_grid, c_.pos_grid, c_.width, h, h, t->pos.data());
      if (round_) backend::Ops<B>::round_to_dtype(t->pos.data(), h * h * c_.width, pos_dtype_);
    }
    t->rel_h.resize(blocks_.size());
    t->rel_w.resize(blocks_.size());
    for (size_t i = 0; i < blocks_.size(); ++i)
      if (blocks_[i].global() && 2 * h - 1 != blocks_[i].table_length()) blocks_[i].tables_for(h, t->rel_h[i], t->rel_w[i]);
    slot = t;
    return slot;
  }

  SamConfig c_;
  Conv2d<B> patch_embed_;
  backend::Buffer<B> pos_embed_;  // [G, G, C] f32 on B's device
  DType pos_dtype_ = DType::f32;
  bool round_ = false;
  std::vector<SamBlock<B>> blocks_;
  Conv2d<B> neck0_, neck2_, net_2_, net_3_;
  LayerNorm2d<B> neck1_, neck3_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace deepseek::nn
