// Ops<cuda>: the CUDA backend under the vocabulary's names (backend/ops.hpp). What is listed here
// runs on the GPU; a block whose primitives are not all here (MLA's attention orders, the DSA
// indexer, MoE routing and experts, plain attention, the vision encoder's convolutions and
// resamplers) does not compile for `cuda` yet: nothing falls back to the host.
//
// Implemented: vector_f32, embedding, all_finite, fill, add, scale, copy2d, silu_mul, softmax,
// rmsnorm, layernorm, add_bias, gelu_erf, quick_gelu, round_to_dtype, repeat_row, rope,
// store_rows / load_rows, linear / linear_rows / linear_transposed_rows.
// Conventions: activations and Buffers on the device; weights (BlockQuantMatrix, tables) must be
// device tensors (io::Weights::on(Device::cuda) uploads them); a CacheView's storage and block
// table are device memory; embedding ids and RoPE's frequencies are host arrays (the launchers
// carry them over).
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/cache_rows.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/linear.cuh"
#include "deepseek/backend/ops.hpp"
#include "deepseek/core/device.hpp"

namespace deepseek::backend {

template <>
struct Ops<::deepseek::cuda> {
  using Buffer = cuda::Buffer;

  static Buffer vector_f32(const TensorView& v) { return cuda::vector_f32(v); }
  static void embedding(const TensorView& table, const int32_t* ids, int64_t n, float* out) { cuda::embedding(table, ids, n, out); }
  static bool all_finite(const float* x, int64_t n) { return cuda::all_finite(x, n); }
  static void fill(float* y, int64_t n, float v) { cuda::fill(y, n, v); }
  static void add(float* y, const float* x, int64_t n) { cuda::add(y, x, n); }
  static void scale(float* x, int64_t n, float s) { cuda::scale(x, n, s); }
  static void copy2d(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
    cuda::copy2d(src, lds, dst, ldd, rows, cols);
  }
  static void silu_mul(float* g, const float* u, int64_t n) { cuda::silu_mul(g, u, n); }
  static void softmax(float* x, int64_t n) { cuda::softmax(x, n); }
  static void rmsnorm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, int64_t ldx = -1,
                      int64_t ldy = -1) {
    cuda::rmsnorm(x, n, d, w, eps, y, ldx, ldy);
  }
  static void layernorm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y,
                        int64_t ldx = -1, int64_t ldy = -1) {
    cuda::layernorm(x, n, d, w, b, eps, y, ldx, ldy);
  }
  static void add_bias(float* x, int64_t n, int64_t d, const float* bias, int64_t ld = -1) { cuda::add_bias(x, n, d, bias, ld); }
  static void gelu_erf(float* x, int64_t n) { cuda::gelu_erf(x, n); }
  static void quick_gelu(float* x, int64_t n) { cuda::quick_gelu(x, n); }
  static void round_to_dtype(float* x, int64_t n, DType d) { cuda::round_to_dtype(x, n, d); }
  static void repeat_row(const float* row, int64_t d, int64_t n, float* y, int64_t ldy) { cuda::repeat_row(row, d, n, y, ldy); }
  static void rope(float* x, int64_t n, int64_t heads, int64_t ld, int64_t head_stride, int64_t p0, const RopeParams& r) {
    cuda::rope(x, n, heads, ld, head_stride, p0, r);
  }
  static void store_rows(const CacheView& c, int64_t p0, int64_t col, const float* v, int64_t n, int64_t width, int64_t ld) {
    cuda::store_rows(c, p0, col, v, n, width, ld);
  }
  static void load_rows(const CacheView& c, int64_t p0, int64_t col, int64_t n, int64_t width, float* out, int64_t ld) {
    cuda::load_rows(c, p0, col, n, width, out, ld);
  }
  static void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
    cuda::linear(W, x, n, y, ldx, ldy);
  }
  static void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                          int64_t ldx = -1, int64_t ldy = -1) {
    cuda::linear_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
  static void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                                     int64_t ldx = -1, int64_t ldy = -1) {
    cuda::linear_transposed_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
};

}  // namespace deepseek::backend
