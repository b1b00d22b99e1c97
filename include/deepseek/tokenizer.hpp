// Umbrella header of the tokenizer layer: byte-level BPE tokenizer (tokenizer/tokenizer.hpp) and
// the DeepSeek-V3 / R1 chat templates (tokenizer/chat.hpp).
#pragma once

#include <deepseek/tokenizer/chat.hpp>
#include <deepseek/tokenizer/tokenizer.hpp>
