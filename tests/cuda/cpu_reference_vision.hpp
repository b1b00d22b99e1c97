// Host wrappers over Ops<cpu>'s vision primitives (backend/cpu/vision_ops.hpp), compiled by g++ in
// cpu_reference_vision.cpp so the .cu tests compare with the CPU backend without Eigen in nvcc.
// Same arguments and layouts as the primitives; every pointer is host memory.
#pragma once

#include <cstdint>

namespace cpu_reference::vision {

void im2col_hwc(const float* x, int64_t H, int64_t W, int64_t C, int64_t k, int64_t stride, int64_t pad, int64_t Wo,
                int64_t p0, int64_t p1, float* cols);
void patchify_chw(const float* x, int64_t C, int64_t H, int64_t W, int64_t p, float* cols);
void vit_attention(const float* qkv, int64_t H, int64_t W, int64_t heads, int64_t hd, int64_t window,
                   const float* pad_qkv, const float* rel_h, const float* rel_w, float scale, float* out);
void resize_bicubic_aa(const float* x, int64_t h_in, int64_t w_in, int64_t C, int64_t h_out, int64_t w_out, float* y);
void resize_linear(const float* x, int64_t L, int64_t C, int64_t M, float* y);

}  // namespace cpu_reference::vision
