// deepseek-cli chat: an interactive conversation in the terminal.
//
//   chat --model DIR [--r1 | --v3] [--system TEXT] [--max-new N] [--ctx N]
//        [--greedy | --temperature T --top-p P --top-k K --seed S] [--backend cpu|cuda] [--threads N]
//        [--activations f32|bf16] [--cache-dtype bf16|f32|fp8]
//
// Each line read is a user message; the answer streams as it is generated. The conversation is
// rendered with the model's chat template (V3, or R1 when the tokenizer's template opens a <think>
// block, or as --r1 / --v3 say); R1's reasoning is shown dimmed (on a terminal) or between
// "[thinking]" and "[/thinking]", apart from the answer, and is not fed back (the template drops it).
// The KV cache keeps the longest prefix the next turn shares with what it holds, so a turn costs
// only its new tokens. When the conversation no longer fits --ctx (prompt + --max-new), the
// oldest turns are dropped (the system prompt stays). /reset starts over, /exit (or end of input)
// leaves; Ctrl-C stops the current answer and keeps the conversation (at the prompt, it leaves).
// --backend cuda (a build with the CUDA backend) keeps the model and its cache on the current GPU
// (chat_session.hpp); each token's logits row comes to the host for the sampler.
#include "command.hpp"
#include "model_loading.hpp"

#include <deepseek/tokenizer/chat.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

using namespace deepseek;

volatile std::sig_atomic_t g_interrupted = 0;

void on_sigint(int) { g_interrupted = 1; }

