// models::DeepSeekV3<cuda> (and MtpHead<cuda>) against the transformers fixtures the CPU model is
// tested with (tests/models/test_deepseek_v3.cpp, test_dsa.cpp): every MLA, MHA and DSA fixture,
// f32 / bf16 / FP8 weights, in all three MLA orders; greedy continuations; cached decode == full
// recompute; paged == contiguous; speculative greedy == plain greedy; and DeepSeek-OCR end to end
// against the official pipeline (tests/models/test_deepseek_ocr.cpp's fixture); examples/compose's
// hand-built model on the GPU equals models::DeepSeekV3<cuda> and decodes the demo model's
// transformers greedy ids (the same source as on the CPU, templated on the backend).
//
// Tolerance: with f32 activations and an f32 cache the CUDA backend computes the reference's float32
// math in yet another order (warp-reduced dot products, split-K attention merged in f32), ~1e-6
// relative like the CPU's; 1e-4 of the largest logit is the CPU tests' bound and is kept. Greedy ids
// must be identical: the fixtures' top-2 margins are checked by their scripts. Without a GPU (CI)
// each case warns and returns; they run on the device machine (bench/cuda/device_check.sh).
#include "cuda_test_util.hpp"
#include "../models/reference_fixture.hpp"
#include "compose/composed_model.hpp"

#include <deepseek/cuda.hpp>
#include <deepseek/generate/generator.hpp>
#include <deepseek/generate/speculative.hpp>
#include <deepseek/models/deepseek_v3.hpp>
#include <deepseek/models/deepseek_ocr.hpp>
#include <deepseek/models/mtp_head.hpp>
#include <deepseek/vision/image.hpp>
#include <deepseek/vision/preprocess.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

// The whole text model and its MTP head instantiate for the CUDA tag.
template class deepseek::models::DeepSeekV3<deepseek::cuda>;
template class deepseek::models::MtpHead<deepseek::cuda>;
template class deepseek::models::DeepSeekOcr<deepseek::cuda>;
template class deepseek::examples::ComposedModel<deepseek::cuda>;

namespace {

using namespace deepseek::cuda_test;

using namespace deepseek;
using namespace deepseek::test;
namespace dc = deepseek::backend::cuda;
using Model = models::DeepSeekV3<cuda>;


// All-row logits [T, V] of ids from an empty cache, on the host.
std::vector<float> logits_of(const Model& model, const std::vector<int32_t>& ids, const models::CacheOptions& co,
                             nn::MlaMode mode = nn::MlaMode::automatic) {
  const int64_t T = int64_t(ids.size()), V = model.config().vocab_size;
  auto cache = model.make_cache(co);
  dc::Buffer dev(size_t(T * V));
  model.forward(ids.data(), T, cache, dev.data(), true, nullptr, mode);
  std::vector<float> host(size_t(T * V));
  dc::download(dev.data(), host.size(), host.data());
  return host;
}

// n greedy tokens after the prompt through generate::Generator (logits on the device, sampled on the host).
std::vector<int32_t> greedy(const Model& model, const std::vector<int32_t>& prompt, int64_t n, const models::CacheOptions& co) {
  auto cache = model.make_cache(co);
  generate::GenerateOptions go;
  go.max_new_tokens = n;
  go.sampling.greedy = true;
  go.stop_at_eos = false;
  generate::Generator<Model> gen(model, cache, go);
  return gen.run(prompt);
}

}  // namespace

TEST_CASE("CUDA model: logits match transformers in every MLA order", "[cuda][model][reference]") {
  if (!have_gpu()) return;
  for (const std::string& variant : kCacheVariants) {
    INFO("variant " << variant);
    Model model(io::Checkpoint::open(kModels + variant));
    const Reference ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    REQUIRE(ref.logits.shape() == Shape{T, V});
    for (auto mode : {nn::MlaMode::naive, nn::MlaMode::tiled, nn::MlaMode::absorbed}) {
      const std::vector<float> lg = logits_of(model, ref.ids, models::CacheOptions::exact(T), mode);
      for (int64_t t = 0; t < T; ++t) {
        INFO("row " << t << " mode " << int(mode));
        REQUIRE(rel_diff(lg.data() + t * V, ref.logits.data_as<float>() + t * V, V) < 1e-4);
      }
    }
  }
}

