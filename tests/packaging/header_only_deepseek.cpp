// Header-only build test: the CPU umbrella compiles alone (only Eigen and nlohmann/json on the
// include path, no definitions, no other source files).
#include <deepseek/deepseek.hpp>

int main() { return 0; }
