// Subcommand registry and argument parsing shared by the deepseek-cli translation units.
//
// Each cmd_*.cpp registers its subcommands with DEEPSEEK_CLI_COMMAND(name, summary, function);
// main.cpp dispatches on argv[1]. Options are GNU-style `--key value` or `--flag` (given twice, the
// last wins). Every number is parsed strictly and range-checked (get_int with a range, get_double
// finite), and the error names the option.
#pragma once

#include <deepseek/core/block_quant.hpp>
#include <deepseek/core/checked.hpp>
#include <deepseek/core/error.hpp>
#include <deepseek/core/limits.hpp>
#include <deepseek/core/parallel.hpp>
#include <deepseek/generate/sampler.hpp>
#include <deepseek/nn/kv_cache.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace deepseek::cli {

class Args {
 public:
  // `flags` are the options that take no value; every other `--x` consumes the next argument.
  Args(int argc, char** argv, std::set<std::string> flags, std::set<std::string> options)
      : flags_allowed_(std::move(flags)), options_allowed_(std::move(options)) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        help_ = true;
        continue;
      }
      if (a.rfind("--", 0) != 0) {
        positional_.push_back(a);
        continue;
      }
      std::string key = a.substr(2);
      if (flags_allowed_.count(key)) {
        set_flags_.insert(key);
      } else if (options_allowed_.count(key)) {
        if (i + 1 >= argc) throw Error("option --" + key + " needs a value");
        values_[key] = argv[++i];  // given twice: the last wins (GNU style; wrappers append overrides)
      } else {
        throw Error("unknown option --" + excerpt(key));
      }
    }
  }

  bool help() const { return help_; }
  bool flag(const std::string& k) const { return set_flags_.count(k) != 0; }
  bool has(const std::string& k) const { return values_.count(k) != 0; }
  std::string get(const std::string& k, const std::string& def = {}) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  std::string required(const std::string& k) const {
    auto it = values_.find(k);
    if (it == values_.end()) throw Error("missing required option --" + k);
    return it->second;
  }
  // A strict decimal integer in [lo, hi]; the error names the option and the range.
  long long get_int(const std::string& k, long long def, long long lo = std::numeric_limits<long long>::min(),
                    long long hi = std::numeric_limits<long long>::max()) const {
    if (!has(k)) return def;
    return parse_integer(values_.at(k), lo, hi, "--" + k);
  }
  // A finite number in [lo, hi].
  double get_double(const std::string& k, double def, double lo = -HUGE_VAL, double hi = HUGE_VAL) const {
    if (!has(k)) return def;
    const std::string& s = values_.at(k);
    double v = 0;
    try {
      size_t pos = 0;
      v = std::stod(s, &pos);
      if (pos != s.size() || s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw Error("option --" + k + " expects a number, got '" + excerpt(s) + "'");
    }
    if (!std::isfinite(v) || v < lo || v > hi)
      throw Error("--" + k + " = " + excerpt(s) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }
  // For commands that take no positional arguments (a stray word is a typo, not something to ignore).
  void reject_positional() const {
    if (!positional_.empty()) throw Error("unexpected argument '" + excerpt(positional_[0]) + "' (options are --key value)");
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::set<std::string> flags_allowed_, options_allowed_, set_flags_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// --threads N: [1, kMaxThreads] (`allow_zero`: 0 = all hardware threads), capped at this
// machine's hardware threads with a note on stderr: workers beyond them spin against each other
// (200 threads on 2 cores ran 400x slower). Returns the count to use, or `def` if not given.
inline int threads_option(const Args& args, int def, bool allow_zero = false) {
  if (!args.has("threads")) return def;
  const int64_t lo = allow_zero ? 0 : 1;
  const int64_t n = args.get_int("threads", 1, lo, std::numeric_limits<long long>::max());
  if (n > kMaxThreads)
    throw Error("--threads = " + std::to_string(n) + " is out of range " + range_str(lo, kMaxThreads) + " (kMaxThreads)");
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  if (n == 0) return hw;
  if (n > hw) {
    std::fprintf(stderr, "deepseek-cli: --threads %lld is more than the %d hardware threads of this machine; using %d\n",
                 static_cast<long long>(n), hw, hw);
    return hw;
  }
  return int(n);
}

// Sets the CPU pool from --threads, if given.
inline void apply_threads(const Args& args) {
  if (args.has("threads")) set_num_threads(threads_option(args, 1));
}

enum class Backend { cpu, cuda };

// --backend cpu|cuda (default cpu) of the commands that run a text model (logits, generate, serve,
// chat): cuda in a build with the CUDA backend (DEEPSEEK_WITH_CUDA); any other name is an Error
// naming it. Whether there is a GPU is checked when the model loads (cmd_model_cuda.cu).
inline Backend parse_backend(const std::string& name) {
  if (name == "cpu") return Backend::cpu;
#if defined(DEEPSEEK_WITH_CUDA)
  if (name == "cuda") return Backend::cuda;
  throw Error("--backend must be cpu or cuda, got '" + excerpt(name) + "'");
#else
  throw Error("--backend " + excerpt(name) +
              " is not available (this build has: cpu; configure with -DDEEPSEEK_CUDA=ON for cuda)");
#endif
}
inline Backend parse_backend(const Args& args) { return parse_backend(args.get("backend", "cpu")); }

// --activations f32|bf16 (default f32): what the inputs of the linear layers are rounded to.
inline ActivationDType parse_activations(const Args& args) {
  const std::string a = args.get("activations", "f32");
  if (a == "f32") return ActivationDType::f32;
  if (a == "bf16") return ActivationDType::bf16;
  throw Error("--activations must be f32 or bf16, got '" + excerpt(a) + "'");
}

// --cache-dtype bf16|f32|fp8 (default bf16, as models::CacheOptions; f32 is exact, what the tests
// compare with transformers; fp8 is FlashMLA's row, MLA models only).
inline nn::CacheDType parse_cache_dtype(const Args& args) { return nn::parse_cache_dtype(args.get("cache-dtype", "bf16"), "--cache-dtype"); }

using CommandFn = std::function<int(int argc, char** argv)>;

struct Command {
  std::string summary;
  CommandFn run;
};

inline std::map<std::string, Command>& registry() {
  static std::map<std::string, Command> r;
  return r;
}

struct Registrar {
  Registrar(const std::string& name, const std::string& summary, CommandFn fn) {
    registry()[name] = Command{summary, std::move(fn)};
  }
};

// --greedy | --temperature T --top-p P --top-k K --seed S: greedy unless a sampling option is given.
// Ranges in float: 1e-50 or 1e300 would round to 0 or inf.
inline void parse_sampling(const Args& args, generate::SamplingOptions& o) {
  const bool sampling = args.has("temperature") || args.has("top-p") || args.has("top-k") || args.has("seed");
  if (sampling && args.flag("greedy")) throw Error("--greedy excludes --temperature/--top-p/--top-k/--seed");
  o.greedy = !sampling;
  o.temperature = float(args.get_double("temperature", 1.0, 1e-6, 1e6));
  o.top_p = float(args.get_double("top-p", 1.0, 1e-6, 1.0));
  o.top_k = int(args.get_int("top-k", 0, 0, kMaxVocab));
  o.seed = uint64_t(args.get_int("seed", 0, 0, std::numeric_limits<int64_t>::max()));
}

// Writes a float32 [rows, cols] array as a .npy file (format 1.0, little-endian, C order).
inline void write_npy(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("cannot write", in_file(path));
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = uint16_t(header.size());
  f.put(char(hl & 0xff));
  f.put(char(hl >> 8));
  f << header;
  f.write(reinterpret_cast<const char*>(data), std::streamsize(rows * cols * 4));
  if (!f) throw Error("write failed", in_file(path));
}

}  // namespace deepseek::cli

#define DEEPSEEK_CLI_CONCAT2(a, b) a##b
#define DEEPSEEK_CLI_CONCAT(a, b) DEEPSEEK_CLI_CONCAT2(a, b)
// __COUNTER__, not __LINE__: the build compiles the cmd_*.cpp files as one unity translation unit.
#define DEEPSEEK_CLI_COMMAND(name, summary, fn) \
  static ::deepseek::cli::Registrar DEEPSEEK_CLI_CONCAT(deepseek_cli_registrar_, __COUNTER__)(name, summary, fn)