TEST_CASE("CUDA model: greedy continuation equals transformers', contiguous and paged", "[cuda][model][reference]") {
  if (!have_gpu()) return;
  for (const std::string& variant : kCacheVariants) {
    INFO("variant " << variant);
    Model model(io::Checkpoint::open(kModels + variant));
    const Reference ref = load_reference(variant);
    const int64_t n = int64_t(ref.greedy.size()), cap = int64_t(ref.ids.size()) + n;
    CHECK(greedy(model, ref.ids, n, models::CacheOptions::exact(cap)) == ref.greedy);
    CHECK(greedy(model, ref.ids, n, models::CacheOptions::exact(cap, nn::CacheLayout::paged, 5)) == ref.greedy);
  }
}

TEST_CASE("CUDA model: cached decode equals full recompute, bf16 and FP8 caches too", "[cuda][model]") {
  if (!have_gpu()) return;
  for (const std::string& variant : kCacheVariants) {
    INFO("variant " << variant);
    Model model(io::Checkpoint::open(kModels + variant));
    const Reference ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    std::vector<nn::CacheDType> dtypes = {nn::CacheDType::f32, nn::CacheDType::bf16};
    if (model.config().use_mla && model.config().kv_lora_rank % 128 == 0) dtypes.push_back(nn::CacheDType::fp8_e4m3);
    for (nn::CacheDType dt : dtypes) {
      INFO("cache " << nn::cache_dtype_name(dt));
      const models::CacheOptions co{T, nn::CacheLayout::paged, 3, dt};
      const std::vector<float> full = logits_of(model, ref.ids, co);
      // The prompt's first half in one forward, then one token at a time.
      auto cache = model.make_cache(co);
      dc::Buffer dev(size_t(T * V));
      const int64_t h = T / 2;
      model.forward(ref.ids.data(), h, cache, dev.data(), true);
      for (int64_t t = h; t < T; ++t) model.forward(ref.ids.data() + t, 1, cache, dev.data() + t * V);
      std::vector<float> step(size_t(T * V));
      dc::download(dev.data(), step.size(), step.data());
      const double tol = dt == nn::CacheDType::f32 ? 1e-4 : 2e-3;  // rounded cache rows: decode reads them, the prompt's own rows too
      for (int64_t t = h; t < T; ++t) {
        INFO("row " << t);
        CHECK(rel_diff(step.data() + t * V, full.data() + t * V, V) < tol);
      }
    }
  }
}

TEST_CASE("CUDA model: speculative greedy with the MTP head equals plain greedy", "[cuda][model][mtp]") {
  if (!have_gpu()) return;
  for (const char* variant : {"v3_mtp", "v3_mtp_shared"}) {
    INFO("variant " << variant);
    auto ckpt = io::Checkpoint::open(kModels + variant);
    Model model(ckpt);
    models::MtpHead<cuda> mtp(ckpt, model);
    auto ref = io::SafetensorsFile::open(kModels + variant + "/reference.safetensors");
    const std::vector<int32_t> prompt = ids_of(ref->view("input_ids"));
    generate::GenerateOptions go;
    go.max_new_tokens = 24;
    go.sampling.greedy = true;
    go.stop_at_eos = false;
    auto c1 = model.make_cache(models::CacheOptions::exact(64));
    auto c2 = model.make_cache(models::CacheOptions::exact(64));
    generate::Generator<Model> plain(model, c1, go);
    generate::SpeculativeGenerator<Model, models::MtpHead<cuda>> spec(model, mtp, c2, go);
    CHECK(spec.run(prompt) == plain.run(prompt));
  }
}

