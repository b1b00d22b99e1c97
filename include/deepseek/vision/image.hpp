// Image decoding for the DeepSeek-OCR front end: bytes -> 8-bit RGB, as the official loaders see it.
//
// The official code (HF `infer()` and the vLLM runner) opens a file with Pillow, applies
// `ImageOps.exif_transpose` and calls `.convert('RGB')`. We decode JPEG with libjpeg-turbo, set
// up exactly as Pillow's JpegDecode.c sets it up, and everything else with stb_image, and
// reproduce Pillow's result:
//   * PNG / JPEG / BMP / GIF (first frame); grey, grey+alpha, palette -> RGB (grey replicated,
//     palette looked up); RGBA -> RGB with the alpha dropped (Alpha::drop, what convert('RGB')
//     does) or composited onto white (Alpha::white).
//   * 16-bit PNG: Pillow keeps the high byte of RGB/RGBA/grey+alpha samples (as stb does), but
//     opens 16-bit grey as mode "I;16", whose convert('RGB') clamps each sample to 255. We do the
//     same (stb's 16-bit load, then min(v, 255)).
//   * EXIF orientation (tag 0x0112, values 1-8) from a JPEG APP1 "Exif" segment or a PNG eXIf
//     chunk, applied as Pillow's transpose table (2 flip left-right, 3 rotate 180, 4 flip top-
//     bottom, 5 transpose, 6 rotate 270, 7 transverse, 8 rotate 90). Malformed EXIF means
//     orientation 1 (the official loader falls back to the untransposed image when
//     exif_transpose raises), except an IFD cut short, whose complete entries Pillow still uses.
//     The parser reads only inside the segment it was given.
//   * GIF transparency: Pillow draws frame 0 on a canvas of the transparency index (else index 0)
//     and convert('RGB') shows its palette colour; stb returns those pixels with alpha 0, so
//     Alpha::drop gives them that palette colour (Alpha::white: white).
//   * JPEG: libjpeg-turbo with Pillow's settings (see JpegContext): grey, YCbCr / RGB and CMYK /
//     YCCK files (CMYK as Pillow's "CMYK;I" + cmyk2rgb); equal to Pillow 13 (bundled libjpeg-
//     turbo 3.x) bit for bit on every JPEG fixture with Debian 12's libjpeg-turbo 2.1.5.
//     Truncated files are errors (Pillow: "image file is truncated"); corrupt entropy data that
//     libjpeg repairs with a warning decodes, as in Pillow.
// JPEG without libjpeg: the top-level CMakeLists.txt runs find_package(JPEG); when found,
// deepseek::deepseek links JPEG::JPEG and defines DEEPSEEK_HAVE_LIBJPEG=1. Without it (or when a
// consumer includes these headers without that definition) JPEG falls back to stb_image, whose
// IDCT / chroma upsampling / progressive smoothing differ from libjpeg-turbo's: pixels up to 7 LSB
// off Pillow's on the fixtures (4:2:2 chroma; 1-3 LSB on most files, up to 13% of the values on a
// progressive one), and it refuses some damaged files Pillow repairs, so tokens can differ from
// the official pipeline's. Not silent:
// vision::jpeg_decoder() names the decoder in use ("libjpeg-turbo" / "libjpeg" / "stb_image"),
// CMake prints a warning, and the OCR CLI's --stats prints it.
// Robustness: the header's width x height is checked against max_pixels before any pixel buffer
// is allocated; truncated GIF / BMP files (which stb zero-fills and accepts) are refused by a
// bounds-checked walk, as Pillow refuses them; JPEG Huffman tables with more than 256 codes are
// refused before stb 2.27 (Debian 12) would write past its table (found by fuzz/fuzz_image.cpp;
// upstream 2.28 has the same check). libjpeg: the header is read (jpeg_read_header) and checked
// against max_pixels before jpeg_start_decompress allocates anything image-sized; errors longjmp
// to one setjmp and end in jpeg_destroy_decompress, then a deepseek::Error naming the file.
// Linkage: stb is compiled static in every TU (detail/stb_image.hpp); our inline functions call
// those internal copies, which are identical code in every TU.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/vision/detail/stb_image.hpp"

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <sys/stat.h>

#if DEEPSEEK_HAVE_LIBJPEG
#include <csetjmp>
#include <cstdio>  // jpeglib.h uses FILE and size_t without including their headers

#include <jpeglib.h>
#endif

