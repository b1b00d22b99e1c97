// CacheView: the layout of one layer's KV cache rows, contiguous or paged, f32, bf16 or FP8 (the
// descriptor every backend's attention kernels and cache writes read; nn/kv_cache.hpp owns the
// storage). store / load here are the plain host reference of the row encoding; a device backend
// writes the same bytes with its own kernels.
//
// Cache dtypes (CacheDType), bytes per row at V3 shapes (576 values):
//   f32        exact: what the transformers fixtures are checked with              2,304
//   bf16       each value rounded to nearest even once, when its row is written     1,152
//              (relative 2^-9); attention widens rows back to f32 exactly and does all
//              arithmetic in f32, so that one rounding is the only error
//   fp8_e4m3   FlashMLA's layout (V3.2's FP8 sparse decoding, tests/quant.py there):   656
//              the first fp8_values (kv_lora_rank = 512) values as e4m3 in blocks of 128, each
//              block x / s with s = 2^ceil(log2(max(amax / 448, 1e-4))) (ue8m0-valued f32);
//              then the block scales as 4 f32; then the rest (k_pe, V3.2's index key) as bf16:
//                [512 x e4m3][4 x f32 scale][64 x bf16 k_pe][index key x bf16]
//              MLA only (plain attention's K/V rows have no latent to quantize)
//              With V3.2's FP8 indexer (IndexerPrecision::fp8_hadamard) the last index_fp8
//              values (the index key, index_head_dim = 128) are FP8 too, as the official
//              inference code caches them (k_cache e4m3 + k_scale_cache): 788 bytes, not 912:
//                [512 x e4m3][4 x f32][64 x bf16 k_pe][128 x e4m3 index key][1 x f32 scale]
//              Their scale is the indexer's act_quant rule, 2^ceil(log2(max(amax, 1e-4) / 448)),
//              not FlashMLA's (whose 1e-4 floor on amax / 448 would coarsen small keys); the
//              indexer stores keys it has already rounded that way, so storing them is exact:
//              such a block's amax is c_max s with c_max in [224, 448] (or under the floor), so
//              the scale found again is s or s / 2, and every c s / (s / 2) = 2c is an e4m3 value.
//
// CacheView is what attention kernels read: row_data(pos) is the address of one token's values in
// one layer (row_bytes() apart; dtype says how to read them). Contiguous: base + pos * row_bytes.
// Paged: fixed blocks of block_size tokens, placed through a block table (logical block ->
// physical block), as vLLM-style engines hold them; an engine that owns its own pool builds a
// CacheView over it directly.
#pragma once

#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace deepseek {

enum class CacheDType { f32, bf16, fp8_e4m3 };

inline constexpr int64_t kFp8CacheBlock = 128;  // values per FP8 scale

inline const char* cache_dtype_name(CacheDType d) {
  return d == CacheDType::f32 ? "f32" : d == CacheDType::bf16 ? "bf16" : "fp8";
}
// f32 scales of an FP8 segment of n values (one per 128, the last block possibly shorter).
inline int64_t fp8_scale_count(int64_t n) { return (n + kFp8CacheBlock - 1) / kFp8CacheBlock; }
// Bytes of a row of `width` values whose first `fp8_values` and last `index_fp8` are quantized
// (fp8_e4m3 only; the values between them are bf16).
inline int64_t cache_row_bytes(CacheDType d, int64_t width, int64_t fp8_values, int64_t index_fp8 = 0) {
  if (d == CacheDType::f32) return 4 * width;
  if (d == CacheDType::bf16) return 2 * width;
  return fp8_values + 4 * fp8_scale_count(fp8_values) + 2 * (width - fp8_values - index_fp8) + index_fp8 +
         4 * fp8_scale_count(index_fp8);
}
// "f32" / "bf16" / "fp8" -> the dtype; anything else is an error naming `what` (a CLI option, a field).
inline CacheDType parse_cache_dtype(const std::string& s, const std::string& what = "cache dtype") {
  if (s == "f32") return CacheDType::f32;
  if (s == "bf16") return CacheDType::bf16;
  if (s == "fp8") return CacheDType::fp8_e4m3;
  throw Error(what + ": unknown cache dtype \"" + s + "\" (expected f32, bf16 or fp8)");
}

