// PDF pages as RGB images for DeepSeek-OCR, rendered with poppler-cpp (optional dependency: include
// this header only when linking poppler-cpp; the umbrella <deepseek/deepseek.hpp> does not).
//
// The official PDF runner (run_dpsk_ocr_pdf.py) renders each page with PyMuPDF at 144 dpi
// (zoom = dpi / 72, alpha=False: opaque, on white) and feeds the RGB page to the image pipeline. Here
// poppler renders at the same resolution (antialiased, on white paper). Known difference: MuPDF and
// poppler rasterise differently (anti-aliasing, font hinting), and their page size rounding can differ
// by a pixel, so page pixels are close, not equal.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/vision/image.hpp"

#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-image.h>
#include <poppler-page-renderer.h>
#include <poppler-page.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

namespace deepseek::vision {

class PdfDocument {
 public:
  static PdfDocument open(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) throw Error("is a directory, not a PDF file", in_file(path));
    if (!fs::exists(path, ec)) throw Error("no such file", in_file(path));
    poppler::set_debug_error_function([](const std::string&, void*) {}, nullptr);  // errors come back as ours
    PdfDocument d;
    d.path_ = path;
    d.doc_.reset(poppler::document::load_from_file(path));
    if (!d.doc_) throw Error("not a readable PDF file", in_file(path));
    if (d.doc_->is_locked()) throw Error("the PDF is encrypted (password protected)", in_file(path));
    if (d.doc_->pages() < 1) throw Error("the PDF has no pages", in_file(path));
    return d;
  }

  int pages() const { return doc_->pages(); }

  // Page `index` (0-based) at `dpi` dots per inch, 8-bit RGB.
  Image render(int index, double dpi) const {
    if (index < 0 || index >= pages())
      throw Error("page " + std::to_string(index + 1) + " does not exist (the PDF has " + std::to_string(pages()) + ")", in_file(path_));
    if (!(dpi >= 1 && dpi <= 2400)) throw Error("dpi must be in [1, 2400], got " + std::to_string(dpi));
    std::unique_ptr<poppler::page> page(doc_->create_page(index));
    if (!page) throw Error("cannot read page " + std::to_string(index + 1), in_file(path_));
    const poppler::rectf box = page->page_rect();
    const double w = std::ceil(box.width() * dpi / 72.0), h = std::ceil(box.height() * dpi / 72.0);
    if (!(w >= 1 && h >= 1) || w * h > double(kMaxImagePixels))
      throw Error("page " + std::to_string(index + 1) + " at " + std::to_string(int(dpi)) + " dpi would be " + std::to_string(int64_t(w)) +
                      "x" + std::to_string(int64_t(h)) + " pixels (limit " + std::to_string(kMaxImagePixels) + ")",
                  in_file(path_));
    poppler::page_renderer r;
    r.set_render_hints(poppler::page_renderer::antialiasing | poppler::page_renderer::text_antialiasing);
    r.set_image_format(poppler::image::format_argb32);
    const poppler::image img = r.render_page(page.get(), dpi, dpi);
    if (!img.is_valid() || img.format() != poppler::image::format_argb32 || img.width() < 1 || img.height() < 1)
      throw Error("poppler could not render page " + std::to_string(index + 1), in_file(path_));
    Image out;
    out.width = img.width();
    out.height = img.height();
    out.rgb.resize(size_t(out.width * out.height * 3));
    // argb32 is a native-endian 0xAARRGGBB word per pixel; the paper is opaque white, so alpha is 255.
    for (int64_t y = 0; y < out.height; ++y) {
      const auto* row = reinterpret_cast<const uint8_t*>(img.const_data()) + y * img.bytes_per_row();
      for (int64_t x = 0; x < out.width; ++x) {
        uint32_t v;
        std::memcpy(&v, row + x * 4, 4);
        uint8_t* o = out.rgb.data() + (y * out.width + x) * 3;
        o[0] = uint8_t(v >> 16);
        o[1] = uint8_t(v >> 8);
        o[2] = uint8_t(v);
      }
    }
    return out;
  }

 private:
  PdfDocument() = default;
  std::string path_;
  std::unique_ptr<poppler::document> doc_;
};

}  // namespace deepseek::vision