namespace deepseek::vision {

// 8-bit RGB, HWC, row-major: pixel (x, y) channel c is rgb[(y * width + x) * 3 + c].
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

enum class Alpha {
  drop,   // Pillow convert('RGB'): alpha discarded (what the official code does)
  white,  // composite onto white: (c*a + 255*(255-a)) / 255, rounded to nearest
};

// Policy limit against decompression bombs: Pillow's own DecompressionBombError threshold
// (2 * Image.MAX_IMAGE_PIXELS = 2 * 89,478,485), so every image the reference pipeline accepts is
// accepted here. At the limit the RGBA decode buffer is 716 MB.
inline constexpr int64_t kMaxImagePixels = 178956970;
// Largest file load_image reads into memory (stb takes an int length).
inline constexpr int64_t kMaxImageFileBytes = int64_t(1) << 30;

struct DecodeOptions {
  Alpha alpha = Alpha::drop;
  bool exif_transpose = true;
  int64_t max_pixels = kMaxImagePixels;
};

enum class ImageFormat { unknown, png, jpeg, bmp, gif };

namespace detail {

inline uint32_t read_u16(const uint8_t* p, bool big) {
  return big ? (uint32_t(p[0]) << 8) | p[1] : (uint32_t(p[1]) << 8) | p[0];
}
inline uint32_t read_u32(const uint8_t* p, bool big) {
  return big ? (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]
             : (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | p[0];
}

}  // namespace detail

inline ImageFormat sniff_format(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::png;
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return ImageFormat::jpeg;
  if (size >= 6 && std::memcmp(data, "GIF8", 4) == 0) return ImageFormat::gif;
  if (size >= 2 && data[0] == 'B' && data[1] == 'M') return ImageFormat::bmp;
  return ImageFormat::unknown;
}

// Orientation (1-8) stored in a TIFF structure (the body of an EXIF block, after "Exif\0\0"):
// header "II*\0" or "MM\0*", IFD0 offset, IFD0 = count + 12-byte entries (tag, type, count,
// value). Tag 0x0112 with one BYTE/SHORT/LONG value counts; the last such entry wins (Pillow keeps
// IFD tags in a dict). A bad header or IFD offset -> 1; an IFD cut short keeps the entries before
// the cut, as Pillow does (it warns "Corrupt EXIF data" and uses what it read).
inline int tiff_orientation(const uint8_t* p, size_t n) {
  if (n < 8) return 1;
  bool big;
  if (p[0] == 'I' && p[1] == 'I')
    big = false;
  else if (p[0] == 'M' && p[1] == 'M')
    big = true;
  else
    return 1;
  if (detail::read_u16(p + 2, big) != 42) return 1;
  const uint64_t ifd = detail::read_u32(p + 4, big);
  if (ifd + 2 > n) return 1;
  const uint64_t count = detail::read_u16(p + ifd, big);
  int orientation = 1;
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t at = ifd + 2 + 12 * k;
    if (at + 12 > n) break;  // truncated IFD: Pillow warns and keeps the entries it read
    const uint8_t* e = p + at;
    if (detail::read_u16(e, big) != 0x0112) continue;
    const uint32_t type = detail::read_u16(e + 2, big), cnt = detail::read_u32(e + 4, big);
    if (cnt != 1) {
      orientation = 1;  // a tuple value: Pillow's method lookup finds nothing
      continue;
    }
    uint32_t v = 0;
    if (type == 1)
      v = e[8];
    else if (type == 3)
      v = detail::read_u16(e + 8, big);
    else if (type == 4)
      v = detail::read_u32(e + 8, big);
    else
      continue;
    orientation = (v >= 1 && v <= 8) ? int(v) : 1;
  }
  return orientation;
}

// EXIF block (optionally prefixed "Exif\0\0") -> orientation.
inline int exif_block_orientation(const uint8_t* p, size_t n) {
  if (n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0) return tiff_orientation(p + 6, n - 6);
  return tiff_orientation(p, n);
}

// The EXIF orientation of a JPEG (first APP1 "Exif\0\0" segment before SOS) or a PNG (eXIf
// chunk); 1 for other formats, no EXIF, or malformed EXIF.
inline int exif_orientation(const uint8_t* data, size_t size) {
  const ImageFormat f = sniff_format(data, size);
  if (f == ImageFormat::jpeg) {
    size_t pos = 2;
    while (pos + 4 <= size) {
      if (data[pos] != 0xff) return 1;
      const uint8_t marker = data[pos + 1];
      if (marker == 0xff) {  // fill byte
        ++pos;
        continue;
      }
      if (marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {  // no length
        pos += 2;
        continue;
      }
      if (marker == 0xda || marker == 0xd9) return 1;  // start of scan / end of image
      const size_t len = detail::read_u16(data + pos + 2, true);
      if (len < 2 || pos + 2 + len > size) return 1;
      if (marker == 0xe1 && len >= 8 && std::memcmp(data + pos + 4, "Exif\0\0", 6) == 0)
        return tiff_orientation(data + pos + 10, len - 8);
      pos += 2 + len;
    }
    return 1;
  }
  if (f == ImageFormat::png) {
    size_t pos = 8;
    while (pos + 12 <= size) {
      const uint64_t len = detail::read_u32(data + pos, true);
      if (len > size - pos - 12) return 1;
      const uint8_t* type = data + pos + 4;
      if (std::memcmp(type, "eXIf", 4) == 0) return exif_block_orientation(data + pos + 8, size_t(len));
      if (std::memcmp(type, "IEND", 4) == 0) return 1;
      pos += 12 + size_t(len);
    }
  }
  return 1;
}

// Pillow's Image.transpose for the EXIF orientations (ImageOps.exif_transpose's table).
inline Image apply_exif_orientation(const Image& in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int64_t W = in.width, H = in.height;
  const bool swap = orientation >= 5;
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.rgb.resize(in.rgb.size());
  for (int64_t y = 0; y < out.height; ++y) {
    for (int64_t x = 0; x < out.width; ++x) {
      int64_t sx = 0, sy = 0;  // source pixel of output (x, y)
      switch (orientation) {
        case 2:  // FLIP_LEFT_RIGHT
          sx = W - 1 - x, sy = y;
          break;
        case 3:  // ROTATE_180
          sx = W - 1 - x, sy = H - 1 - y;
          break;
        case 4:  // FLIP_TOP_BOTTOM
          sx = x, sy = H - 1 - y;
          break;
        case 5:  // TRANSPOSE
          sx = y, sy = x;
          break;
        case 6:  // ROTATE_270 (clockwise)
          sx = y, sy = H - 1 - x;
          break;
        case 7:  // TRANSVERSE
          sx = W - 1 - y, sy = H - 1 - x;
          break;
        default:  // 8: ROTATE_90 (counter-clockwise)
          sx = W - 1 - y, sy = x;
          break;
      }
      std::memcpy(&out.rgb[size_t((y * out.width + x) * 3)], &in.rgb[size_t((sy * W + sx) * 3)], 3);
    }
  }
  return out;
}

namespace detail {

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown";
}

// PNG IHDR colour type and bit depth (the first chunk, fixed layout), or -1 if absent.
inline void png_ihdr(const uint8_t* data, size_t size, int& bit_depth, int& color_type) {
  bit_depth = color_type = -1;
  if (size >= 33 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    bit_depth = data[24];
    color_type = data[25];
  }
}

}  // namespace detail

namespace detail {

// stb_image pads a short GIF or BMP with zeros and reports success, where Pillow raises "image
// file is truncated"; JPEG and PNG truncation stb reports itself. These walks are bounds-checked
// and return a reason, or nullptr when the data the first image needs is all there.

// GIF: header, logical screen, global colour table, then extension blocks until the first image
// descriptor, its local colour table, LZW code size and data sub-blocks up to the 0 terminator.
// Also finds the colour Pillow gives the pixels stb leaves transparent (alpha 0): frame 0 is
// drawn on a canvas of the transparency index if the graphic control extension sets one, else
// of index 0, and convert('RGB') shows that index's palette colour (local table, else global).
struct GifFirstFrame {
  const char* error = nullptr;
  uint8_t fill[3] = {0, 0, 0};
};

inline GifFirstFrame gif_first_frame(const uint8_t* d, size_t n) {
  GifFirstFrame out;
  if (n < 13) return out.error = "GIF header is truncated", out;
  size_t pos = 13;
  const uint8_t* palette = nullptr;
  size_t palette_size = 0;
  if (d[10] & 0x80) {
    palette = d + pos, palette_size = size_t(1) << ((d[10] & 7) + 1);
    pos += 3 * palette_size;
  }
  int transparent = -1;
  auto skip_sub_blocks = [&]() -> bool {
    while (true) {
      if (pos >= n) return false;
      const size_t len = d[pos++];
      if (len == 0) return true;
      if (len > n - pos) return false;
      pos += len;
    }
  };
  while (true) {
    if (pos >= n) return out.error = "GIF ends before its first image", out;
    const uint8_t b = d[pos++];
    if (b == 0x21) {  // extension: label, then sub-blocks
      if (pos >= n) return out.error = "GIF extension is truncated", out;
      const uint8_t label = d[pos++];
      if (label == 0xf9 && pos + 5 <= n && d[pos] >= 4) transparent = (d[pos + 1] & 1) ? d[pos + 4] : -1;
      if (!skip_sub_blocks()) return out.error = "GIF extension is truncated", out;
    } else if (b == 0x2c) {  // image descriptor
      if (n - pos < 9) return out.error = "GIF image descriptor is truncated", out;
      const uint8_t flags = d[pos + 8];
      pos += 9;
      if (flags & 0x80) {
        palette = d + pos, palette_size = size_t(1) << ((flags & 7) + 1);
        pos += 3 * palette_size;
      }
      if (pos >= n) return out.error = "GIF image data is truncated", out;
      ++pos;  // LZW minimum code size
      if (!skip_sub_blocks()) return out.error = "GIF image data is truncated", out;
      const size_t index = transparent >= 0 ? size_t(transparent) : 0;
      if (palette && index < palette_size)
        for (int c = 0; c < 3; ++c) out.fill[c] = palette[3 * index + size_t(c)];
      return out;
    } else {
      return out.error = "GIF has an unknown block before its first image", out;
    }
  }
}

// JPEG: walks every marker segment, also between the scans of a progressive file (entropy-coded
// data is skipped up to the next 0xFF that is neither stuffing nor a restart marker), and refuses
// Huffman tables (DHT) with more than 256 codes: stb_image 2.27 (Debian 12's) writes past its
// 257-entry size table on those (fixed upstream in 2.28 with this same check).
inline const char* jpeg_corruption(const uint8_t* d, size_t n) {
  size_t pos = 2;
  while (pos + 4 <= n) {
    if (d[pos] != 0xff) {  // padding between segments: stb resyncs byte by byte, so do we
      ++pos;
      continue;
    }
    const uint8_t marker = d[pos + 1];
    if (marker == 0xff) {
      ++pos;
      continue;
    }
    if (marker == 0xd8 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2;
      continue;
    }
    if (marker == 0xd9) return nullptr;
    const size_t len = read_u16(d + pos + 2, true);
    if (marker == 0xc4) {
      // As stb reads it: tables until the declared length is used up, each 1 + 16 count bytes
      // + codes, even past the segment or the file (stb reads 0 past the end).
      size_t at = pos + 4;
      const size_t end = pos + 2 + len;
      while (at < end) {
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += at + i < n ? d[at + i] : 0;
        if (codes > 256) return "corrupt JPEG Huffman table (DHT): more than 256 codes";
        at += 17 + codes;
      }
    }
    if (len < 2 || pos + 2 + len > n) return nullptr;  // truncated: stb reports it
    pos += 2 + len;
    if (marker == 0xda) {  // skip the entropy-coded segment
      while (pos + 1 < n && !(d[pos] == 0xff && d[pos + 1] != 0 && !(d[pos + 1] >= 0xd0 && d[pos + 1] <= 0xd7))) ++pos;
    }
  }
  return nullptr;
}

// BMP: uncompressed / bitfield pixel arrays must fit in the file (RLE ones stb checks as it goes).
inline const char* bmp_truncation(const uint8_t* d, size_t n) {
  if (n < 26) return "BMP header is truncated";
  const uint64_t offset = read_u32(d + 10, false), header = read_u32(d + 14, false);
  int64_t w = 0, h = 0;
  uint32_t bpp = 0, compression = 0;
  if (header == 12) {
    w = read_u16(d + 18, false), h = read_u16(d + 20, false), bpp = read_u16(d + 24, false);
  } else {
    if (n < 34) return "BMP header is truncated";
    w = int32_t(read_u32(d + 18, false)), h = int32_t(read_u32(d + 22, false));
    bpp = read_u16(d + 28, false), compression = read_u32(d + 30, false);
  }
  if (compression != 0 && compression != 3) return nullptr;
  if (w < 0) w = -w;
  if (h < 0) h = -h;
  const uint64_t row = ((uint64_t(w) * bpp + 31) / 32) * 4;
  if (offset > n || row * uint64_t(h) > n - offset) return "BMP pixel data is truncated";
  return nullptr;
}

}  // namespace detail

namespace detail {

#if DEEPSEEK_HAVE_LIBJPEG

// libjpeg decoding as Pillow's JpegDecode.c sets it up (Pillow 13 with its bundled libjpeg-turbo):
// jpeg_read_header, the library's own guess of the file's colour space (JFIF / Adobe transform /
// component ids; Pillow passes no jpegmode), out_color_space from the SOF component count
// (1 -> JCS_GRAYSCALE "L", 3 -> JCS_RGB "RGB"/"RGBX", 4 -> JCS_CMYK "CMYK;I"), and the library's
// defaults for everything else: JDCT_ISLOW, fancy upsampling, block smoothing, no scaling (draft
// mode is used only by Image.draft(), which the official loader never calls). Set explicitly
// below so a changed default cannot move the pixels. Warnings (corrupt entropy data that libjpeg
// repairs) are ignored, as Pillow's empty output_message does; errors end the decode.
//
// Errors: libjpeg's error_exit must not return, so it longjmps back to jpeg_decode_raw, the only
// function that calls setjmp. Between that setjmp and any longjmp there are only C frames and
// this file's trivial callbacks, and jpeg_decode_raw itself owns no object with a destructor:
// all its state lives in JpegContext (owned by the caller) and libjpeg's own pools, which
// jpeg_destroy_decompress frees on every path.
struct JpegContext {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_source_mgr src;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  const uint8_t* data = nullptr;
  size_t size = 0;
  int64_t max_pixels = 0;
  bool rows_done = false;  // every scanline read: a missing EOI is then fine (Pillow: done)
  // out
  enum Status { ok, failed, too_many_pixels } status = ok;
  int64_t width = 0, height = 0;
  int components = 0;
};

// Scans in a progressive / multi-scan file, past which the file is refused: each scan is a pass
// over the whole coefficient buffer, so a small file with 10^5 tiny scans of a large frame would
// decode for hours (libjpeg-turbo's own fuzzers and djpeg -maxscan use the same guard). Real
// encoders write at most a few dozen scans.
inline constexpr int kMaxJpegScans = 1000;

inline JpegContext& jpeg_ctx(j_common_ptr c) { return *static_cast<JpegContext*>(c->client_data); }

[[noreturn]] inline void jpeg_fail(JpegContext& ctx, const char* why) {
  std::snprintf(ctx.message, sizeof ctx.message, "%s", why);
  std::longjmp(ctx.jump, 1);
}

inline void jpeg_error_exit(j_common_ptr c) {
  JpegContext& ctx = jpeg_ctx(c);
  (*c->err->format_message)(c, ctx.message);
  std::longjmp(ctx.jump, 1);
}
inline void jpeg_output_message(j_common_ptr) {}
inline void jpeg_init_source(j_decompress_ptr) {}
inline void jpeg_term_source(j_decompress_ptr) {}

// The whole file is in the buffer from the start, so running out means the file is cut short:
// an error (Pillow: "image file is truncated"), except after the last scanline, where Pillow's
// decoder is already done and a fake EOI lets jpeg_finish_decompress end.
inline boolean jpeg_fill_input_buffer(j_decompress_ptr c) {
  JpegContext& ctx = jpeg_ctx(reinterpret_cast<j_common_ptr>(c));
  if (!ctx.rows_done) jpeg_fail(ctx, "the JPEG data ends before the image is complete: truncated file");
  static const JOCTET kEoi[2] = {0xFF, JPEG_EOI};
  c->src->next_input_byte = kEoi;
  c->src->bytes_in_buffer = 2;
  return TRUE;
}
inline void jpeg_skip_input_data(j_decompress_ptr c, long n) {
  if (n <= 0) return;
  jpeg_source_mgr* s = c->src;
  while (size_t(n) > s->bytes_in_buffer) {  // past the end: fill_input_buffer fails or gives EOI
    n -= long(s->bytes_in_buffer);
    s->bytes_in_buffer = 0;
    (*s->fill_input_buffer)(c);
  }
  s->next_input_byte += n;
  s->bytes_in_buffer -= size_t(n);
}
inline void jpeg_progress(j_common_ptr c) {
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  if (!c->is_decompressor) return;
  if (d->input_scan_number > kMaxJpegScans)
    jpeg_fail(jpeg_ctx(c), "corrupt JPEG: more than 1000 scans (kMaxJpegScans)");
}

// Decodes into `out` (resized here, owned by the caller). Returns with ctx.status set; on
// `failed` ctx.message says why.
inline void jpeg_decode_raw(JpegContext& ctx, std::vector<uint8_t>& out) {
  ctx.cinfo.err = jpeg_std_error(&ctx.err);
  ctx.err.error_exit = jpeg_error_exit;
  ctx.err.output_message = jpeg_output_message;
  ctx.cinfo.client_data = &ctx;
  if (setjmp(ctx.jump)) {
    jpeg_destroy_decompress(&ctx.cinfo);
    ctx.status = JpegContext::failed;
    return;
  }
  jpeg_create_decompress(&ctx.cinfo);
  ctx.cinfo.client_data = &ctx;  // jpeg_create_decompress clears the struct
  ctx.src.next_input_byte = ctx.data;
  ctx.src.bytes_in_buffer = ctx.size;
  ctx.src.init_source = jpeg_init_source;
  ctx.src.fill_input_buffer = jpeg_fill_input_buffer;
  ctx.src.skip_input_data = jpeg_skip_input_data;
  ctx.src.resync_to_restart = jpeg_resync_to_restart;
  ctx.src.term_source = jpeg_term_source;
  ctx.cinfo.src = &ctx.src;
  ctx.progress.progress_monitor = jpeg_progress;
  ctx.cinfo.progress = &ctx.progress;

  jpeg_read_header(&ctx.cinfo, TRUE);  // TRUE: a tables-only stream is an error
  jpeg_decompress_struct& ci = ctx.cinfo;
  ctx.width = ci.image_width;
  ctx.height = ci.image_height;
  ctx.components = ci.num_components;
  if (ci.data_precision != 8) jpeg_fail(ctx, "JPEG sample precision is not 8 bits (Pillow refuses it too)");
  if (ci.num_components == 1)
    ci.out_color_space = JCS_GRAYSCALE;
  else if (ci.num_components == 3)
    ci.out_color_space = JCS_RGB;
  else if (ci.num_components == 4)
    ci.out_color_space = JCS_CMYK;
  else
    jpeg_fail(ctx, "JPEG has a component count other than 1, 3 or 4 (Pillow refuses it too)");
  if (ctx.width <= 0 || ctx.height <= 0) jpeg_fail(ctx, "image has zero width or height");
  if (ctx.width > ctx.max_pixels / ctx.height) {  // before libjpeg allocates anything image-sized
    jpeg_destroy_decompress(&ctx.cinfo);
    ctx.status = JpegContext::too_many_pixels;
    return;
  }
  ci.dct_method = JDCT_ISLOW;
  ci.do_fancy_upsampling = TRUE;
  ci.do_block_smoothing = TRUE;
  ci.scale_num = ci.scale_denom = 1;
  ci.quantize_colors = FALSE;
  jpeg_start_decompress(&ci);
  const size_t row = size_t(ci.output_width) * size_t(ci.output_components);
  try {  // no libjpeg call inside: nothing longjmps across this handler
    out.resize(row * size_t(ci.output_height));
  } catch (...) {
    jpeg_destroy_decompress(&ci);
    throw;
  }
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW p = out.data() + row * ci.output_scanline;
    jpeg_read_scanlines(&ci, &p, 1);
  }
  ctx.rows_done = true;
  jpeg_finish_decompress(&ci);
  jpeg_destroy_decompress(&ci);
  ctx.status = JpegContext::ok;
}

#endif  // DEEPSEEK_HAVE_LIBJPEG

}  // namespace detail

