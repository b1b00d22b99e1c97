// BlockQuantMatrix: a [rows, cols] weight matrix in its stored dtype (f32, bf16 or f8_e4m3).
//
// For f8_e4m3, `scale_inv` holds one f32 multiplier per block_rows x block_cols block (the last
// block in each dimension may be partial): W[i, j] = e4m3(Wq[i, j]) * scale_inv[i / br, j / bc].
// DeepSeek's FP8 checkpoints use 128 x 128 blocks. Kernels dequantize on the fly.
// scale_inv either points into the checkpoint's mapping (V3's f32 `weight_scale_inv`) or into
// scale_storage, which a loader fills when the stored scales are another dtype (DeepSeek-V4's
// ue8m0 `.scale` bytes, widened to f32 once at load: 1 value per 16384 weights).
#pragma once

#include "deepseek/core/dtype.hpp"
#include "deepseek/core/tensor.hpp"

namespace deepseek {

// What the input of a product with this matrix is rounded to before the multiply:
//   f32   nothing is rounded: the product is exact up to f32 summation (the default)
//   bf16  x is rounded to bf16 first (FP8 weights: x times the block scale), as torch's bf16
//         linear and llama.cpp's bf16 dot products do; on a CPU with AVX512-BF16 the multiply
//         then runs on bf16 pairs natively (backend/cpu/linear_avx512.hpp), 2-3x the f32 rate
enum class ActivationDType { f32, bf16 };

struct BlockQuantMatrix {
  TensorView weight;     // [rows, cols]
  TensorView scale_inv;  // [ceil(rows / br), ceil(cols / bc)] f32; empty unless weight is f8_e4m3
  Tensor scale_storage;  // owns scale_inv when the loader converted the scales; else empty
  int block_rows = 128, block_cols = 128;
  ActivationDType activations = ActivationDType::f32;

  int64_t rows() const { return weight.dim(0); }
  int64_t cols() const { return weight.dim(1); }
  DType dtype() const { return weight.dtype(); }
  float scale(int64_t r, int64_t c) const {
    return scale_inv.data_as<const float>()[(r / block_rows) * scale_inv.dim(1) + c / block_cols];
  }
  // The exact dequantized value of one element (the plain reference every kernel is tested against).
  float at(int64_t r, int64_t c) const {
    const int64_t i = r * cols() + c;
    switch (dtype()) {
      case DType::f32: return weight.data_as<const float>()[i];
      case DType::bf16: return bf16_to_f32(weight.data_as<const uint16_t>()[i]);
      case DType::f8_e4m3: return f8_e4m3_to_f32(weight.data_as<const uint8_t>()[i]) * scale(r, c);
      default: return 0.0f;  // unreachable: io::Weights admits only the three dtypes above
    }
  }
};

}  // namespace deepseek
