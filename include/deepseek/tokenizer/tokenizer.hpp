// deepseek::tokenizer::Tokenizer: HF `tokenizers`-exact byte-level BPE for DeepSeek tokenizer.json.
//
// Encode pipeline (HF semantics, spec §8.2):
//   0. Invalid UTF-8 is first replaced, per maximal ill-formed subpart, by U+FFFD (unicode.hpp);
//      the result is what Python's bytes.decode("utf-8", "replace") gives, so ids equal HF's on
//      that string. Valid input is used as is (no copy).
//   1. Added tokens are cut out of the raw text, leftmost-longest, in two passes like HF's
//      AddedVocabulary: tokens with normalized=false first, then normalized=true ones inside the
//      remaining gaps (the normalizer is a no-op, the only kind accepted). lstrip/rstrip widen a
//      match over adjacent White_Space. Matched spans become their ids directly.
//   2. Each remaining span: pre-tokenizer (pre_tokenizer.hpp) -> ByteLevel -> BPE (bpe.hpp), with a
//      per-thread cache of piece -> ids because natural text repeats its words.
//   3. add_bos prepends the config's bos_token id. tokenizer.json's post-processor adds nothing
//      (transformers' LlamaTokenizerFast adds BOS from tokenizer_config's add_bos_token).
// Decode: each id -> the bytes HF's ByteLevel decoder yields for its token, concatenated, then
// invalid UTF-8 -> U+FFFD (String::from_utf8_lossy). StreamDecoder yields the same text
// incrementally and never emits a partial UTF-8 character.
// Components of tokenizer.json that we do not implement are rejected by name when loading.
#pragma once

#include <deepseek/core/checked.hpp>
#include <deepseek/core/error.hpp>
#include <deepseek/core/file.hpp>
#include <deepseek/core/json.hpp>
#include <deepseek/tokenizer/bpe.hpp>
#include <deepseek/tokenizer/pre_tokenizer.hpp>
#include <deepseek/tokenizer/unicode.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace deepseek::tokenizer {

using TokenId = uint32_t;

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// How encode treats added-token text found in the input.
enum class SpecialTokens {
  kParse,           // HF default: every added token's text becomes its id
  kParseNonSpecial, // HF `encode_special_tokens = true`: special=true tokens are encoded as text
  kAsText,          // no added token is recognised (untrusted user text)
};

struct EncodeOptions {
  bool add_bos = false;
  SpecialTokens special_tokens = SpecialTokens::kParse;
};

namespace detail {

// Byte trie over added-token contents, answering "longest token starting at i".
class AddedTrie {
 public:
  void add(std::string_view s, uint32_t token_index) {
    uint32_t node = 0;
    if (nodes_.empty()) nodes_.emplace_back();
    for (unsigned char c : s) {
      uint32_t child = find_child(node, c);
      if (child == 0) {
        child = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].edges.emplace_back(c, child);
      }
      node = child;
    }
    nodes_[node].token = static_cast<int32_t>(token_index);
    first_[static_cast<unsigned char>(s[0])] = 1;
  }
  bool empty() const { return nodes_.empty(); }
  bool may_start(unsigned char c) const { return first_[c] != 0; }
  // Longest match at text[i..]: returns its length and sets token_index, or 0.
  size_t longest(std::string_view text, size_t i, uint32_t& token_index) const {
    uint32_t node = 0;
    size_t best = 0;
    for (size_t j = i; j < text.size(); ++j) {
      node = find_child(node, static_cast<unsigned char>(text[j]));
      if (node == 0) break;
      if (nodes_[node].token >= 0) {
        best = j + 1 - i;
        token_index = static_cast<uint32_t>(nodes_[node].token);
      }
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, uint32_t>> edges;
    int32_t token = -1;
  };
  uint32_t find_child(uint32_t node, unsigned char c) const {
    for (const auto& [b, child] : nodes_[node].edges)
      if (b == c) return child;
    return 0;
  }
  std::vector<Node> nodes_;
  std::array<uint8_t, 256> first_{};
};

// Cache of piece bytes -> ids, owned by one thread at a time. Open addressing; cleared when half
// full, which bounds memory and costs nothing on repetitive text.
class WordCache {
 public:
  static constexpr size_t kMaxPiece = 128;  // longer pieces are rare and not worth caching