namespace detail {

#if DEEPSEEK_HAVE_LIBJPEG
// libjpeg's samples -> RGB as Pillow's convert('RGB') makes them: grey replicated; CMYK read as
// "CMYK;I" (Pillow assumes Adobe's inverted polarity, every channel v -> 255 - v) and then its
// cmyk2rgb, c' = 255 - c: R = nk - round(c' * nk / 255) with nk = 255 - k' = k, MULDIV255.
inline Image jpeg_to_rgb(const std::vector<uint8_t>& px, int64_t w, int64_t h, int components) {
  Image img;
  img.width = w;
  img.height = h;
  const size_t n = size_t(w * h);
  if (components == 3) {
    img.rgb = px;
    return img;
  }
  img.rgb.resize(n * 3);
  uint8_t* d = img.rgb.data();
  if (components == 1) {
    for (size_t i = 0; i < n; ++i, d += 3) d[0] = d[1] = d[2] = px[i];
    return img;
  }
  const uint8_t* s = px.data();
  for (size_t i = 0; i < n; ++i, s += 4, d += 3) {
    const uint32_t nk = s[3];  // 255 - (255 - k)
    for (int c = 0; c < 3; ++c) {
      const uint32_t t = uint32_t(255 - s[c]) * nk + 128;
      d[c] = uint8_t(nk - (((t >> 8) + t) >> 8));
    }
  }
  return img;
}
#endif

}  // namespace detail

