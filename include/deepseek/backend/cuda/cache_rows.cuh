// KV cache row writes and reads on the GPU: the bytes of core/cache_view.hpp's encoding (f32, bf16,
// FlashMLA's FP8 layout with V3.2's FP8 index key), written by kernels. The CacheView's storage and
// block table are device memory. One 128-thread block per row: each FP8 block of 128 values is one
// value per thread, its amax one block reduction, so the scale and every e4m3 byte equal what
// CacheView::store writes (tests/cuda/test_ops.cpp compares the bytes).
#pragma once

#include "deepseek/backend/cuda/elementwise.cuh"
#include "deepseek/core/cache_view.hpp"

#include <cstdint>
#include <string>

namespace deepseek::backend::cuda {

namespace kernels {

// The offsets of a row's parts (CacheView's), as plain values a kernel takes.
struct RowLayout {
  int64_t row_bytes, fp8_values, index_fp8, width, tail_offset, suffix_start, suffix_offset;
  int dtype;  // 0 f32, 1 bf16, 2 fp8_e4m3
};
inline RowLayout row_layout(const CacheView& c) {
  const bool fp8 = c.dtype == CacheDType::fp8_e4m3;
  return RowLayout{c.row_bytes(),       fp8 ? c.fp8_values : 0, fp8 ? c.index_fp8 : 0, c.width,
                   c.tail_offset(),     c.suffix_start(),       c.suffix_offset(),
                   c.dtype == CacheDType::f32 ? 0 : c.dtype == CacheDType::bf16 ? 1 : 2};
}
__device__ __forceinline__ uint8_t* row_ptr(uint8_t* base, int64_t block_size, const int32_t* table, int64_t row_bytes,
                                            int64_t pos) {
  if (block_size == 0) return base + pos * row_bytes;
  return base + (int64_t(table[pos / block_size]) * block_size + pos % block_size) * row_bytes;
}

// Rows p0 + blockIdx.x; columns [col, col + n); blockDim.x == 128.
static __global__ void store_rows(uint8_t* base, int64_t block_size, const int32_t* table, RowLayout l, int64_t p0, int64_t col,
                           const float* v, int64_t n, int64_t ld) {
  uint8_t* r = row_ptr(base, block_size, table, l.row_bytes, p0 + blockIdx.x);
  const float* vr = v + int64_t(blockIdx.x) * ld;
  if (l.dtype == 0) {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) reinterpret_cast<float*>(r)[col + j] = vr[j];
    return;
  }
  if (l.dtype == 1) {
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) reinterpret_cast<uint16_t*>(r)[col + j] = dev::f32_to_bf16(vr[j]);
    return;
  }
  // FP8 prefix: whole blocks of 128 (checked by the launcher), scale 2^ceil(log2(max(amax / 448, 1e-4))).
  const int64_t end = col + n < l.fp8_values ? col + n : l.fp8_values;
  for (int64_t b0 = col; b0 < end; b0 += 128) {
    const float x = vr[b0 - col + threadIdx.x];
    const float amax = dev::block_max(fabsf(x));
    const float s = dev::pow2_ceil(fmaxf(amax / 448.0f, 1e-4f));
    if (threadIdx.x == 0) reinterpret_cast<float*>(r + l.fp8_values)[b0 / 128] = s;
    r[b0 + threadIdx.x] = dev::f32_to_f8_e4m3(fminf(fmaxf(x / s, -448.0f), 448.0f));
  }
  // bf16 middle: columns [max(col, fp8_values), min(col + n, suffix_start)).
  uint16_t* h = reinterpret_cast<uint16_t*>(r + l.tail_offset);
  const int64_t m0 = col > l.fp8_values ? col : l.fp8_values, m1 = col + n < l.suffix_start ? col + n : l.suffix_start;
  for (int64_t j = m0 + threadIdx.x; j < m1; j += blockDim.x) h[j - l.fp8_values] = dev::f32_to_bf16(vr[j - col]);
  // FP8 suffix (the index key, written whole): scale 2^ceil(log2(max(amax, 1e-4) / 448)) per 128.
  if (col + n > l.suffix_start) {
    uint8_t* q = r + l.suffix_offset;
    float* qs = reinterpret_cast<float*>(q + l.index_fp8);
    const float* vs = vr + (l.suffix_start - col);
    for (int64_t b0 = 0; b0 < l.index_fp8; b0 += 128) {
      const int64_t j = b0 + threadIdx.x;
      const bool in = j < l.index_fp8;
      const float x = in ? vs[j] : 0.0f;
      const float amax = dev::block_max(fabsf(x));
      const float s = dev::pow2_ceil(fmaxf(amax, 1e-4f) / 448.0f);
      if (threadIdx.x == 0) qs[b0 / 128] = s;
      if (in) q[j] = dev::f32_to_f8_e4m3(fminf(fmaxf(x / s, -448.0f), 448.0f));
    }
  }
}

