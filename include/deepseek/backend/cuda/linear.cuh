// Linear layers on the GPU over weights in their checkpoint dtype: y[t, r - r0] = W[r, :] . x[t, :]
// for r in [r0, r1) (backend/cpu/linear.hpp's contract, tested against its linear_reference).
//
//   gemv   the decode path and every product whose activations are rounded per FP8 block
//          (bf16 activations with FP8 weights: e4m3(W) * bf16(x * s)): one warp per weight row,
//          the row read once for up to kGemvTokens tokens, each weight widened in registers
//          (bf16: a shift; e4m3: its bits, times the 128 x 128 block's scale), f32 FMAs, a
//          warp reduction. Each step of a warp reads 32 consecutive weights (coalesced); wider
//          vector loads and a split over columns for short, wide matrices are the next step.
//   bf16   n > kGemvMaxTokens, bf16 weights with bf16 activations: x rounded to bf16 once, then a
//          tensor-core GEMM (cublasGemmEx, bf16 inputs, f32 accumulation and output). A bf16 x bf16
//          product is exact in f32, so this is the CPU's bf16-activation rule (bf16(x) times W,
//          f32 sums) up to summation order, at tensor-core speed.
//   fp8    n > kGemvMaxTokens, FP8 weights with bf16 activations on sm80+: fp8_gemm.cuh's tensor-core
//          GEMM, e4m3(W) * bf16(x * s) per 128 x 128 block as the GEMV, f32 accumulation (block
//          shapes whose tiles would straddle two scales, e.g. 48 x 48, stay on the GEMV).
//   sgemm  n > kGemvMaxTokens otherwise: the rows are dequantized (exactly) to f32 in slabs of at
//          most kSlabFloats into stream-ordered scratch and multiplied by cuBLAS SGEMM in pedantic
//          mode (no TF32): the same f32 products as the CPU's Eigen path (FP8 weights with f32
//          activations included: their exact rule is e4m3 x scale in f32, which no tensor core forms).
#pragma once

#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/backend/cuda/fp8_gemm.cuh"
#include "deepseek/core/block_quant.hpp"

#include <algorithm>
#include <cstdint>

