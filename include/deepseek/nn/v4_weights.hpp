// How DeepSeek-V4's blocks take their matrices from a checkpoint: the released names (`<name>.weight`,
// and the mHC tables `hc_*_fn` without a suffix) in f32 or bf16 as stored, or, for `<name>.weight`,
// the release's FP8 linears:
//   W [rows, cols] f8_e4m3 + `<name>.scale` [ceil(rows / br), ceil(cols / bc)] F8_E8M0 (ue8m0: byte b
//   is 2^(b - 127)), W[i, j] = e4m3(Wq[i, j]) * scale[i / br, j / bc], br x bc from
//   quantization_config.weight_block_size (128 x 128 in the release)
// (or V3's f32 `<name>.weight_scale_inv`, read as io::Weights::matrix reads it). The weight stays
// e4m3 in the mapping and the FP8 kernels dequantize it on the fly; the ue8m0 scales are widened to
// f32 once at load into the matrix's own scale_storage. The FP4 experts (I8-packed pairs with
// F8_E8M0 scales per 32) do not run yet: they are refused by name, never converted.
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/weights.hpp"

#include <string>

namespace deepseek::nn {

// `tensor` [rows, cols] (a full name under w's prefix) as a BlockQuantMatrix in f32 / bf16.
inline BlockQuantMatrix v4_tensor_matrix(const io::Weights& w, const std::string& tensor, int64_t rows, int64_t cols) {
  BlockQuantMatrix m;
  m.activations = w.activations();
  m.weight = w.get(tensor, Shape{rows, cols}, {DType::f32, DType::bf16});
  return m;
}

// `<name>.weight` [rows, cols] in f32 / bf16, or f8_e4m3 with its `.scale` (ue8m0) or
// `.weight_scale_inv` (f32) block scales.
inline BlockQuantMatrix v4_matrix(const io::Weights& w, const std::string& name, int64_t rows, int64_t cols) {
  const io::Checkpoint& ck = w.checkpoint();
  const std::string full = w.prefix() + name;
  if (!w.has(name + ".weight")) return w.matrix(name, rows, cols);  // the missing-tensor error
  const DType dt = ck.view(full + ".weight").dtype();
  if (dt == DType::i8 || dt == DType::u8)
    throw Error(std::string("FP4 (packed in ") + dtype_name(dt) +
                    ") DeepSeek-V4 weights are not supported yet; convert the checkpoint to bf16",
                at_tensor(full + ".weight", ck.file_of(full + ".weight")));
  const bool ue8m0 = w.has(name + ".scale"), scale_inv = w.has(name + ".weight_scale_inv");
  if (dt == DType::f8_e4m3 && !ue8m0 && !scale_inv)
    throw Error("f8_e4m3 weight without its block scales (" + full + ".scale in F8_E8M0, or " + full +
                    ".weight_scale_inv in F32)",
                at_tensor(full + ".weight", ck.file_of(full + ".weight")));
  if (!ue8m0) return w.matrix(name, rows, cols);  // f32 / bf16, or FP8 with V3's f32 weight_scale_inv
  if (scale_inv)
    throw Error("both " + full + ".scale and " + full + ".weight_scale_inv are present: which one scales the weight?",
                at_tensor(full + ".scale", ck.file_of(full + ".scale")));
  if (dt != DType::f8_e4m3)
    throw Error(std::string(".scale present but the weight is ") + dtype_name(dt) + ", not f8_e4m3",
                at_tensor(full + ".weight", ck.file_of(full + ".weight")));

  BlockQuantMatrix m;
  m.activations = w.activations();
  m.block_rows = ck.config().quantization.block_rows;
  m.block_cols = ck.config().quantization.block_cols;
  m.weight = w.get(name + ".weight", Shape{rows, cols}, {DType::f8_e4m3});
  const Shape blocks{(rows + m.block_rows - 1) / m.block_rows, (cols + m.block_cols - 1) / m.block_cols};
  const TensorView s = ck.view(full + ".scale");
  const ErrorWhere at_scale = at_tensor(full + ".scale", ck.file_of(full + ".scale"));
  if (s.dtype() != DType::e8m0)
    throw Error(std::string("unsupported dtype ") + dtype_name(s.dtype()) +
                    " for an FP8 block scale (expected F8_E8M0, or F32 under the name weight_scale_inv)",
                at_scale);
  if (s.shape() != blocks)
    throw Error("expected shape " + blocks.str() + " (the weight's " + Shape{rows, cols}.str() + " in " +
                    std::to_string(m.block_rows) + "x" + std::to_string(m.block_cols) +
                    " blocks, from quantization_config.weight_block_size) but the checkpoint has " + s.shape().str(),
                at_scale);
  Tensor f = Tensor::empty(DType::f32, blocks);
  const uint8_t* b = s.data_as<const uint8_t>();
  for (int64_t i = 0; i < blocks.numel(); ++i) {
    if (b[i] == 0xff)  // F8_E8M0's NaN: refused here rather than as NaN logits later
      throw Error("block scale [" + std::to_string(i / blocks.dims[1]) + ", " + std::to_string(i % blocks.dims[1]) +
                      "] is 0xFF, the F8_E8M0 encoding of NaN",
                  at_scale);
    f.data_as<float>()[i] = e8m0_to_f32(b[i]);
  }
  m.scale_storage = w.device() == Device::cpu ? std::move(f) : Tensor::copy_to(f, w.device());
  m.scale_inv = m.scale_storage.view();
  return m;
}

}  // namespace deepseek::nn
