// DeepSeek-V2/V3 pre-tokenizer: hand-written matchers for the three `Split` regexes of
// tokenizer.json, no regex engine.
//
// DeepSeek-V3's tokenizer.json holds Sequence[Split r1, Split r2, Split r3, ByteLevel] (V2 and
// Coder-V2 files are believed to use the same three patterns; any file that does loads)
// with every Split `behavior: Isolated, invert: false`:
//   r1 kDigits  \p{N}{1,3}
//   r2 kCjk     [\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+
//   r3 kMain    [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
//               | ?[\p{P}\p{S}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
// HF semantics: each Split runs inside every piece the previous ones produced; matches and the
// gaps between them become pieces (nothing dropped). So r3 never sees across a digit or CJK
// boundary and its look-ahead sees the end of the current piece as end of input. ByteLevel with
// use_regex=false splits nothing further (the byte mapping happens in the BPE stage).
//
// The text is decoded once into code points and class flags; the three passes then work on
// index ranges and hand each final piece (a byte range of the input) to a callback. Each
// regex alternative's backtracking behaviour is resolved by hand in match_main (comments there).
// Other pre-tokenizers (DeepSeek-LLM / Coder-V1 `[\r\n]`, `\s?[A-Za-z...]+`... sequences, GPT-2
// ByteLevel use_regex=true, Metaspace, ...) are rejected by name when loading.
#pragma once

#include <deepseek/core/error.hpp>
#include <deepseek/tokenizer/unicode.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace deepseek::tokenizer {

enum class SplitKind { kDigits, kCjk, kMain };

// The exact pattern strings as they appear in tokenizer.json (after JSON unescaping).
inline const char* split_pattern(SplitKind k) {
  switch (k) {
    case SplitKind::kDigits:
      return "\\p{N}{1,3}";
    case SplitKind::kCjk:
      return "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+";
    case SplitKind::kMain:
      return "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
             " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";
  }
  return "";
}

// Per-thread scratch buffers, reused across calls to avoid allocation in the hot path: 5 bytes
// per code point. The code points themselves are not kept: the splits test only class flags and
// ASCII values, and a code point is ASCII exactly when its lead byte is (UTF-8).
struct PreTokenizerScratch {
  std::vector<uint32_t> offsets;  // byte offset of each code point, plus the end
  std::vector<uint8_t> flags;     // class flags (unicode.hpp) plus the local bits below
};

