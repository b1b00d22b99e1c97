// Subcommand registry and argument parsing shared by the deepseek-cli translation units.
//
// Each cmd_*.cpp registers its subcommands with DEEPSEEK_CLI_COMMAND(name, summary, function);
// main.cpp dispatches on argv[1]. Options are GNU-style `--key value` or `--flag`.
#pragma once

#include <deepseek/core/block_quant.hpp>
#include <deepseek/core/error.hpp>

#include <functional>
#include <map>
#include <set>
#include <string>
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
        values_[key] = argv[++i];
      } else {
        throw Error("unknown option --" + key);
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
  long long get_int(const std::string& k, long long def) const {
    if (!has(k)) return def;
    try {
      size_t pos = 0;
      long long v = std::stoll(values_.at(k), &pos);
      if (pos != values_.at(k).size()) throw std::invalid_argument("trailing");
      return v;
    } catch (const std::exception&) {
      throw Error("option --" + k + " expects an integer, got '" + values_.at(k) + "'");
    }
  }
  double get_double(const std::string& k, double def) const {
    if (!has(k)) return def;
    try {
      size_t pos = 0;
      double v = std::stod(values_.at(k), &pos);
      if (pos != values_.at(k).size()) throw std::invalid_argument("trailing");
      return v;
    } catch (const std::exception&) {
      throw Error("option --" + k + " expects a number, got '" + values_.at(k) + "'");
    }
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::set<std::string> flags_allowed_, options_allowed_, set_flags_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// --activations f32|bf16 (default f32): what the inputs of the linear layers are rounded to.
inline ActivationDType parse_activations(const Args& args) {
  const std::string a = args.get("activations", "f32");
  if (a == "f32") return ActivationDType::f32;
  if (a == "bf16") return ActivationDType::bf16;
  throw Error("--activations must be f32 or bf16, got '" + a + "'");
}

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

}  // namespace deepseek::cli

#define DEEPSEEK_CLI_CONCAT2(a, b) a##b
#define DEEPSEEK_CLI_CONCAT(a, b) DEEPSEEK_CLI_CONCAT2(a, b)
#define DEEPSEEK_CLI_COMMAND(name, summary, fn) \
  static ::deepseek::cli::Registrar DEEPSEEK_CLI_CONCAT(deepseek_cli_registrar_, __LINE__)(name, summary, fn)
