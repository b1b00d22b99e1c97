// DeepSeek-OCR (deepseek-ai/DeepSeek-OCR, config model_type deepseek_vl_v2) on a backend B: the
// DeepEncoder (nn/deep_encoder.hpp) turns each view of an image into projected features, which are laid
// out in 2-D with learned separators and scattered into the decoder's input embeddings at the <image>
// placeholders; the decoder is the DeepSeek-V2-style MoE language model (models::DeepSeekV3, use_mla false).
//
//   per image, with global view features G [g, g, d] and tiles T_k [t, t, d] on a tiles_h x tiles_w grid:
//     local   canvas [tiles_h*t, tiles_w*t, d], canvas[(r*t + y), (c*t + x)] = T_{r*tiles_w + c}[y, x],
//             image_newline after every canvas row          (only when tiles_w > 1 or tiles_h > 1)
//     global  G with image_newline after every row
//     then    view_seperator                                 -> rows = tiles_h*t*(tiles_w*t + 1) + g*(g + 1) + 1
//   prompt  = text.strip() (HF infer(): the "plain" template), split at every "<image>":
//     ids   = [bos] + enc(split_0) + [<image>] * rows_0 + enc(split_1) + ... + enc(split_last)
//     enc = the tokenizer without special-token insertion (added tokens such as <|grounding|> still match)
//   h0      = embed_tokens[ids] with row i replaced by the next vision row wherever ids[i] == <image>
//   then the decoder from h0 (DeepSeekV3::forward_embeddings); decode steps are plain token forwards.
// Checkpoint tensors: model.sam_model.*, model.vision_model.*, model.projector.* (the encoder),
// model.image_newline [d], model.view_seperator [d] (sic), model.embed_tokens / model.layers.* /
// model.norm / lm_head (the decoder). The <image> id is the tokenizer's (128815 in the release, the id
// HF's infer() writes; vLLM's deepseek_ocr.py looks it up in the tokenizer as here).
// Placeholder order follows deepseek_ocr.py / modeling_deepseekocr.py: local canvas first, then global
// (config's global_view_pos "head" is ignored by both).
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/json.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/models/deepseek_v3.hpp"
#include "deepseek/nn/deep_encoder.hpp"
#include "deepseek/tokenizer/tokenizer.hpp"
#include "deepseek/vision/preprocess.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace deepseek::models {

// Vision rows of one image: global side g, tile side t on a tiles_w x tiles_h grid (no tiles: 1 x 1).
inline int64_t ocr_image_rows(int64_t global_side, int64_t tile_side, int64_t tiles_w, int64_t tiles_h) {
  const int64_t local = (tiles_w > 1 || tiles_h > 1) ? tiles_h * tile_side * (tiles_w * tile_side + 1) : 0;
  return local + global_side * (global_side + 1) + 1;
}

// The 2-D layout of one image (header comment): global [g*g, d], tiles [tiles_w*tiles_h][t*t, d]
// (row-major grid order each), newline / separator [d], all on B's device. out (resized) gets the
// ocr_image_rows(g, t, tiles_w, tiles_h) rows: one strided copy per view, one repeat per newline column.
template <class B = ::deepseek::cpu>
void ocr_layout(const backend::Buffer<B>& global, int64_t g, const std::vector<backend::Buffer<B>>& tiles, int64_t t,
                int64_t tiles_w, int64_t tiles_h, const float* newline, const float* separator, int64_t d,
                backend::Buffer<B>& out) {
  using Ops = backend::Ops<B>;
  out.resize(size_t(ocr_image_rows(g, t, tiles_w, tiles_h) * d));
  float* o = out.data();
  if (tiles_w > 1 || tiles_h > 1) {
    const int64_t w = tiles_w * t + 1;  // a canvas row and its newline
    for (int64_t k = 0; k < tiles_w * tiles_h; ++k)  // tile k's t x t rows at canvas (k / tiles_w, k % tiles_w)
      Ops::copy2d(tiles[size_t(k)].data(), t * d, o + ((k / tiles_w) * t * w + (k % tiles_w) * t) * d, w * d, t, t * d);
    Ops::repeat_row(newline, d, tiles_h * t, o + (w - 1) * d, w * d);
    o += tiles_h * t * w * d;
  }
  Ops::copy2d(global.data(), g * d, o, (g + 1) * d, g, g * d);
  Ops::repeat_row(newline, d, g, o + g * d, (g + 1) * d);
  Ops::copy2d(separator, d, o + g * (g + 1) * d, d, 1, d);
}

