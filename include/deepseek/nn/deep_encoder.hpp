// DeepSeek-OCR's vision encoder ("DeepEncoder") for one square view [3, S, S] (normalised pixels):
//   F_sam = SamVit(pixels)                      [N, 1024], N = side^2, side = S / 64 (sam_vit.hpp)
//   F_clip = ClipVision(F_sam)[1:]              [N, 1024] (CLS row dropped; clip_vision.hpp)
//   out = projector([F_clip ; F_sam])           concat CLIP first, SAM second -> [N, 2048];
//                                               projector.layers: Linear 2048 -> 1280 with bias
// Tensors (prefix model.): sam_model.*, vision_model.*, projector.layers.{weight, bias}.
// DeepEncoderConfig::from reads the widths the released config.json names (vision_config.width.
// {sam_vit_b, clip-l-14-224}, projector_config) and takes the rest from the tensor shapes (patch size,
// position grids, window, MLP widths, neck), so a small test checkpoint runs the same code as the
// released one; every tensor is then loaded with the shape the config implies (errors name it).
#pragma once

#include "deepseek/backend/ops.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/json.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/clip_vision.hpp"
#include "deepseek/nn/conv2d.hpp"
#include "deepseek/nn/sam_vit.hpp"

#include <string>
#include <vector>

namespace deepseek::nn {

struct ProjectorConfig {
  int64_t input_dim = 2048, n_embed = 1280;
};

struct DeepEncoderConfig {
  SamConfig sam;
  ClipVisionConfig clip;
  ProjectorConfig projector;

  // config_root: the parsed config.json; ckpt: the checkpoint whose tensor shapes fill in the rest.
  static DeepEncoderConfig from(const io::Json& root, const io::Checkpoint& ckpt) {
    const std::string file = ckpt.dir() + "/config.json";
    DeepEncoderConfig c;
    int64_t image_size = 1024;
    auto object = [&](const io::Json& parent, const char* key, const std::string& field) -> const io::Json* {
      if (!parent.contains(key) || parent.at(key).is_null()) return nullptr;
      if (!parent.at(key).is_object()) throw Error("expected an object", at_field(field, file));
      return &parent.at(key);
    };
    auto ints = [&](const io::Json& parent, const char* key, const std::string& field, std::vector<int64_t>& out) {
      if (!parent.contains(key)) return;
      const io::Json& a = parent.at(key);
      if (!a.is_array()) throw Error("expected an array of integers", at_field(field, file));
      out.clear();
      for (const auto& e : a) {
        if (!e.is_number_integer() || e.get<int64_t>() < 0) throw Error("expected non-negative integers", at_field(field, file));
        out.push_back(e.get<int64_t>());
      }
    };
    if (!root.is_object()) throw Error("config is not a JSON object", in_file(file));
    if (const io::Json* vc = object(root, "vision_config", "vision_config")) {
      image_size = io::detail::ConfigReader(*vc, file, "vision_config.").integer("image_size", 1024, 1, 1 << 20);
      if (const io::Json* wd = object(*vc, "width", "vision_config.width")) {
        if (const io::Json* s = object(*wd, "sam_vit_b", "vision_config.width.sam_vit_b")) {
          const std::string f = "vision_config.width.sam_vit_b.";
          io::detail::ConfigReader r(*s, file, f);
          c.sam.width = r.integer("width", c.sam.width, 1, 1 << 16);
          c.sam.depth = r.integer("layers", c.sam.depth, 0, 1024);
          c.sam.heads = r.integer("heads", c.sam.heads, 1, 1 << 12);
          ints(*s, "global_attn_indexes", f + "global_attn_indexes", c.sam.global_attn_indexes);
          std::vector<int64_t> ds(c.sam.downsample_channels.begin(), c.sam.downsample_channels.end());
          ints(*s, "downsample_channels", f + "downsample_channels", ds);
          if (ds.size() != 2 || ds[0] < 1 || ds[1] < 1)
            throw Error("expected two positive channel counts (net_2, net_3)", at_field(f + "downsample_channels", file));
          c.sam.downsample_channels = {ds[0], ds[1]};
          for (int64_t g : c.sam.global_attn_indexes)
            if (g >= c.sam.depth) throw Error("global block index " + std::to_string(g) + " >= layers", at_field(f + "global_attn_indexes", file));
        }
        if (const io::Json* s = object(*wd, "clip-l-14-224", "vision_config.width.clip-l-14-224")) {
          io::detail::ConfigReader r(*s, file, "vision_config.width.clip-l-14-224.");
          c.clip.width = r.integer("width", c.clip.width, 1, 1 << 16);
          c.clip.layers = r.integer("layers", c.clip.layers, 0, 1024);
          c.clip.heads = r.integer("heads", c.clip.heads, 1, 1 << 12);
        }
      }
    }
    if (const io::Json* pc = object(root, "projector_config", "projector_config")) {
      io::detail::ConfigReader r(*pc, file, "projector_config.");
      const std::string type = r.string("projector_type", "linear");
      if (type != "linear")
        throw Error("unsupported projector_type \"" + type + "\" (DeepSeek-OCR uses linear)", r.where("projector_type"));
      c.projector.input_dim = r.integer("input_dim", c.projector.input_dim, 1, 1 << 20);
      c.projector.n_embed = r.integer("n_embed", c.projector.n_embed, 1, 1 << 20);
    }

    // What the config does not name comes from the tensors.
    auto shape = [&](const std::string& name, int rank) -> Shape {
      const std::string full = "model." + name;
      const io::TensorInfo* t = ckpt.find(full);
      if (!t) throw Error("missing tensor", at_tensor(full, ckpt.dir()));
      if (t->shape.rank != rank)
        throw Error("expected a rank-" + std::to_string(rank) + " tensor, found " + t->shape.str(), at_tensor(full, ckpt.dir()));
      return t->shape;
    };
    const Shape pe = shape("sam_model.patch_embed.proj.weight", 4);
    c.sam.patch = pe[2];
    if (pe[3] != pe[2] || c.sam.patch < 1)
      throw Error("patch embedding kernel must be square, found " + pe.str(), at_tensor("model.sam_model.patch_embed.proj.weight", ckpt.dir()));
    c.sam.pos_grid = shape("sam_model.pos_embed", 4)[1];
    if (c.sam.pos_grid * c.sam.patch != image_size)
      throw Error("pos_embed grid " + std::to_string(c.sam.pos_grid) + " x patch " + std::to_string(c.sam.patch) +
                      " != vision_config.image_size " + std::to_string(image_size),
                  at_tensor("model.sam_model.pos_embed", ckpt.dir()));
    for (int64_t i = 0; i < c.sam.depth; ++i)
      if (!c.sam.is_global(i)) {
        const std::string name = "sam_model.blocks." + std::to_string(i) + ".attn.rel_pos_h";
        const int64_t L = shape(name, 2)[0];
        if (L < 1 || L % 2 == 0)
          throw Error("a windowed block's table must have 2 * window - 1 rows, found " + std::to_string(L), at_tensor("model." + name, ckpt.dir()));
        c.sam.window = (L + 1) / 2;
        break;
      }
    if (c.sam.depth > 0) c.sam.mlp_dim = shape("sam_model.blocks.0.mlp.lin1.weight", 2)[0];
    c.sam.neck = shape("sam_model.neck.0.weight", 4)[0];
    c.clip.positions = shape("vision_model.embeddings.position_embedding.weight", 2)[0];
    if (c.clip.layers > 0) c.clip.ffn = shape("vision_model.transformer.layers.0.mlp.fc1.weight", 2)[0];

    if (c.clip.width != c.sam.out_channels())
      throw Error("CLIP width " + std::to_string(c.clip.width) + " must equal SAM's output channels " +
                      std::to_string(c.sam.out_channels()) + " (CLIP consumes SAM's features)",
                  at_field("vision_config.width.clip-l-14-224.width", file));
    if (c.projector.input_dim != c.clip.width + c.sam.out_channels())
      throw Error("projector input_dim " + std::to_string(c.projector.input_dim) + " must be CLIP width + SAM channels = " +
                      std::to_string(c.clip.width + c.sam.out_channels()),
                  at_field("projector_config.input_dim", file));
    return c;
  }
};

template <class B>
class DeepEncoder {
 public:
  DeepEncoder() = default;
  // model: a view with prefix "model."; the encoder keeps the checkpoint (its mapped weights) alive.
  DeepEncoder(const io::Weights& model, const DeepEncoderConfig& c)
      : weights_(model), c_(c), sam_(model.sub("sam_model"), c.sam), clip_(model.sub("vision_model"), c.clip),
        projector_(model.sub("projector"), "layers", c.projector.n_embed, c.projector.input_dim) {}