namespace detail {
// FlashMLA's scale of one block: 2^ceil(log2(max(amax / 448, 1e-4))), the ceiling taken exactly.
inline float fp8_block_scale(float amax) { return pow2_ceil(std::max(amax / 448.0f, 1e-4f)); }
// The DSA indexer's (V3.2 kernel.py act_quant, ue8m0): 2^ceil(log2(max(amax, 1e-4) / 448)).
inline float fp8_index_scale(float amax) { return pow2_ceil(std::max(amax, 1e-4f) / 448.0f); }
// q[0, n) = e4m3(v / s); the scale rules above keep |v / s| <= 448, the clamp only guards rounding.
inline void quantize_fp8(const float* v, int64_t n, float s, uint8_t* q) {
  for (int64_t j = 0; j < n; ++j) q[j] = f32_to_f8_e4m3(std::clamp(v[j] / s, -448.0f, 448.0f));
}
}  // namespace detail

struct CacheView {
  uint8_t* base = nullptr;        // this layer's storage
  int64_t width = 0;              // values per token
  int64_t block_size = 0;         // 0: contiguous
  const int32_t* block_table = nullptr;
  CacheDType dtype = CacheDType::f32;
  int64_t fp8_values = 0;         // fp8_e4m3: the quantized prefix (kv_lora_rank), a multiple of 128
  int64_t index_fp8 = 0;          // fp8_e4m3: the quantized suffix (V3.2's FP8 index key), or 0

  int64_t row_bytes() const { return cache_row_bytes(dtype, width, fp8_values, index_fp8); }
  uint8_t* row_data(int64_t pos) const {
    if (block_size == 0) return base + pos * row_bytes();
    return base + (int64_t(block_table[pos / block_size]) * block_size + pos % block_size) * row_bytes();
  }
  // The row as f32 values: only for an f32 cache (tests and the plain reference paths use it).
  float* row(int64_t pos) const { return reinterpret_cast<float*>(row_data(pos)); }

  // The address of column col of row pos, for a column outside the FP8 prefix: its values are f32
  // in an f32 cache; in the FP8 suffix (col = its first column), e4m3 bytes followed by their f32
  // scales; bf16 otherwise (what the indexer's key loop reads in place).
  const void* values_at(int64_t pos, int64_t col) const {
    const uint8_t* r = row_data(pos);
    if (dtype == CacheDType::f32) return r + col * 4;
    if (col >= suffix_start()) return r + suffix_offset() + (col - suffix_start());
    return r + tail_offset() + 2 * (col - bf16_start());
  }