  const uint32_t* find(std::string_view piece, uint64_t h, size_t& count) const {
    if (slots_.empty()) return nullptr;
    for (size_t s = h & kMask;; s = (s + 1) & kMask) {
      const Slot& sl = slots_[s];
      if (sl.key_len == kEmptySlot) return nullptr;
      if (sl.hash == h && sl.key_len == piece.size() && std::memcmp(keys_.data() + sl.key_off, piece.data(), piece.size()) == 0) {
        count = sl.val_len;
        return values_.data() + sl.val_off;
      }
    }
  }
  void insert(std::string_view piece, uint64_t h, const uint32_t* ids, size_t n) {
    if (slots_.empty() || used_ * 2 >= kSlots) {
      slots_.assign(kSlots, Slot{});
      keys_.clear();
      values_.clear();
      used_ = 0;
    }
    size_t s = h & kMask;
    while (slots_[s].key_len != kEmptySlot) s = (s + 1) & kMask;
    slots_[s] = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(piece.size()),
                     static_cast<uint32_t>(values_.size()), static_cast<uint32_t>(n)};
    keys_.append(piece.data(), piece.size());
    values_.insert(values_.end(), ids, ids + n);
    ++used_;
  }
  static uint64_t hash(std::string_view s) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      h = (h ^ w) * 0xFF51AFD7ED558CCDull;
      h ^= h >> 32;
    }
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 29);
  }

 private:
  static constexpr size_t kSlots = size_t{1} << 16, kMask = kSlots - 1;
  static constexpr uint32_t kEmptySlot = 0xFFFFFFFFu;
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, key_len = kEmptySlot, val_off = 0, val_len = 0;
  };
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<uint32_t> values_;
  size_t used_ = 0;
};

struct EncodeState {
  PreTokenizerScratch scratch;
  WordCache cache;
  std::vector<uint32_t> work;  // BPE buffers for long pieces
};

// tokenizer.json / tokenizer_config.json: regular files (or symlinks to them) of at most
// kMaxJsonFileBytes.
inline std::string read_file(const std::string& path) { return read_regular_file(path, kMaxJsonFileBytes, "kMaxJsonFileBytes"); }