// Python's str.strip(): removes Unicode whitespace (str.isspace) at both ends.
inline std::string_view ocr_strip(std::string_view s) {
  auto space_at_start = [](std::string_view v) -> size_t {  // byte length of a leading whitespace char, or 0
    if (v.empty()) return 0;
    const unsigned char c = static_cast<unsigned char>(v[0]);
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    auto is = [&](std::string_view u) { return v.substr(0, u.size()) == u ? u.size() : size_t(0); };
    for (std::string_view u : {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf",
                               "\xe2\x81\x9f", "\xe3\x80\x80"})
      if (size_t n = is(u)) return n;
    if (v.size() >= 3 && c == 0xe2 && static_cast<unsigned char>(v[1]) == 0x80 && static_cast<unsigned char>(v[2]) <= 0x8a)
      return 3;  // U+2000 .. U+200A
    return 0;
  };
  auto space_at_end = [&](std::string_view v) -> size_t {
    for (size_t n = 1; n <= 3 && n <= v.size(); ++n)
      if (space_at_start(v.substr(v.size() - n)) == n) return n;
    return 0;
  };
  while (size_t n = space_at_start(s)) s.remove_prefix(n);
  while (size_t n = space_at_end(s)) s.remove_suffix(n);
  return s;
}

// The prompt as HF infer() reads it: stripped, split at every "<image>" (one more split than images).
// Throws when there is no <image> or the count differs from `images` (pass -1 to skip that check).
inline std::vector<std::string_view> ocr_split_prompt(std::string_view text, int64_t images = -1) {
  static constexpr std::string_view kImage = "<image>";
  text = ocr_strip(text);
  std::vector<std::string_view> splits;
  for (size_t pos = 0;;) {
    const size_t at = text.find(kImage, pos);
    splits.push_back(text.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos));
    if (at == std::string_view::npos) break;
    pos = at + kImage.size();
  }
  const int64_t placeholders = int64_t(splits.size()) - 1;
  if (placeholders == 0) throw Error("the OCR prompt has no <image> placeholder (e.g. \"<image>\\nFree OCR.\")");
  if (images >= 0 && placeholders != images)
    throw Error("the OCR prompt has " + std::to_string(placeholders) + " <image> placeholder" + (placeholders == 1 ? "" : "s") + " but " +
                std::to_string(images) + " image" + (images == 1 ? " was" : "s were") + " given");
  return splits;
}

// A prompt ready for the decoder: ids with one <image> id per vision row, and those rows in order
// (on B's device; OcrPrompt is the CPU one).
template <class B>
struct BasicOcrPrompt {
  std::vector<int32_t> ids;
  backend::Buffer<B> vision;           // [vision_rows, d]
  std::vector<int64_t> rows_per_image;  // how many of the rows each image has
  int64_t vision_rows() const {
    int64_t n = 0;
    for (int64_t r : rows_per_image) n += r;
    return n;
  }
};
using OcrPrompt = BasicOcrPrompt<::deepseek::cpu>;

template <class B>
class DeepSeekOcr {
 public:
  using Backend = B;  // the device its activations, caches and outputs live on
  static constexpr std::string_view kImageToken = "<image>";

