// Policy limits: the bounds on work and memory that untrusted input (files, JSON, command-line
// options, requests) may ask for. Each is defined once here, named in the error that enforces it
// and listed in the README ("Limits and security notes"). They are far above what any released
// DeepSeek checkpoint needs (V3: hidden 7168, vocab 129280, 61 layers, 163840 positions, 671B
// parameters, ~10 MB of safetensors header per shard), so a file that crosses one is broken or
// hostile, not large.
#pragma once

#include "deepseek/core/error.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace deepseek {

// JSON (config.json, the shard index, safetensors headers, tokenizer.json, chat messages).
inline constexpr int kMaxJsonDepth = 128;                          // nesting of arrays/objects
inline constexpr uint64_t kMaxJsonFileBytes = uint64_t(64) << 20;  // a JSON file read whole

// safetensors
inline constexpr uint64_t kMaxSafetensorsHeader = uint64_t(100) << 20;  // header bytes
inline constexpr uint64_t kMaxSafetensorsTensors = uint64_t(1) << 20;   // entries in one header

// Model configuration (config.json). Any single width (hidden, intermediate, LoRA ranks, head
// dims) is at most kMaxModelDim; the parameter count of the whole model (MTP modules included)
// at most kMaxParameters, so every size derived from a config fits in int64 with room to spare.
inline constexpr int64_t kMaxModelDim = int64_t(1) << 20;
inline constexpr int64_t kMaxVocab = int64_t(1) << 24;      // as the tokenizer's id table
inline constexpr int64_t kMaxPositions = int64_t(1) << 24;  // max_position_embeddings, index_topk
inline constexpr int64_t kMaxLayers = int64_t(1) << 14;
inline constexpr int64_t kMaxParameters = int64_t(1) << 50;

// Threads of the CPU pool (set_num_threads, DEEPSEEK_NUM_THREADS, --threads). deepseek-cli also
// caps --threads at the machine's hardware threads: spinning workers beyond them slow every
// kernel down (200 threads on 2 cores: 400x).
inline constexpr int kMaxThreads = 1024;

// Text read whole into memory: perplexity --text, tokenize's stdin. Encoding takes up to ~24 bytes
// of memory per input byte (a run of one letter, one BPE piece: 5 for the pre-tokenizer, 16 for
// the merge heap, the text and the ids; ordinary text ~10), so about 6 GB at most.
inline constexpr uint64_t kMaxTextInputBytes = uint64_t(256) << 20;

// Physical memory of this machine in bytes (0 if unknown).
inline uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

// "1.50 GB" (decimal units, as the CLI prints sizes).
inline std::string format_bytes(double bytes) {
  char buf[48];
  if (bytes >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else if (bytes >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.0f bytes", bytes);
  return buf;
}

// Throws before a buffer of `bytes` is allocated that this machine cannot hold: the request says
// how much it needs instead of failing as a bare std::bad_alloc (or being killed) half-way.
inline void check_fits_in_memory(double bytes, const std::string& what) {
  const uint64_t ram = physical_memory_bytes();
  if (ram && bytes > double(ram))
    throw Error(what + " needs " + format_bytes(bytes) + " but this machine has " + format_bytes(double(ram)) +
                " of memory");
}

}  // namespace deepseek
