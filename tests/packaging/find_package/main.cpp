// Consumer of deepseek::deepseek through find_package(deepseek): loads a config.json, prints a field.
#include <deepseek/deepseek.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: consumer CONFIG_JSON [IMAGE]\n");
    return 2;
  }
  try {
    const deepseek::io::ModelConfig c = deepseek::io::load_config(argv[1]);
    std::printf("hidden_size %lld\n", static_cast<long long>(c.hidden_size));
    if (argc == 3) {  // vision: stb_image, and libjpeg-turbo for JPEG where the package found it
      const deepseek::vision::Image im = deepseek::vision::load_image(argv[2]);
      std::printf("image %lldx%lld jpeg decoder %s\n", static_cast<long long>(im.width),
                  static_cast<long long>(im.height), deepseek::vision::jpeg_decoder());
    }
  } catch (const deepseek::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
