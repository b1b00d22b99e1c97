// What the model tests share: a transformers reference (tests/reference/make_*_fixtures.py ->
// tests/fixtures/models/<variant>/reference.safetensors) and the relative row difference the
// tolerances are stated in.
#pragma once

#include <deepseek/io/safetensors.hpp>
#include <deepseek/models/deepseek_v3.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace deepseek::test {

inline const std::string kModels = DEEPSEEK_FIXTURES_DIR "/models/";
// The trained demo model the repo ships.
inline const std::string kDemoModel = DEEPSEEK_FIXTURES_DIR "/../../examples/models/deepseek-v3-demo";

// Every MLA, MHA and DSA fixture: dense V2/V3 (f32, bf16, FP8 weights), the OCR decoder's MHA, V3.2.
// v3_dense_long (300 tokens) and v32_dsa_long (192) sweep many row blocks; v3_lora128 admits FP8.
inline const std::vector<std::string> kCacheVariants = {
    "v3_yarn_qlora_bf16", "v3_noqlora_f32",     "v3_fp8",           "v2_softmax_group_limited",
    "v2_lite_greedy",     "v2_mha_ocr_decoder", "v32_dsa_topk_small", "v32_dsa_topk_large",
    "v3_dense_long",      "v32_dsa_long",       "v3_lora128"};

struct Reference {
  std::shared_ptr<io::SafetensorsFile> file;
  std::vector<int32_t> ids, greedy;
  TensorView logits;
};

inline std::vector<int32_t> ids_of(const TensorView& v) {
  std::vector<int32_t> out;
  for (int64_t i = 0; i < v.numel(); ++i) out.push_back(int32_t(v.data_as<int64_t>()[i]));
  return out;
}

inline Reference load_reference(const std::string& variant) {
  Reference r;
  r.file = io::SafetensorsFile::open(kModels + variant + "/reference.safetensors");
  r.ids = ids_of(r.file->view("input_ids"));
  r.greedy = ids_of(r.file->view("greedy_ids"));
  r.logits = r.file->view("logits");
  return r;
}

// max |a - b| over a row, relative to max(1, max |b|).
inline double rel_diff(const float* a, const float* b, int64_t n) {
  double md = 0, mb = 1;
  for (int64_t i = 0; i < n; ++i) {
    md = std::max(md, double(std::fabs(a[i] - b[i])));
    mb = std::max(mb, double(std::fabs(b[i])));
  }
  return md / mb;
}

inline int32_t argmax(const float* v, int64_t n) { return int32_t(std::max_element(v, v + n) - v); }

// n greedy tokens after `prompt`, decoded one at a time with the cache.
template <class Model>
std::vector<int32_t> greedy_continuation(const Model& model, const std::vector<int32_t>& prompt, size_t n) {
  const int64_t V = model.config().vocab_size;
  auto cache = model.make_cache(models::CacheOptions::exact(int64_t(prompt.size() + n)));
  std::vector<float> logits(static_cast<size_t>(V));
  model.forward(prompt.data(), int64_t(prompt.size()), cache, logits.data());
  std::vector<int32_t> out;
  for (size_t i = 0; i < n; ++i) {
    int32_t next = argmax(logits.data(), V);
    out.push_back(next);
    if (i + 1 < n) model.forward(&next, 1, cache, logits.data());
  }
  return out;
}

}  // namespace deepseek::test