namespace deepseek::backend::cuda {

namespace kernels {

inline constexpr int kGemvTokens = 8;         // tokens one pass over a weight row serves
inline constexpr int64_t kGemvMaxTokens = 32;  // above: dequantize + SGEMM
inline constexpr int64_t kSlabFloats = int64_t(1) << 26;  // 256 MB of dequantized rows at most

struct WeightArgs {
  const void* w = nullptr;
  const float* scale = nullptr;  // FP8: [ceil(rows / br), ceil(cols / bc)]
  int64_t cols = 0, scale_cols = 0;
  int block_rows = 128, block_cols = 128;
  int dtype = 0;  // 0 f32, 1 bf16, 2 e4m3
};
// The stored weight (FP8: the e4m3 value alone) and the block scale that multiplies it.
__device__ __forceinline__ float weight_raw(const WeightArgs& a, int64_t r, int64_t c) {
  const int64_t i = r * a.cols + c;
  if (a.dtype == 0) return static_cast<const float*>(a.w)[i];
  if (a.dtype == 1) return dev::bf16_to_f32(static_cast<const uint16_t*>(a.w)[i]);
  return dev::f8_e4m3_to_f32(static_cast<const uint8_t*>(a.w)[i]);
}
__device__ __forceinline__ float block_scale(const WeightArgs& a, int64_t r, int64_t c) {
  return a.scale[(r / a.block_rows) * a.scale_cols + c / a.block_cols];
}
// W[r, c] as f32 (exact).
__device__ __forceinline__ float weight_at(const WeightArgs& a, int64_t r, int64_t c) {
  return a.dtype == 2 ? weight_raw(a, r, c) * block_scale(a, r, c) : weight_raw(a, r, c);
}

// One warp per row r0 + blockIdx.x * warps + warp, tokens [t0, t0 + nt) with nt <= kGemvTokens.
// round: bf16 activations (FP8: bf16(x * s) times the e4m3 value; others: bf16(x) times W).
static __global__ void gemv(WeightArgs a, int64_t r0, int64_t r1, const float* x, int64_t ldx, int nt, bool round, float* y,
                     int64_t ldy) {
  const int warps = int(blockDim.x) >> 5, lane = int(threadIdx.x) & 31;
  const int64_t r = r0 + int64_t(blockIdx.x) * warps + (int(threadIdx.x) >> 5);
  if (r >= r1) return;
  float acc[kGemvTokens];
  for (int t = 0; t < kGemvTokens; ++t) acc[t] = 0;
  const bool fp8 = a.dtype == 2;
  for (int64_t c = lane; c < a.cols; c += 32) {
    if (round && fp8) {
      const float w = weight_raw(a, r, c), s = block_scale(a, r, c);
      for (int t = 0; t < nt; ++t) acc[t] = fmaf(w, dev::round_to_bf16(x[t * ldx + c] * s), acc[t]);
    } else {
      const float w = weight_at(a, r, c);
      for (int t = 0; t < nt; ++t) {
        const float xv = x[t * ldx + c];
        acc[t] = fmaf(w, round ? dev::round_to_bf16(xv) : xv, acc[t]);
      }
    }
  }
  for (int t = 0; t < nt; ++t) {
    const float s = dev::warp_sum(acc[t]);
    if (lane == 0) y[t * ldy + (r - r0)] = s;
  }
}

// out[(r - r0) * cols + c] = W[r, c] as f32, rows [r0, r1).
static __global__ void dequantize_rows(WeightArgs a, int64_t r0, int64_t r1, float* out) {
  DEEPSEEK_GRID_STRIDE(i, (r1 - r0) * a.cols) out[i] = weight_at(a, r0 + i / a.cols, i % a.cols);
}
static __global__ void round_rows_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, float* out) {
  DEEPSEEK_GRID_STRIDE(i, n * cols) out[i] = dev::round_to_bf16(x[(i / cols) * ldx + i % cols]);
}
// The same rows as bf16 bits (the tensor-core GEMM's input).
static __global__ void rows_to_bf16(const float* x, int64_t ldx, int64_t n, int64_t cols, uint16_t* out) {
  DEEPSEEK_GRID_STRIDE(i, n * cols) out[i] = dev::f32_to_bf16(x[(i / cols) * ldx + i % cols]);
}
// y[t, c] = sum_{r in [r0, r1)} x[t, r - r0] W[r, c]: one thread per (t, c), coalesced over c.
static __global__ void linear_transposed(WeightArgs a, int64_t r0, int64_t r1, const float* x, int64_t ldx, float* y, int64_t ldy) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, t = blockIdx.y;
  if (c >= a.cols) return;
  float acc = 0;
  for (int64_t r = r0; r < r1; ++r) acc = fmaf(x[t * ldx + (r - r0)], weight_at(a, r, c), acc);
  y[t * ldy + c] = acc;
}

}  // namespace kernels

namespace detail {
inline kernels::WeightArgs weight_args(const BlockQuantMatrix& W, const char* what) {
  require_device(W.weight, what);
  kernels::WeightArgs a;
  a.w = W.weight.data();
  a.cols = W.cols();
  a.block_rows = W.block_rows;
  a.block_cols = W.block_cols;
  switch (W.dtype()) {
    case DType::f32: a.dtype = 0; break;
    case DType::bf16: a.dtype = 1; break;
    case DType::f8_e4m3:
      a.dtype = 2;
      require_device(W.scale_inv, what);
      a.scale = W.scale_inv.data_as<const float>();
      a.scale_cols = W.scale_inv.dim(1);
      break;
    default: throw Error(std::string(what) + ": unsupported weight dtype " + dtype_name(W.dtype()));
  }
  return a;
}
}  // namespace detail

