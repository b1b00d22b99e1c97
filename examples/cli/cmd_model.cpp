// deepseek-cli logits | generate: run a V2/V3-family checkpoint on the CPU.
//   logits   --model DIR --ids 1,2,3 --out FILE.npy [--threads N] [--activations f32|bf16]
//            float32 [T, vocab], C order
//   generate --model DIR (--ids 1,2,3 | --prompt TEXT) [--max-new N] [--greedy | --temperature T
//            --top-p P --top-k K --seed S] [--mtp] [--print-ids] [--stats] [--threads N] [--max-context N]
//            [--activations f32|bf16]
//   --activations bf16 rounds the input of every linear layer to bf16 (as transformers in bf16 and
//   llama.cpp do; bf16 weights then multiply natively on AVX512-BF16 CPUs); f32 (the default) is exact.
//   --mtp decodes speculatively with the checkpoint's MTP module as the draft (spec §6.2): same output
//   as without it under --greedy, same distribution when sampling.
//   --stats prints one JSON line on stderr: prompt/generated tokens, prefill and decode tokens/s; with
//   --mtp also drafted/accepted tokens, acceptance_rate and tokens_per_forward (main decode forwards).
#include "command.hpp"

#include <deepseek/deepseek.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/models/mtp_head.hpp>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

using namespace deepseek;

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t pos = 0;
      const long long v = std::stoll(item, &pos);
      if (pos != item.size() || v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument("bad");
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      throw Error("--ids expects comma-separated integers, got '" + item + "'");
    }
  }
  if (ids.empty()) throw Error("--ids is empty");
  return ids;
}

// A progress bar on stderr while the layers are set up; shown for checkpoints of 1 GB and more.
// A checkpoint that fits in 3/4 of RAM is mapped in full first (Checkpoint::populate), so the
// first forward is not slowed by page faults; a larger one pages in as the kernels touch it.
std::shared_ptr<models::DeepSeekV3<cpu>> load_model(const std::shared_ptr<io::Checkpoint>& ckpt, ActivationDType activations) {
  const int64_t bytes = ckpt->file_bytes();
  const double ram = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  if (double(bytes) < 0.75 * ram) {
    if (bytes >= (int64_t(1) << 30)) std::fprintf(stderr, "mapping %.2f GB of weights\n", double(bytes) / 1e9);
    ckpt->populate();
  }
  models::LoadOptions opts;
  opts.activations = activations;
  if (bytes >= (int64_t(1) << 30) || isatty(2)) {
    opts.progress = [bytes](int done, int total) {
      const int width = 40, filled = width * done / total;
      std::fprintf(stderr, "\rloading %.2f GB [%s%s] %d/%d layers", double(bytes) / 1e9, std::string(size_t(filled), '#').c_str(),
                   std::string(size_t(width - filled), '.').c_str(), done, total);
      if (done == total) std::fprintf(stderr, "\n");
    };
  }
  return std::make_shared<models::DeepSeekV3<cpu>>(ckpt, opts);
}

void write_npy(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("cannot write", in_file(path));
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  const uint16_t hl = uint16_t(header.size());
  f.put(char(hl & 0xff));
  f.put(char(hl >> 8));
  f << header;
  f.write(reinterpret_cast<const char*>(data), std::streamsize(rows * cols * 4));
  if (!f) throw Error("write failed", in_file(path));
}

int run_logits(int argc, char** argv) {
  cli::Args args(argc, argv, {}, {"model", "ids", "out", "threads", "backend", "activations"});
  if (args.help()) {
    std::printf("usage: deepseek-cli logits --model DIR --ids 1,2,3 --out FILE.npy [--threads N] [--activations f32|bf16]\n");
    return 0;
  }
  if (args.get("backend", "cpu") != "cpu") throw Error("--backend " + args.get("backend") + " is not available (this build has: cpu)");
  if (args.has("threads")) set_num_threads(int(args.get_int("threads", 1)));
  const ActivationDType activations = cli::parse_activations(args);
  auto model = load_model(io::Checkpoint::open(args.required("model")), activations);
  const auto ids = parse_ids(args.required("ids"));
  const int64_t T = int64_t(ids.size()), V = model->config().vocab_size;
  auto cache = model->make_cache({T});
  std::vector<float> logits(size_t(T * V));
  model->forward(ids.data(), T, cache, logits.data(), true);
  write_npy(args.required("out"), logits.data(), T, V);
  return 0;
}

