// Writes the synthetic DeepSeek-V2-Lite-shaped checkpoint of synthetic_checkpoint.hpp to a folder,
// for the side-by-side scripts that run a peer on the same file (bench/decode_vs_llama_cpp.py).
//
//   write_v2_lite_checkpoint DIR [--layers N] [--fp8] [--vocab V]
#include "synthetic_checkpoint.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [--layers N] [--fp8] [--vocab V]\n", argv[0]);
    return 2;
  }
  int layers = 4;
  bool fp8 = false;
  long long vocab = 102400;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--fp8") {
      fp8 = true;
    } else if ((a == "--layers" || a == "--vocab") && i + 1 < argc) {
      char* end = nullptr;
      const long long v = std::strtoll(argv[++i], &end, 10);
      if (*end != '\0' || v < 1 || v > (a == "--layers" ? 64 : 1 << 20)) {
        std::fprintf(stderr, "%s: bad value %s\n", a.c_str(), argv[i]);
        return 2;
      }
      if (a == "--layers")
        layers = int(v);
      else
        vocab = v;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    deepseek::bench::make_v2_lite_checkpoint(argv[1], layers, fp8, vocab);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
