// deepseek-cli: dispatches argv[1] to a registered subcommand (see command.hpp).
#include "command.hpp"

#include <cstdio>
#include <exception>
#include <new>

int main(int argc, char** argv) {
  auto& reg = deepseek::cli::registry();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fprintf(stderr, "usage: deepseek-cli <command> [options]   (deepseek-cli <command> --help)\n\ncommands:\n");
    for (auto& [name, cmd] : reg) std::fprintf(stderr, "  %-14s %s\n", name.c_str(), cmd.summary.c_str());
    return argc < 2 ? 2 : 0;
  }
  auto it = reg.find(argv[1]);
  if (it == reg.end()) {
    std::fprintf(stderr, "deepseek-cli: unknown command '%s' (try --help)\n", argv[1]);
    return 2;
  }
  try {
    return it->second.run(argc - 2, argv + 2);
  } catch (const std::bad_alloc&) {
    // Sizes are checked before the large buffers are allocated (check_fits_in_memory); this is
    // what is left: the machine ran out of memory for a request that fits its RAM in principle.
    std::fprintf(stderr, "deepseek-cli %s: error: out of memory\n", argv[1]);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "deepseek-cli %s: error: %s\n", argv[1], e.what());
    return 1;
  }
}
