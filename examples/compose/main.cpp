// compose: greedy next tokens from a model composed by hand (composed_model.hpp) of the decoder
// layers you pick from a checkpoint.
//   compose --model DIR [--layers 0,1,...] (--prompt TEXT | --prompt-ids 1,2,3) [--max-new N]
// --layers defaults to all of them, in order (then the tokens are models::DeepSeekV3's); --prompt
// needs the checkpoint's tokenizer.json (BOS is prepended as its config says).
// Instantiated with `cpu`. ComposedModel<cuda> is the same source; it compiles once the CUDA
// backend implements the Ops vocabulary (backend/ops.hpp), which it does not yet. The argmax
// below then reads logits copied to the host.
#include "composed_model.hpp"

#include <deepseek/tokenizer.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

using namespace deepseek;

namespace {

// "0,1,5" -> {0, 1, 5}.
std::vector<int> parse_ints(const std::string& flag, const std::string& s) {
  std::vector<int> out;
  size_t i = 0;
  while (i <= s.size()) {
    const size_t j = std::min(s.find(',', i), s.size());
    const std::string item = s.substr(i, j - i);
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < -(1L << 30) || v > (1L << 30))
      throw Error(flag + " takes comma-separated integers, got \"" + s + "\"");
    out.push_back(int(v));
    i = j + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string dir, prompt, layers_arg, ids_arg;
  int max_new = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) throw Error("missing value after " + a);
    const std::string v = argv[++i];
    if (a == "--model")
      dir = v;
    else if (a == "--layers")
      layers_arg = v;
    else if (a == "--prompt")
      prompt = v;
    else if (a == "--prompt-ids")
      ids_arg = v;
    else if (a == "--max-new")
      max_new = parse_ints(a, v).at(0);
    else
      throw Error("unknown option " + a);
  }
  if (dir.empty() || prompt.empty() == ids_arg.empty() || max_new < 1)
    return std::fprintf(stderr,
                        "usage: %s --model DIR [--layers 0,1,...] (--prompt TEXT | --prompt-ids 1,2,3) [--max-new N]\n",
                        argv[0]),
           2;

  auto ckpt = io::Checkpoint::open(dir);
  const std::vector<int> layers = layers_arg.empty() ? examples::ComposedModel<cpu>::all_layers(ckpt->config())
                                                     : parse_ints("--layers", layers_arg);
  const examples::ComposedModel<cpu> model(ckpt, layers);

  std::optional<tokenizer::Tokenizer> tok;
  if (std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
    tok = tokenizer::Tokenizer::from_file(dir);
  std::vector<int32_t> ids;
  if (!prompt.empty()) {
    if (!tok) throw Error("--prompt needs tokenizer.json in the checkpoint directory; use --prompt-ids", in_file(dir));
    for (const auto id : tok->encode(prompt, tok->add_bos_token())) ids.push_back(int32_t(id));
  } else {
    for (const int id : parse_ints("--prompt-ids", ids_arg)) ids.push_back(id);
  }

  std::printf("layers:");
  for (const int l : model.layers()) std::printf(" %d", l);
  std::printf(" (of %d)\nprompt ids:", model.config().num_hidden_layers);
  for (const int32_t id : ids) std::printf(" %d", id);
  std::printf("\n");

  const int64_t V = model.config().vocab_size;
  // An f32 cache: exact, as models::CacheOptions::exact. logits: host memory on cpu.
  auto cache = model.make_cache(int64_t(ids.size()) + max_new, nn::CacheDType::f32);
  backend::Buffer<cpu> logits(static_cast<size_t>(V));
  model.forward(ids.data(), int64_t(ids.size()), cache, logits.data());
  std::vector<int32_t> all = ids;
  std::printf("greedy ids:");
  for (int k = 0; k < max_new; ++k) {
    int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    all.push_back(next);
    std::printf(" %d", next);
    if (k + 1 < max_new) model.forward(&next, 1, cache, logits.data());
  }
  std::printf("\n");
  if (tok)
    std::printf("text: %s\n", tok->decode(std::vector<tokenizer::TokenId>(all.begin(), all.end()), true).c_str());
  return 0;
} catch (const deepseek::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
