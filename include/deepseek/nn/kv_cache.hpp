// The per-sequence KV cache, contiguous or paged, behind one view type.
//
// MLA caches only the latent: per token and layer, c_kv = kv_a_layernorm(c) [kv_lora_rank]
// followed by k_pe after RoPE [qk_rope_head_dim] (576 values for V3, vs 40,960 for expanded
// per-head K and V). Plain multi-head attention caches K then V [2 * kv_heads * head_dim]. The
// cache holds f32 so decode matches a full recompute exactly.
//
// CacheView is what attention kernels read: row(pos) is the address of one token's values in one
// layer. Contiguous: base + pos * width. Paged: fixed blocks of block_size tokens, placed through
// a block table (logical block -> physical block), as vLLM-style engines hold them; an engine
// that owns its own pool builds a CacheView over it directly.
#pragma once

#include "deepseek/core/error.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::nn {

struct CacheView {
  float* base = nullptr;          // this layer's storage
  int64_t width = 0;              // values per token
  int64_t block_size = 0;         // 0: contiguous
  const int32_t* block_table = nullptr;

  float* row(int64_t pos) const {
    if (block_size == 0) return base + pos * width;
    return base + (int64_t(block_table[pos / block_size]) * block_size + pos % block_size) * width;
  }
};

enum class CacheLayout { contiguous, paged };

class KvCache {
 public:
  KvCache() = default;
  // Storage for `capacity` tokens of `num_layers` layers, `width` values each. A paged cache takes
  // physical blocks from its pool in reverse order, so logical and physical order differ (the
  // tests rely on that to show paging is honoured).
  KvCache(int num_layers, int64_t width, int64_t capacity, CacheLayout layout = CacheLayout::contiguous,
          int64_t block_size = 16)
      : num_layers_(num_layers), width_(width), capacity_(capacity), layout_(layout),
        block_size_(layout == CacheLayout::paged ? block_size : 0) {
    if (capacity < 1) throw Error("KV cache capacity must be at least 1 token");
    if (layout == CacheLayout::paged) {
      if (block_size < 1) throw Error("paged KV cache needs block_size >= 1");
      const int64_t blocks = (capacity + block_size - 1) / block_size;
      for (int64_t i = 0; i < blocks; ++i) table_.push_back(int32_t(blocks - 1 - i));
      per_layer_ = blocks * block_size * width;
    } else {
      per_layer_ = capacity * width;
    }
    storage_.assign(size_t(per_layer_ * num_layers), 0.0f);
  }

  int num_layers() const { return num_layers_; }
  int64_t width() const { return width_; }
  int64_t capacity() const { return capacity_; }
  CacheLayout layout() const { return layout_; }
  int64_t size() const { return size_; }  // tokens stored
  // Sets the number of valid tokens: shrink to roll back rejected speculative tokens; the model
  // grows it after writing new rows.
  void resize(int64_t n) {
    if (n < 0 || n > capacity_)
      throw Error("KV cache size " + std::to_string(n) + " outside [0, " + std::to_string(capacity_) + "]");
    size_ = n;
  }
  void clear() { size_ = 0; }

  CacheView view(int layer) {
    return CacheView{storage_.data() + int64_t(layer) * per_layer_, width_, block_size_, table_.empty() ? nullptr : table_.data()};
  }

 private:
  int num_layers_ = 0;
  int64_t width_ = 0, capacity_ = 0;
  CacheLayout layout_ = CacheLayout::contiguous;
  int64_t block_size_ = 0, per_layer_ = 0, size_ = 0;
  std::vector<int32_t> table_;
  std::vector<float> storage_;
};

}  // namespace deepseek::nn
