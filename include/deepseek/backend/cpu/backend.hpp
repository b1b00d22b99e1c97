// The CPU backend's primitive ops under the names every backend shares (Eigen's style: one small
// vocabulary, specialised per backend). Blocks in nn/ call Ops<B>::name(...).
#pragma once

#include "deepseek/backend/cpu/mla_attention.hpp"
#include "deepseek/backend/cpu/indexer_scores.hpp"
#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/cpu/vision_ops.hpp"
#include "deepseek/core/device.hpp"

namespace deepseek::backend {

template <class B>
struct Ops;  // specialised by each backend; an unsupported backend fails to compile here

template <>
struct Ops<::deepseek::cpu> {
  static void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear(W, x, n, y, ldx, ldy);
  }
  static void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                          int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
  static void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n,
                                     float* y, int64_t ldx = -1, int64_t ldy = -1) {
    cpu::linear_transposed_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
  static void rmsnorm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y, int64_t ldx = -1,
                      int64_t ldy = -1) {
    cpu::rmsnorm(x, n, d, w, eps, y, ldx, ldy);
  }
  static void silu_mul(float* g, const float* u, int64_t n) { cpu::silu_mul(g, u, n); }
  static void softmax(float* x, int64_t n) { cpu::softmax(x, n); }
  static float dot(const float* a, const float* b, int64_t n) { return cpu::dot(a, b, n); }
  static void axpy(float a, const float* x, float* y, int64_t n) { cpu::axpy(a, x, y, n); }
  // Absorbed MLA attention over latent cache rows, all heads per pass (mla_attention.hpp).
  using LatentRows = cpu::LatentRows;
  using RowFormat = cpu::RowFormat;
  using KeyFormat = cpu::KeyFormat;
  static void latent_attention(const float* qa, int64_t n, int64_t H, int64_t lora, int64_t rope, float scale,
                               const LatentRows& rows, float* o) {
    cpu::latent_attention(qa, n, H, lora, rope, scale, rows, o);
  }
  // DSA indexer scores of one query against n cached keys, all index heads per key (indexer_scores.hpp).
  static void indexer_scores(const float* q, const float* w, int64_t H, int64_t D, float scale, const void* const* keys,
                             KeyFormat fmt, int64_t n, float* scores) {
    cpu::indexer_scores(q, w, H, D, scale, keys, fmt, n, scores);
  }
  static void online_attention_block(const float* Q, int64_t ldq, int64_t n, int64_t dk, const float* K, int64_t ldk,
                                     const float* V, int64_t ldv, int64_t r, int64_t dv, const int32_t* vis, float scale,
                                     float* m, float* l, float* O, int64_t ldo) {
    cpu::online_attention_block(Q, ldq, n, dk, K, ldk, V, ldv, r, dv, vis, scale, m, l, O, ldo);
  }

  // Vision encoder (vision_ops.hpp): channels-last maps, f32 activations.
  static void layernorm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y,
                        int64_t ldx = -1, int64_t ldy = -1) {
    cpu::layernorm(x, n, d, w, b, eps, y, ldx, ldy);
  }
  static void add_bias(float* x, int64_t n, int64_t d, const float* bias, int64_t ld = -1) { cpu::add_bias(x, n, d, bias, ld); }
  static void add(float* y, const float* x, int64_t n) { cpu::add(y, x, n); }
  static void gelu_erf(float* x, int64_t n) { cpu::gelu_erf(x, n); }
  static void quick_gelu(float* x, int64_t n) { cpu::quick_gelu(x, n); }
  static void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad, int64_t Wo,
                         int64_t p0, int64_t p1, float* cols) {
    cpu::im2col_hwc(x, H, W, C, k, stride, pad, Wo, p0, p1, cols);
  }
  static void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
    cpu::patchify_chw(x, C, H, W, p, cols);
  }
  static void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                            const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out) {
    cpu::vit_attention(qkv, H, W, heads, hd, window, pad_qkv, rel_h, rel_w, scale, out);
  }
  static void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out, float* y) {
    cpu::resize_bicubic_aa(x, h_in, w_in, C, h_out, w_out, y);
  }
  static void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y) { cpu::resize_linear(x, L, C, M, y); }
};

}  // namespace deepseek::backend
