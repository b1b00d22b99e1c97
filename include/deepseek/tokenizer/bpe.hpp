// Byte-level BPE model: vocab, merge ranks, the GPT-2 byte alphabet and the merge loop.
//
// A pre-tokenized piece is UTF-8 bytes; each byte b starts as the token of its ByteLevel symbol
// (bytes_to_unicode, spec §8.4), so the model works on token ids, never on symbol strings. The
// merge table maps an adjacent pair (left id, right id) to (rank, merged id); merging repeatedly
// takes the lowest-rank pair, leftmost on ties (HF `Word::merge_all`). Two implementations of that
// rule: a quadratic scan for short pieces (nearly all of them; no allocation, cache friendly) and a
// heap with lazy invalidation (HF's algorithm) for long ones, so a 1 MB "word" stays O(n log n).
// Decoding uses, per id, the bytes the HF ByteLevel decoder produces for that token.
#pragma once

#include <deepseek/core/checked.hpp>
#include <deepseek/core/error.hpp>
#include <deepseek/core/limits.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace deepseek::tokenizer {

// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 + k in increasing byte order.
inline std::array<uint32_t, 256> byte_level_alphabet() {
  std::array<uint32_t, 256> table{};
  uint32_t next = 0x100;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : next++;
  }
  return table;
}

