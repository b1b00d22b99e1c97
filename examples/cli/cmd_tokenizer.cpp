// deepseek-cli tokenize / detokenize / chat-template: the tokenizer layer from the shell.
//
//   tokenize --tokenizer PATH [--jsonl] [--add-bos] [--threads N] [--no-special]
//       stdin text -> ids on one line, space-separated. With --jsonl each input line
//       {"text": "..."} -> one output line {"ids": [...]}, in input order, encoded on N threads.
//   detokenize --tokenizer PATH [--skip-special]
//       ids on stdin (separated by spaces, commas, newlines or brackets) -> text on stdout.
//   chat-template --tokenizer PATH --messages FILE.json [--add-generation-prompt] [--r1] [--ids]
//       renders the DeepSeek-V3 (or R1) chat template; --ids prints the ids of the rendered text
//       (BOS is part of the template, so none is added).
// PATH is a tokenizer.json or a directory holding one (and tokenizer_config.json).
#include "command.hpp"

#include <deepseek/tokenizer.hpp>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace {

using deepseek::Error;
using deepseek::cli::Args;
using deepseek::tokenizer::TokenId;
using deepseek::tokenizer::Tokenizer;

// All of stdin, at most kMaxTextInputBytes.
std::string read_stdin() {
  std::string out;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) {
    if (out.size() + n > deepseek::kMaxTextInputBytes)
      throw Error("stdin is larger than the " + deepseek::format_bytes(double(deepseek::kMaxTextInputBytes)) + " limit (kMaxTextInputBytes)");
    out.append(buf, n);
  }
  if (std::ferror(stdin)) throw Error("cannot read stdin");
  return out;
}

void print_ids(const std::vector<TokenId>& ids, std::string& out, const char* sep) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += sep;
    out += std::to_string(ids[i]);
  }
}

int cmd_tokenize(int argc, char** argv) {
  Args args(argc, argv, {"jsonl", "add-bos", "no-special"}, {"tokenizer", "threads"});
  if (args.help()) {
    std::fprintf(stderr,
                 "usage: deepseek-cli tokenize --tokenizer PATH [--jsonl] [--add-bos] [--threads N] [--no-special]\n"
                 "  stdin text -> space-separated ids; --jsonl: lines {\"text\":...} -> {\"ids\":[...]}\n"
                 "  --no-special: added-token text (e.g. <｜User｜>) is encoded as plain text\n");
    return 0;
  }
  args.reject_positional();
  const int threads = deepseek::cli::threads_option(args, 1, /*allow_zero=*/true);
  const Tokenizer tok = Tokenizer::from_file(args.required("tokenizer"));
  deepseek::tokenizer::EncodeOptions opts;
  opts.add_bos = args.flag("add-bos");
  if (args.flag("no-special")) opts.special_tokens = deepseek::tokenizer::SpecialTokens::kAsText;
  const std::string input = read_stdin();
  std::string out;
  if (!args.flag("jsonl")) {
    print_ids(tok.encode(input, opts), out, " ");
    out += "\n";
  } else {
    std::vector<std::string> texts;
    std::istringstream lines(input);
    std::string line;
    size_t line_no = 0;
    while (std::getline(lines, line)) {
      ++line_no;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = "stdin line " + std::to_string(line_no);
      auto j = deepseek::parse_json(line, where);  // nesting bounded, duplicate keys refused
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error("input line " + std::to_string(line_no) + " is not a JSON object with a string \"text\"");
      texts.push_back(j["text"].get<std::string>());
    }
    const auto all = tok.encode_batch(texts, opts, static_cast<unsigned>(threads));
    for (const auto& ids : all) {
      out += "{\"ids\": [";
      print_ids(ids, out, ", ");
      out += "]}\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int cmd_detokenize(int argc, char** argv) {
  Args args(argc, argv, {"skip-special"}, {"tokenizer"});
  if (args.help()) {
    std::fprintf(stderr, "usage: deepseek-cli detokenize --tokenizer PATH [--skip-special]   (ids on stdin -> text)\n");
    return 0;
  }
  args.reject_positional();
  const Tokenizer tok = Tokenizer::from_file(args.required("tokenizer"));
  const std::string input = read_stdin();
  std::vector<TokenId> ids;
  size_t i = 0;
  while (i < input.size()) {
    const char c = input[i];
    if (c == ' ' || c == ',' || c == '\n' || c == '\r' || c == '\t' || c == '[' || c == ']') {
      ++i;
      continue;
    }
    if (c < '0' || c > '9') throw Error("detokenize: unexpected character '" + deepseek::excerpt(std::string(1, c)) + "' in the id list", deepseek::ErrorWhere{{}, {}, {}, static_cast<int64_t>(i)});
    uint64_t v = 0;
    while (i < input.size() && input[i] >= '0' && input[i] <= '9') {
      v = v * 10 + static_cast<uint64_t>(input[i++] - '0');
      if (v > 0xFFFFFFFFull) throw Error("detokenize: id too large", deepseek::ErrorWhere{{}, {}, {}, static_cast<int64_t>(i)});
    }
    ids.push_back(static_cast<TokenId>(v));
  }
  const std::string text = tok.decode(ids, args.flag("skip-special"));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

int cmd_chat_template(int argc, char** argv) {
  Args args(argc, argv, {"add-generation-prompt", "r1", "ids"}, {"tokenizer", "messages"});
  if (args.help()) {
    std::fprintf(stderr,
                 "usage: deepseek-cli chat-template --tokenizer PATH --messages FILE.json [--add-generation-prompt] [--r1] [--ids]\n");
    return 0;
  }
  args.reject_positional();
  const Tokenizer tok = Tokenizer::from_file(args.required("tokenizer"));
  const std::string path = args.required("messages");
  // A regular file of at most kMaxJsonFileBytes; nesting bounded, duplicate keys refused.
  auto j = deepseek::parse_json(deepseek::read_regular_file(path, deepseek::kMaxJsonFileBytes, "kMaxJsonFileBytes"), path);
  const auto messages = deepseek::chat::messages_from_json(j.is_object() && j.contains("messages") ? j["messages"] : j, path);
  deepseek::chat::ChatOptions opts;
  opts.add_generation_prompt = args.flag("add-generation-prompt");
  if (!tok.bos_token().empty()) opts.bos_token = tok.bos_token();
  const std::string text = args.flag("r1") ? deepseek::chat::format_r1(messages, opts) : deepseek::chat::format_v3(messages, opts);
  std::string out;
  if (args.flag("ids")) {
    print_ids(tok.encode(text), out, " ");
    out += "\n";
  } else {
    out = text;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("tokenize", "text on stdin -> token ids (DeepSeek byte-level BPE)", cmd_tokenize);
DEEPSEEK_CLI_COMMAND("detokenize", "token ids on stdin -> text", cmd_detokenize);
DEEPSEEK_CLI_COMMAND("chat-template", "render the DeepSeek-V3 / R1 chat template (text or ids)", cmd_chat_template);