TEST_CASE("CUDA model: DeepSeek-OCR matches the official pipeline end to end", "[cuda][model][ocr]") {
  if (!have_gpu()) return;
  const std::string dir = kModels + "ocr_tiny";
  models::DeepSeekOcr<cuda> ocr(io::Checkpoint::open(dir));
  auto ref = io::SafetensorsFile::open(dir + "/reference.safetensors");
  const io::Json cases = io::parse_json(io::read_text_file(dir + "/cases.json"), dir + "/cases.json");
  const vision::Image page = vision::load_image(dir + "/page.png");
  const int64_t d = ocr.n_embed(), V = ocr.config().vocab_size;
  for (const auto& c : cases.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    INFO("case " << name);
    vision::OcrMode mode = vision::OcrMode::base;
    for (auto m : {vision::OcrMode::tiny, vision::OcrMode::small, vision::OcrMode::base, vision::OcrMode::large,
                   vision::OcrMode::gundam, vision::OcrMode::gundam_m}) {
      const auto sp = vision::mode_spec(m);
      if (sp.base_size == c.at("base_size").get<int64_t>() && sp.image_size == c.at("image_size").get<int64_t>() &&
          sp.crop == c.at("crop_mode").get<bool>())
        mode = m;
    }
    const auto prep = vision::preprocess(page, mode);
    const auto p = ocr.make_prompt(c.at("prompt").get<std::string>(), std::vector<vision::PreparedImage>{prep});
    CHECK(p.ids == ids_of(ref->view(name + ".input_ids")));
    const TensorView rv = ref->view(name + ".vision");
    REQUIRE(rv.numel() == p.vision_rows() * d);
    std::vector<float> rows(size_t(rv.numel()));
    dc::download(p.vision.data(), rows.size(), rows.data());
    double worst = 0;
    for (int64_t r = 0; r < p.vision_rows(); ++r) worst = std::max(worst, rel_diff(rows.data() + r * d, rv.data_as<float>() + r * d, d));
    INFO("vision rows max rel diff " << worst);
    CHECK(worst < 1e-4);
    auto cache = ocr.make_cache(models::CacheOptions::exact(int64_t(p.ids.size()) + 16));
    dc::Buffer lg(static_cast<size_t>(V));
    ocr.prefill(p, cache, lg.data());
    std::vector<float> logits(static_cast<size_t>(V));
    dc::download(lg.data(), logits.size(), logits.data());
    CHECK(rel_diff(logits.data(), ref->view(name + ".logits").data_as<float>(), V) < 1e-4);
    auto cache2 = ocr.make_cache(models::CacheOptions::exact(int64_t(p.ids.size()) + 16));
    generate::GenerateOptions go;
    go.max_new_tokens = cases.at("max_new").get<int64_t>();
    go.no_repeat_ngram_size = 20;  // what infer() passes
    generate::Generator<Model> gen(ocr.decoder(), cache2, go);
    CHECK(gen.run(p.ids, [&](float* l) { ocr.prefill(p, cache2, l); }, {}) == ids_of(ref->view(name + ".greedy")));
  }
}

