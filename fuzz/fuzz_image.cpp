// libFuzzer target: arbitrary bytes as an image file -> decode_image (libjpeg-turbo for JPEG where
// the build found it: its error manager's longjmp path on every corrupt or cut file, the scan cap;
// stb_image for the rest, and for JPEG without libjpeg; the EXIF parser, the truncation /
// corruption walks), then the tiling decision for every mode, the full
// preprocessing (Tiny or Small, for one input in 8) and small resizes / pads sized by the input's
// bytes. max_pixels is small (256 K pixels) so one input cannot make a run allocate much: the
// pixel check comes before any decode buffer. Only deepseek::Error may escape.
#include <deepseek/vision/preprocess.hpp>

#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deepseek::vision;
  try {
    DecodeOptions opt;
    opt.max_pixels = int64_t(1) << 18;
    opt.alpha = (size > 0 && (data[0] & 1)) ? Alpha::white : Alpha::drop;
    const Image img = decode_image(data, size, "fuzz-input", opt);
    for (OcrMode m : {OcrMode::tiny, OcrMode::small, OcrMode::base, OcrMode::large, OcrMode::gundam, OcrMode::gundam_m})
      (void)tile_grid(img.width, img.height, m);
    // Full preprocessing in the two cheap modes (the others are the same code at larger sizes,
    // too slow under ASan to fuzz well), and the resampler / pad at small sizes from the input's
    // bytes, so up, down and mixed resizes of every decoded shape are exercised.
    if ((data[size - 1] & 7) == 0) {  // one input in 8: a 512/640 view is slow under ASan
      const PreparedImage p = preprocess(img, (data[size - 1] & 8) ? OcrMode::small : OcrMode::tiny);
      if (p.global.chw.size() != size_t(3 * p.global.size * p.global.size)) __builtin_trap();
    }
    const int64_t w = 1 + data[size / 2] % 97, h = 1 + data[size / 3] % 89;
    if (resize_bicubic(img, w, h).rgb.size() != size_t(w * h * 3)) __builtin_trap();
    if (pad_to_square(img, w).width != w) __builtin_trap();
  } catch (const deepseek::Error&) {
  }
  return 0;
}