class PreTokenizer {
 public:
  // Extra per-character bits beside the Unicode class flags.
  static constexpr uint8_t kCjkBit = 0x40;   // inside the r2 ranges
  static constexpr uint8_t kCrLfBit = 0x80;  // '\r' or '\n'

  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<SplitKind> splits) : splits_(std::move(splits)) {}

  // Parses tokenizer.json's "pre_tokenizer". Accepts the DeepSeek-V2/V3 Split patterns followed
  // by ByteLevel(use_regex=false); anything else is a deepseek::Error naming the component.
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& file) {
    if (j.is_null()) throw Error("pre_tokenizer is null; only the DeepSeek-V2/V3 pre-tokenizer is supported", at_field("pre_tokenizer", file));
    std::vector<nlohmann::json> items;
    if (j.value("type", "") == "Sequence") {
      if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
        throw Error("pre_tokenizer Sequence without a pretokenizers array", at_field("pre_tokenizer.pretokenizers", file));
      for (const auto& p : j["pretokenizers"]) items.push_back(p);
    } else {
      items.push_back(j);
    }
    std::vector<SplitKind> splits;
    bool byte_level_seen = false;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& p = items[i];
      const std::string field = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
      if (!p.is_object() || !p.contains("type") || !p["type"].is_string())
        throw Error("pre-tokenizer entry without a type", at_field(field, file));
      const std::string type = p["type"].get<std::string>();
      if (byte_level_seen) throw Error("pre-tokenizer '" + excerpt(type) + "' after ByteLevel is not supported", at_field(field, file));
      if (type == "Split") {
        const auto& pat = p.value("pattern", nlohmann::json::object());
        if (!pat.contains("Regex") || !pat["Regex"].is_string())
          throw Error("Split pre-tokenizer with a non-regex pattern is not supported", at_field(field + ".pattern", file));
        const std::string regex = pat["Regex"].get<std::string>();
        if (p.value("behavior", "") != "Isolated" || p.value("invert", false))
          throw Error("Split pre-tokenizer: only behavior Isolated with invert false is supported", at_field(field, file));
        bool found = false;
        for (SplitKind k : {SplitKind::kDigits, SplitKind::kCjk, SplitKind::kMain}) {
          if (regex == split_pattern(k)) {
            splits.push_back(k);
            found = true;
          }
        }
        if (!found)
          throw Error("Split pre-tokenizer regex '" + excerpt(regex) +
                          "' is not supported (only the DeepSeek-V2/V3 patterns are implemented; DeepSeek-LLM and "
                          "DeepSeek-Coder-V1 pre-tokenizers are not)",
                      at_field(field + ".pattern.Regex", file));
      } else if (type == "ByteLevel") {
        if (p.value("use_regex", true))
          throw Error("ByteLevel pre-tokenizer with use_regex=true (GPT-2 regex) is not supported", at_field(field, file));
        if (p.value("add_prefix_space", false))
          throw Error("ByteLevel pre-tokenizer with add_prefix_space=true is not supported", at_field(field, file));
        byte_level_seen = true;
      } else {
        throw Error("pre-tokenizer type '" + excerpt(type) + "' is not supported", at_field(field + ".type", file));
      }
    }
    if (!byte_level_seen) throw Error("pre_tokenizer must end with ByteLevel (byte-level BPE)", at_field("pre_tokenizer", file));
    return PreTokenizer(std::move(splits));
  }

  const std::vector<SplitKind>& splits() const { return splits_; }

  // Splits valid UTF-8 `text` and calls emit(std::string_view piece) for each piece, in order.
  template <class Emit>
  void split(std::string_view text, PreTokenizerScratch& sc, Emit&& emit) const {
    if (text.empty()) return;
    if (text.size() > 0xFFFFFFF0u) throw Error("text span longer than 4 GiB cannot be pre-tokenized");
    decode(text, sc);
    const uint32_t n = static_cast<uint32_t>(sc.flags.size());
    run(0, 0, n, text, sc, emit);
  }

  // Convenience for tests and tools: the pieces as strings.
  std::vector<std::string> pre_tokenize(std::string_view text) const {
    PreTokenizerScratch sc;
    std::vector<std::string> out;
    split(text, sc, [&](std::string_view p) { out.emplace_back(p); });
    return out;
  }

 private:
  static void decode(std::string_view text, PreTokenizerScratch& sc) {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    sc.offsets.clear();
    sc.flags.clear();
    // At most one code point per byte: one reservation instead of doublings (which peak at 3x).
    sc.offsets.reserve(n + 1);
    sc.flags.reserve(n);
    size_t i = 0;
    while (i < n) {
      uint32_t cp;
      int len = 1;
      if (s[i] < 0x80) {
        cp = s[i];
      } else {
        len = unicode::decode_one(s + i, n - i, cp);
        if (len < 0) {  // callers pass valid UTF-8; treat stray bytes as U+FFFD (a symbol, So)
          cp = unicode::kReplacement;
          len = -len;
        }
      }
      uint8_t f = unicode::flags(cp);
      if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x309F) || (cp >= 0x30A0 && cp <= 0x30FF)) f |= kCjkBit;
      if (cp == '\r' || cp == '\n') f |= kCrLfBit;
      sc.offsets.push_back(static_cast<uint32_t>(i));
      sc.flags.push_back(f);
      i += static_cast<size_t>(len);
    }
    sc.offsets.push_back(static_cast<uint32_t>(n));
  }

  // Applies splits_[level..] to the characters [a, b).
  template <class Emit>
  void run(size_t level, uint32_t a, uint32_t b, std::string_view text, const PreTokenizerScratch& sc, Emit& emit) const {
    if (a >= b) return;
    if (level == splits_.size()) {
      emit(text.substr(sc.offsets[a], sc.offsets[b] - sc.offsets[a]));
      return;
    }
    const uint8_t* f = sc.flags.data();
    auto piece = [&](uint32_t x, uint32_t y) { run(level + 1, x, y, text, sc, emit); };
    switch (splits_[level]) {
      case SplitKind::kDigits: {
        uint32_t gap = a, i = a;
        while (i < b) {
          if (!(f[i] & unicode::kN)) {
            ++i;
            continue;
          }
          piece(gap, i);
          // \p{N}{1,3} is greedy and search resumes after each match: runs cut into 3s.
          uint32_t j = i;
          while (j < b && (f[j] & unicode::kN)) {
            const uint32_t k = j + 3 < b ? j + 3 : b;
            uint32_t e = j;
            while (e < k && (f[e] & unicode::kN)) ++e;
            piece(j, e);
            j = e;
          }
          gap = i = j;
        }
        piece(gap, b);
        break;
      }
      case SplitKind::kCjk: {
        uint32_t gap = a, i = a;
        while (i < b) {
          if (!(f[i] & kCjkBit)) {
            ++i;
            continue;
          }
          uint32_t j = i;
          while (j < b && (f[j] & kCjkBit)) ++j;
          piece(gap, i);
          piece(i, j);
          gap = i = j;
        }
        piece(gap, b);
        break;
      }
      case SplitKind::kMain: {
        uint32_t gap = a, i = a;
        while (i < b) {
          const uint32_t e = match_main(i, b, text, sc);
          if (e == i) {
            ++i;
            continue;
          }
          piece(gap, i);
          piece(i, e);
          gap = i = e;
        }
        piece(gap, b);
        break;
      }
    }
  }

  static bool ascii_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
  }
  static bool ascii_alpha(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

  // End of the r3 match starting exactly at i within [i, b), or i if no alternative matches there.
  static uint32_t match_main(uint32_t i, uint32_t b, std::string_view text, const PreTokenizerScratch& sc) {
    const uint8_t* f = sc.flags.data();
    // The lead byte of code point k: equal to the code point when it is ASCII, >= 0x80 (never
    // ASCII punctuation, a letter or ' ') otherwise.
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    const uint32_t* off = sc.offsets.data();
    auto cp = [&](uint32_t k) { return uint32_t{bytes[off[k]]}; };
    constexpr uint8_t kLM = unicode::kL | unicode::kM, kPS = unicode::kP | unicode::kS;
    // 1. [ASCII punct][A-Za-z]+ : the letter run is greedy and nothing follows it.
    if (ascii_punct(cp(i)) && i + 1 < b && ascii_alpha(cp(i + 1))) {
      uint32_t j = i + 2;
      while (j < b && ascii_alpha(cp(j))) ++j;
      return j;
    }
    // 2. [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : the optional char is tried first; if it cannot be
    // followed by a letter/mark, backtracking retries with it empty (only succeeds if c_i is L/M).
    const bool opt = !(f[i] & (kCrLfBit | unicode::kL | kPS));
    if (opt && i + 1 < b && (f[i + 1] & kLM)) {
      uint32_t j = i + 2;
      while (j < b && (f[j] & kLM)) ++j;
      return j;
    }
    if (f[i] & kLM) {
      uint32_t j = i + 1;
      while (j < b && (f[j] & kLM)) ++j;
      return j;
    }
    // 3. ' '?[\p{P}\p{S}]+[\r\n]*
    {
      uint32_t j = i;
      if (cp(j) == ' ' && j + 1 < b && (f[j + 1] & kPS)) ++j;
      if (f[j] & kPS) {
        while (j < b && (f[j] & kPS)) ++j;
        while (j < b && (f[j] & kCrLfBit)) ++j;
        return j;
      }
    }
    if (!(f[i] & unicode::kSpace)) return i;
    uint32_t run_end = i;
    while (run_end < b && (f[run_end] & unicode::kSpace)) ++run_end;
    // 4. \s*[\r\n]+ : \s* backs off to the last \r or \n of the whitespace run (both are \s),
    // then [\r\n]+ takes it and stops at the run's next char, which is not \r\n by choice of "last".
    for (uint32_t k = run_end; k > i; --k) {
      if (f[k - 1] & kCrLfBit) return k;
    }
    // 5. \s+(?!\S) : the whole run if it reaches the piece end (nothing follows); otherwise the
    // run minus its last char (followed by whitespace, so not \S); a 1-char run fails here.
    if (run_end == b) return b;
    if (run_end - i >= 2) return run_end - 1;
    // 6. \s+
    return run_end;
  }

  std::vector<SplitKind> splits_;
};

}  // namespace deepseek::tokenizer
