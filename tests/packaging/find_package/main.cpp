// Consumer of deepseek::deepseek through find_package(deepseek): loads a config.json, prints a field.
#include <deepseek/deepseek.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer CONFIG_JSON\n");
    return 2;
  }
  try {
    const deepseek::io::ModelConfig c = deepseek::io::load_config(argv[1]);
    std::printf("hidden_size %lld\n", static_cast<long long>(c.hidden_size));
  } catch (const deepseek::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
