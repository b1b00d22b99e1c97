// Linear layers with a bias, and 2-D convolutions mapped onto the same GEMM (Ops::linear):
//   LinearBias  y = W x + b                          `<name>.weight` [out, in], `<name>.bias` [out]
//   Conv2d      y[o, oy, ox] = sum_{c, ky, kx} W[o, c, ky, kx] x[c, oy s - p + ky, ox s - p + kx] (+ b[o])
//               `<name>.weight` [out, in, k, k] (f32 / bf16), zero padding p, stride s; out size
//               (n + 2p - k) / s + 1. Activations are channels-last ([H*W, C] rows); the convolution is
//               im2col (k x k patches as rows, columns (ky, kx, c)) times the weight permuted once at load
//               to [out, k, k, in], in its stored dtype. A 1x1 convolution is a plain linear over the rows.
//               ConvInput::chw takes a CHW image instead (SAM's patch embedding: k = s = 16, no padding):
//               non-overlapping patches in the weight's own (c, ky, kx) order, a reshape and no copy.
// The permutation is load-time preprocessing of the weight's host bytes (permute_conv_weight): like every
// other matrix, the result is a BlockQuantMatrix in the stored dtype that Ops::linear reads; no activation
// is touched on the host.
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/tensor.hpp"
#include "deepseek/io/weights.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace deepseek::nn {

// Ops::linear over the tokens in chunks: the vision encoder multiplies thousands of tokens at once,
// and the CPU kernels pack all n inputs before sweeping the weight rows; 256 (f32) / 512 (bf16
// activations) tokens keep the packed inputs in L2 (1.3x faster at 4096 tokens on the 2-core EPYC).
template <class B>
void linear_chunked(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
  if (ldx < 0) ldx = W.cols();
  if (ldy < 0) ldy = W.rows();
  const int64_t chunk = W.activations == ActivationDType::bf16 ? 512 : 256;
  for (int64_t t = 0; t < n; t += chunk) backend::Ops<B>::linear(W, x + t * ldx, std::min(chunk, n - t), y + t * ldy, ldx, ldy);
}

// [out, in, k, k] -> [out, k, k, in] (an im2col row (ky, kx, c) meets its weights in order), on the
// host, in the stored dtype (any element size): the weight's bytes before a backend reads them.
inline Tensor permute_conv_weight(const TensorView& v) {
  const int64_t out = v.dim(0), in = v.dim(1), kk = v.dim(2) * v.dim(3);
  Tensor permuted = Tensor::empty(v.dtype(), Shape{out, kk * in});
  const size_t es = size_t(dtype_size(v.dtype()));
  const char* src = static_cast<const char*>(v.data());
  char* dst = static_cast<char*>(permuted.data());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < kk; ++t)
        std::memcpy(dst + size_t((o * kk + t) * in + c) * es, src + size_t((o * in + c) * kk + t) * es, es);
  return permuted;
}

template <class B>
class LinearBias {
 public:
  LinearBias() = default;
  LinearBias(const io::Weights& w, const std::string& name, int64_t out, int64_t in, bool bias = true)
      : W_(w.matrix(name, out, in)) {
    if (bias)
      bias_ = backend::Ops<B>::vector_f32(w.get(name + ".bias", Shape{out}, {DType::f32, DType::bf16, DType::f16}));
  }
  int64_t out_features() const { return W_.rows(); }
  int64_t in_features() const { return W_.cols(); }
  const BlockQuantMatrix& weight() const { return W_; }
  const float* bias() const { return bias_.empty() ? nullptr : bias_.data(); }
  // x [n, in] (row stride ldx) -> y [n, out] (row stride ldy), overwritten.
  void forward(const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) const {
    linear_chunked<B>(W_, x, n, y, ldx, ldy);
    if (!bias_.empty()) backend::Ops<B>::add_bias(y, n, W_.rows(), bias_.data(), ldy);
  }