int run_generate(int argc, char** argv) {
  cli::Args args(argc, argv, {"greedy", "print-ids", "stats", "mtp"},
                 {"model", "ids", "prompt", "max-new", "temperature", "top-p", "top-k", "seed", "threads", "max-context", "backend",
                  "activations"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli generate --model DIR (--ids 1,2,3 | --prompt TEXT) [--max-new N]\n"
        "         [--greedy | --temperature T --top-p P --top-k K --seed S] [--mtp] [--print-ids] [--stats]\n"
        "         [--threads N] [--max-context N] [--activations f32|bf16]\n");
    return 0;
  }
  if (args.get("backend", "cpu") != "cpu") throw Error("--backend " + args.get("backend") + " is not available (this build has: cpu)");
  if (args.has("threads")) set_num_threads(int(args.get_int("threads", 1)));
  if (args.has("ids") == args.has("prompt")) throw Error("give exactly one of --ids and --prompt");
  const std::string dir = args.required("model");
  const ActivationDType activations = cli::parse_activations(args);

  generate::GenerateOptions go;
  go.max_new_tokens = args.get_int("max-new", 64);
  if (go.max_new_tokens < 1) throw Error("--max-new must be >= 1");
  const bool sampling = args.has("temperature") || args.has("top-p") || args.has("top-k") || args.has("seed");
  if (sampling && args.flag("greedy")) throw Error("--greedy excludes --temperature/--top-p/--top-k/--seed");
  go.sampling.greedy = !sampling;
  go.sampling.temperature = float(args.get_double("temperature", 1.0));
  go.sampling.top_p = float(args.get_double("top-p", 1.0));
  go.sampling.top_k = int(args.get_int("top-k", 0));
  go.sampling.seed = uint64_t(args.get_int("seed", 0));

  std::optional<tokenizer::Tokenizer> tok;
  std::vector<int32_t> prompt;
  if (args.has("prompt")) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
      throw Error("--prompt needs a tokenizer.json in the model directory (or use --ids)", in_file(dir));
    tok = tokenizer::Tokenizer::from_file(dir);
    for (auto id : tok->encode(args.get("prompt"), tok->add_bos_token())) prompt.push_back(int32_t(id));
  } else {
    prompt = parse_ids(args.get("ids"));
  }

  auto ckpt = io::Checkpoint::open(dir);
  const bool mtp = args.flag("mtp");
  if (mtp && ckpt->config().num_nextn_predict_layers < 1)
    throw Error("--mtp needs a checkpoint with an MTP module, but num_nextn_predict_layers is 0",
                at_field("num_nextn_predict_layers", dir + "/config.json"));
  auto model = load_model(ckpt, activations);
  std::optional<models::MtpHead<cpu>> draft;
  if (mtp) draft.emplace(ckpt, *model);  // throws if the MTP weights are missing
  const int64_t max_ctx = args.get_int("max-context", int64_t(prompt.size()) + go.max_new_tokens);
  auto cache = model->make_cache({max_ctx});
  std::optional<tokenizer::Tokenizer::StreamDecoder> stream;
  if (tok && !args.flag("print-ids")) {
    stream.emplace(*tok);
    std::fputs(args.get("prompt").c_str(), stdout);
    std::fflush(stdout);
  }
  auto on_token = [&](int32_t id) {
    if (stream) {
      std::fputs(stream->push(tokenizer::TokenId(id)).c_str(), stdout);
      std::fflush(stdout);
    }
    return true;
  };
  std::vector<int32_t> out;
  generate::SpeculativeStats s;
  if (draft) {
    generate::SpeculativeGenerator<models::DeepSeekV3<cpu>, models::MtpHead<cpu>> gen(*model, *draft, cache, go);
    out = gen.run(prompt, on_token);
    s = gen.stats();
  } else {
    generate::Generator<models::DeepSeekV3<cpu>> gen(*model, cache, go);
    out = gen.run(prompt, on_token);
    static_cast<generate::GenerateStats&>(s) = gen.stats();
  }
  if (stream) std::printf("%s\n", stream->finish().c_str());
  if (args.flag("print-ids")) {
    for (size_t i = 0; i < out.size(); ++i) std::printf(i ? " %d" : "%d", out[i]);
    std::printf("\n");
  }
  std::fflush(stdout);  // the text first, then the stats line on stderr
  if (args.flag("stats")) {
    nlohmann::ordered_json j = {{"prompt_tokens", s.prompt_tokens},
                                {"generated_tokens", s.generated_tokens},
                                {"prefill_tokens_per_s", s.prefill_tokens_per_second()},
                                {"decode_tokens_per_s", s.decode_tokens_per_second()},
                                {"threads", num_threads()},
                                {"activations", activations == ActivationDType::bf16 ? "bf16" : "f32"}};
    if (draft) {
      j["mtp"] = true;
      j["drafted"] = s.drafted;
      j["accepted"] = s.accepted;
      j["acceptance_rate"] = s.acceptance_rate();
      j["tokens_per_forward"] = s.tokens_per_forward();
    }
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace

DEEPSEEK_CLI_COMMAND("logits", "float32 logits [T, vocab] of a token sequence as .npy", run_logits);
DEEPSEEK_CLI_COMMAND("generate", "generate tokens (greedy or sampled) from ids or a text prompt", run_generate);