  // Opens the released folder as is: config.json (deepseek_vl_v2), model*.safetensors, tokenizer.json.
  explicit DeepSeekOcr(std::shared_ptr<const io::Checkpoint> ckpt, const LoadOptions& opts = {})
      : ckpt_(check_model_type(std::move(ckpt))), decoder_(ckpt_, opts), tok_(load_tokenizer(ckpt_->dir())), encoder_(make_encoder(ckpt_, opts)) {
    const io::ModelConfig& c = decoder_.config();
    const std::string dir = ckpt_->dir();
    d_ = c.hidden_size;
    if (encoder_.n_embed() != d_)
      throw Error("the vision projector gives " + std::to_string(encoder_.n_embed()) + " features per token but the decoder's hidden_size is " +
                      std::to_string(d_),
                  at_field("projector_config.n_embed", dir + "/config.json"));
    weights_ = io::Weights(ckpt_).on(B::device);
    const io::Weights model = weights_.sub("model");
    const std::initializer_list<DType> fl = {DType::f32, DType::bf16, DType::f16};
    newline_ = backend::Ops<B>::vector_f32(model.get("image_newline", Shape{d_}, fl));
    separator_ = backend::Ops<B>::vector_f32(model.get("view_seperator", Shape{d_}, fl));
    const auto id = tok_.token_to_id(std::string(kImageToken));
    if (!id) throw Error("the tokenizer has no <image> token", in_file(dir + "/tokenizer.json"));
    image_token_id_ = int32_t(*id);
    if (image_token_id_ >= c.vocab_size)
      throw Error("<image> is token " + std::to_string(image_token_id_) + ", outside the decoder's vocabulary of " +
                      std::to_string(c.vocab_size),
                  in_file(dir + "/tokenizer.json"));
    if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size)
      throw Error("bos_token_id " + std::to_string(c.bos_token_id) + " is outside the vocabulary", at_field("language_config.bos_token_id", dir + "/config.json"));
  }

  const DeepSeekV3<B>& decoder() const { return decoder_; }
  const nn::DeepEncoder<B>& encoder() const { return encoder_; }
  const tokenizer::Tokenizer& tokenizer() const { return tok_; }
  const io::ModelConfig& config() const { return decoder_.config(); }
  int32_t image_token_id() const { return image_token_id_; }
  int64_t n_embed() const { return d_; }
  const backend::Buffer<B>& image_newline() const { return newline_; }
  const backend::Buffer<B>& view_separator() const { return separator_; }
  nn::KvCache make_cache(const CacheOptions& o = {}) const { return decoder_.make_cache(o); }

  // The vision rows of one preprocessed image [rows, d], in decoder order (header comment).
  backend::Buffer<B> encode_image(const vision::PreparedImage& img) const {
    const bool tiled = img.tiles_w > 1 || img.tiles_h > 1;
    if (tiled && int64_t(img.tiles.size()) != int64_t(img.tiles_w) * int64_t(img.tiles_h))
      throw Error("prepared image has " + std::to_string(img.tiles.size()) + " tiles for a " + std::to_string(img.tiles_w) + "x" +
                  std::to_string(img.tiles_h) + " grid");
    backend::Buffer<B> global, staged;
    const int64_t g = encoder_.forward(on_device(img.global.chw, staged), int64_t(img.global.size), global);
    std::vector<backend::Buffer<B>> tiles;
    int64_t t = 0;
    if (tiled) {
      tiles.resize(img.tiles.size());
      for (size_t k = 0; k < img.tiles.size(); ++k) {
        const int64_t side = encoder_.forward(on_device(img.tiles[k].chw, staged), int64_t(img.tiles[k].size), tiles[k]);
        if (k > 0 && side != t) throw Error("tiles of one image must have one size");
        t = side;
      }
    }
    backend::Buffer<B> out;
    ocr_layout<B>(global, g, tiles, t, img.tiles_w, img.tiles_h, newline_.data(), separator_.data(), d_, out);
    return out;
  }

  // The prompt of HF infer(): `text` stripped, one <image> per image (each image's rows from encode_image).
  BasicOcrPrompt<B> make_prompt(std::string_view text, std::vector<backend::Buffer<B>> image_rows) const {
    const auto splits = ocr_split_prompt(text, int64_t(image_rows.size()));
    const size_t placeholders = splits.size() - 1;
    BasicOcrPrompt<B> p;
    p.ids.push_back(int32_t(config().bos_token_id));
    for (size_t k = 0; k < splits.size(); ++k) {
      for (auto id : tok_.encode(splits[k], false)) p.ids.push_back(int32_t(id));
      if (k == placeholders) break;
      if (image_rows[k].empty() || int64_t(image_rows[k].size()) % d_ != 0) throw Error("image " + std::to_string(k) + " has no vision rows");
      const int64_t rows = int64_t(image_rows[k].size()) / d_;
      p.ids.insert(p.ids.end(), size_t(rows), image_token_id_);
      p.rows_per_image.push_back(rows);
    }
    p.vision.resize(size_t(p.vision_rows() * d_));  // the images' rows one after another
    int64_t at = 0;
    for (size_t k = 0; k < placeholders; ++k) {
      backend::Ops<B>::copy2d(image_rows[k].data(), d_, p.vision.data() + at * d_, d_, p.rows_per_image[k], d_);
      at += p.rows_per_image[k];
    }
    return p;
  }
  BasicOcrPrompt<B> make_prompt(std::string_view text, const std::vector<vision::PreparedImage>& images) const {
    ocr_split_prompt(text, int64_t(images.size()));  // a wrong prompt fails before the encoder runs
    std::vector<backend::Buffer<B>> rows;
    for (const auto& img : images) rows.push_back(encode_image(img));
    return make_prompt(text, std::move(rows));
  }

  // Input embeddings of a prompt [ids.size(), d]: embed_tokens rows, the vision rows at the <image> ids.
  // The ids are host values: each run of text ids is one Ops::embedding, each run of <image> ids one
  // copy of the next vision rows.
  backend::Buffer<B> embeddings(const BasicOcrPrompt<B>& p) const {
    using Ops = backend::Ops<B>;
    const int64_t n = int64_t(p.ids.size()), V = config().vocab_size;
    backend::Buffer<B> h(size_t(n * d_));
    const TensorView& embed = decoder_.embedding();
    const int32_t* ids = p.ids.data();
    int64_t next = 0;
    for (int64_t i = 0, j = 0; i < n; i = j) {
      if (ids[i] == image_token_id_) {
        while (j < n && ids[j] == image_token_id_) ++j;
        if ((next + j - i) * d_ > int64_t(p.vision.size()))
          throw Error("the prompt has more <image> ids than vision rows");
        Ops::copy2d(p.vision.data() + next * d_, d_, h.data() + i * d_, d_, j - i, d_);
        next += j - i;
      } else {
        for (; j < n && ids[j] != image_token_id_; ++j)
          if (ids[j] < 0 || ids[j] >= V)
            throw Error("token id " + std::to_string(ids[j]) + " at index " + std::to_string(j) +
                        " is outside the vocabulary [0, " + std::to_string(V) + ")");
        Ops::embedding(embed, ids + i, j - i, h.data() + i * d_);
      }
    }
    if (next * d_ != int64_t(p.vision.size())) throw Error("the prompt has fewer <image> ids than vision rows");
    return h;
  }

  // Runs the prompt (appends it to the cache); logits of the last position [vocab] (all: [n, vocab]).
  void prefill(const BasicOcrPrompt<B>& p, nn::KvCache& cache, float* logits, bool all_logits = false) const {
    const backend::Buffer<B> h = embeddings(p);
    decoder_.forward_embeddings(h.data(), int64_t(p.ids.size()), cache, logits, all_logits);
  }

 private:
  // A preprocessed image's pixels on B's device: the CPU reads the host array itself; a GPU gets a
  // copy in `staged`.
  static const float* on_device(const std::vector<float>& pixels, backend::Buffer<B>& staged) {
    if constexpr (B::device == Device::cpu) {
      return pixels.data();
    } else {
      staged.resize(pixels.size());
      backend::Ops<B>::upload(pixels.data(), int64_t(pixels.size()), staged.data());
      return staged.data();
    }
  }
  static std::shared_ptr<const io::Checkpoint> check_model_type(std::shared_ptr<const io::Checkpoint> ckpt) {
    if (ckpt->config().model_type != "deepseek_vl_v2")
      throw Error("not a DeepSeek-OCR checkpoint: model_type is \"" + ckpt->config().model_type + "\" (expected deepseek_vl_v2)",
                  at_field("model_type", ckpt->dir() + "/config.json"));
    return ckpt;
  }
  static tokenizer::Tokenizer load_tokenizer(const std::string& dir) {
    const auto path = std::filesystem::path(dir) / "tokenizer.json";
    if (!std::filesystem::exists(path)) throw Error("DeepSeek-OCR needs the tokenizer.json of its folder", in_file(path.string()));
    return tokenizer::Tokenizer::from_file(dir);
  }
  static nn::DeepEncoder<B> make_encoder(const std::shared_ptr<const io::Checkpoint>& ckpt, const LoadOptions& opts) {
    const std::string file = ckpt->dir() + "/config.json";
    const io::Json root = io::parse_json(io::read_text_file(file), file);
    return nn::DeepEncoder<B>(io::Weights(ckpt).on(B::device).with_activations(opts.activations).sub("model"), nn::DeepEncoderConfig::from(root, *ckpt));
  }

  std::shared_ptr<const io::Checkpoint> ckpt_;
  // On a GPU the blocks' views point into uploads that live as long as a view of their family
  // does (io/weights.hpp): this one keeps them for the model's life. (On the CPU: the mapping.)
  io::Weights weights_;
  DeepSeekV3<B> decoder_;
  tokenizer::Tokenizer tok_;
  nn::DeepEncoder<B> encoder_;
  int64_t d_ = 0;
  backend::Buffer<B> newline_, separator_;  // [d] f32 on B's device
  int32_t image_token_id_ = -1;
};

}  // namespace deepseek::models
