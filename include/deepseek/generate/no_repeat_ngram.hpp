// No-repeat n-gram: a logits processor that forbids any token which would complete an n-gram
// already present in the sequence (transformers' `no_repeat_ngram_size`, NoRepeatNGramLogitsProcessor).
//
//   sequence x_0 .. x_{L-1} (prompt included), n >= 1
//   banned(t)  iff  some i <= L-n has x_i .. x_{i+n-2} == x_{L-n+1} .. x_{L-1} and x_{i+n-1} == t
//   logits[t] = -inf for every banned t; nothing is banned while L + 1 < n
// n = 1 bans every token already in the sequence. DeepSeek-OCR's HF `infer()` runs greedy decoding
// with n = 20 (35 in its eval mode) over the whole sequence, the image placeholder ids included.
// Kept incrementally: each appended token files the (n-1)-gram before it under a hash, so a step
// costs O(n) plus the number of earlier occurrences of the current (n-1)-gram (hash hits are
// compared token by token, so a collision never bans a token).
#pragma once

#include "deepseek/core/error.hpp"

#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

namespace deepseek::generate {

class NoRepeatNGram {
 public:
  explicit NoRepeatNGram(int n) : n_(n) {
    if (n < 1) throw Error("no_repeat_ngram_size must be >= 1, got " + std::to_string(n));
  }
  int size() const { return n_; }
  const std::vector<int32_t>& sequence() const { return seq_; }

  void clear() {
    seq_.clear();
    starts_.clear();
  }
  void push(int32_t id) {
    seq_.push_back(id);
    const int64_t L = int64_t(seq_.size());
    if (L >= n_) starts_[hash(L - n_)].push_back(L - n_);  // the n-gram x_{L-n} .. x_{L-1} is now complete
  }
  void extend(const int32_t* ids, int64_t count) {
    for (int64_t i = 0; i < count; ++i) push(ids[i]);
  }
  void extend(const std::vector<int32_t>& ids) { extend(ids.data(), int64_t(ids.size())); }

  // Token ids the next position may not take (with repeats if several n-grams end in the same id).
  std::vector<int32_t> banned() const {
    std::vector<int32_t> out;
    const int64_t L = int64_t(seq_.size());
    if (L + 1 < n_) return out;
    const int64_t q = L - n_ + 1;  // the current (n-1)-gram starts here
    auto it = starts_.find(hash(q));
    if (it == starts_.end()) return out;
    for (int64_t s : it->second)
      if (same(s, q)) out.push_back(seq_[size_t(s + n_ - 1)]);
    return out;
  }

  // Sets logits[t] = -inf for every banned t; ids outside [0, vocab) are skipped (the model never
  // produced them; a prompt may still hold them).
  void apply(float* logits, int64_t vocab) const {
    for (int32_t t : banned())
      if (t >= 0 && t < vocab) logits[t] = -std::numeric_limits<float>::infinity();
  }

 private:
  // FNV-1a over the n-1 ids starting at s.
  uint64_t hash(int64_t s) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t k = 0; k < n_ - 1; ++k) {
      h ^= uint64_t(uint32_t(seq_[size_t(s + k)]));
      h *= 1099511628211ull;
    }
    return h;
  }
  bool same(int64_t a, int64_t b) const {
    for (int64_t k = 0; k < n_ - 1; ++k)
      if (seq_[size_t(a + k)] != seq_[size_t(b + k)]) return false;
    return true;
  }

  int n_;
  std::vector<int32_t> seq_;
  std::unordered_map<uint64_t, std::vector<int64_t>> starts_;  // hash of an (n-1)-gram -> where n-grams with it start
};

}  // namespace deepseek::generate