// The JPEG decoder this build uses: "libjpeg-turbo" (DEEPSEEK_HAVE_LIBJPEG, the library Pillow
// bundles: pixels equal the official pipeline's), "libjpeg" (another libjpeg: same settings, its
// own IDCT / upsampling) or "stb_image" (no libjpeg found at configure time: up to 7 LSB off).
inline const char* jpeg_decoder() {
#if DEEPSEEK_HAVE_LIBJPEG && defined(LIBJPEG_TURBO_VERSION)
  return "libjpeg-turbo";
#elif DEEPSEEK_HAVE_LIBJPEG
  return "libjpeg";
#else
  return "stb_image";
#endif
}

// Decodes an in-memory image; `name` (a path or label) goes into every error message.
inline Image decode_image(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt = {}) {
  if (data == nullptr || size == 0) throw Error("image file is empty", in_file(name));
  if (size > size_t(INT_MAX)) throw Error("image file is larger than 2 GiB", in_file(name));
  auto check_pixels = [&](int64_t w, int64_t h) {
    if (w > 0 && h > 0 && w > opt.max_pixels / h)
      // w and h come from a header (a PNG's are u32), so their product can pass int64: print it unsigned.
      throw Error("image is " + std::to_string(w) + "x" + std::to_string(h) + " = " +
                      std::to_string(uint64_t(w) * uint64_t(h)) + " pixels, over the decode limit of " + std::to_string(opt.max_pixels) +
                      " (DecodeOptions::max_pixels, default kMaxImagePixels, a guard against decompression bombs)",
                  in_file(name));
  };
  const ImageFormat format = sniff_format(data, size);
  auto orient = [&](Image img) {
    if (opt.exif_transpose) {
      const int orientation = exif_orientation(data, size);
      if (orientation != 1) img = apply_exif_orientation(img, orientation);
    }
    return img;
  };
#if DEEPSEEK_HAVE_LIBJPEG
  if (format == ImageFormat::jpeg) {
    auto ctx = std::make_unique<detail::JpegContext>();
    ctx->data = data;
    ctx->size = size;
    ctx->max_pixels = opt.max_pixels;
    std::vector<uint8_t> px;
    detail::jpeg_decode_raw(*ctx, px);
    if (ctx->status == detail::JpegContext::too_many_pixels) check_pixels(ctx->width, ctx->height);
    if (ctx->status != detail::JpegContext::ok)
      throw Error(std::string("corrupt or truncated image (") + jpeg_decoder() + ": " + ctx->message + ")",
                  in_file(name));
    return orient(detail::jpeg_to_rgb(px, ctx->width, ctx->height, ctx->components));
  }
#endif
  // stb's PNG header probe refuses images over 2^30 bytes with a vague message: read IHDR first.
  if (format == ImageFormat::png && size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0)
    check_pixels(detail::read_u32(data + 16, true), detail::read_u32(data + 20, true));
  // Only the four signatures Pillow accepts reach stb: its own probes are looser (a JPEG may
  // start with fill bytes, FF FF D8 ...) and would run its marker parser on files Pillow refuses.
  if (format == ImageFormat::unknown)
    throw Error("not a readable PNG, JPEG, BMP or GIF image (the first bytes match none of their signatures)", in_file(name));
  // stb's header probe already parses the Huffman tables in front of the frame header, so the
  // DHT check (jpeg_corruption) must run before it, not only before the decode.
  if (const char* bad = format == ImageFormat::jpeg ? detail::jpeg_corruption(data, size) : nullptr)
    throw Error(std::string("corrupt or truncated image: ") + bad, in_file(name));
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, int(size), &w, &h, &comp))
    throw Error("not a readable PNG, JPEG, BMP or GIF image (stb_image: " + detail::stb_reason() + ")", in_file(name));
  if (w <= 0 || h <= 0) throw Error("image has zero width or height", in_file(name));
  check_pixels(w, h);
  const int64_t pixels = int64_t(w) * int64_t(h);
  const detail::GifFirstFrame gif =
      format == ImageFormat::gif ? detail::gif_first_frame(data, size) : detail::GifFirstFrame{};
  const char* truncated = format == ImageFormat::gif   ? gif.error
                          : format == ImageFormat::bmp ? detail::bmp_truncation(data, size)
                                                       : nullptr;
  if (truncated) throw Error(std::string("corrupt or truncated image: ") + truncated, in_file(name));

  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(pixels) * 3);
  int dw = 0, dh = 0, dc = 0;
  int bit_depth = -1, color_type = -1;
  if (format == ImageFormat::png) detail::png_ihdr(data, size, bit_depth, color_type);
  if (format == ImageFormat::png && bit_depth == 16 && color_type == 0) {
    // 16-bit grey: Pillow mode "I;16" -> convert('RGB') clamps to 255.
    std::unique_ptr<stbi_us, detail::StbFree> px(stbi_load_16_from_memory(data, int(size), &dw, &dh, &dc, 1));
    if (!px) throw Error("corrupt or truncated image (stb_image: " + detail::stb_reason() + ")", in_file(name));
    if (dw != w || dh != h) throw Error("image size changed between header and decode", in_file(name));
    for (int64_t i = 0; i < pixels; ++i) {
      const uint8_t v = px.get()[i] > 255 ? 255 : uint8_t(px.get()[i]);
      img.rgb[size_t(i * 3)] = img.rgb[size_t(i * 3 + 1)] = img.rgb[size_t(i * 3 + 2)] = v;
    }
  } else {
    std::unique_ptr<stbi_uc, detail::StbFree> px(stbi_load_from_memory(data, int(size), &dw, &dh, &dc, 4));
    if (!px) throw Error("corrupt or truncated image (stb_image: " + detail::stb_reason() + ")", in_file(name));
    if (dw != w || dh != h) throw Error("image size changed between header and decode", in_file(name));
    const uint8_t* s = px.get();
    uint8_t* d = img.rgb.data();
    if (opt.alpha == Alpha::drop && format == ImageFormat::gif) {
      for (int64_t i = 0; i < pixels; ++i, s += 4, d += 3) {
        const uint8_t* c = s[3] == 0 ? gif.fill : s;  // stb leaves transparent / uncovered pixels 0
        d[0] = c[0], d[1] = c[1], d[2] = c[2];
      }
    } else if (opt.alpha == Alpha::drop) {
      for (int64_t i = 0; i < pixels; ++i, s += 4, d += 3) d[0] = s[0], d[1] = s[1], d[2] = s[2];
    } else {
      for (int64_t i = 0; i < pixels; ++i, s += 4, d += 3) {
        const uint32_t a = s[3];
        for (int c = 0; c < 3; ++c) d[c] = uint8_t((s[c] * a + 255u * (255u - a) + 127u) / 255u);
      }
    }
  }
  return orient(std::move(img));
}

inline Image decode_image(const std::vector<uint8_t>& bytes, const std::string& name, const DecodeOptions& opt = {}) {
  return decode_image(bytes.data(), bytes.size(), name, opt);
}

// Reads and decodes a file. Directories, devices, FIFOs and files over kMaxImageFileBytes are
// refused before reading, with the path in the message.
inline Image load_image(const std::string& path, const DecodeOptions& opt = {}) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("cannot open image file: " + std::string(std::strerror(errno)), in_file(path));
  if (S_ISDIR(st.st_mode)) throw Error("image path is a directory, not a file", in_file(path));
  if (!S_ISREG(st.st_mode)) throw Error("image path is not a regular file", in_file(path));
  if (int64_t(st.st_size) > kMaxImageFileBytes)
    throw Error("image file is " + std::to_string(int64_t(st.st_size)) + " bytes, over the limit of " +
                    std::to_string(kMaxImageFileBytes),
                in_file(path));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open image file", in_file(path));
  std::vector<uint8_t> bytes(size_t(st.st_size));
  if (!bytes.empty() && !f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size())))
    throw Error("cannot read image file", in_file(path));
  return decode_image(bytes.data(), bytes.size(), path, opt);
}

}  // namespace deepseek::vision
