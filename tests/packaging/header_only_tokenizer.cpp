// Header-only build test: the tokenizer umbrella compiles alone (nlohmann/json only).
#include <deepseek/tokenizer.hpp>

int main() { return 0; }