// out[t * ld + j] = column col + j of row p0 + t as f32 (exact), one block per row.
static __global__ void load_rows(const uint8_t* base, int64_t block_size, const int32_t* table, RowLayout l, int64_t p0, int64_t col,
                          int64_t n, float* out, int64_t ld) {
  const uint8_t* r = row_ptr(const_cast<uint8_t*>(base), block_size, table, l.row_bytes, p0 + blockIdx.x);
  float* o = out + int64_t(blockIdx.x) * ld;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const int64_t c = col + j;
    float v;
    if (l.dtype == 0)
      v = reinterpret_cast<const float*>(r)[c];
    else if (l.dtype == 1)
      v = dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(r)[c]);
    else if (c < l.fp8_values)
      v = dev::f8_e4m3_to_f32(r[c]) * reinterpret_cast<const float*>(r + l.fp8_values)[c / 128];
    else if (c >= l.suffix_start) {
      const uint8_t* q = r + l.suffix_offset;
      const int64_t k = c - l.suffix_start;
      v = dev::f8_e4m3_to_f32(q[k]) * reinterpret_cast<const float*>(q + l.index_fp8)[k / 128];
    } else
      v = dev::bf16_to_f32(reinterpret_cast<const uint16_t*>(r + l.tail_offset)[c - l.fp8_values]);
    o[j] = v;
  }
}

}  // namespace kernels

// Rows p0 .. p0 + n - 1, columns [col, col + width) <- v[t * ld, + width) in the cache dtype. The
// same whole-block rules as CacheView::store, checked here on the host.
inline void store_rows(const CacheView& c, int64_t p0, int64_t col, const float* v, int64_t n, int64_t width, int64_t ld) {
  if (n <= 0 || width <= 0) return;
  const kernels::RowLayout l = kernels::row_layout(c);
  if (l.dtype == 2) {
    const int64_t end = std::min(col + width, l.fp8_values);
    if (col < l.fp8_values && (col % kFp8CacheBlock != 0 || (end - col) % kFp8CacheBlock != 0))
      throw Error("FP8 KV cache rows are written in whole blocks of 128 quantized values (columns " + std::to_string(col) +
                  " .. " + std::to_string(col + width) + ")");
    if (col + width > l.suffix_start && (col > l.suffix_start || col + width != l.width))
      throw Error("the FP8 index key of a KV cache row is written whole (columns " + std::to_string(l.suffix_start) + " .. " +
                  std::to_string(l.width) + ")");
  }
  DEEPSEEK_LAUNCH(store_rows, unsigned(n), 128, c.base, c.block_size, c.block_table, l, p0, col, v, width, ld);
}
inline void load_rows(const CacheView& c, int64_t p0, int64_t col, int64_t n, int64_t width, float* out, int64_t ld) {
  if (n <= 0 || width <= 0) return;
  DEEPSEEK_LAUNCH(load_rows, unsigned(n), 128, c.base, c.block_size, c.block_table, kernels::row_layout(c), p0, col, width, out, ld);
}

}  // namespace deepseek::backend::cuda