  // Writes v[0, n) into row pos at columns [col, col + n), rounding to the cache dtype. In an FP8
  // row the quantized prefix is written in whole 128-value blocks (each block's scale needs all of it).
  void store(int64_t pos, int64_t col, const float* v, int64_t n) const {
    uint8_t* r = row_data(pos);
    if (dtype == CacheDType::f32) {
      std::memcpy(r + col * 4, v, size_t(n) * sizeof(float));
      return;
    }
    int64_t i = 0;
    if (dtype == CacheDType::fp8_e4m3) {
      const int64_t end = std::min(col + n, fp8_values);
      if (col < fp8_values && (col % kFp8CacheBlock != 0 || (end - col) % kFp8CacheBlock != 0))
        throw Error("FP8 KV cache rows are written in whole blocks of 128 quantized values (columns " + std::to_string(col) +
                    " .. " + std::to_string(col + n) + ")");
      float* scales = reinterpret_cast<float*>(r + fp8_values);
      for (int64_t b0 = col; b0 < end; b0 += kFp8CacheBlock) {
        float amax = 0;
        for (int64_t j = 0; j < kFp8CacheBlock; ++j) amax = std::max(amax, std::fabs(v[b0 - col + j]));
        const float s = detail::fp8_block_scale(amax);
        scales[b0 / kFp8CacheBlock] = s;
        detail::quantize_fp8(v + b0 - col, kFp8CacheBlock, s, r + b0);
      }
      i = std::max<int64_t>(0, end - col);
      if (col + n > suffix_start()) {
        if (col + i > suffix_start() || col + n != width)
          throw Error("the FP8 index key of a KV cache row is written whole (columns " + std::to_string(suffix_start()) + " .. " +
                      std::to_string(width) + ")");
        const int64_t j0 = suffix_start() - col;  // v[j0 ..) is the suffix
        uint8_t* q = r + suffix_offset();
        float* qs = reinterpret_cast<float*>(q + index_fp8);
        for (int64_t b0 = 0; b0 < index_fp8; b0 += kFp8CacheBlock) {
          const int64_t b1 = std::min(index_fp8, b0 + kFp8CacheBlock);
          float amax = 0;
          for (int64_t j = b0; j < b1; ++j) amax = std::max(amax, std::fabs(v[j0 + j]));
          const float sc = detail::fp8_index_scale(amax);
          qs[b0 / kFp8CacheBlock] = sc;
          detail::quantize_fp8(v + j0 + b0, b1 - b0, sc, q + b0);
        }
        n = j0;
      }
    }
    uint16_t* h = reinterpret_cast<uint16_t*>(r + tail_offset());
    for (; i < n; ++i) h[col + i - bf16_start()] = f32_to_bf16(v[i]);
  }
  // Reads columns [col, col + n) of row pos as f32 (exact widening; FP8 values times their scale).
  void load(int64_t pos, int64_t col, float* out, int64_t n) const {
    const uint8_t* r = row_data(pos);
    if (dtype == CacheDType::f32) {
      std::memcpy(out, r + col * 4, size_t(n) * sizeof(float));
      return;
    }
    int64_t i = 0;
    if (dtype == CacheDType::fp8_e4m3) {
      const float* scales = reinterpret_cast<const float*>(r + fp8_values);
      for (; i < n && col + i < fp8_values; ++i) out[i] = f8_e4m3_to_f32(r[col + i]) * scales[(col + i) / kFp8CacheBlock];
      const uint8_t* q = r + suffix_offset();
      const float* qs = reinterpret_cast<const float*>(q + index_fp8);
      for (int64_t j = std::max(i, suffix_start() - col); j < n; ++j) {
        const int64_t k = col + j - suffix_start();
        out[j] = f8_e4m3_to_f32(q[k]) * qs[k / kFp8CacheBlock];
      }
      n = std::min(n, std::max(i, suffix_start() - col));
    }
    const uint16_t* h = reinterpret_cast<const uint16_t*>(r + tail_offset());
    for (; i < n; ++i) out[i] = bf16_to_f32(h[col + i - bf16_start()]);
  }

  // The row's parts (device backends read them to write the same bytes).
  // The bf16 part of a row: all of it (bf16) or what follows the FP8 values and scales.
  int64_t bf16_start() const { return dtype == CacheDType::fp8_e4m3 ? fp8_values : 0; }
  int64_t tail_offset() const { return dtype == CacheDType::fp8_e4m3 ? fp8_values + 4 * fp8_scale_count(fp8_values) : 0; }
  // The FP8 suffix: its first column and byte offset (width and the row's end when there is none).
  int64_t suffix_start() const { return width - (dtype == CacheDType::fp8_e4m3 ? index_fp8 : 0); }
  int64_t suffix_offset() const { return tail_offset() + 2 * (suffix_start() - bf16_start()); }
};

}  // namespace deepseek
