// The per-sequence KV cache, contiguous or paged, f32, bf16 or FP8, behind one view type.
//
// MLA caches only the latent: per token and layer, c_kv = kv_a_layernorm(c) [kv_lora_rank]
// followed by k_pe after RoPE [qk_rope_head_dim] (576 values for V3, vs 40,960 for expanded
// per-head K and V); V3.2 appends the indexer key [index_head_dim]. Plain multi-head attention
// caches K then V [2 * kv_heads * head_dim].
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
#include <memory>
#include <string>
#include <vector>

namespace deepseek::nn {

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

 private:
  // The bf16 part of a row: all of it (bf16) or what follows the FP8 values and scales.
  int64_t bf16_start() const { return dtype == CacheDType::fp8_e4m3 ? fp8_values : 0; }
  int64_t tail_offset() const { return dtype == CacheDType::fp8_e4m3 ? fp8_values + 4 * fp8_scale_count(fp8_values) : 0; }
  // The FP8 suffix: its first column and byte offset (width and the row's end when there is none).
  int64_t suffix_start() const { return width - (dtype == CacheDType::fp8_e4m3 ? index_fp8 : 0); }
  int64_t suffix_offset() const { return tail_offset() + 2 * (suffix_start() - bf16_start()); }
};

enum class CacheLayout { contiguous, paged };

namespace detail {
// The checks every cache storage (a KvCache of its own or a KvPool) makes of its row layout.
inline void check_row_layout(CacheDType dtype, int64_t width, int64_t fp8_values, int64_t index_fp8) {
  if (width < 1) throw Error("a KV cache row needs at least one value");
  if (dtype == CacheDType::fp8_e4m3 && (fp8_values < kFp8CacheBlock || fp8_values % kFp8CacheBlock != 0 || fp8_values > width))
    throw Error("an FP8 KV cache quantizes the MLA latent in blocks of 128 values: kv_lora_rank " +
                std::to_string(fp8_values) + " is not a positive multiple of 128 within the row of " + std::to_string(width));
  // The suffix's scales must stay 4-byte aligned: the bf16 part before it and the suffix itself
  // are whole multiples of 4 bytes.
  const int64_t prefix = dtype == CacheDType::fp8_e4m3 ? fp8_values : 0;
  if (index_fp8 != 0 && (dtype != CacheDType::fp8_e4m3 || index_fp8 < 0 || index_fp8 % 4 != 0 || prefix + index_fp8 > width ||
                         (width - prefix - index_fp8) % 2 != 0))
    throw Error("an FP8 index key of " + std::to_string(index_fp8) + " values does not fit the KV cache row of " +
                std::to_string(width) + " (it needs an FP8 cache, a multiple of 4 values after kv_lora_rank " +
                std::to_string(fp8_values) + " and an even bf16 part)");
}
}  // namespace detail

// A pool of fixed-size blocks shared by the paged caches of many sequences: what a serving
// scheduler owns (generate/scheduler.hpp), as vLLM's block manager. num_blocks blocks of
// block_size rows in every layer; a KvCache made over the pool (KvCache(pool, max_tokens)) takes
// blocks as it grows (KvCache::reserve) and gives them all back when released or destroyed, so
// memory is bounded by the pool, not by the number of sequences. Not thread-safe: one thread (the
// scheduler's) owns the pool and its caches.
class KvPool {
 public:
  KvPool(int num_layers, int64_t width, int64_t num_blocks, int64_t block_size, CacheDType dtype = CacheDType::f32,
         int64_t fp8_values = 0, int64_t index_fp8 = 0)
      : num_layers_(num_layers), width_(width), num_blocks_(num_blocks), block_size_(block_size), dtype_(dtype),
        fp8_values_(dtype == CacheDType::fp8_e4m3 ? fp8_values : 0), index_fp8_(dtype == CacheDType::fp8_e4m3 ? index_fp8 : 0) {
    if (num_layers < 1) throw Error("a KV pool needs at least one layer");
    if (num_blocks < 1 || num_blocks > INT32_MAX) throw Error("a KV pool needs between 1 and 2^31 - 1 blocks, got " + std::to_string(num_blocks));
    if (block_size < 1) throw Error("a KV pool needs block_size >= 1, got " + std::to_string(block_size));
    detail::check_row_layout(dtype, width, fp8_values_, index_fp8_);
    per_layer_ = num_blocks * block_size * cache_row_bytes(dtype, width, fp8_values_, index_fp8_);
    storage_.assign(size_t((per_layer_ * num_layers + 3) / 4), 0.0f);
    // Handed out from the top of the free list: block num_blocks - 1 first, so a cache's logical
    // and physical order differ from the start (the tests rely on that to show paging is honoured).
    for (int64_t b = 0; b < num_blocks; ++b) free_.push_back(int32_t(b));
  }
  KvPool(const KvPool&) = delete;
  KvPool& operator=(const KvPool&) = delete;

