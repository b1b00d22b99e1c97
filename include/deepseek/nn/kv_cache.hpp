// The per-sequence KV cache, contiguous or paged, f32, bf16 or FP8, behind one view type.
//
// MLA caches only the latent: per token and layer, c_kv = kv_a_layernorm(c) [kv_lora_rank]
// followed by k_pe after RoPE [qk_rope_head_dim] (576 values for V3, vs 40,960 for expanded
// per-head K and V); V3.2 appends the indexer key [index_head_dim]. Plain multi-head attention
// caches K then V [2 * kv_heads * head_dim].
// The row layout, its dtypes and CacheView (what attention reads) are in core/cache_view.hpp.
#pragma once

#include "deepseek/core/cache_view.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::nn {

using deepseek::CacheDType;
using deepseek::CacheView;
using deepseek::cache_dtype_name;
using deepseek::cache_row_bytes;
using deepseek::fp8_scale_count;
using deepseek::kFp8CacheBlock;
using deepseek::parse_cache_dtype;
namespace detail {
using deepseek::detail::fp8_block_scale;
using deepseek::detail::fp8_index_scale;
using deepseek::detail::quantize_fp8;
}  // namespace detail

enum class CacheLayout { contiguous, paged };

namespace detail {
// The rows of a cache or pool: `bytes` on `device` (64-byte aligned); zero in host memory, so a
// row never written reads as 0 (benchmarks attend over such rows), uninitialised elsewhere.
inline Tensor cache_storage(int64_t bytes, Device device) {
  Tensor t = Tensor::empty(DType::u8, Shape{std::max<int64_t>(bytes, 1)}, device);
  if (device == Device::cpu) std::memset(t.data(), 0, size_t(t.nbytes()));
  return t;
}
}  // namespace detail

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
         int64_t fp8_values = 0, int64_t index_fp8 = 0, Device device = Device::cpu)
      : num_layers_(num_layers), width_(width), num_blocks_(num_blocks), block_size_(block_size), dtype_(dtype),
        fp8_values_(dtype == CacheDType::fp8_e4m3 ? fp8_values : 0), index_fp8_(dtype == CacheDType::fp8_e4m3 ? index_fp8 : 0) {
    if (num_layers < 1) throw Error("a KV pool needs at least one layer");
    if (num_blocks < 1 || num_blocks > INT32_MAX) throw Error("a KV pool needs between 1 and 2^31 - 1 blocks, got " + std::to_string(num_blocks));
    if (block_size < 1) throw Error("a KV pool needs block_size >= 1, got " + std::to_string(block_size));
    detail::check_row_layout(dtype, width, fp8_values_, index_fp8_);
    per_layer_ = num_blocks * block_size * cache_row_bytes(dtype, width, fp8_values_, index_fp8_);
    storage_ = detail::cache_storage(per_layer_ * num_layers, device);
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
  Device device() const { return storage_.device(); }

 private:
  friend class KvCache;
  uint8_t* layer_base(int layer) { return storage_.data_as<uint8_t>() + int64_t(layer) * per_layer_; }
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
  Tensor storage_;
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
          int64_t block_size = 16, CacheDType dtype = CacheDType::f32, int64_t fp8_values = 0, int64_t index_fp8 = 0,
          Device device = Device::cpu)
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
    storage_ = detail::cache_storage(per_layer_ * num_layers, device);
    sync_table();
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
    device_table_ = std::move(o.device_table_);
    storage_ = std::move(o.storage_);
    pool_ = std::move(o.pool_);
    o.table_.clear();
    o.device_table_ = Tensor();
    o.storage_ = Tensor();
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
    if (storage_.device() != Device::cpu) throw Error("clone() copies a cache in host memory only");
    c.storage_ = detail::cache_storage(storage_.nbytes(), storage_.device());
    std::memcpy(c.storage_.data(), storage_.data(), size_t(storage_.nbytes()));
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
    sync_table();
    return true;
  }
  // Empties the cache; a pooled cache gives all its blocks back.
  void release() {
    size_ = 0;
    if (!pool_) return;
    for (auto it = table_.rbegin(); it != table_.rend(); ++it) pool_->give_back(*it);
    table_.clear();
    sync_table();
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
    uint8_t* base = pool_ ? pool_->layer_base(layer) : storage_.data_as<uint8_t>() + int64_t(layer) * per_layer_;
    const int32_t* table = table_.empty() ? nullptr : device() == Device::cpu ? table_.data() : device_table_.data_as<int32_t>();
    return CacheView{base, width_, block_size_, table, dtype_, fp8_values_, index_fp8_};
  }
  // The device the rows (and the block table a view hands out) live on.
  Device device() const { return pool_ ? pool_->device() : storage_.device(); }

 private:
  // A cache on a GPU hands its kernels a copy of the block table in device memory, refreshed
  // whenever the table changes (construction, reserve, release).
  void sync_table() {
    if (device() == Device::cpu || table_.empty()) {
      device_table_ = Tensor();
      return;
    }
    device_table_ = Tensor::copy_to(TensorView(table_.data(), DType::i32, Shape{int64_t(table_.size())}), device());
  }

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
  Tensor device_table_;  // table_ in device memory, for a cache off the CPU
  Tensor storage_;       // the rows, on the device the model runs on
  std::shared_ptr<KvPool> pool_;
};

}  // namespace deepseek::nn
