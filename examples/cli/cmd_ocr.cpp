// deepseek-cli ocr: DeepSeek-OCR on the CPU, an image or PDF pages in, markdown out.
//   ocr --model DIR (--image FILE | --pdf FILE [--pages 1-3,5] [--dpi 144]) [--mode tiny|small|base|large|gundam|gundam-m]
//       [--prompt TEXT] [--max-new N] [--greedy | --temperature T --top-p P --top-k K --seed S] [--no-repeat-ngram N]
//       [--max-crops N] [--print-ids] [--stats] [--dump-vision FILE.npy] [--boxes FILE.json] [--out DIR] [--threads N]
//       [--activations f32|bf16] [--cache-dtype bf16|f32]
// Defaults are HF infer()'s: mode gundam, prompt "<image>\n<|grounding|>Convert the document to markdown.",
// greedy, no_repeat_ngram_size 20 (0 turns it off), max 9 tiles, stop at end-of-sentence; --max-new defaults to
// what the context (max_position_embeddings) leaves after the prompt, at most 8192 (the authors' setting).
// stdout: the raw model output of each page (special tokens kept, end-of-sentence dropped); PDF pages are
// followed by "\n<--- Page Split --->\n" as in run_dpsk_ocr_pdf.py's _det.mmd. --print-ids prints each page's
// generated ids on one line instead. --stats: one JSON line on stderr at the end. A progress line per page on stderr.
// --dump-vision: the vision rows in decoder order (float32 [N, n_embed], newline and separator rows included;
// PDF: all pages in order). --boxes: every ref/det pair per page, boxes in pixels of the page.
// --out DIR: the reference post-processing (run_dpsk_ocr_image.py / _pdf.py): DIR/result.mmd and
// DIR/result_ori.mmd (image) or DIR/<name>.mmd and DIR/<name>_det.mmd (PDF), with image blocks cut out to
// DIR/images/<k>.jpg (PDF: <page>_<k>.jpg, pages counted from 0).
#include "command.hpp"

#include <deepseek/deepseek.hpp>
#include <deepseek/models/deepseek_ocr.hpp>
#include <deepseek/vision/grounding.hpp>
#include <deepseek/vision/image.hpp>
#include <deepseek/vision/preprocess.hpp>
#if DEEPSEEK_CLI_HAVE_POPPLER
#include <deepseek/vision/pdf.hpp>
#endif

#include <nlohmann/json.hpp>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wpedantic"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace deepseek;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

constexpr const char* kDefaultPrompt = "<image>\n<|grounding|>Convert the document to markdown.";
constexpr const char* kPageSplit = "\n<--- Page Split --->";

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw Error("cannot write", in_file(path.string()));
}

// Pillow's save(.jpg) default quality is 75.
void write_jpeg(const fs::path& path, const std::vector<uint8_t>& rgb, int64_t w, int64_t h) {
  std::string bytes;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), size_t(size)); };
  if (!stbi_write_jpg_to_func(sink, &bytes, int(w), int(h), 3, rgb.data(), 75)) throw Error("cannot encode JPEG", in_file(path.string()));
  write_text(path, bytes);
}

#if DEEPSEEK_CLI_HAVE_POPPLER
// "1-3,5" -> {0, 1, 2, 4} (0-based), each page in 1..n.
std::vector<int> parse_pages(const std::string& s, int n) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  auto num = [&](const std::string& t) {
    size_t pos = 0;
    long v = -1;
    try {
      v = std::stol(t, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos != t.size() || t.empty() || v < 1 || v > n)
      throw Error("--pages: '" + t + "' is not a page number in 1.." + std::to_string(n));
    return int(v);
  };
  while (std::getline(ss, item, ',')) {
    const size_t dash = item.find('-');
    const int a = num(item.substr(0, dash)), b = dash == std::string::npos ? a : num(item.substr(dash + 1));
    if (b < a) throw Error("--pages: range '" + item + "' runs backwards");
    for (int p = a; p <= b; ++p) out.push_back(p - 1);
  }
  if (out.empty()) throw Error("--pages is empty");
  return out;
}
#endif