 private:
  BlockQuantMatrix W_;
  backend::Buffer<B> bias_;  // f32 on B's device; empty without a bias
};

enum class ConvInput { hwc, chw };

template <class B>
class Conv2d {
 public:
  // Output pixels per im2col chunk: bounds the patch buffer (3x3 x 512 channels x 512 = 9 MB).
  static constexpr int64_t kChunkPixels = 512;

  Conv2d() = default;
  Conv2d(const io::Weights& w, const std::string& name, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad,
         bool bias, ConvInput input = ConvInput::hwc)
      : in_(in), out_(out), k_(k), stride_(stride), pad_(pad) {
    const std::string wname = name + ".weight";
    const TensorView v = w.get(wname, Shape{out, in, k, k}, {DType::f32, DType::bf16});
    if (input == ConvInput::chw && (k != stride || pad != 0))
      throw Error("a CHW-input convolution must be a patch embedding (kernel == stride, no padding)", at_tensor(w.prefix() + wname));
    W_.activations = w.activations();
    if (input == ConvInput::hwc && k > 1) {
      permuted_ = permute_conv_weight(v);
      W_.weight = permuted_.view();
    } else {
      W_.weight = v.reshape(Shape{out, in * k * k});
    }
    if (bias)
      bias_ = backend::Ops<B>::vector_f32(w.get(name + ".bias", Shape{out}, {DType::f32, DType::bf16, DType::f16}));
  }

  int64_t in_channels() const { return in_; }
  int64_t out_channels() const { return out_; }
  int64_t out_size(int64_t n) const { return (n + 2 * pad_ - k_) / stride_ + 1; }
  int64_t flops(int64_t H, int64_t W) const { return 2 * out_size(H) * out_size(W) * out_ * in_ * k_ * k_; }

  // Channels-last x [H*W, in] -> y [Ho*Wo, out] (resized).
  void forward(const float* x, int64_t H, int64_t W, backend::Buffer<B>& y) const {
    const int64_t Ho = out_size(H), Wo = out_size(W), np = Ho * Wo;
    y.resize(size_t(np * out_));
    if (k_ == 1 && stride_ == 1 && pad_ == 0) {
      linear_chunked<B>(W_, x, np, y.data());
    } else {
      const int64_t width = k_ * k_ * in_;
      backend::Buffer<B> cols(size_t(std::min(np, kChunkPixels) * width));
      for (int64_t p0 = 0; p0 < np; p0 += kChunkPixels) {
        const int64_t p1 = std::min(np, p0 + kChunkPixels);
        backend::Ops<B>::im2col_hwc(x, H, W, in_, k_, stride_, pad_, Wo, p0, p1, cols.data());
        linear_chunked<B>(W_, cols.data(), p1 - p0, y.data() + p0 * out_);
      }
    }
    if (!bias_.empty()) backend::Ops<B>::add_bias(y.data(), np, out_, bias_.data());
  }

  // CHW image x [in, H, W] (H, W multiples of k) -> channels-last y [(H/k)(W/k), out] (resized).
  void forward_chw(const float* x, int64_t H, int64_t W, backend::Buffer<B>& y) const {
    const int64_t np = (H / k_) * (W / k_);
    backend::Buffer<B> cols(size_t(np * in_ * k_ * k_));
    backend::Ops<B>::patchify_chw(x, in_, H, W, k_, cols.data());
    y.resize(size_t(np * out_));
    linear_chunked<B>(W_, cols.data(), np, y.data());
    if (!bias_.empty()) backend::Ops<B>::add_bias(y.data(), np, out_, bias_.data());
  }

 private:
  int64_t in_ = 0, out_ = 0, k_ = 1, stride_ = 1, pad_ = 0;
  BlockQuantMatrix W_;
  Tensor permuted_;  // owns W_'s bytes when the weight was permuted
  backend::Buffer<B> bias_;  // f32 on B's device; empty without a bias
};

}  // namespace deepseek::nn
