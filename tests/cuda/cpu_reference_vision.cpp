// Ops<cpu>'s vision primitives behind plain declarations (cpu_reference_vision.hpp) for test_vision_ops.cu.
#include "cpu_reference_vision.hpp"

#include <deepseek/backend/ops.hpp>

namespace cpu_reference::vision {

using Ops = deepseek::backend::Ops<deepseek::cpu>;

void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad, int64_t Wo,
                int64_t p0, int64_t p1, float* cols) {
  Ops::im2col_hwc(x, H, W, C, k, stride, pad, Wo, p0, p1, cols);
}
void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols) {
  Ops::patchify_chw(x, C, H, W, p, cols);
}
void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                   const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out) {
  Ops::vit_attention(qkv, H, W, heads, hd, window, pad_qkv, rel_h, rel_w, scale, out);
}
void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out, float* y) {
  Ops::resize_bicubic_aa(x, h_in, w_in, C, h_out, w_out, y);
}
void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y) { Ops::resize_linear(x, L, C, M, y); }

}  // namespace cpu_reference::vision
