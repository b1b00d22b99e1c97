// DeepSeek-OCR grounding output: <|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|> pairs,
// and the reference post-processing of the markdown (run_dpsk_ocr_image.py, spec §9).
//
//   pairs       found as the official regex (<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>), non-greedy,
//               dot-all, left to right: from the first <|ref|>, the first <|/ref|><|det|> after it, then the
//               first <|/det|> after that
//   boxes       the det text must be exactly a list of 4-integer lists (spaces allowed); the reference
//               eval()s it, here anything else leaves the pair without boxes
//   pixels      coordinates are bins 0..999 of the original image: x = int(c / 999 * W), y = int(c / 999 * H)
//               (double arithmetic and truncation toward zero, as Python's int())
//   markdown    every pair whose text holds "<|ref|>image<|/ref|>" becomes "![](images/<k>.jpg)\n" (k counts
//               those pairs); every other pair is deleted, and only then (inside the reference's loop over
//               them, so only when there is one) \coloneqq -> := and \eqqcolon -> =:. Replacement is of every
//               occurrence of the pair's text, pair by pair, as Python's str.replace.
//   crops       for each pair labelled exactly "image" with boxes, each box in order is cut from the original
//               and saved as images/<j>.jpg (j counts boxes, so a pair with two boxes makes two files while its
//               link names one: the reference's numbering, kept). Pixels outside the image are black, as
//               Pillow's crop; a box with x2 < x1 or y2 < y1 is counted but not saved (Pillow refuses it).
#pragma once

#include "deepseek/core/error.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace deepseek::vision {

struct Box {
  int64_t x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  bool operator==(const Box& o) const { return x1 == o.x1 && y1 == o.y1 && x2 == o.x2 && y2 == o.y2; }
};

struct GroundingRef {
  std::string text;   // the whole pair as it appears in the output
  size_t offset = 0;  // byte offset of the pair in the output
  std::string label;  // between <|ref|> and <|/ref|>
  std::string det;    // between <|det|> and <|/det|>
  std::optional<std::vector<Box>> boxes;  // bins 0..999; none when det is not a strict box list
};

namespace detail {
inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) out.append(s, i, j - i).append(to);
  out.append(s, i, std::string::npos);
  s = std::move(out);
}
}  // namespace detail

// Strict parser of a det list: '[' box (',' box)* ']' with box = '[' int ',' int ',' int ',' int ']',
// int = optional '-' and 1..9 digits, ASCII spaces anywhere between tokens.
inline std::optional<std::vector<Box>> parse_det_boxes(std::string_view s) {
  size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  };
  auto eat = [&](char c) {
    ws();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  };
  auto integer = [&](int64_t& v) {
    ws();
    bool neg = false;
    if (i < s.size() && s[i] == '-') neg = true, ++i;
    size_t digits = 0;
    v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && digits < 10) v = v * 10 + (s[i++] - '0'), ++digits;
    if (digits == 0 || digits > 9) return false;
    if (neg) v = -v;
    return true;
  };
  std::vector<Box> out;
  if (!eat('[')) return std::nullopt;
  do {
    Box b;
    if (!eat('[') || !integer(b.x1) || !eat(',') || !integer(b.y1) || !eat(',') || !integer(b.x2) || !eat(',') ||
        !integer(b.y2) || !eat(']'))
      return std::nullopt;
    out.push_back(b);
  } while (eat(','));
  if (!eat(']')) return std::nullopt;
  ws();
  if (i != s.size()) return std::nullopt;
  return out;
}

// Every ref/det pair of a model output, in order.
inline std::vector<GroundingRef> parse_grounding(std::string_view text) {
  static constexpr std::string_view kRef = "<|ref|>", kMid = "<|/ref|><|det|>", kEnd = "<|/det|>";
  std::vector<GroundingRef> out;
  size_t pos = 0;
  while (true) {
    const size_t a = text.find(kRef, pos);
    if (a == std::string_view::npos) break;
    const size_t m = text.find(kMid, a + kRef.size());
    const size_t e = m == std::string_view::npos ? m : text.find(kEnd, m + kMid.size());
    if (e == std::string_view::npos) {  // no complete pair starts here: the regex moves on one character
      pos = a + 1;
      continue;
    }
    GroundingRef r;
    r.offset = a;
    r.text = std::string(text.substr(a, e + kEnd.size() - a));
    r.label = std::string(text.substr(a + kRef.size(), m - a - kRef.size()));
    r.det = std::string(text.substr(m + kMid.size(), e - m - kMid.size()));
    r.boxes = parse_det_boxes(r.det);
    out.push_back(std::move(r));
    pos = e + kEnd.size();
  }
  return out;
}