// Text of generated ids as HF decodes them: ids the tokenizer does not know are skipped (the model's
// vocabulary rows outnumber the tokenizer's ids), a trailing end-of-sentence is dropped.
std::string decode_output(const tokenizer::Tokenizer& tok, std::vector<int32_t> ids, const io::ModelConfig& c) {
  if (!ids.empty())
    for (int64_t e : c.eos_token_ids)
      if (ids.back() == e) {
        ids.pop_back();
        break;
      }
  std::vector<tokenizer::TokenId> known;
  for (int32_t id : ids) {
    if (id < 0 || size_t(id) >= tok.vocab_size()) continue;
    try {
      tok.id_to_token(tokenizer::TokenId(id));
      known.push_back(tokenizer::TokenId(id));
    } catch (const Error&) {  // a hole in the id space
    }
  }
  return tok.decode(known);
}

int run_ocr(int argc, char** argv) {
  cli::Args args(argc, argv, {"greedy", "print-ids", "stats"},
                 {"model", "image", "pdf", "pages", "dpi", "mode", "prompt", "max-new", "temperature", "top-p", "top-k", "seed",
                  "no-repeat-ngram", "max-crops", "dump-vision", "boxes", "out", "threads", "activations", "cache-dtype"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli ocr --model DIR (--image FILE | --pdf FILE [--pages 1-3,5] [--dpi 144])\n"
        "         [--mode tiny|small|base|large|gundam|gundam-m] [--prompt TEXT] [--max-new N]\n"
        "         [--greedy | --temperature T --top-p P --top-k K --seed S] [--no-repeat-ngram N] [--max-crops N]\n"
        "         [--print-ids] [--stats] [--dump-vision FILE.npy] [--boxes FILE.json] [--out DIR] [--threads N]\n"
        "         [--activations f32|bf16] [--cache-dtype bf16|f32]\n"
        "defaults (HF infer()): --mode gundam, --prompt '<image>\\n<|grounding|>Convert the document to markdown.',\n"
        "greedy, --no-repeat-ngram 20, --max-crops 9, --max-new: the rest of the context (at most 8192).\n"
        "--pdf %s\n",
        DEEPSEEK_CLI_HAVE_POPPLER ? "renders pages with poppler" : "is not available: this deepseek-cli was built without poppler-cpp");
    return 0;
  }
  args.reject_positional();
  cli::apply_threads(args);
  if (args.has("image") == args.has("pdf")) throw Error("give exactly one of --image and --pdf");
  if (!args.has("pdf") && (args.has("pages") || args.has("dpi"))) throw Error("--pages and --dpi need --pdf");
  const vision::OcrMode mode = vision::parse_mode(args.get("mode", "gundam"));
  vision::PreprocessOptions popt;
  popt.max_crops = args.get_int("max-crops", 9, 1, vision::kMaxCrops);
  const std::string prompt = args.get("prompt", kDefaultPrompt);

  generate::GenerateOptions go;
  cli::parse_sampling(args, go.sampling);
  go.no_repeat_ngram_size = int(args.get_int("no-repeat-ngram", 20, 0, kMaxPositions));  // 0: off
  const int64_t max_new = args.get_int("max-new", 8192, 1, kMaxPositions);

  models::ocr_split_prompt(prompt, 1);  // before anything is loaded
  // Input first: a missing or broken image or PDF fails before the model loads. PDF pages render one at a time.
  std::vector<std::string> names;
  std::optional<vision::Image> single;
  std::string pdf_stem;
#if DEEPSEEK_CLI_HAVE_POPPLER
  std::optional<vision::PdfDocument> doc;
  std::vector<int> which;
  const double dpi = args.get_double("dpi", 144.0, 1.0, 2400.0);
#endif
  if (args.has("image")) {
    single = vision::load_image(args.get("image"));
    names.push_back(args.get("image"));
  } else {
#if DEEPSEEK_CLI_HAVE_POPPLER
    const std::string path = args.get("pdf");
    doc.emplace(vision::PdfDocument::open(path));
    if (args.has("pages")) which = parse_pages(args.get("pages"), doc->pages());
    else
      for (int p = 0; p < doc->pages(); ++p) which.push_back(p);
    for (int p : which) names.push_back(path + " page " + std::to_string(p + 1));
    pdf_stem = fs::path(path).stem().string();
#else
    throw Error("--pdf is not available: this deepseek-cli was built without poppler-cpp (install libpoppler-cpp-dev and reconfigure)",
                in_file(args.get("pdf")));
#endif
  }
  auto page_image = [&](size_t i) -> vision::Image {
    if (single) return std::move(*single);
#if DEEPSEEK_CLI_HAVE_POPPLER
    return doc->render(which[i], dpi);
#else
    (void)i;
    throw Error("--pdf is not available");
#endif
  };

  models::LoadOptions lo;
  lo.activations = cli::parse_activations(args);
  const nn::CacheDType cache_dtype = cli::parse_cache_dtype(args);
  const std::string dir = args.required("model");
  const models::DeepSeekOcr<cpu> ocr(io::Checkpoint::open(dir), lo);
  const auto& tok = ocr.tokenizer();
  const auto& cfg = ocr.config();

  std::vector<float> dumped;
  nlohmann::ordered_json boxes = nlohmann::ordered_json::array();
  std::string det_all, md_all;
  int64_t vision_tokens = 0;
  double encoder_s = 0;
  generate::GenerateStats total;
  const fs::path out_dir = args.get("out");
  if (args.has("out")) fs::create_directories(out_dir / "images");

  int64_t decode_tokens = 0;
  for (size_t pi = 0; pi < names.size(); ++pi) {
    const vision::Image img = page_image(pi);
    const auto t0 = clock_type::now();
    const vision::PreparedImage prep = vision::preprocess(img, mode, popt);
    const models::OcrPrompt p = ocr.make_prompt(prompt, std::vector<vision::PreparedImage>{prep});
    encoder_s += std::chrono::duration<double>(clock_type::now() - t0).count();
    vision_tokens += p.vision_rows();
    std::fprintf(stderr, "%s: %lldx%lld, %s, %lldx%lld tiles, %lld vision tokens, %zu prompt tokens\n", names[pi].c_str(),
                 (long long)img.width, (long long)img.height, vision::mode_name(mode), (long long)prep.tiles_w, (long long)prep.tiles_h,
                 (long long)p.vision_rows(), p.ids.size());
    if (args.has("dump-vision")) dumped.insert(dumped.end(), p.vision.begin(), p.vision.end());

    const int64_t room = cfg.max_position_embeddings - int64_t(p.ids.size());
    if (room < 1)
      throw Error("the prompt of " + names[pi] + " has " + std::to_string(p.ids.size()) + " tokens, the context is " +
                  std::to_string(cfg.max_position_embeddings));
    go.max_new_tokens = args.has("max-new") ? max_new : std::min<int64_t>(room, max_new);
    auto cache = ocr.make_cache({int64_t(p.ids.size()) + go.max_new_tokens, nn::CacheLayout::contiguous, 16, cache_dtype});
    generate::Generator<models::DeepSeekV3<cpu>> gen(ocr.decoder(), cache, go);
    std::optional<tokenizer::Tokenizer::StreamDecoder> stream;
    if (!args.flag("print-ids")) stream.emplace(tok);
    auto on_token = [&](int32_t id) {
      if (!stream || id < 0 || size_t(id) >= tok.vocab_size()) return true;
      for (int64_t e : cfg.eos_token_ids)
        if (id == e) return true;
      try {
        tok.id_to_token(tokenizer::TokenId(id));
      } catch (const Error&) {
        return true;
      }
      std::fputs(stream->push(tokenizer::TokenId(id)).c_str(), stdout);
      std::fflush(stdout);
      return true;
    };
    const auto out = gen.run(p.ids, [&](float* logits) { ocr.prefill(p, cache, logits); }, on_token);
    const auto& s = gen.stats();
    total.prompt_tokens += s.prompt_tokens;
    total.generated_tokens += s.generated_tokens;
    total.prefill_seconds += s.prefill_seconds;
    total.decode_seconds += s.decode_seconds;
    decode_tokens += std::max<int64_t>(s.generated_tokens - 1, 0);
    if (stream) std::fputs(stream->finish().c_str(), stdout);
    if (args.flag("print-ids")) {
      for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
    }
    std::printf("\n");
    if (args.has("pdf")) std::printf("%s\n", kPageSplit);
    std::fflush(stdout);

    const std::string text = decode_output(tok, out, cfg);
    if (args.has("boxes")) {
      nlohmann::ordered_json refs = nlohmann::ordered_json::array();
      for (const auto& r : vision::parse_grounding(text)) {
        nlohmann::ordered_json j = {{"label", r.label}, {"det", r.det}};
        if (r.boxes) {
          nlohmann::ordered_json px = nlohmann::ordered_json::array(), bins = nlohmann::ordered_json::array();
          for (const auto& b : *r.boxes) {
            const auto q = vision::to_pixels(b, img.width, img.height);
            px.push_back({q.x1, q.y1, q.x2, q.y2});
            bins.push_back({b.x1, b.y1, b.x2, b.y2});
          }
          j["boxes"] = px;
          j["bins"] = bins;
        } else {
          j["boxes"] = nullptr;  // not a [[x1, y1, x2, y2], ...] list
        }
        refs.push_back(j);
      }
      boxes.push_back({{"page", args.has("pdf") ? nlohmann::ordered_json(pi + 1) : nlohmann::ordered_json(names[pi])},
                       {"width", img.width},
                       {"height", img.height},
                       {"refs", refs}});
    }
    if (args.has("out")) {
      vision::PostProcessOptions po;
      if (args.has("pdf")) {
        po.link_prefix = "images/" + std::to_string(pi) + "_";
        po.collapse_blank_lines = true;
      }
      const auto pp = vision::postprocess_markdown(text, img.width, img.height, po);
      for (size_t j = 0; j < pp.crops.size(); ++j) {
        std::vector<uint8_t> px;
        try {
          px = vision::crop_rgb(img.rgb.data(), img.width, img.height, pp.crops[j]);
        } catch (const Error& e) {  // as the reference, which prints Pillow's error and goes on
          std::fprintf(stderr, "%s: image block %zu not saved: %s\n", names[pi].c_str(), j, e.what());
        }
        if (px.empty()) continue;  // x2 < x1 or y2 < y1: Pillow refuses the crop, the index is still used
        const auto& b = pp.crops[j];
        write_jpeg(out_dir / (po.link_prefix + std::to_string(j) + ".jpg"), px, b.x2 - b.x1, b.y2 - b.y1);
      }
      if (args.has("pdf")) {
        det_all += text + "\n" + kPageSplit + "\n";
        md_all += pp.markdown + "\n" + kPageSplit + "\n";
      } else {
        write_text(out_dir / "result_ori.mmd", text);
        write_text(out_dir / "result.mmd", pp.markdown);
      }
    }
  }
  if (args.has("out") && args.has("pdf")) {
    write_text(out_dir / (pdf_stem + "_det.mmd"), det_all);
    write_text(out_dir / (pdf_stem + ".mmd"), md_all);
  }
  if (args.has("dump-vision")) cli::write_npy(args.get("dump-vision"), dumped.data(), int64_t(dumped.size()) / ocr.n_embed(), ocr.n_embed());
  if (args.has("boxes")) {
    std::ofstream f(args.get("boxes"), std::ios::trunc);
    f << boxes.dump(1) << "\n";
    if (!f) throw Error("cannot write", in_file(args.get("boxes")));
  }
  if (args.flag("stats")) {
    nlohmann::ordered_json j = {{"pages", names.size()},
                                {"mode", vision::mode_name(mode)},
                                {"vision_tokens", vision_tokens},
                                {"encoder_ms", encoder_s * 1e3},
                                {"prompt_tokens", total.prompt_tokens},
                                {"generated_tokens", total.generated_tokens},
                                {"prefill_tokens_per_s", total.prefill_tokens_per_second()},
                                {"decode_tokens_per_s", total.decode_seconds > 0 ? double(decode_tokens) / total.decode_seconds : 0.0},
                                {"threads", num_threads()},
                                {"activations", lo.activations == ActivationDType::bf16 ? "bf16" : "f32"},
                                {"jpeg_decoder", vision::jpeg_decoder()}};
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("ocr", "DeepSeek-OCR: an image or PDF pages to markdown", run_ocr);