int run_chat(int argc, char** argv) {
  cli::Args args(argc, argv, {"r1", "v3", "greedy"},
                 {"model", "system", "max-new", "ctx", "temperature", "top-p", "top-k", "seed", "threads", "activations", "cache-dtype",
                  "backend"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli chat --model DIR [--r1 | --v3] [--system TEXT] [--max-new N] [--ctx N]\n"
        "         [--greedy | --temperature T --top-p P --top-k K --seed S] [--backend cpu|cuda] [--threads N]\n"
        "         [--activations f32|bf16] [--cache-dtype bf16|f32|fp8]\n"
        "  /reset clears the conversation, /exit leaves, Ctrl-C stops an answer\n");
    return 0;
  }
  args.reject_positional();
  const cli::Backend backend = cli::parse_backend(args);
  if (args.flag("r1") && args.flag("v3")) throw Error("give at most one of --r1 and --v3");
  cli::apply_threads(args);
  const std::string dir = args.required("model");
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
    throw Error("chat needs a tokenizer.json in the model directory", in_file(dir));
  auto ckpt = io::Checkpoint::open(dir);
  const io::ModelConfig& cfg = ckpt->config();
  const int64_t ctx = args.get_int("ctx", std::min<int64_t>(4096, cfg.max_position_embeddings), 2, cfg.max_position_embeddings);
  const int64_t max_new = args.get_int("max-new", std::min<int64_t>(512, ctx / 2), 1, ctx - 1);
  generate::SamplingOptions so;
  cli::parse_sampling(args, so);
  if (!args.flag("greedy") && !args.has("temperature") && !args.has("top-p") && !args.has("top-k") && !args.has("seed")) {
    // A chat samples by default (greedy decoding repeats itself); --greedy for reproducible answers.
    so.greedy = false;
    so.temperature = 0.7f;
    so.top_p = 0.95f;
    so.seed = std::random_device{}();
  }
  const ActivationDType activations = cli::parse_activations(args);
  const nn::CacheDType cache_dtype = cli::parse_cache_dtype(args);

  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir);
  const bool r1 = args.flag("r1") || (!args.flag("v3") && tok.chat_template().find("<think>") != std::string::npos);
  auto session =
      cli::load_chat_session(backend, ckpt, activations, {ctx, nn::CacheLayout::contiguous, 16, cache_dtype});
  generate::Sampler sampler(so);
  const int64_t V = cfg.vocab_size;
  const float* logits = nullptr;  // [V] on the host: the last token's
  std::vector<int32_t> cached;    // the ids whose rows the cache holds

  const bool tty_in = isatty(0), tty_out = isatty(1);
  const char* dim = tty_out ? "\x1b[2m" : "[thinking]\n";
  const char* undim = tty_out ? "\x1b[0m" : "\n[/thinking]\n";
  std::fprintf(stderr, "chat with %s (template %s, context %lld tokens). /reset clears, /exit leaves, Ctrl-C stops an answer.\n",
               dir.c_str(), r1 ? "r1" : "v3", static_cast<long long>(ctx));

  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: Ctrl-C at the prompt interrupts the read, and chat ends
  sigaction(SIGINT, &sa, nullptr);

  std::vector<chat::Message> messages;
  if (args.has("system")) messages.push_back({"system", args.get("system"), {}});
  const size_t kept = messages.size();  // the system prompt survives /reset and trimming
  chat::ChatOptions co;
  co.add_generation_prompt = true;
  if (!tok.bos_token().empty()) co.bos_token = tok.bos_token();
  auto render = [&] {
    const std::string text = r1 ? chat::format_r1(messages, co) : chat::format_v3(messages, co);
    std::vector<int32_t> ids;
    for (auto id : tok.encode(text, false)) ids.push_back(int32_t(id));
    return ids;
  };

  std::string line;
  while (true) {
    if (tty_in) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    g_interrupted = 0;
    if (!std::getline(std::cin, line)) break;  // end of input, or Ctrl-C at the prompt
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(kept);
      std::fputs("(conversation cleared)\n", stderr);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line, {}});
    std::vector<int32_t> ids;
    try {
      ids = render();
      // Oldest turns out until the prompt and an answer of max_new tokens fit.
      while (int64_t(ids.size()) + max_new > ctx && messages.size() > kept + 1) {
        messages.erase(messages.begin() + std::ptrdiff_t(kept));
        while (messages.size() > kept + 1 && messages[kept].role != "user") messages.erase(messages.begin() + std::ptrdiff_t(kept));
        ids = render();
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      messages.pop_back();
      continue;
    }
    if (int64_t(ids.size()) >= ctx) {
      std::fprintf(stderr, "error: the message needs %zu tokens, more than the context of %lld (--ctx)\n", ids.size(),
                   static_cast<long long>(ctx));
      messages.pop_back();
      continue;
    }
    // Reuse the cached prefix; at least the last prompt token runs, for its logits.
    size_t common = 0;
    while (common < cached.size() && common < ids.size() && cached[common] == ids[common]) ++common;
    common = std::min(common, ids.size() - 1);
    session->truncate(int64_t(common));
    cached.assign(ids.begin(), ids.end());
    logits = session->append(ids.data() + common, int64_t(ids.size() - common));

    tokenizer::Tokenizer::StreamDecoder stream(tok);
    chat::ThinkingSplitter split(r1);
    std::string answer;  // what the model said, reasoning included (the R1 template drops it)
    bool dimmed = false;
    auto show = [&](const chat::ThinkingSplitter::Parts& p) {
      if (!p.reasoning.empty()) {
        if (!dimmed) std::fputs(dim, stdout);
        dimmed = true;
        std::fputs(p.reasoning.c_str(), stdout);
      }
      if (!p.content.empty()) {
        if (dimmed) std::fputs(undim, stdout);
        dimmed = false;
        std::fputs(p.content.c_str(), stdout);
      }
      std::fflush(stdout);
    };
    const int64_t budget = std::min<int64_t>(max_new, ctx - int64_t(ids.size()));
    bool stopped = false;
    for (int64_t i = 0; i < budget; ++i) {
      const int32_t next = sampler.sample(logits, V);
      if (cfg.is_eos(next)) break;
      const std::string piece = stream.push(tokenizer::TokenId(next));
      answer += piece;
      show(split.push(piece));
      if (g_interrupted) {
        stopped = true;
        break;
      }
      if (i + 1 == budget) break;
      logits = session->append(&next, 1);
      cached.push_back(next);
    }
    const std::string rest = stream.finish();
    answer += rest;
    show(split.push(rest));
    show(split.finish());
    if (dimmed) std::fputs(tty_out ? "\x1b[0m" : "\n[/thinking]", stdout);
    std::fputs(stopped ? "\n[stopped]\n" : "\n", stdout);
    std::fflush(stdout);
    messages.push_back({"assistant", answer, {}});
  }
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("chat", "an interactive chat in the terminal (V3 or R1 template, streaming)", run_chat);
