// The CPU backend's primitive ops under the names every backend shares (backend/ops.hpp lists the
// vocabulary). Blocks in nn/ call Ops<B>::name(...).
#pragma once

#include "deepseek/backend/ops.hpp"

#include "deepseek/backend/cpu/cache_rows.hpp"
#include "deepseek/backend/cpu/indexer.hpp"
#include "deepseek/backend/cpu/indexer_scores.hpp"
#include "deepseek/backend/cpu/linear.hpp"
#include "deepseek/backend/cpu/mha_attention.hpp"
#include "deepseek/backend/cpu/mla.hpp"
#include "deepseek/backend/cpu/mla_attention.hpp"
#include "deepseek/backend/cpu/rope.hpp"
#include "deepseek/backend/cpu/sampling.hpp"
#include "deepseek/backend/cpu/moe.hpp"
#include "deepseek/backend/cpu/ops.hpp"
#include "deepseek/backend/cpu/v4_ops.hpp"
#include "deepseek/backend/cpu/vision_ops.hpp"
#include "deepseek/core/device.hpp"

namespace deepseek::backend {

template <>
struct Ops<::deepseek::cpu> {
  using Buffer = std::vector<float>;  // host memory is the CPU's device memory
  using IndexBuffer = std::vector<int32_t>;

  static Buffer vector_f32(const TensorView& v) {
    Buffer b(size_t(v.numel()));
    cpu::to_f32(v, b.data());
    return b;
  }
  // out[i] = table[ids[i]] as f32 (a [vocab, d] table in f32 / bf16 / f16; ids checked by the caller).
  static void embedding(const TensorView& table, const int32_t* ids, int64_t n, float* out) {
    cpu::embedding(table, ids, n, out);
  }
  static bool all_finite(const float* x, int64_t n) { return cpu::all_finite(x, n); }
  static int32_t argmax(const float* x, int64_t n) { return int32_t(std::max_element(x, x + n) - x); }
  static void top_logits(const float* x, int64_t n, int64_t k, float* values, int32_t* ids) { cpu::top_logits(x, n, k, values, ids); }
  static double softmax_sum(const float* x, int64_t n, float inv_t) { return cpu::softmax_sum(x, n, inv_t); }
  static int32_t sample_softmax(const float* x, int64_t n, float inv_t, double u) { return cpu::sample_softmax(x, n, inv_t, u); }
  // host[0, n) = x[0, n): a copy (the CPU's device memory is host memory).
  static void download(const float* x, int64_t n, float* host) {
    if (host != x) std::copy(x, x + n, host);
  }
  static void download(const int32_t* x, int64_t n, int32_t* host) {
    if (host != x) std::copy(x, x + n, host);
  }
  static void upload(const float* host, int64_t n, float* x) {
    if (host != x) std::copy(host, host + n, x);
  }

  // MoE (nn/moe.hpp; backend/cpu/moe.hpp): idx / weight [n, top_k] from the router logits [n, E];
  // y [n, d] = shared(x) + sum_k weight[t, k] * expert_{idx[t, k]}(x[t]) (shared: the shared
  // expert's SwiGLU, or null for none), each token's routed experts summed in ascending expert
  // order and then added.
  static void moe_route(const float* logits, int64_t n, const MoeRouting& r, int* idx, float* weight) {
    cpu::moe_route(logits, n, r, idx, weight);
  }
  static void moe_experts(const ExpertFfn* experts, int E, const ExpertFfn* shared, const float* x, int64_t n,
                          int64_t d, const int* idx, const float* weight, int K, float* y) {
    cpu::moe_experts(experts, E, shared, x, n, d, idx, weight, K, y);
  }
  static void fill(float* y, int64_t n, float v) { cpu::fill(y, n, v); }  // y[0:n) = v
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
  static void scale(float* x, int64_t n, float s) {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
  }
  // dst[r * ldd + c] = src[r * lds + c] for r < rows, c < cols.
  static void copy2d(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) std::copy(src + r * lds, src + r * lds + cols, dst + r * ldd);
  }

  // RoPE (backend/cpu/rope.hpp): vector h of row t at x + t * ld + h * head_stride, position p0 + t.
  static void rope(float* x, int64_t n, int64_t heads, int64_t ld, int64_t head_stride, int64_t p0, const RopeParams& r) {
    cpu::rope(x, n, heads, ld, head_stride, p0, r);
  }
  // KV cache rows p0 .. p0 + n - 1, columns [col, col + width) (backend/cpu/cache_rows.hpp).
  static void store_rows(const CacheView& c, int64_t p0, int64_t col, const float* v, int64_t n, int64_t width, int64_t ld) {
    cpu::store_rows(c, p0, col, v, n, width, ld);
  }
  static void load_rows(const CacheView& c, int64_t p0, int64_t col, int64_t n, int64_t width, float* out, int64_t ld) {
    cpu::load_rows(c, p0, col, n, width, out, ld);
  }