TEST_CASE("CUDA model: examples/compose equals models::DeepSeekV3 and decodes the demo's greedy ids", "[cuda][model][compose]") {
  if (!have_gpu()) return;
  auto demo = io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/demo/reference.safetensors");
  const std::vector<int32_t> prompt = ids_of(demo->view("prompt0_ids")), want = ids_of(demo->view("prompt0_greedy"));
  auto ckpt = io::Checkpoint::open(kDemoModel);
  const Model reference(ckpt);
  const examples::ComposedModel<cuda> composed(ckpt);
  const int64_t V = ckpt->config().vocab_size, T = int64_t(prompt.size() + want.size());
  auto ref_cache = reference.make_cache(models::CacheOptions::exact(T));
  auto cache = composed.make_cache(T, nn::CacheDType::f32);
  dc::Buffer a(static_cast<size_t>(V)), b(static_cast<size_t>(V));
  std::vector<float> ha(static_cast<size_t>(V)), hb(static_cast<size_t>(V));
  reference.forward(prompt.data(), int64_t(prompt.size()), ref_cache, a.data());
  composed.forward(prompt.data(), int64_t(prompt.size()), cache, b.data());
  std::vector<int32_t> got;
  for (size_t i = 0; i < want.size(); ++i) {
    dc::download(a.data(), ha.size(), ha.data());
    dc::download(b.data(), hb.size(), hb.data());
    INFO("step " << i);
    REQUIRE(rel_diff(hb.data(), ha.data(), V) <= 1e-6);
    int32_t next = argmax(hb.data(), V);
    got.push_back(next);
    reference.forward(&next, 1, ref_cache, a.data());
    composed.forward(&next, 1, cache, b.data());
  }
  CHECK(got == want);
}

TEST_CASE("CUDA model: forward_batch equals each sequence alone, contiguous and paged", "[cuda][model][batch]") {
  if (!have_gpu()) return;
  for (const char* variant : {"v3_fp8", "v2_mha_ocr_decoder", "v32_dsa_topk_small", "v3_yarn_qlora_bf16"}) {
    INFO("variant " << variant);
    Model model(io::Checkpoint::open(kModels + variant));
    const Reference ref = load_reference(variant);
    const int64_t V = model.config().vocab_size;
    // (prompt length, decode tokens, paged): every sequence a prefix of the fixture's ids, continued
    // with the next ids (the positions the fixture scripts checked for margins).
    const std::vector<std::tuple<int64_t, int, bool>> plans = {{5, 3, false}, {2, 3, true}, {7, 3, true}};
    const int S = int(plans.size());
    auto make = [&](int s) {
      const auto& [prompt, tokens, paged] = plans[size_t(s)];
      return model.make_cache(models::CacheOptions::exact(prompt + tokens, paged ? nn::CacheLayout::paged : nn::CacheLayout::contiguous, 4));
    };
    // Alone: logits after the prompt and after each token.
    std::vector<std::vector<float>> alone(static_cast<size_t>(S));
    for (int s = 0; s < S; ++s) {
      const auto& [prompt, tokens, paged] = plans[size_t(s)];
      auto cache = make(s);
      dc::Buffer lg(size_t((tokens + 1) * V));
      model.forward(ref.ids.data(), prompt, cache, lg.data());
      for (int k = 0; k < tokens; ++k) model.forward(&ref.ids[size_t(prompt + k)], 1, cache, lg.data() + (k + 1) * V);
      alone[size_t(s)] = download(lg);
    }
    // Batched: every step runs all sequences (the prompt first, then one token each).
    std::vector<nn::KvCache> caches;
    for (int s = 0; s < S; ++s) caches.push_back(make(s));
    dc::Buffer lg(size_t(S) * size_t(V));
    for (int k = -1; k < 3; ++k) {
      std::vector<Model::BatchSequence> batch;
      for (int s = 0; s < S; ++s) {
        const int64_t prompt = std::get<0>(plans[size_t(s)]);
        batch.push_back({k < 0 ? ref.ids.data() : &ref.ids[size_t(prompt + k)], k < 0 ? prompt : 1, &caches[size_t(s)],
                         lg.data() + size_t(s) * size_t(V)});
      }
      model.forward_batch(batch);
      const std::vector<float> got = download(lg);
      for (int s = 0; s < S; ++s) {
        INFO("step " << k + 1 << ", sequence " << s);
        CHECK(rel_diff(got.data() + size_t(s) * size_t(V), alone[size_t(s)].data() + (k + 1) * V, V) <= 1e-5);
      }
    }
  }
}