// y[t, r - r0] = W[r, :] . x[t, :] for r in [r0, r1).
inline void linear_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                        int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), rows = r1 - r0;
  if (ldx < 0) ldx = cols;
  if (ldy < 0) ldy = rows;
  if (rows <= 0 || n <= 0) return;
  const kernels::WeightArgs a = detail::weight_args(W, "linear");
  const bool round = W.activations == ActivationDType::bf16, fp8 = W.dtype() == DType::f8_e4m3;
  if (round && fp8 && n > kernels::kGemvMaxTokens && kernels::fp8_gemm_tiles_fit(a.block_rows, a.block_cols) &&
      device_has_bf16_mma()) {
    using Tile = kernels::Fp8GemmTile;
    const int64_t first = (r0 / Tile::BM) * Tile::BM;
    const dim3 grid(unsigned((r1 - first + Tile::BM - 1) / Tile::BM), unsigned((n + Tile::BN - 1) / Tile::BN));
    DEEPSEEK_LAUNCH(fp8_gemm_bf16x<Tile>, grid, Tile::Threads, static_cast<const uint8_t*>(a.w), a.scale, a.cols,
                    a.scale_cols, a.block_rows, a.block_cols, r0, r1, x, ldx, n, y, ldy);
    return;
  }
  if (n <= kernels::kGemvMaxTokens || (round && fp8)) {
    constexpr int kWarps = 8;
    const unsigned grid = unsigned((rows + kWarps - 1) / kWarps);
    for (int64_t t0 = 0; t0 < n; t0 += kernels::kGemvTokens) {
      const int nt = int(std::min<int64_t>(kernels::kGemvTokens, n - t0));
      DEEPSEEK_LAUNCH(gemv, grid, 32 * kWarps, a, r0, r1, x + t0 * ldx, ldx, nt, round, y + t0 * ldy, ldy);
    }
    return;
  }
  if (round && W.dtype() == DType::bf16) {  // tensor cores: x rounded to bf16 once, f32 accumulation
    BasicBuffer<uint16_t> xb(size_t(n * cols));
    DEEPSEEK_LAUNCH(rows_to_bf16, kernels::grid_for(n * cols), kernels::kThreads, x, ldx, n, cols, xb.data());
    cublasHandle_t h = Context::current().cublas();
    const float one = 1.0f, zero = 0.0f;
    // The context's pedantic mode would keep cuBLAS off the tensor cores; the products are exact
    // either way, so only this call allows them.
    DEEPSEEK_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    // Column-major view as below: Y^T[rows, n] (ld ldy) = W_rows (cols x rows, ld cols)^T * X^T (cols x n, ld cols).
    const cublasStatus_t st =
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(n), int(cols), &one,
                     static_cast<const uint16_t*>(W.weight.data()) + r0 * cols, CUDA_R_16BF, int(cols), xb.data(), CUDA_R_16BF,
                     int(cols), &zero, y, CUDA_R_32F, int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    DEEPSEEK_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    DEEPSEEK_CUDA_CHECK(st);
    return;
  }
  Buffer xr;
  if (round) {  // f32 weights with bf16 activations: x rounded once, then exact f32 products (FP8 took the GEMV)
    xr.resize(size_t(n * cols));
    DEEPSEEK_LAUNCH(round_rows_bf16, kernels::grid_for(n * cols), kernels::kThreads, x, ldx, n, cols, xr.data());
    x = xr.data();
    ldx = cols;
  }
  const int64_t slab_rows = std::max<int64_t>(1, std::min(rows, kernels::kSlabFloats / std::max<int64_t>(cols, 1)));
  Buffer slab(size_t(slab_rows * cols));
  const float one = 1.0f, zero = 0.0f;
  for (int64_t i0 = 0; i0 < rows; i0 += slab_rows) {
    const int64_t m = std::min(slab_rows, rows - i0);
    DEEPSEEK_LAUNCH(dequantize_rows, kernels::grid_for(m * cols), kernels::kThreads, a, r0 + i0, r0 + i0 + m, slab.data());
    // Column-major view: Y^T[m, n] (ld ldy) = T^T (T: cols x m, ld cols) * X^T (cols x n, ld ldx).
    DEEPSEEK_CUDA_CHECK(cublasSgemm(Context::current().cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(cols), &one,
                                    slab.data(), int(cols), x, int(ldx), &zero, y + i0, int(ldy)));
  }
}
inline void linear(const BlockQuantMatrix& W, const float* x, int64_t n, float* y, int64_t ldx = -1, int64_t ldy = -1) {
  linear_rows(W, 0, W.rows(), x, n, y, ldx, ldy);
}
// y[t, c] = sum_{r in [r0, r1)} x[t, r - r0] * W[r, c]; x: [n, r1 - r0], y: [n, cols].
inline void linear_transposed_rows(const BlockQuantMatrix& W, int64_t r0, int64_t r1, const float* x, int64_t n, float* y,
                                   int64_t ldx = -1, int64_t ldy = -1) {
  const int64_t cols = W.cols(), k = r1 - r0;
  if (ldx < 0) ldx = k;
  if (ldy < 0) ldy = cols;
  if (n <= 0 || cols <= 0) return;
  const kernels::WeightArgs a = detail::weight_args(W, "linear_transposed_rows");
  const dim3 grid(unsigned((cols + kernels::kThreads - 1) / kernels::kThreads), unsigned(n));
  DEEPSEEK_LAUNCH(linear_transposed, grid, kernels::kThreads, a, r0, r1, x, ldx, y, ldy);
}

}  // namespace deepseek::backend::cuda