  // MLA's attention orders (backend/cpu/mla.hpp).
  static void mla_expanded_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                                     int64_t p0, const CacheView& cache, const int32_t* sel_idx, const int32_t* sel_count,
                                     int64_t sel_k, float* o) {
    cpu::mla_expanded_attention(kv_b_proj, m, scale, q, n, p0, cache, sel_idx, sel_count, sel_k, o);
  }
  static void mla_tiled_attention(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, float scale, const float* q, int64_t n,
                                  int64_t p0, const CacheView& cache, float* o) {
    cpu::mla_tiled_attention(kv_b_proj, m, scale, q, n, p0, cache, o);
  }
  static void mla_absorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* q, int64_t n, float* qa) {
    cpu::mla_absorb(kv_b_proj, m, q, n, qa);
  }
  static void mla_unabsorb(const BlockQuantMatrix& kv_b_proj, const MlaDims& m, const float* ot, int64_t n, float* o) {
    cpu::mla_unabsorb(kv_b_proj, m, ot, n, o);
  }
  static void mla_latent_attention(const MlaDims& m, float scale, const float* qa, int64_t n, int64_t p0, const CacheView& cache,
                                   const int32_t* sel_idx, const int32_t* sel_count, int64_t sel_k, bool bf16_products,
                                   float* ot) {
    cpu::mla_latent_attention(m, scale, qa, n, p0, cache, sel_idx, sel_count, sel_k, bf16_products, ot);
  }

  // The DSA indexer (backend/cpu/indexer.hpp).
  static void indexer_keys(float* k, int64_t n, int64_t D, const float* norm_weight, const float* norm_bias, float eps,
                           int64_t p0, const RopeParams& r, bool fp8_hadamard) {
    cpu::indexer_keys(k, n, D, norm_weight, norm_bias, eps, p0, r, fp8_hadamard);
  }
  static void indexer_queries(float* q, int64_t n, int64_t H, int64_t D, int64_t p0, const RopeParams& r, bool fp8_hadamard) {
    cpu::indexer_queries(q, n, H, D, p0, r, fp8_hadamard);
  }
  static void indexer_select(const float* q, const float* w, int64_t n, int64_t p0, int64_t H, int64_t D, float scale,
                             const CacheView& cache, int64_t col, int64_t topk, int32_t* idx, int32_t* count) {
    cpu::indexer_select(q, w, n, p0, H, D, scale, cache, col, topk, idx, count);
  }

  // DeepSeek-V4 (backend/cpu/v4_ops.hpp states each contract; nn/mhc.hpp, v4_compressor.hpp,
  // v4_attention.hpp, v4_moe.hpp the math). No CUDA twins yet: nothing in Ops<cuda> names V4.
  static void hc_mix(const float* mix, int64_t n, int64_t hc, const float* scale, const float* base, int iters, float eps,
                     float* pre, float* post, float* comb) {
    cpu::hc_mix(mix, n, hc, scale, base, iters, eps, pre, post, comb);
  }
  static void hc_head_mix(const float* mix, int64_t n, int64_t hc, const float* scale, const float* base, float eps, float* pre) {
    cpu::hc_head_mix(mix, n, hc, scale, base, eps, pre);
  }
  static void hc_collapse(const float* pre, const float* X, int64_t n, int64_t hc, int64_t d, float* y) {
    cpu::hc_collapse(pre, X, n, hc, d, y);
  }
  static void hc_expand(const float* post, const float* comb, const float* f, int64_t n, int64_t hc, int64_t d, float* X) {
    cpu::hc_expand(post, comb, f, n, hc, d, X);
  }
  static void v4_compress(const float* a, const float* z, int64_t ld, int64_t w0, int64_t nb, int64_t m, int64_t Dc, bool overlap,
                          const float* norm_w, float eps, const RopeParams& rope, float* out) {
    cpu::v4_compress(a, z, ld, w0, nb, m, Dc, overlap, norm_w, eps, rope, out);
  }
  static void v4_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t D, float scale, const float* keys,
                           int64_t kpos0, int64_t nk, int64_t W, const float* comp, int64_t m, const int32_t* sel_idx,
                           const int32_t* sel_count, int64_t sel_k, const float* sinks, float* o) {
    cpu::v4_attention(q, n, p0, H, D, scale, keys, kpos0, nk, W, comp, m, sel_idx, sel_count, sel_k, sinks, o);
  }
  static void v4_indexer_select(const float* q, const float* wt, int64_t n, int64_t p0, int64_t nI, int64_t c, float scale,
                                const float* keys, int64_t m, int64_t topk, int32_t* idx, int32_t* count) {
    cpu::v4_indexer_select(q, wt, n, p0, nI, c, scale, keys, m, topk, idx, count);
  }
  static void v4_route(const float* logits, int64_t n, int E, int K, bool sigmoid, const float* bias, const int64_t* tid2eid,
                       const int32_t* ids, float routed_scaling_factor, int* idx, float* weight) {
    cpu::v4_route(logits, n, E, K, sigmoid, bias, tid2eid, ids, routed_scaling_factor, idx, weight);
  }
  static void v4_moe_experts(const ExpertFfn* experts, int E, const ExpertFfn& shared, const float* x, int64_t n, int64_t d,
                             const int* idx, const float* weight, int K, float limit, float* y) {
    cpu::v4_moe_experts(experts, E, shared, x, n, d, idx, weight, K, limit, y);
  }

  // Plain multi-head attention over a K/V cache (backend/cpu/mha_attention.hpp).
  static void mha_attention(const float* q, int64_t n, int64_t p0, int64_t H, int64_t G, int64_t hd, float scale,
                            const CacheView& cache, float* o) {
    cpu::mha_attention(q, n, p0, H, G, hd, scale, cache, o);
  }
  // Vision encoder (vision_ops.hpp): channels-last maps, f32 activations.
  // x[0:n) rounded to d's precision in place (bf16 / f16; other dtypes leave x): resampled tables.
  static void round_to_dtype(float* x, int64_t n, DType d) { cpu::round_to_dtype(x, n, d); }
  // y[r * ldy + c] = row[c] for r < n, c < d (one row repeated: OCR's newline / separator rows).
  static void repeat_row(const float* row, int64_t d, int64_t n, float* y, int64_t ldy) { cpu::repeat_row(row, d, n, y, ldy); }
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
