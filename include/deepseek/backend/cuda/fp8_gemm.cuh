// FP8 block-scaled GEMM on tensor cores for prefill, under the bf16-activation rule of the CPU and of
// linear.cuh's GEMV:
//
//   y[t, r - r0] = sum_c e4m3(W[r, c]) * bf16(x[t, c] * s[r / block_rows, c / block_cols])   (f32 sums)
//
//   W  [rows, cols] e4m3 (`*.weight`), s = `*.weight_scale_inv` [ceil(rows / br), ceil(cols / bc)],
//   x  [n, cols] f32 (ld ldx), y [n, r1 - r0] f32 (ld ldy).
//
// Why the products are the CPU's: an e4m3 value (3 mantissa bits, exponents 2^-9 .. 2^8) is exact in
// bf16, bf16(x * s) is a bf16 by definition, and the product of two bf16 values is exact in f32. A bf16
// MMA with f32 accumulation therefore forms the same products; only the order of the f32 sums differs.
//
// Why not cuBLASLt's block scaling (CUDA 12.9+, sm90+: 128 x 128 weight blocks): it multiplies e4m3 by
// e4m3, so the activations would be quantized to e4m3 per 1 x 128 group (DeepGEMM's rule), a coarser
// rounding than bf16(x * s) and not the rule the CPU backend and the tests use.
//
// Kept apart, CuTe-style:
//   instruction  MmaBf16 (one warp: D[16 x 16] += A[16 x 16] B[16 x 16], bf16 in, f32 accumulate;
//                nvcuda::wmma, sm80+)
//   traits       Fp8GemmTile: a CTA computes BM weight rows x BN tokens in k-steps of BK, 4 warps in
//                a 2 x 2 grid, each 2 x 2 fragments
//   algorithm    fp8_gemm_bf16x: per k-step, the BM x BK weight tile is widened (exactly) to bf16 in
//                shared memory and the BN x BK activation tile is scaled by the ONE block scale that
//                covers it and rounded to bf16. That a single scale covers a tile is what the tiling
//                guarantees: tiles start at absolute rows that are multiples of BM, BM divides
//                block_rows, and BK divides block_cols. Other block shapes take the GEMV.
// Rows of a tile outside [r0, r1) and columns past cols are zeros, never stored.
// Not tuned yet: no cp.async pipeline, no register double-buffering; bench/cuda measures it.
#pragma once

#include "deepseek/backend/cuda/dtype.cuh"
#include "deepseek/backend/cuda/memory.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace deepseek::backend::cuda {

namespace kernels {

// The instruction.
struct MmaBf16 {
  static constexpr int M = 16, N = 16, K = 16;
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, M, N, K, __nv_bfloat16, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, M, N, K, __nv_bfloat16, nvcuda::wmma::col_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, M, N, K, float>;
#endif
};

// The traits.
struct Fp8GemmTile {
  static constexpr int BM = 64, BN = 64, BK = 32;  // weight rows, tokens, k-step
  static constexpr int WarpsM = 2, WarpsN = 2, Threads = 32 * WarpsM * WarpsN;
  static constexpr int FragsM = BM / WarpsM / MmaBf16::M, FragsN = BN / WarpsN / MmaBf16::N;  // 2 x 2 per warp
  static constexpr int LdAB = BK + 8;  // bf16 elements per smem row: 80 bytes, a multiple of 16 as wmma needs
  static constexpr int LdC = BM + 4;   // floats
};

// Whether a weight's block shape lets every tile see one scale (else the GEMV runs).
inline bool fp8_gemm_tiles_fit(int block_rows, int block_cols) {
  return block_rows % Fp8GemmTile::BM == 0 && block_cols % Fp8GemmTile::BK == 0;
}

// The algorithm. Grid: x over row tiles starting at floor(r0 / BM) * BM, y over token tiles.
// w: e4m3 bytes [rows, cols]; scale [.., scale_cols] per (block_rows x block_cols) block.
template <class Tile>
static __global__ void __launch_bounds__(Tile::Threads)
    fp8_gemm_bf16x(const uint8_t* __restrict__ w, const float* __restrict__ scale, int64_t cols, int64_t scale_cols,
                   int block_rows, int block_cols, int64_t r0, int64_t r1, const float* __restrict__ x, int64_t ldx,
                   int64_t n, float* __restrict__ y, int64_t ldy) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, T = Tile::Threads;
  __shared__ __align__(32) __nv_bfloat16 a_tile[BM * Tile::LdAB];  // [m][k]: row-major A
  __shared__ __align__(32) __nv_bfloat16 b_tile[BN * Tile::LdAB];  // [t][k]: column-major B (K x N)
  __shared__ __align__(32) float c_tile[BN * Tile::LdC];           // [t][m]: column-major C (M x N)