// tokenizer_config.json writes special tokens either as a string or as {"content": ...}.
inline std::optional<std::string> token_text(const nlohmann::json& cfg, const char* key, const std::string& file) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(std::string(key) + " is neither a string nor an object with a string content, found " + json_excerpt(v), at_field(key, file));
}

}  // namespace detail

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a directory holding one. tokenizer_config.json beside it, if
  // present, supplies bos/eos tokens, add_bos_token and the chat template.
  static Tokenizer from_file(const std::string& path) {
    namespace fs = std::filesystem;
    fs::path json_path = path;
    std::error_code ec;
    if (fs::is_directory(json_path, ec)) json_path /= "tokenizer.json";
    if (!fs::exists(json_path, ec)) throw Error("tokenizer.json not found", in_file(json_path.string()));
    const std::string text = detail::read_file(json_path.string());
    std::string config_text;
    const fs::path config_path = json_path.parent_path() / "tokenizer_config.json";
    if (fs::exists(config_path, ec)) config_text = detail::read_file(config_path.string());
    return from_json_text(text, config_text, json_path.string(), config_path.string());
  }

  // From the text of tokenizer.json and (possibly empty) tokenizer_config.json; the names are
  // used in error messages only.
  static Tokenizer from_json_text(std::string_view tokenizer_json, std::string_view config_json = {},
                                  const std::string& name = "tokenizer.json", const std::string& config_name = "tokenizer_config.json") {
    // Duplicate keys (a vocab entry given twice) and nesting deeper than kMaxJsonDepth are errors.
    nlohmann::json j = parse_json(tokenizer_json.data(), tokenizer_json.data() + tokenizer_json.size(), name);
    if (!j.is_object()) throw Error("not a JSON object", in_file(name));
    Tokenizer t;
    try {
      t.check_unsupported(j, name);
      if (!j.contains("model")) throw Error("missing model", at_field("model", name));
      t.bpe_ = Bpe::from_json(j["model"], name);
      t.pre_ = PreTokenizer::from_json(j.contains("pre_tokenizer") ? j["pre_tokenizer"] : nlohmann::json(), name);
      t.load_added_tokens(j, name);
      t.build_decode_table();
    } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
      throw Error(std::string("malformed tokenizer JSON: ") + e.what(), in_file(name));
    }
    if (!config_json.empty()) {
      try {
        t.load_config(config_json, config_name);
      } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("malformed tokenizer config: ") + e.what(), in_file(config_name));
      }
    }
    return t;
  }

  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;

  // ---- encode ----
  // Any byte string is accepted: ill-formed UTF-8 is encoded as if each maximal ill-formed subpart
  // were U+FFFD (the ids HF gives for Python's bytes.decode("utf-8", "replace")), so
  // decode(encode(x)) == x exactly when x is valid UTF-8. Thread-safe (const; scratch state is
  // borrowed from an internal pool).
  std::vector<TokenId> encode(std::string_view text, bool add_bos = false) const {
    EncodeOptions o;
    o.add_bos = add_bos;
    return encode(text, o);
  }
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts) const {
    std::vector<TokenId> out;
    StateLease lease(*pool_);
    encode_into(text, opts, *lease.state, out);
    return out;
  }

  // Encodes texts on `threads` threads (0 = hardware concurrency); results in input order.
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts, const EncodeOptions& opts = {},
                                                 unsigned threads = 0) const {
    std::vector<std::vector<TokenId>> out(texts.size());
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = static_cast<unsigned>(std::min<size_t>(threads, texts.size()));
    std::atomic<size_t> next{0};
    auto worker = [&] {
      StateLease lease(*pool_);
      for (size_t i = next++; i < texts.size(); i = next++) encode_into(texts[i], opts, *lease.state, out[i]);
    };
    if (threads <= 1) {
      worker();
      return out;
    }
    std::vector<std::thread> pool;
    std::exception_ptr error;
    std::mutex error_mutex;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        try {
          worker();
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex);
          if (!error) error = std::current_exception();
        }
      });
    }
    for (auto& th : pool) th.join();
    if (error) std::rethrow_exception(error);
    return out;
  }

  // ---- decode ----
  // Ids that are neither vocab nor added tokens throw deepseek::Error (HF would skip them).
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const {
    std::string bytes;
    for (size_t i = 0; i < ids.size(); ++i) append_token_bytes(ids[i], skip_special_tokens, bytes, i);
    return unicode::is_valid(bytes) ? bytes : unicode::to_valid(bytes);
  }

  // Incremental decode for generation: push ids one at a time; the concatenation of everything
  // returned by push() and finish() equals decode(all ids).
  class StreamDecoder {
   public:
    explicit StreamDecoder(const Tokenizer& tok, bool skip_special_tokens = false) : tok_(&tok), skip_(skip_special_tokens) {}
    // Text completed by this id; an incomplete UTF-8 tail is held back for the next call.
    std::string push(TokenId id) {
      tok_->append_token_bytes(id, skip_, pending_, count_++);
      const size_t keep = unicode::incomplete_tail(pending_);
      std::string ready = pending_.substr(0, pending_.size() - keep);
      pending_.erase(0, pending_.size() - keep);
      return unicode::is_valid(ready) ? ready : unicode::to_valid(ready);
    }
    // Flushes the held-back bytes (as U+FFFD: the sequence ended incomplete).
    std::string finish() {
      std::string rest = unicode::to_valid(pending_);
      pending_.clear();
      return rest;
    }

   private:
    const Tokenizer* tok_;
    bool skip_;
    std::string pending_;
    size_t count_ = 0;
  };

  // ---- vocabulary ----
  size_t vocab_size() const { return std::max<size_t>(bpe_.id_capacity(), max_added_id_ + 1); }
  std::optional<TokenId> token_to_id(const std::string& token) const {
    for (const auto& a : added_)
      if (a.content == token) return a.id;
    auto it = bpe_.vocab().find(token);
    if (it == bpe_.vocab().end()) return std::nullopt;
    return it->second;
  }
  // Token string (added-token content or byte-level vocab symbol string).
  std::string id_to_token(TokenId id) const {
    if (auto a = added_by_id_.find(id); a != added_by_id_.end()) return added_[a->second].content;
    if (bpe_.has_id(id)) return bpe_.id_to_token(id);
    throw Error("token id " + std::to_string(id) + " is out of range");
  }
  bool is_special(TokenId id) const { return id < special_.size() && special_[id]; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  const PreTokenizer& pre_tokenizer() const { return pre_; }

  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  std::optional<TokenId> bos_id() const { return bos_id_; }
  std::optional<TokenId> eos_id() const { return eos_id_; }
  bool add_bos_token() const { return add_bos_token_; }  // tokenizer_config's default
  const std::string& chat_template() const { return chat_template_; }

 private:
  struct StatePool {
    std::mutex mutex;
    std::vector<std::unique_ptr<detail::EncodeState>> free;
  };
  // Borrows a scratch state (pre-tokenizer buffers + word cache) for one call or one worker.
  struct StateLease {
    explicit StateLease(StatePool& p) : pool(p) {
      std::lock_guard<std::mutex> lock(pool.mutex);
      if (!pool.free.empty()) {
        state = std::move(pool.free.back());
        pool.free.pop_back();
      }
      if (!state) state = std::make_unique<detail::EncodeState>();
    }
    ~StateLease() {
      std::lock_guard<std::mutex> lock(pool.mutex);
      pool.free.push_back(std::move(state));
    }
    StateLease(const StateLease&) = delete;
    StateLease& operator=(const StateLease&) = delete;
    StatePool& pool;
    std::unique_ptr<detail::EncodeState> state;
  };

  Tokenizer() : pool_(std::make_unique<StatePool>()) {}

  static void check_unsupported(const nlohmann::json& j, const std::string& file) {
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      const auto& n = j["normalizer"];
      const bool empty_sequence = n.is_object() && n.value("type", "") == "Sequence" && n.contains("normalizers") &&
                                  n["normalizers"].is_array() && n["normalizers"].empty();
      if (!empty_sequence)
        throw Error("normalizer '" + excerpt(n.is_object() ? n.value("type", "?") : std::string("?")) + "' is not supported (only none)",
                    at_field("normalizer", file));
    }
    if (j.contains("post_processor") && !j["post_processor"].is_null()) {
      const auto& p = j["post_processor"];
      // ByteLevel post-processing only adjusts offsets; it adds no ids.
      if (!p.is_object() || p.value("type", "") != "ByteLevel")
        throw Error("post_processor '" + excerpt(p.is_object() ? p.value("type", "?") : std::string("?")) + "' is not supported (only ByteLevel)",
                    at_field("post_processor", file));
    }
    if (!j.contains("decoder") || !j["decoder"].is_object() || j["decoder"].value("type", "") != "ByteLevel")
      throw Error("decoder must be ByteLevel", at_field("decoder", file));
    for (const char* k : {"truncation", "padding"})
      if (j.contains(k) && !j[k].is_null()) throw Error(std::string(k) + " is not supported (would change encode output)", at_field(k, file));
  }

  void load_added_tokens(const nlohmann::json& j, const std::string& file) {
    if (!j.contains("added_tokens")) return;
    if (!j["added_tokens"].is_array()) throw Error("added_tokens is not an array", at_field("added_tokens", file));
    size_t i = 0;
    for (const auto& a : j["added_tokens"]) {
      const std::string field = "added_tokens[" + std::to_string(i++) + "]";
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_unsigned() || !a.contains("content") || !a["content"].is_string())
        throw Error("added token needs an unsigned id and a string content", at_field(field, file));
      auto flag = [&](const char* k) {
        if (!a.contains(k)) return false;
        if (!a[k].is_boolean()) throw Error(std::string(k) + " is not a boolean", at_field(field + "." + k, file));
        return a[k].get<bool>();
      };
      AddedToken t;
      if (a["id"].get<uint64_t>() >= Bpe::kMaxId) throw Error("added token id too large", at_field(field + ".id", file));
      t.id = a["id"].get<TokenId>();
      t.content = a["content"].get<std::string>();
      t.special = flag("special");
      t.lstrip = flag("lstrip");
      t.rstrip = flag("rstrip");
      t.normalized = flag("normalized");
      if (flag("single_word")) throw Error("added token flag single_word is not supported", at_field(field + ".single_word", file));
      if (t.content.empty()) throw Error("added token with empty content", at_field(field + ".content", file));
      if (!unicode::is_valid(t.content)) throw Error("added token content is not valid UTF-8", at_field(field + ".content", file));
      if (added_by_id_.count(t.id)) throw Error("added token id " + std::to_string(t.id) + " appears twice", at_field(field + ".id", file));
      added_by_id_[t.id] = added_.size();
      max_added_id_ = std::max<size_t>(max_added_id_, t.id);
      added_.push_back(std::move(t));
    }
    // HF keeps one token per content; a later duplicate replaces the earlier in the match tables.
    std::unordered_map<std::string, size_t> by_content;
    for (size_t k = 0; k < added_.size(); ++k) by_content[added_[k].content] = k;
    for (const auto& [content, k] : by_content) (added_[k].normalized ? trie_normalized_ : trie_raw_).add(content, static_cast<uint32_t>(k));
  }

  void build_decode_table() {
    const size_t n = vocab_size();
    decode_offsets_.assign(n + 1, 0);
    valid_id_.assign(n, 0);
    special_.assign(n, 0);
    decode_bytes_.clear();
    for (size_t id = 0; id < n; ++id) {
      decode_offsets_[id] = static_cast<uint32_t>(decode_bytes_.size());
      const auto a = added_by_id_.find(static_cast<TokenId>(id));
      if (a != added_by_id_.end()) {
        decode_bytes_ += bpe_.token_bytes(added_[a->second].content);
        valid_id_[id] = 1;
        special_[id] = added_[a->second].special;
      } else if (bpe_.has_id(static_cast<TokenId>(id))) {
        decode_bytes_ += bpe_.token_bytes(bpe_.id_to_token(static_cast<TokenId>(id)));
        valid_id_[id] = 1;
      }
    }
    decode_offsets_[n] = static_cast<uint32_t>(decode_bytes_.size());
    // HF skips by content: a vocab entry whose string equals a special token's content is special too.
    for (const auto& a : added_) {
      if (!a.special) continue;
      auto it = bpe_.vocab().find(a.content);
      if (it != bpe_.vocab().end()) special_[it->second] = 1;
    }
  }

  void load_config(std::string_view text, const std::string& file) {
    nlohmann::json c = parse_json(text.data(), text.data() + text.size(), file);
    if (!c.is_object()) throw Error("not a JSON object", in_file(file));
    if (auto b = detail::token_text(c, "bos_token", file)) {
      bos_token_ = *b;
      bos_id_ = token_to_id(*b);
      if (!bos_id_) throw Error("bos_token '" + excerpt(*b) + "' is not in the vocabulary", at_field("bos_token", file));
    }
    if (auto e = detail::token_text(c, "eos_token", file)) {
      eos_token_ = *e;
      eos_id_ = token_to_id(*e);
      if (!eos_id_) throw Error("eos_token '" + excerpt(*e) + "' is not in the vocabulary", at_field("eos_token", file));
    }
    if (c.contains("add_bos_token")) {
      if (!c["add_bos_token"].is_boolean()) throw Error("add_bos_token is not a boolean", at_field("add_bos_token", file));
      add_bos_token_ = c["add_bos_token"].get<bool>();
    }
    if (c.contains("chat_template") && c["chat_template"].is_string()) chat_template_ = c["chat_template"].get<std::string>();
  }

  void append_token_bytes(TokenId id, bool skip_special, std::string& out, size_t index) const {
    if (id >= valid_id_.size() || !valid_id_[id])
      throw Error("token id " + std::to_string(id) + " is out of range (vocab size " + std::to_string(vocab_size()) + ")",
                  ErrorWhere{{}, {}, "ids[" + std::to_string(index) + "]", -1});
    if (skip_special && special_[id]) return;
    out.append(decode_bytes_, decode_offsets_[id], decode_offsets_[id + 1] - decode_offsets_[id]);
  }

  // Calls on_text(begin, end) for plain spans and on_token(token_index) for added-token matches
  // of `trie` inside text[begin, end), HF `AddedVocabulary::find_matches` semantics.
  template <class OnText, class OnToken>
  void split_added(std::string_view text, size_t begin, size_t end, const detail::AddedTrie& trie, SpecialTokens mode,
                   OnText&& on_text, OnToken&& on_token) const {
    if (trie.empty() || mode == SpecialTokens::kAsText) {
      on_text(begin, end);
      return;
    }
    const std::string_view piece = text.substr(0, end);
    const auto f = &unicode::flags;
    size_t text_start = begin, i = begin;
    while (i < end) {
      if (!trie.may_start(static_cast<unsigned char>(piece[i]))) {
        ++i;
        continue;
      }
      uint32_t k;
      const size_t len = trie.longest(piece, i, k);
      if (len == 0) {
        ++i;
        continue;
      }
      const AddedToken& tok = added_[k];
      size_t start = i, stop = i + len;
      i = stop;  // non-overlapping search resumes after the match even if it is skipped below
      if (mode == SpecialTokens::kParseNonSpecial && tok.special) continue;
      if (tok.lstrip) {
        size_t s = start;
        while (s > text_start) {
          size_t c = s - 1;  // step back one UTF-8 character
          while (c > text_start && (static_cast<unsigned char>(piece[c]) & 0xC0) == 0x80) --c;
          uint32_t cp;
          if (unicode::decode_one(reinterpret_cast<const unsigned char*>(piece.data()) + c, s - c, cp) <= 0 || !(f(cp) & unicode::kSpace)) break;
          s = c;
        }
        start = s;
      }
      if (tok.rstrip) {
        while (stop < end) {
          uint32_t cp;
          const int l = unicode::decode_one(reinterpret_cast<const unsigned char*>(piece.data()) + stop, end - stop, cp);
          if (l <= 0 || !(f(cp) & unicode::kSpace)) break;
          stop += static_cast<size_t>(l);
        }
        i = stop;
      }
      if (text_start < start) on_text(text_start, start);
      on_token(k);
      text_start = stop;
    }
    if (text_start < end) on_text(text_start, end);
  }

  void encode_into(std::string_view input, const EncodeOptions& opts, detail::EncodeState& st, std::vector<TokenId>& out) const {
    if (opts.add_bos) {
      if (!bos_id_) throw Error("add_bos requested but the tokenizer has no bos_token (tokenizer_config.json missing?)");
      out.push_back(*bos_id_);
    }
    std::string repaired;
    std::string_view text = input;
    if (!unicode::is_valid(input)) {
      repaired = unicode::to_valid(input);
      text = repaired;
    }
    auto encode_text = [&](size_t b, size_t e) { encode_plain(text.substr(b, e - b), st, out); };
    auto emit_token = [&](uint32_t k) { out.push_back(added_[k].id); };
    split_added(text, 0, text.size(), trie_raw_, opts.special_tokens,
                [&](size_t b, size_t e) { split_added(text, b, e, trie_normalized_, opts.special_tokens, encode_text, emit_token); },
                emit_token);
  }

  void encode_plain(std::string_view text, detail::EncodeState& st, std::vector<TokenId>& out) const {
    pre_.split(text, st.scratch, [&](std::string_view piece) {
      if (piece.size() == 1) {
        out.push_back(bpe_.byte_id(static_cast<uint8_t>(piece[0])));
        return;
      }
      if (piece.size() > detail::WordCache::kMaxPiece) {
        bpe_.encode_piece(piece, out, st.work);
        return;
      }
      const uint64_t h = detail::WordCache::hash(piece);
      size_t count = 0;
      if (const uint32_t* ids = st.cache.find(piece, h, count)) {
        out.insert(out.end(), ids, ids + count);
        return;
      }
      const size_t before = out.size();
      bpe_.encode_piece(piece, out, st.work);
      st.cache.insert(piece, h, out.data() + before, out.size() - before);
    });
  }

  Bpe bpe_;
  PreTokenizer pre_;
  std::vector<AddedToken> added_;
  std::unordered_map<TokenId, size_t> added_by_id_;
  size_t max_added_id_ = 0;
  detail::AddedTrie trie_raw_, trie_normalized_;
  std::string decode_bytes_;
  std::vector<uint32_t> decode_offsets_;
  std::vector<uint8_t> valid_id_, special_;
  std::string bos_token_, eos_token_, chat_template_;
  std::optional<TokenId> bos_id_, eos_id_;
  bool add_bos_token_ = false;
  std::unique_ptr<StatePool> pool_;
};

}  // namespace deepseek::tokenizer