// Open-addressing hash map from a 64-bit pair key to a 64-bit value; built once, read-only after.
class PairMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, 0);
    mask_ = cap - 1;
  }
  // Inserts or overwrites.
  void assign(uint64_t key, uint64_t value) {
    size_t h = slot(key);
    while (keys_[h] != kEmpty && keys_[h] != key) h = (h + 1) & mask_;
    keys_[h] = key;
    values_[h] = value;
  }
  const uint64_t* find(uint64_t key) const {
    size_t h = slot(key);
    while (true) {
      const uint64_t k = keys_[h];
      if (k == key) return &values_[h];
      if (k == kEmpty) return nullptr;
      h = (h + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  size_t slot(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  std::vector<uint64_t> keys_, values_;
  size_t mask_ = 0;
};

class Bpe {
 public:
  static constexpr uint32_t kNoRank = 0xFFFFFFFFu;
  // Ids are dense table indices; real vocabularies stay far below this (DeepSeek: 129,280 rows).
  static constexpr uint64_t kMaxId = uint64_t(kMaxVocab);

  // Parses tokenizer.json's "model" (type BPE). Options that would change ids and that we do not
  // implement are rejected by name.
  static Bpe from_json(const nlohmann::json& m, const std::string& file) {
    if (!m.is_object() || m.value("type", "") != "BPE")
      throw Error("model type '" + excerpt(m.is_object() ? m.value("type", "") : std::string()) + "' is not supported (only BPE)", at_field("model.type", file));
    auto reject_non_null = [&](const char* key, const char* why) {
      if (m.contains(key) && !m[key].is_null()) throw Error(std::string("BPE option ") + key + " is not supported (" + why + ")", at_field(std::string("model.") + key, file));
    };
    reject_non_null("dropout", "BPE dropout is random");
    reject_non_null("continuing_subword_prefix", "subword prefixes are not byte-level BPE");
    reject_non_null("end_of_word_suffix", "word suffixes are not byte-level BPE");
    Bpe bpe;
    bpe.ignore_merges_ = m.value("ignore_merges", false);
    if (!m.contains("vocab") || !m["vocab"].is_object()) throw Error("BPE model without a vocab object", at_field("model.vocab", file));
    const auto& vocab = m["vocab"];
    bpe.token_to_id_.reserve(vocab.size());
    uint32_t max_id = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_unsigned() || it.value().get<uint64_t>() >= kMaxId)
        throw Error("vocab id of '" + excerpt(it.key()) + "' is not an integer in [0, 2^24)", at_field("model.vocab", file));
      const uint32_t id = it.value().get<uint32_t>();
      bpe.token_to_id_.emplace(it.key(), id);
      max_id = std::max(max_id, id + 1);
    }
    bpe.id_to_token_.assign(max_id, std::string());
    bpe.has_id_.assign(max_id, 0);
    // Two tokens with one id would make decode depend on hash order (HF keeps whichever its
    // reverse map saw last): refused. (A key given twice is refused by the JSON parser.)
    for (const auto& [tok, id] : bpe.token_to_id_) {
      if (bpe.has_id_[id])
        throw Error("vocab id " + std::to_string(id) + " is shared by '" + excerpt(bpe.id_to_token_[id]) + "' and '" + excerpt(tok) + "'",
                    at_field("model.vocab", file));
      bpe.id_to_token_[id] = tok;
      bpe.has_id_[id] = 1;
    }
    bpe.span_.assign(max_id, 0);
    for (uint32_t id = 0; id < max_id; ++id)
      for (const char c : bpe.id_to_token_[id]) bpe.span_[id] += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    // Byte alphabet: every one of the 256 symbols must be a token, else some inputs could not be
    // encoded (HF would drop or <unk> them); we refuse such a file instead.
    const auto alphabet = byte_level_alphabet();
    for (uint32_t b = 0; b < 256; ++b) {
      std::string sym;
      unicode_append(sym, alphabet[b]);
      auto it = bpe.token_to_id_.find(sym);
      if (it == bpe.token_to_id_.end())
        throw Error("vocab lacks the byte-level symbol for byte " + std::to_string(b) + " (not a byte-level BPE vocab)", at_field("model.vocab", file));
      bpe.byte_to_id_[b] = it->second;
      bpe.symbol_to_byte_.emplace(alphabet[b], static_cast<uint8_t>(b));
    }
    if (!m.contains("merges") || !m["merges"].is_array()) throw Error("BPE model without a merges array", at_field("model.merges", file));
    const auto& merges = m["merges"];
    bpe.merges_.reserve(merges.size());
    uint32_t rank = 0;
    for (const auto& e : merges) {
      std::string a, b;
      const std::string field = "model.merges[" + std::to_string(rank) + "]";
      if (e.is_string()) {  // "a b" (older files)
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error("merge '" + excerpt(s) + "' is not two space-separated symbols", at_field(field, file));
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        throw Error("merge entry is neither \"a b\" nor [\"a\", \"b\"]", at_field(field, file));
      }
      const auto ia = bpe.token_to_id_.find(a), ib = bpe.token_to_id_.find(b), im = bpe.token_to_id_.find(a + b);
      if (ia == bpe.token_to_id_.end() || ib == bpe.token_to_id_.end() || im == bpe.token_to_id_.end())
        throw Error("merge '" + excerpt(a + " " + b) + "' uses a token missing from the vocab", at_field(field, file));
      // A repeated pair takes its last rank: HF collects the merges into a HashMap in file order.
      bpe.merges_.assign(key(ia->second, ib->second), (uint64_t{rank} << 32) | im->second);
      ++rank;
    }
    return bpe;
  }

  size_t vocab_size() const { return token_to_id_.size(); }
  uint32_t id_capacity() const { return static_cast<uint32_t>(id_to_token_.size()); }
  bool has_id(uint32_t id) const { return id < has_id_.size() && has_id_[id]; }
  const std::string& id_to_token(uint32_t id) const { return id_to_token_[id]; }
  const std::unordered_map<std::string, uint32_t>& vocab() const { return token_to_id_; }
  uint32_t byte_id(uint8_t b) const { return byte_to_id_[b]; }

  // Bytes that HF's ByteLevel decoder yields for a token string: each char mapped back through
  // the byte alphabet, or, if any char is outside the alphabet, the token's own UTF-8 bytes.
  std::string token_bytes(const std::string& token) const {
    std::string out;
    const auto* s = reinterpret_cast<const unsigned char*>(token.data());
    size_t i = 0;
    while (i < token.size()) {
      uint32_t cp = 0;
      int len = 1;
      if (s[i] < 0x80) {
        cp = s[i];
      } else if ((s[i] & 0xE0) == 0xC0 && i + 1 < token.size()) {
        cp = ((s[i] & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
        len = 2;
      } else {
        return token;  // all alphabet symbols are below U+0800
      }
      auto it = symbol_to_byte_.find(cp);
      if (it == symbol_to_byte_.end()) return token;
      out.push_back(static_cast<char>(it->second));
      i += static_cast<size_t>(len);
    }
    return out;
  }

  // Encodes one pre-tokenized piece (raw bytes), appending its ids to out.
  void encode_piece(std::string_view piece, std::vector<uint32_t>& out, std::vector<uint32_t>& work) const {
    const size_t n = piece.size();
    const auto* s = reinterpret_cast<const unsigned char*>(piece.data());
    if (n == 1) {
      out.push_back(byte_to_id_[s[0]]);
      return;
    }
    if (ignore_merges_) {
      std::string sym;
      for (size_t i = 0; i < n; ++i) unicode_append(sym, alphabet()[s[i]]);
      auto it = token_to_id_.find(sym);
      if (it != token_to_id_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (n <= kShortPiece) {
      merge_short(s, n, out);
    } else {
      merge_long(s, n, out, work);
    }
  }

 private:
  static constexpr size_t kShortPiece = 64;

  static uint64_t key(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }
  static const std::array<uint32_t, 256>& alphabet() {
    static const std::array<uint32_t, 256> a = byte_level_alphabet();
    return a;
  }
  static void unicode_append(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Rank and merged id of the pair (a, b), or rank kNoRank.
  uint32_t lookup(uint32_t a, uint32_t b, uint32_t& merged) const {
    const uint64_t* v = merges_.find(key(a, b));
    merged = 0;
    if (!v) return kNoRank;
    merged = static_cast<uint32_t>(*v);
    return static_cast<uint32_t>(*v >> 32);
  }

  void merge_short(const unsigned char* s, size_t n, std::vector<uint32_t>& out) const {
    uint32_t ids[kShortPiece], ranks[kShortPiece], merged[kShortPiece];
    for (size_t i = 0; i < n; ++i) ids[i] = byte_to_id_[s[i]];
    for (size_t i = 0; i + 1 < n; ++i) ranks[i] = lookup(ids[i], ids[i + 1], merged[i]);
    size_t len = n;
    while (len > 1) {
      size_t best = 0;
      uint32_t best_rank = ranks[0];
      for (size_t i = 1; i + 1 < len; ++i) {
        if (ranks[i] < best_rank) {  // strict: leftmost wins ties
          best_rank = ranks[i];
          best = i;
        }
      }
      if (best_rank == kNoRank) break;
      ids[best] = merged[best];
      for (size_t i = best + 1; i + 1 < len; ++i) {
        ids[i] = ids[i + 1];
        ranks[i] = ranks[i + 1];
        merged[i] = merged[i + 1];
      }
      --len;
      if (best + 1 < len) ranks[best] = lookup(ids[best], ids[best + 1], merged[best]);
      if (best > 0) ranks[best - 1] = lookup(ids[best - 1], ids[best], merged[best - 1]);
    }
    out.insert(out.end(), ids, ids + len);
  }

  // HF's algorithm: a min-heap of candidate merges keyed by (rank, position); entries made stale
  // by earlier merges are detected when popped and skipped. A rank names exactly one pair, so an
  // entry is (rank << 32 | position) in one uint64 and is current iff its pair still has that
  // rank; merged-away symbols are marked in ids[] (kDead).
  // Memory, 16 bytes per input byte and no reallocation: ids and prev (4 + 4; the right neighbour
  // of a symbol is pos + span(ids[pos]), the input bytes its token covers) and a heap of at most
  // n + 64 entries (8). Each merge pops one entry and pushes at most two, so the heap can outgrow
  // n; when it is full it is compacted to its current entries, at most one per live symbol, so at
  // most n - k - 1 after k merges. Growing back to n + 64 takes at least k + 65 more merges (one
  // net entry per merge at most): the merge counts at successive compactions at least double,
  // there are O(log n) of them, O(n) each, and the merge stays O(n log n).
  // Pieces stay below 2^32 bytes: callers bound their input (kMaxTextInputBytes in deepseek-cli),
  // and longer ones are refused here rather than wrapped.
  void merge_long(const unsigned char* s, size_t n, std::vector<uint32_t>& out, std::vector<uint32_t>& work) const {
    if (n >= size_t{0xFFFFFFFFu}) throw Error("a pre-tokenized piece of " + std::to_string(n) + " bytes is too long (at most 2^32 - 2)");
    constexpr uint32_t kDead = 0xFFFFFFFFu;  // never a token id (ids are < kMaxId)
    work.resize(2 * n);
    uint32_t* ids = work.data();
    uint32_t* prev = ids + n;
    const uint32_t none = static_cast<uint32_t>(n);
    auto next = [&](uint32_t pos) { return pos + span_[ids[pos]]; };  // == none at the end
    const size_t capacity = n + 64;
    std::vector<uint64_t> heap;
    heap.reserve(capacity);
    for (uint32_t i = 0; i < n; ++i) {
      ids[i] = byte_to_id_[s[i]];
      prev[i] = i == 0 ? none : i - 1;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i + 1 < n; ++i) {
      const uint32_t r = lookup(ids[i], ids[i + 1], m);
      if (r != kNoRank) heap.push_back((uint64_t{r} << 32) | i);
    }
    const std::greater<uint64_t> later;
    std::make_heap(heap.begin(), heap.end(), later);
    // Whether entry c still names its pair; `merged` receives the pair's merged id.
    auto current = [&](uint64_t c, uint32_t& merged) {
      const uint32_t pos = static_cast<uint32_t>(c);
      if (ids[pos] == kDead || next(pos) == none) return false;
      return lookup(ids[pos], ids[next(pos)], merged) == static_cast<uint32_t>(c >> 32);
    };
    auto push = [&](uint32_t r, uint32_t pos) {
      if (heap.size() == capacity) {
        uint32_t unused = 0;
        heap.erase(std::remove_if(heap.begin(), heap.end(), [&](uint64_t c) { return !current(c, unused); }), heap.end());
        std::make_heap(heap.begin(), heap.end(), later);
      }
      heap.push_back((uint64_t{r} << 32) | pos);
      std::push_heap(heap.begin(), heap.end(), later);
    };
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const uint64_t c = heap.back();
      heap.pop_back();
      if (!current(c, m)) continue;  // stale
      const uint32_t pos = static_cast<uint32_t>(c), right = next(pos);
      const uint32_t after = next(right);
      ids[pos] = m;  // span(m) = span(left) + span(right): next(pos) is now `after`
      ids[right] = kDead;
      if (after != none) prev[after] = pos;
      if (prev[pos] != none) {
        const uint32_t r = lookup(ids[prev[pos]], ids[pos], m);
        if (r != kNoRank) push(r, prev[pos]);
      }
      if (after != none) {
        const uint32_t r = lookup(ids[pos], ids[after], m);
        if (r != kNoRank) push(r, pos);
      }
    }
    for (uint32_t i = 0; i != none; i = next(i)) out.push_back(ids[i]);
    // The scratch lives on in the encode state: do not keep a huge piece's buffers.
    if (work.size() > (size_t{1} << 20)) std::vector<uint32_t>().swap(work);
  }

  std::unordered_map<std::string, uint32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<uint8_t> has_id_;
  std::array<uint32_t, 256> byte_to_id_{};
  std::unordered_map<uint32_t, uint8_t> symbol_to_byte_;
  // Input bytes a token covers when it is built from byte symbols by merges: its code points
  // (each byte-level symbol is one). Used by merge_long to step to a symbol's right neighbour.
  std::vector<uint32_t> span_;
  PairMap merges_;
  bool ignore_merges_ = false;
};

}  // namespace deepseek::tokenizer