  const int tid = int(threadIdx.x), warp = tid >> 5;
  const int wm = warp / Tile::WarpsN, wn = warp % Tile::WarpsN;
  const int64_t row0 = (r0 / BM) * BM + int64_t(blockIdx.x) * BM;  // absolute weight row of the tile
  const int64_t t0 = int64_t(blockIdx.y) * BN;
  const int64_t scale_row = row0 / block_rows;

  typename MmaBf16::FragC acc[Tile::FragsM][Tile::FragsN];
  for (int i = 0; i < Tile::FragsM; ++i)
    for (int j = 0; j < Tile::FragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < cols; k0 += BK) {
    const float s = scale[scale_row * scale_cols + k0 / block_cols];
    for (int i = tid; i < BM * BK; i += T) {  // 32 consecutive threads read 32 consecutive bytes of a row
      const int m = i / BK, k = i % BK;
      const int64_t r = row0 + m, c = k0 + k;
      const float v = (r >= r0 && r < r1 && c < cols) ? dev::f8_e4m3_to_f32(w[r * cols + c]) : 0.0f;
      a_tile[m * Tile::LdAB + k] = __ushort_as_bfloat16(dev::f32_to_bf16(v));  // exact
    }
    for (int i = tid; i < BN * BK; i += T) {
      const int j = i / BK, k = i % BK;
      const int64_t t = t0 + j, c = k0 + k;
      const float v = (t < n && c < cols) ? x[t * ldx + c] * s : 0.0f;
      b_tile[j * Tile::LdAB + k] = __ushort_as_bfloat16(dev::f32_to_bf16(v));  // bf16(x * s), nearest even
    }
    __syncthreads();
    for (int kk = 0; kk < BK; kk += MmaBf16::K) {
      typename MmaBf16::FragA fa[Tile::FragsM];
      typename MmaBf16::FragB fb[Tile::FragsN];
      for (int i = 0; i < Tile::FragsM; ++i)
        wmma::load_matrix_sync(fa[i], a_tile + ((wm * Tile::FragsM + i) * MmaBf16::M) * Tile::LdAB + kk, Tile::LdAB);
      for (int j = 0; j < Tile::FragsN; ++j)
        wmma::load_matrix_sync(fb[j], b_tile + ((wn * Tile::FragsN + j) * MmaBf16::N) * Tile::LdAB + kk, Tile::LdAB);
      for (int i = 0; i < Tile::FragsM; ++i)
        for (int j = 0; j < Tile::FragsN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // the tiles are refilled next step
  }
  for (int i = 0; i < Tile::FragsM; ++i)
    for (int j = 0; j < Tile::FragsN; ++j)
      wmma::store_matrix_sync(c_tile + ((wn * Tile::FragsN + j) * MmaBf16::N) * Tile::LdC + (wm * Tile::FragsM + i) * MmaBf16::M,
                              acc[i][j], Tile::LdC, wmma::mem_col_major);
  __syncthreads();
  for (int i = tid; i < BM * BN; i += T) {  // coalesced along the output row
    const int j = i / BM, m = i % BM;
    const int64_t r = row0 + m, t = t0 + j;
    if (r >= r0 && r < r1 && t < n) y[t * ldy + (r - r0)] = c_tile[j * Tile::LdC + m];
  }
#else
  __trap();  // the launcher checks the compute capability first
#endif
}

}  // namespace kernels

// Whether the current device has bf16 tensor cores (sm80+): a cheap attribute query per call.
inline bool device_has_bf16_mma() {
  int dev = 0, major = 0;
  DEEPSEEK_CUDA_CHECK(cudaGetDevice(&dev));
  DEEPSEEK_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  return major >= 8;
}

}  // namespace deepseek::backend::cuda