  int num_layers() const { return num_layers_; }
  int64_t width() const { return width_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t free_blocks() const { return int64_t(free_.size()); }
  int64_t used_blocks() const { return num_blocks_ - free_blocks(); }
  CacheDType dtype() const { return dtype_; }
  int64_t fp8_values() const { return fp8_values_; }
  int64_t index_fp8() const { return index_fp8_; }
  int64_t bytes() const { return per_layer_ * num_layers_; }
  // Blocks needed for `tokens` rows.
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

 private:
  friend class KvCache;
  uint8_t* layer_base(int layer) { return reinterpret_cast<uint8_t*>(storage_.data()) + int64_t(layer) * per_layer_; }
  int32_t take() {
    const int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  void give_back(int32_t b) { free_.push_back(b); }

  int num_layers_;
  int64_t width_, num_blocks_, block_size_;
  CacheDType dtype_;
  int64_t fp8_values_, index_fp8_, per_layer_ = 0;
  std::vector<int32_t> free_;
  std::vector<float> storage_;
};

class KvCache {
 public:
  KvCache() = default;
  // Storage for `capacity` tokens of `num_layers` layers, `width` values each. A paged cache takes
  // physical blocks from its pool in reverse order, so logical and physical order differ (the
  // tests rely on that to show paging is honoured).
  // An FP8 cache quantizes the first fp8_values of each row (kv_lora_rank: a multiple of 128) and,
  // with index_fp8 > 0, the last index_fp8 (V3.2's index key under the FP8 indexer).
  KvCache(int num_layers, int64_t width, int64_t capacity, CacheLayout layout = CacheLayout::contiguous,
          int64_t block_size = 16, CacheDType dtype = CacheDType::f32, int64_t fp8_values = 0, int64_t index_fp8 = 0)
      : num_layers_(num_layers), width_(width), capacity_(capacity), max_tokens_(capacity), layout_(layout),
        block_size_(layout == CacheLayout::paged ? block_size : 0), dtype_(dtype),
        fp8_values_(dtype == CacheDType::fp8_e4m3 ? fp8_values : 0), index_fp8_(dtype == CacheDType::fp8_e4m3 ? index_fp8 : 0) {
    if (capacity < 1) throw Error("KV cache capacity must be at least 1 token");
    detail::check_row_layout(dtype, width, fp8_values_, index_fp8);
    const int64_t row_bytes = cache_row_bytes(dtype, width, fp8_values_, index_fp8_);
    if (layout == CacheLayout::paged) {
      if (block_size < 1) throw Error("paged KV cache needs block_size >= 1");
      const int64_t blocks = (capacity + block_size - 1) / block_size;
      for (int64_t i = 0; i < blocks; ++i) table_.push_back(int32_t(blocks - 1 - i));
      per_layer_ = blocks * block_size * row_bytes;
    } else {
      per_layer_ = capacity * row_bytes;
    }
    // f32 elements (the type the f32 rows are read through), sized in bytes of the dtype.
    storage_.assign(size_t((per_layer_ * num_layers + 3) / 4), 0.0f);
  }

  // A paged cache over a shared pool, for a sequence of at most max_tokens tokens. It holds no
  // blocks until reserve(); capacity() is then the rows its blocks hold, so a forward can never
  // write past them.
  KvCache(std::shared_ptr<KvPool> pool, int64_t max_tokens)
      : num_layers_(pool ? pool->num_layers() : 0), width_(pool ? pool->width() : 0), max_tokens_(max_tokens),
        layout_(CacheLayout::paged), block_size_(pool ? pool->block_size() : 0), dtype_(pool ? pool->dtype() : CacheDType::f32),
        fp8_values_(pool ? pool->fp8_values() : 0), index_fp8_(pool ? pool->index_fp8() : 0), pool_(std::move(pool)) {
    if (!pool_) throw Error("a pooled KV cache needs a pool");
    if (max_tokens < 1) throw Error("KV cache capacity must be at least 1 token");
    table_.reserve(size_t(pool_->blocks_for(max_tokens)));
  }
  KvCache(KvCache&& o) noexcept { *this = std::move(o); }
  KvCache& operator=(KvCache&& o) noexcept {
    if (this == &o) return *this;
    release();
    copy_shape(o);
    table_ = std::move(o.table_);
    storage_ = std::move(o.storage_);
    pool_ = std::move(o.pool_);
    o.table_.clear();
    o.storage_.clear();
    o.pool_.reset();
    o.capacity_ = o.size_ = 0;
    return *this;
  }
  // Copies are explicit (clone): an implicit one of a pooled cache would hand its blocks to two owners.
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;
  // A deep copy of a cache with its own storage (a pooled cache's rows live in the pool: refused).
  KvCache clone() const {
    if (pool_) throw Error("a pooled KV cache cannot be cloned (its blocks belong to the pool)");
    KvCache c;
    c.copy_shape(*this);
    c.table_ = table_;
    c.storage_ = storage_;
    return c;
  }
  ~KvCache() { release(); }

  int num_layers() const { return num_layers_; }
  int64_t width() const { return width_; }
  // Rows that may be written now: all of them for a cache with its own storage; for a pooled
  // cache, the rows of the blocks it holds (reserve() adds blocks).
  int64_t capacity() const { return capacity_; }
  // The most tokens this cache may ever hold (a pooled cache's bound on reserve).
  int64_t max_tokens() const { return max_tokens_; }
  CacheLayout layout() const { return layout_; }
  CacheDType dtype() const { return dtype_; }
  int64_t row_bytes() const { return cache_row_bytes(dtype_, width_, fp8_values_, index_fp8_); }
  int64_t index_fp8() const { return index_fp8_; }
  // Bytes of storage this cache holds (its blocks of the pool, for a pooled cache).
  int64_t bytes() const { return pool_ ? int64_t(table_.size()) * block_size_ * row_bytes() * num_layers_ : per_layer_ * num_layers_; }
  int64_t size() const { return size_; }  // tokens stored
  bool pooled() const { return pool_ != nullptr; }
  const std::shared_ptr<KvPool>& pool() const { return pool_; }
  int64_t blocks_held() const { return pool_ ? int64_t(table_.size()) : 0; }

  // A pooled cache takes pool blocks until `tokens` rows fit; false (taking nothing) when the pool
  // has too few free blocks. tokens beyond max_tokens() is an error. A cache with its own storage
  // only checks its capacity.
  bool reserve(int64_t tokens) {
    if (tokens < 0 || tokens > max_tokens_)
      throw Error("KV cache reserve of " + std::to_string(tokens) + " tokens outside [0, " + std::to_string(max_tokens_) + "]");
    if (!pool_) return true;
    const int64_t need = pool_->blocks_for(tokens) - int64_t(table_.size());
    if (need <= 0) return true;
    if (need > pool_->free_blocks()) return false;
    for (int64_t i = 0; i < need; ++i) table_.push_back(pool_->take());
    capacity_ = std::min(max_tokens_, int64_t(table_.size()) * block_size_);
    return true;
  }
  // Empties the cache; a pooled cache gives all its blocks back.
  void release() {
    size_ = 0;
    if (!pool_) return;
    for (auto it = table_.rbegin(); it != table_.rend(); ++it) pool_->give_back(*it);
    table_.clear();
    capacity_ = 0;
  }

  // Sets the number of valid tokens: shrink to roll back rejected speculative tokens; the model
  // grows it after writing new rows.
  void resize(int64_t n) {
    if (n < 0 || n > capacity_)
      throw Error("KV cache size " + std::to_string(n) + " outside [0, " + std::to_string(capacity_) + "]");
    size_ = n;
  }
  void clear() { size_ = 0; }

  CacheView view(int layer) {
    if (layer < 0 || layer >= num_layers_) throw Error("KV cache has no layer " + std::to_string(layer));
    uint8_t* base = pool_ ? pool_->layer_base(layer) : reinterpret_cast<uint8_t*>(storage_.data()) + int64_t(layer) * per_layer_;
    return CacheView{base, width_, block_size_, table_.empty() ? nullptr : table_.data(), dtype_, fp8_values_, index_fp8_};
  }

 private:
  // Every member but the rows, the block table and the pool.
  void copy_shape(const KvCache& o) {
    num_layers_ = o.num_layers_;
    width_ = o.width_;
    capacity_ = o.capacity_;
    max_tokens_ = o.max_tokens_;
    layout_ = o.layout_;
    block_size_ = o.block_size_;
    per_layer_ = o.per_layer_;
    size_ = o.size_;
    dtype_ = o.dtype_;
    fp8_values_ = o.fp8_values_;
    index_fp8_ = o.index_fp8_;
  }

  int num_layers_ = 0;
  int64_t width_ = 0, capacity_ = 0, max_tokens_ = 0;
  CacheLayout layout_ = CacheLayout::contiguous;
  int64_t block_size_ = 0, per_layer_ = 0, size_ = 0;
  CacheDType dtype_ = CacheDType::f32;
  int64_t fp8_values_ = 0, index_fp8_ = 0;
  std::vector<int32_t> table_;
  std::vector<float> storage_;
  std::shared_ptr<KvPool> pool_;
};

}  // namespace deepseek::nn