// A bin box (0..999) in pixels of a W x H image: int(c / 999 * W).
inline Box to_pixels(const Box& b, int64_t width, int64_t height) {
  auto px = [](int64_t c, int64_t n) { return int64_t(double(c) / 999.0 * double(n)); };
  return Box{px(b.x1, width), px(b.y1, height), px(b.x2, width), px(b.y2, height)};
}

struct PostProcessOptions {
  // Links and crop files are <link_prefix><k>.jpg: "images/" for an image (run_dpsk_ocr_image.py),
  // "images/<page>_" for a PDF page (run_dpsk_ocr_pdf.py, page counted from 0).
  std::string link_prefix = "images/";
  // The PDF script also turns "\n\n\n\n" and then "\n\n\n" into "\n\n" (inside the same loop).
  bool collapse_blank_lines = false;
};

struct PostProcessed {
  std::string markdown;
  std::vector<Box> crops;  // pixel boxes to save as <link_prefix><j>.jpg, j = index here
};

// The reference post-processing of one page's output (see the header comment). `text` is the decoded
// output without the end-of-sentence token; W x H the original image.
inline PostProcessed postprocess_markdown(std::string_view text, int64_t width, int64_t height, const PostProcessOptions& o = {}) {
  static constexpr std::string_view kImageRef = "<|ref|>image<|/ref|>";
  const auto refs = parse_grounding(text);
  PostProcessed p;
  p.markdown = std::string(text);
  for (const auto& r : refs) {
    if (r.label != "image" || !r.boxes) continue;
    for (const Box& b : *r.boxes) p.crops.push_back(to_pixels(b, width, height));
  }
  int64_t k = 0;
  for (const auto& r : refs)
    if (r.text.find(kImageRef) != std::string::npos)
      detail::replace_all(p.markdown, r.text, "![](" + o.link_prefix + std::to_string(k++) + ".jpg)\n");
  for (const auto& r : refs) {
    if (r.text.find(kImageRef) != std::string::npos) continue;
    detail::replace_all(p.markdown, r.text, "");
    detail::replace_all(p.markdown, "\\coloneqq", ":=");
    detail::replace_all(p.markdown, "\\eqqcolon", "=:");
    if (o.collapse_blank_lines) {
      detail::replace_all(p.markdown, "\n\n\n\n", "\n\n");
      detail::replace_all(p.markdown, "\n\n\n", "\n\n");
    }
  }
  return p;
}

// Pillow's Image.crop on packed RGB: the box [x1, x2) x [y1, y2) of a W x H image, black outside it.
// Returns an empty vector for x2 < x1 or y2 < y1 (Pillow raises there). Out: (x2-x1) x (y2-y1) x 3.
inline std::vector<uint8_t> crop_rgb(const uint8_t* rgb, int64_t width, int64_t height, const Box& b) {
  if (b.x2 < b.x1 || b.y2 < b.y1) return {};
  const int64_t w = b.x2 - b.x1, h = b.y2 - b.y1;
  if (w > (int64_t(1) << 15) * 4 || h > (int64_t(1) << 15) * 4)  // bins map into the image; more is a caller bug
    throw Error("crop of " + std::to_string(w) + "x" + std::to_string(h) + " pixels is larger than any page");
  std::vector<uint8_t> out(size_t(w * h * 3), 0);
  for (int64_t y = 0; y < h; ++y) {
    const int64_t sy = b.y1 + y;
    if (sy < 0 || sy >= height) continue;
    for (int64_t x = 0; x < w; ++x) {
      const int64_t sx = b.x1 + x;
      if (sx < 0 || sx >= width) continue;
      for (int c = 0; c < 3; ++c) out[size_t((y * w + x) * 3 + c)] = rgb[(sy * width + sx) * 3 + c];
    }
  }
  return out;
}

}  // namespace deepseek::vision
