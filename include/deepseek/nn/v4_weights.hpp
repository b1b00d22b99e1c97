// How DeepSeek-V4's blocks take their matrices from a checkpoint: the released names
// (`<name>.weight`, and the mHC tables `hc_*_fn` without a suffix) in f32 or bf16 as stored. The
// release's FP8 linears (f8_e4m3 with a ue8m0 `.scale` per 128 x 128 block) and FP4 experts (I8-packed
// pairs with F8_E8M0 scales per 32) do not run yet: they are refused by name, never converted.
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/weights.hpp"

#include <string>

namespace deepseek::nn {

// `tensor` [rows, cols] (a full name under w's prefix) as a BlockQuantMatrix in f32 / bf16.
inline BlockQuantMatrix v4_tensor_matrix(const io::Weights& w, const std::string& tensor, int64_t rows, int64_t cols) {
  if (w.has(tensor)) {
    const DType dt = w.checkpoint().view(w.prefix() + tensor).dtype();
    if (dt == DType::f8_e4m3 || dt == DType::i8 || dt == DType::u8)
      throw Error(std::string(dt == DType::f8_e4m3 ? "FP8 (f8_e4m3 + ue8m0 .scale)" : "FP4 (packed in ") +
                      (dt == DType::f8_e4m3 ? "" : dtype_name(dt)) + (dt == DType::f8_e4m3 ? "" : ")") +
                      " DeepSeek-V4 weights are not supported yet; convert the checkpoint to bf16",
                  at_tensor(w.prefix() + tensor, w.checkpoint().dir()));
  }
  BlockQuantMatrix m;
  m.activations = w.activations();
  m.weight = w.get(tensor, Shape{rows, cols}, {DType::f32, DType::bf16});
  return m;
}

// `<name>.weight` [rows, cols].
inline BlockQuantMatrix v4_matrix(const io::Weights& w, const std::string& name, int64_t rows, int64_t cols) {
  return v4_tensor_matrix(w, name + ".weight", rows, cols);
}

}  // namespace deepseek::nn
