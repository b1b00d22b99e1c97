// Ops<cuda>: the CUDA backend under the vocabulary's names (backend/ops.hpp): every primitive the
// text models (MLA, MHA, DSA, MoE, MTP) and the vision encoder use, so nn:: blocks and
// models::DeepSeekV3<cuda> compile for the GPU; nothing falls back to the host. (Until a GPU run of
// bench/cuda/device_check.sh, none of these kernels has run: README, "Building with CUDA".)
// Each primitive keeps the CPU backend's contract and is tested against it (tests/cuda/test_*.cu).
//
// Conventions: activations, Buffers and IndexBuffers on the device; weights (BlockQuantMatrix,
// tables) must be device tensors (io::Weights::on(Device::cuda) uploads them); a CacheView's storage
// and block table are device memory (nn::KvCache keeps a device copy of its table); routing ids and
// DSA selections are device arrays; embedding ids and RoPE's frequencies are host arrays (the
// launchers carry them over). Only all_finite, argmax, the sampling passes and download return to the host (and wait).
#pragma once

#include "deepseek/backend/cuda/buffer.cuh"
#include "deepseek/backend/cuda/cache_rows.cuh"
#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/indexer.cuh"
#include "deepseek/backend/cuda/linear.cuh"
#include "deepseek/backend/cuda/mha_attention.cuh"
#include "deepseek/backend/cuda/mla_attention.cuh"
#include "deepseek/backend/cuda/moe.cuh"
#include "deepseek/backend/cuda/sampling.cuh"
#include "deepseek/backend/cuda/vision_ops.cuh"
#include "deepseek/backend/ops.hpp"
#include "deepseek/core/device.hpp"

namespace deepseek::backend {

template <>
struct Ops<::deepseek::cuda> {
  using Buffer = cuda::Buffer;
  using IndexBuffer = cuda::IndexBuffer;

  static Buffer vector_f32(const TensorView& v) { return cuda::vector_f32(v); }
  static void embedding(const TensorView& table, const int32_t* ids, int64_t n, float* out) { cuda::embedding(table, ids, n, out); }
  static bool all_finite(const float* x, int64_t n) { return cuda::all_finite(x, n); }
  static int32_t argmax(const float* x, int64_t n) { return cuda::argmax(x, n); }
  static void top_logits(const float* x, int64_t n, int64_t k, float* values, int32_t* ids) { cuda::top_logits(x, n, k, values, ids); }
  static double softmax_sum(const float* x, int64_t n, float inv_t) { return cuda::softmax_sum(x, n, inv_t); }
  static int32_t sample_softmax(const float* x, int64_t n, float inv_t, double u) { return cuda::sample_softmax(x, n, inv_t, u); }
  static void download(const float* x, int64_t n, float* host) { cuda::download(x, size_t(n), host); }
  static void download(const int32_t* x, int64_t n, int32_t* host) { cuda::download(x, size_t(n), host); }
  static void upload(const float* host, int64_t n, float* x) { cuda::upload(host, size_t(n), x); }
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
  // MoE (moe.cuh; backend/cpu/moe.hpp's contracts): idx / weight on the device; y overwritten with
  // the shared expert (if any) plus each token's routed experts in ascending expert order.
  static void moe_route(const float* logits, int64_t n, const MoeRouting& r, int* idx, float* weight) {
    cuda::moe_route(logits, n, r, idx, weight);
  }
  static void moe_experts(const ExpertFfn* experts, int E, const ExpertFfn* shared, const float* x, int64_t n, int64_t d,
                          const int* idx, const float* weight, int K, float* y) {
    cuda::moe_experts(experts, E, shared, x, n, d, idx, weight, K, y);
  }
  // MLA's attention orders (mla_attention.cuh; backend/cpu/mla.hpp's contracts); a selection's
  // idx / count are device arrays. Engines with their own block tables: cuda::mla_latent_attention_paged.
  static void mla_expanded_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                                     int64_t p0, const CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                                     int64_t sel_k, float* o) {
    cuda::mla_expanded_attention(kv_b_proj, m, scale, q, n, p0, cache, sel_idx, sel_count, sel_k, o);
  }
  static void mla_tiled_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                                  int64_t p0, const CacheView& cache, float* o) {
    cuda::mla_tiled_attention(kv_b_proj, m, scale, q, n, p0, cache, o);
  }
  static void mla_absorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* q, int64_t n, float* qa) {
    cuda::mla_absorb(kv_b_proj, m, q, n, qa);
  }
  static void mla_unabsorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* ot, int64_t n, float* o) {
    cuda::mla_unabsorb(kv_b_proj, m, ot, n, o);
  }
  static void mla_latent_attention(const MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0, const CacheView& cache,
                                   const int32_t* sel_idx, const int32_t* sel_count, int64_t sel_k, bool bf16_products,
                                   float* ot) {
    cuda::mla_latent_attention(m, scale, qa, n, p0, cache, sel_idx, sel_count, sel_k, bf16_products, ot);
  }
  // The DSA indexer (indexer.cuh; backend/cpu/indexer.hpp's contracts): idx / count on the device.
  static void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps,
                           int64_t p0, const RopeParams& r, bool fp8_hadamard) {
    cuda::indexer_keys(k, n, D, norm_weight, norm_bias, eps, p0, r, fp8_hadamard);
  }
  static void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const RopeParams& r, bool fp8_hadamard) {
    cuda::indexer_queries(q, n, H, D, p0, r, fp8_hadamard);
  }
  static void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                             const CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count) {
    cuda::indexer_select(q, w, n, p0, H, D, scale, cache, col, topk, idx, count);
  }
  // Plain multi-head attention over a K/V cache (mha_attention.cuh).
  static void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                            const CacheView& cache, float* o) {
    cuda::mha_attention(q, n, p0, H, G, hd, scale, cache, o);
  }
  // Vision encoder (vision_ops.cuh; backend/cpu/vision_ops.hpp's contracts).
  static void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad, int64_t Wo,
                         int64_t p0, int64_t p1, float* cols) {
    cuda::im2col_hwc(x, H, W, C, k, stride, pad, Wo, p0, p1, cols);
  }
  static void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
    cuda::patchify_chw(x, C, H, W, p, cols);
  }
  static void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                            const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out) {
    cuda::vit_attention(qkv, H, W, heads, hd, window, pad_qkv, rel_h, rel_w, scale, out);
  }
  static void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out, float* y) {
    cuda::resize_bicubic_aa(x, h_in, w_in, C, h_out, w_out, y);
  }
  static void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y) { cuda::resize_linear(x, L, C, M, y); }
  static void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                                     int64_t ldx = -1, int64_t ldy = -1) {
    cuda::linear_transposed_rows(W, r0, r1, x, n, y, ldx, ldy);
  }
};

}  // namespace deepseek::backend