  const DeepEncoderConfig& config() const { return c_; }
  int64_t n_embed() const { return c_.projector.n_embed; }
  // Feature grid side for an input side S (S / 64 for the released net).
  int64_t out_side(int64_t S) const { return c_.sam.out_side(S); }

  // pixels [3, S, S] -> out [side * side, n_embed] (row-major grid); returns side.
  int64_t forward(const float* pixels, int64_t S, backend::Buffer<B>& out) const {
    backend::Buffer<B> f_sam, f_clip;
    const int64_t side = sam_.forward(pixels, S, f_sam);
    clip_.forward(f_sam.data(), side, f_clip);
    project(f_clip.data(), f_sam.data(), side * side, out);
    return side;
  }

  // The stages, for tests and for callers that want the features: F_sam [N, C_sam], CLIP [1 + N, D].
  const SamVit<B>& sam() const { return sam_; }
  const ClipVision<B>& clip() const { return clip_; }
  // clip_out [1 + N, D] (CLS first), f_sam [N, C] -> out [N, n_embed].
  void project(const float* clip_out, const float* f_sam, int64_t N, backend::Buffer<B>& out) const {
    using Ops = backend::Ops<B>;
    const int64_t D = c_.clip.width, C = c_.sam.out_channels();
    backend::Buffer<B> cat(size_t(N * (D + C)));
    Ops::copy2d(clip_out + D, D, cat.data(), D + C, N, D);
    Ops::copy2d(f_sam, C, cat.data() + D, D + C, N, C);
    out.resize(size_t(N * n_embed()));
    projector_.forward(cat.data(), N, out.data());
  }

  // Multiply-adds x 2 of one forward at input side S.
  int64_t flops(int64_t S) const {
    const int64_t side = out_side(S);
    return sam_.flops(S) + clip_.flops(side) + 2 * side * side * c_.projector.input_dim * c_.projector.n_embed;
  }

 private:
  io::Weights weights_;  // holds the checkpoint the weight views below point into
  DeepEncoderConfig c_;
  SamVit<B> sam_;
  ClipVision<B> clip_;
  LinearBias<B> projector_;
};

}  // namespace deepseek::nn
