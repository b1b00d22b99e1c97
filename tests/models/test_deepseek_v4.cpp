// models::DeepSeekV4<cpu> against transformers' DeepseekV4ForCausalLM (tests/reference/make_v4_fixtures.py;
// the model is described in tests/fixtures/models/V4_NOTES.md): logits of a full forward within 1e-4
// relative, the greedy continuation, the indexer's selections and the router's experts identical, the
// intermediates (attention outputs, compressed entries, indexer keys, final streams) close; cached
// decode and chunked prefill equal the full recompute; bf16 and FP8 (e4m3 + ue8m0 `.scale`) copies of
// v4_tiny give the logits of the same values stored in f32; bad configs and tensors give errors naming them.
//
// Tolerances: the reference is f32 math on the stored f32 weights; we do the same math in another
// order (blocked dot products, the routed experts summed per expert), which moves logits by ~1e-6
// relative. 1e-4 of the largest logit leaves room for that and nothing more: without the compressed
// entries the logits move by 7 (v4_tiny) and 11 (v4_mtp), with every entry selected by 6.6 and 12
// (the fixtures' self-checks, and tested below). Cache vs recompute (1e-5): the same math, only the
// rows batched differently.
#include "reference_fixture.hpp"

#include <deepseek/models/deepseek_v4.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace deepseek;
using namespace deepseek::test;

namespace {

const char* kV4Variants[] = {"v4_tiny", "v4_mtp"};

using Model = models::DeepSeekV4<cpu>;

Model load(const std::string& dir) { return Model(io::Checkpoint::open(dir)); }

std::vector<float> full_logits(const Model& m, const std::vector<int32_t>& ids, models::V4Trace* tr = nullptr) {
  const int64_t T = int64_t(ids.size()), V = m.config().vocab_size;
  auto cache = m.make_cache(T);
  std::vector<float> lg(size_t(T * V));
  m.forward(ids.data(), T, cache, lg.data(), true, nullptr, tr);
  return lg;
}

double max_rel_rows(const float* a, const float* b, int64_t rows, int64_t V) {
  double md = 0;
  for (int64_t t = 0; t < rows; ++t) md = std::max(md, rel_diff(a + t * V, b + t * V, V));
  return md;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A copy of a fixture folder (weights linked) whose config.json is edited by `edit`.
template <class Edit>
std::string with_config(const std::string& variant, const std::string& tag, Edit edit) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("deepseek-v4-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::create_symlink(fs::absolute(kModels + variant + "/model.safetensors"), dir / "model.safetensors");
  const std::string cfg = kModels + variant + "/config.json";
  io::Json j = io::parse_json(io::read_text_file(cfg), cfg);
  edit(j);
  std::ofstream(dir / "config.json") << j.dump();
  return dir.string();
}

// A copy of v4_tiny's weights with every float tensor rounded to bf16, stored as BF16 (bf16 = true)
// or as the same rounded values in F32: the two checkpoints hold identical numbers.
std::string rounded_copy(const std::string& tag, bool bf16) {
  namespace fs = std::filesystem;
  const std::string dir = with_config("v4_tiny", tag, [](io::Json&) {});
  fs::remove(fs::path(dir) / "model.safetensors");
  auto f = io::SafetensorsFile::open(kModels + "v4_tiny/model.safetensors");
  io::Json header = io::Json::object();
  std::string data;
  std::vector<io::TensorInfo> order = f->tensors();  // I64 first: each tensor stays aligned, with no holes
  std::stable_partition(order.begin(), order.end(), [](const io::TensorInfo& t) { return t.dtype == DType::i64; });
  for (const io::TensorInfo& t : order) {
    const TensorView v = f->view(t);
    std::string bytes(reinterpret_cast<const char*>(v.data()), size_t(v.nbytes()));
    std::string dtype = t.dtype == DType::i64 ? "I64" : "F32";
    if (t.dtype == DType::f32) {
      const float* x = v.data_as<const float>();
      if (bf16) {
        bytes.resize(size_t(v.numel()) * 2);
        for (int64_t i = 0; i < v.numel(); ++i) {
          const uint16_t h = f32_to_bf16(x[i]);
          std::memcpy(&bytes[size_t(i) * 2], &h, 2);
        }
        dtype = "BF16";
      } else {
        for (int64_t i = 0; i < v.numel(); ++i) {
          const float r = round_to_bf16(x[i]);
          std::memcpy(&bytes[size_t(i) * 4], &r, 4);
        }
      }
    }
    std::vector<int64_t> shape(t.shape.dims.begin(), t.shape.dims.begin() + t.shape.rank);
    header[t.name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(fs::path(dir) / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << data;
  return dir;
}

// One tensor of a checkpoint written by write_checkpoint.
struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes `tensors` as dir/model.safetensors, 8-byte elements first, then 4, 2, 1, so every tensor
// stays aligned for its dtype with no holes between them.
void write_checkpoint(const std::string& dir, std::vector<StTensor> tensors) {
  auto width = [](const StTensor& t) {
    const auto d = dtype_from_safetensors(t.dtype);
    return d ? dtype_size(*d) : 1;
  };
  std::stable_sort(tensors.begin(), tensors.end(),
                   [&](const StTensor& a, const StTensor& b) { return width(a) > width(b); });
  io::Json header = io::Json::object();
  std::string data;
  for (const StTensor& t : tensors) {
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream out(std::filesystem::path(dir) / "model.safetensors", std::ios::binary);
  const uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << data;
}

// How fp8_copy stores the linears of v4_tiny.
enum class Fp8Copy {
  e4m3,          // f8_e4m3 `X.weight` + F8_E8M0 `X.scale`, as released
  dequantized,   // the same values, exactly dequantized, in F32
  v3_scale_inv,  // f8_e4m3 + V3's F32 `X.weight_scale_inv`
  bad_shape,     // as e4m3, with layers.1.attn.wq_b.scale of shape [2, 1] instead of [1, 1]
  bad_dtype,     // as e4m3, with layers.1.attn.wq_b.scale in BF16
  nan_scale,     // as e4m3, with layers.1.attn.wq_b.scale = 0xFF (F8_E8M0's NaN)
  no_scale,      // as e4m3, without layers.1.attn.wq_b.scale
};

// A copy of v4_tiny whose 2-D linears (every `X.weight` but embed.weight) are quantized to e4m3 in
// 128 x 128 blocks. Each block's scale s is a power of two: the smallest with amax / s <= 448 (so
// every value fits e4m3's range), doubled on every other block so that neighbouring blocks differ
// (head.weight [256, 64] has two row blocks) and a kernel that reads the wrong block's scale shows.
std::string fp8_copy(const std::string& tag, Fp8Copy mode) {
  namespace fs = std::filesystem;
  const std::string dir = with_config("v4_tiny", tag, [](io::Json& j) {
    j["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"scale_fmt", "ue8m0"},
                                {"weight_block_size", {128, 128}}};
  });
  fs::remove(fs::path(dir) / "model.safetensors");
  auto f = io::SafetensorsFile::open(kModels + "v4_tiny/model.safetensors");
  std::vector<StTensor> out;
  auto raw = [](const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); };
  for (const io::TensorInfo& t : f->tensors()) {
    const TensorView v = f->view(t);
    const std::vector<int64_t> shape(t.shape.dims.begin(), t.shape.dims.begin() + t.shape.rank);
    const std::string suffix = ".weight";
    const bool linear = t.shape.rank == 2 && t.name != "embed.weight" && t.name.size() > suffix.size() &&
                        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (!linear) {
      out.push_back({t.name, t.dtype == DType::i64 ? "I64" : "F32", shape, raw(v.data(), size_t(v.nbytes()))});
      continue;
    }
    REQUIRE(t.dtype == DType::f32);
    const int64_t rows = t.shape.dims[0], cols = t.shape.dims[1], sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    const float* x = v.data_as<const float>();
    std::vector<float> scale(size_t(sr * sc)), deq(size_t(rows * cols));
    std::vector<uint8_t> q(size_t(rows * cols)), e8(size_t(sr * sc));
    for (int64_t bi = 0; bi < sr; ++bi)
      for (int64_t bj = 0; bj < sc; ++bj) {
        float amax = 0;
        for (int64_t r = bi * 128; r < std::min(rows, bi * 128 + 128); ++r)
          for (int64_t c = bj * 128; c < std::min(cols, bj * 128 + 128); ++c)
            amax = std::max(amax, std::fabs(x[r * cols + c]));
        const float s = (amax > 0 ? pow2_ceil(amax / 448.0f) : 1.0f) * float(1 + (bi + bj) % 2);
        scale[size_t(bi * sc + bj)] = s;
        e8[size_t(bi * sc + bj)] = f32_to_e8m0(s);
        REQUIRE(e8m0_to_f32(e8[size_t(bi * sc + bj)]) == s);
        for (int64_t r = bi * 128; r < std::min(rows, bi * 128 + 128); ++r)
          for (int64_t c = bj * 128; c < std::min(cols, bj * 128 + 128); ++c) {
            const size_t i = size_t(r * cols + c);
            q[i] = f32_to_f8_e4m3(x[i] / s);  // x / s is exact (a power of two) and within +-448
            deq[i] = f8_e4m3_to_f32(q[i]) * s;
          }
      }
    const std::string base = t.name.substr(0, t.name.size() - suffix.size());
    if (mode == Fp8Copy::dequantized) {
      out.push_back({t.name, "F32", shape, raw(deq.data(), deq.size() * 4)});
      continue;
    }
    out.push_back({t.name, "F8_E4M3", shape, raw(q.data(), q.size())});
    const bool target = base == "layers.1.attn.wq_b";
    if (mode == Fp8Copy::v3_scale_inv)
      out.push_back({base + ".weight_scale_inv", "F32", {sr, sc}, raw(scale.data(), scale.size() * 4)});
    else if (mode == Fp8Copy::bad_shape && target)
      out.push_back({base + ".scale", "F8_E8M0", {sr + 1, sc}, std::string(size_t((sr + 1) * sc), char(127))});
    else if (mode == Fp8Copy::bad_dtype && target)
      out.push_back({base + ".scale", "BF16", {sr, sc}, std::string(size_t(sr * sc) * 2, char(0))});
    else if (mode == Fp8Copy::nan_scale && target)
      out.push_back({base + ".scale", "F8_E8M0", {sr, sc}, std::string(size_t(sr * sc), char(0xff))});
    else if (mode == Fp8Copy::no_scale && target)
      continue;
    else
      out.push_back({base + ".scale", "F8_E8M0", {sr, sc}, raw(e8.data(), e8.size())});
  }
  write_checkpoint(dir, out);
  return dir;
}

}  // namespace

TEST_CASE("V4 FP8 e4m3 weights with ue8m0 block scales run as stored", "[model][v4][fp8]") {
  // The FP8 kernels with f32 activations multiply e4m3(w) by x * s exactly (s is a power of two),
  // the same products the F32 copy of the dequantized values forms, so the two checkpoints differ
  // only in summation order (~1e-6 relative). Against the unquantized reference the e4m3 rounding
  // (3 mantissa bits) must show. V3's f32 weight_scale_inv spelling of the same scales gives the
  // same logits bit for bit.
  const std::string q = fp8_copy("fp8", Fp8Copy::e4m3), d = fp8_copy("fp8-dequant", Fp8Copy::dequantized),
                    v3 = fp8_copy("fp8-scale-inv", Fp8Copy::v3_scale_inv);
  auto ref = load_reference("v4_tiny");
  const int64_t T = int64_t(ref.ids.size());
  const Model fp8 = load(q);
  const auto lq = full_logits(fp8, ref.ids), ld = full_logits(load(d), ref.ids), l3 = full_logits(load(v3), ref.ids);
  const double vs_dequant = max_rel_rows(lq.data(), ld.data(), T, 256);
  const double vs_ref = max_rel_rows(lq.data(), ref.logits.data_as<float>(), T, 256);
  WARN("v4_tiny FP8: vs dequantized f32 " << vs_dequant << ", vs unquantized reference " << vs_ref);
  REQUIRE(vs_dequant < 1e-5);
  REQUIRE(vs_ref > 1e-4);  // the quantization shows
  REQUIRE(lq == l3);
  // Cached decode over the FP8 weights (the small-n kernels) equals the full forward too.
  auto cache = fp8.make_cache(T);
  std::vector<float> step(size_t(T * 256));
  fp8.forward(ref.ids.data(), 7, cache, step.data(), true);
  for (int64_t t = 7; t < T; ++t) fp8.forward(ref.ids.data() + t, 1, cache, step.data() + t * 256);
  REQUIRE(max_rel_rows(step.data(), lq.data(), T, 256) < 1e-5);
  for (const std::string& dir : {q, d, v3}) std::filesystem::remove_all(dir);
}

TEST_CASE("V4 FP8 block scales that are wrong or missing name the tensor", "[model][v4][fp8][malformed]") {
  auto expect = [](Fp8Copy mode, const std::string& tag, const std::vector<std::string>& fragments) {
    const std::string dir = fp8_copy(tag, mode);
    std::string message = "no error";
    try {
      load(dir);
    } catch (const Error& e) {
      message = e.what();
    }
    for (const std::string& f : fragments) REQUIRE_THAT(message, Catch::Contains(f));
    std::filesystem::remove_all(dir);
  };
  expect(Fp8Copy::bad_shape, "fp8-bad-shape",
         {"layers.1.attn.wq_b.scale", "expected shape [1, 1] (the weight's [128, 48] in 128x128 blocks",
          "the checkpoint has [2, 1]"});
  expect(Fp8Copy::bad_dtype, "fp8-bad-dtype",
         {"layers.1.attn.wq_b.scale", "unsupported dtype bf16 for an FP8 block scale"});
  expect(Fp8Copy::nan_scale, "fp8-nan-scale", {"layers.1.attn.wq_b.scale", "block scale [0, 0] is 0xFF"});
  expect(Fp8Copy::no_scale, "fp8-no-scale", {"layers.1.attn.wq_b.weight", "f8_e4m3 weight without its block scales"});
}

TEST_CASE("V4 bf16 weights run as stored", "[model][v4][bf16]") {
  // bf16 linears widen exactly to f32 in the kernels and the norm / mHC / ape vectors are widened
  // at load, so a bf16 checkpoint gives the logits of the same rounded values stored as f32.
  const std::string b = rounded_copy("bf16", true), f = rounded_copy("bf16-as-f32", false);
  auto ref = load_reference("v4_tiny");
  const int64_t T = int64_t(ref.ids.size());
  const auto lb = full_logits(load(b), ref.ids), lf = full_logits(load(f), ref.ids);
  REQUIRE(max_rel_rows(lb.data(), lf.data(), T, 256) < 1e-5);
  REQUIRE(max_rel_rows(lb.data(), ref.logits.data_as<float>(), T, 256) > 1e-4);  // the rounding shows
  std::filesystem::remove_all(b);
  std::filesystem::remove_all(f);
}

TEST_CASE("V4 logits match transformers", "[model][v4][reference]") {
  for (const char* variant : kV4Variants) {
    INFO("variant " << variant);
    const Model model = load(kModels + variant);
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size, G = int64_t(ref.greedy.size());
    REQUIRE(ref.logits.shape() == Shape{T, V});
    const auto lg = full_logits(model, ref.ids);
    const double prompt = max_rel_rows(lg.data(), ref.logits.data_as<float>(), T, V);
    // The greedy rows: a full forward over prompt + greedy_ids.
    const auto all = full_logits(model, concat(ref.ids, ref.greedy));
    const double decode = max_rel_rows(all.data() + T * V, ref.file->view("decode_logits").data_as<float>(), G, V);
    WARN(variant << ": max rel diff prompt rows " << prompt << ", decode rows " << decode);
    REQUIRE(prompt < 1e-4);
    REQUIRE(decode < 1e-4);
  }
}

TEST_CASE("V4 reads transformers' layer_types + compress_rates alone", "[model][v4][config]") {
  // v4_tiny without compress_ratios: its layer_types and compress_rates (HCA ratio 8) say the same.
  const std::string dir = with_config("v4_tiny", "layer-types", [](io::Json& j) { j.erase("compress_ratios"); });
  const Model model = load(dir);
  REQUIRE(model.v4_config().compress_ratios == std::vector<int64_t>{0, 4, 8, 4});
  auto ref = load_reference("v4_tiny");
  const auto lg = full_logits(model, ref.ids);
  REQUIRE(max_rel_rows(lg.data(), ref.logits.data_as<float>(), int64_t(ref.ids.size()), 256) < 1e-4);
  std::filesystem::remove_all(dir);
  // Neither field: transformers' default schedule, HCA at 128 for layers 0-2, CSA for layer 3.
  const std::string none = with_config("v4_tiny", "no-schedule", [](io::Json& j) {
    j.erase("compress_ratios");
    j.erase("layer_types");
    j.erase("compress_rates");
  });
  const std::string cfg = none + "/config.json";
  REQUIRE(io::load_v4_config(cfg, io::load_config(cfg)).compress_ratios == std::vector<int64_t>{128, 128, 128, 4});
  REQUIRE_THROWS_WITH(load(none),
                      Catch::Contains("layers.0.attn.compressor.wkv.weight") && Catch::Contains("missing tensor"));
  std::filesystem::remove_all(none);
}

TEST_CASE("V4 intermediates, indexer selections and routing match transformers", "[model][v4][reference]") {
  for (const char* variant : kV4Variants) {
    INFO("variant " << variant);
    const Model model = load(kModels + variant);
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), d = model.config().hidden_size;
    models::V4Trace tr;
    auto cache = model.make_cache(T);
    model.forward(ref.ids.data(), T, cache, nullptr, false, nullptr, &tr);
    auto close = [&](const std::string& name, const float* ours, int64_t rows, int64_t cols) {
      INFO(name);
      const TensorView r = ref.file->view(name);
      REQUIRE(r.numel() == rows * cols);
      REQUIRE(max_rel_rows(ours, r.data_as<float>(), rows, cols) < 1e-4);
    };
    int selections = 0, routings = 0;
    for (int l = 0; l < model.num_layers(); ++l) {
      INFO("layer " << l);
      const std::string L = std::to_string(l);
      const auto& st = cache.layers[size_t(l)];
      if (ref.file->find("attn_out_layer" + L)) close("attn_out_layer" + L, tr.attn_out[size_t(l)].data(), T, d);
      if (ref.file->find("compressed_kv_layer" + L)) {
        const int64_t D = model.config().head_dim;
        REQUIRE(st.compressed.count == ref.file->view("compressed_kv_layer" + L).dim(0));
        close("compressed_kv_layer" + L, st.compressed.entries.data(), st.compressed.count, D);
      }
      if (ref.file->find("index_kv_layer" + L)) {
        REQUIRE(st.index.count == ref.file->view("index_kv_layer" + L).dim(0));
        close("index_kv_layer" + L, st.index.entries.data(), st.index.count, model.v4_config().index_head_dim);
      }
      if (ref.file->find("index_topk_layer" + L)) {
        REQUIRE(ids_of(ref.file->view("index_topk_layer" + L)) == tr.index_topk[size_t(l)]);
        ++selections;
      }
      REQUIRE(ids_of(ref.file->view("topk_idx_layer" + L)) == tr.experts[size_t(l)]);
      close("topk_weight_layer" + L, tr.expert_weights[size_t(l)].data(), T, model.config().num_experts_per_tok);
      ++routings;
    }
    close("streams_last", tr.streams.data(), T, model.v4_config().hc_mult * d);
    REQUIRE(selections >= 1);
    REQUIRE(routings == model.num_layers());
  }
}

TEST_CASE("V4 greedy continuation and cached decode equal transformers and the full recompute", "[model][v4][cache]") {
  for (const char* variant : kV4Variants) {
    INFO("variant " << variant);
    const Model model = load(kModels + variant);
    auto ref = load_reference(variant);
    REQUIRE(greedy_continuation(model, ref.ids, ref.greedy.size()) == ref.greedy);

    // Prefill a short prefix, then one token at a time over the rest of prompt + greedy: the rows
    // cross every CSA / HCA block boundary and run past the window.
    const auto ids = concat(ref.ids, ref.greedy);
    const int64_t N = int64_t(ids.size()), T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    const auto full = full_logits(model, ids);
    const int64_t P = 5;
    auto cache = model.make_cache(N);
    std::vector<float> lg(size_t(N * V));
    models::V4Trace tr;
    model.forward(ids.data(), P, cache, lg.data(), true);
    const int64_t k = model.v4_config().index_topk;
    for (int64_t t = P; t < N; ++t) {
      model.forward(ids.data() + t, 1, cache, lg.data() + t * V, false, nullptr, &tr);
      for (int l = 0; l < model.num_layers(); ++l)  // the decode rows' indexer choices
        if (t >= T && ref.file->find("decode_index_topk_layer" + std::to_string(l))) {
          const auto r = ids_of(ref.file->view("decode_index_topk_layer" + std::to_string(l)));
          REQUIRE(std::vector<int32_t>(r.begin() + (t - T) * k, r.begin() + (t - T + 1) * k) ==
                  tr.index_topk[size_t(l)]);
        }
    }
    const double vs_full = max_rel_rows(lg.data(), full.data(), N, V);
    const double vs_ref =
        std::max(max_rel_rows(lg.data(), ref.logits.data_as<float>(), T, V),
                 max_rel_rows(lg.data() + T * V, ref.file->view("decode_logits").data_as<float>(), N - T, V));
    WARN(variant << ": cached decode vs full " << vs_full << ", vs transformers " << vs_ref);
    REQUIRE(vs_full < 1e-5);
    REQUIRE(vs_ref < 1e-4);
  }
}

TEST_CASE("V4 MTP module matches DeepSeek's MTPBlock as the fixture builds it", "[model][v4][mtp]") {
  const Model model = load(kModels + "v4_mtp");
  const models::DeepSeekV4Mtp<cpu> mtp(model);
  auto ref = load_reference("v4_mtp");
  const int64_t T = int64_t(ref.ids.size()), V = 256, S = model.v4_config().hc_mult * model.config().hidden_size;
  const auto next = ids_of(ref.file->view("mtp_input_ids"));
  REQUIRE(int64_t(next.size()) == T - 1);
  // The streams from our own main forward (the reference's streams_last agree to ~1e-6).
  std::vector<float> streams(size_t(T * S));
  auto cache = model.make_cache(T);
  model.forward(ref.ids.data(), T, cache, nullptr, false, streams.data());
  const float* ref_logits = ref.file->view("mtp_logits").data_as<float>();
  auto mc = mtp.make_cache(T);
  std::vector<float> lg(size_t((T - 1) * V));
  mtp.forward(streams.data(), next.data(), T - 1, mc, lg.data(), true);
  const double whole = max_rel_rows(lg.data(), ref_logits, T - 1, V);
  // One pair at a time from a 3-pair prefill (its own sliding window of 32 is passed).
  auto dc = mtp.make_cache(T);
  std::vector<float> step(size_t((T - 1) * V));
  mtp.forward(streams.data(), next.data(), 3, dc, step.data(), true);
  for (int64_t i = 3; i < T - 1; ++i) mtp.forward(streams.data() + i * S, next.data() + i, 1, dc, step.data() + i * V);
  const double stepped = max_rel_rows(step.data(), lg.data(), T - 1, V);
  WARN("v4_mtp MTP: vs reference " << whole << ", cached vs whole " << stepped);
  REQUIRE(whole < 1e-4);
  REQUIRE(stepped < 1e-5);
  REQUIRE_THROWS_WITH(models::DeepSeekV4Mtp<cpu>(load(kModels + "v4_tiny")),
                      Catch::Contains("num_nextn_predict_layers"));
}

TEST_CASE("V4 chunked prefill equals the full forward", "[model][v4][cache]") {
  for (const char* variant : kV4Variants) {
    INFO("variant " << variant);
    const Model model = load(kModels + variant);
    auto ref = load_reference(variant);
    const int64_t T = int64_t(ref.ids.size()), V = model.config().vocab_size;
    const auto full = full_logits(model, ref.ids);
    for (int64_t chunk : {int64_t(1), int64_t(7), int64_t(33)}) {
      INFO("chunk " << chunk);
      auto cache = model.make_cache(T);
      std::vector<float> lg(size_t(T * V));
      for (int64_t i0 = 0; i0 < T; i0 += chunk)
        model.forward(ref.ids.data() + i0, std::min(chunk, T - i0), cache, lg.data() + i0 * V, true);
      REQUIRE(cache.size() == T);
      REQUIRE(max_rel_rows(lg.data(), full.data(), T, V) < 1e-5);
    }
  }
}

TEST_CASE("V4 compressed attention and the indexer change the result", "[model][v4]") {
  // The same weights with every layer sliding, or with index_topk above every visible count, must
  // not reproduce the reference: the fixture is sensitive to both (self-checks: 7.0 and 6.6).
  const std::string sliding = with_config("v4_tiny", "sliding", [](io::Json& j) {
    j["compress_ratios"] = {0, 0, 0, 0};
    j.erase("layer_types");
  });
  const std::string all = with_config("v4_tiny", "topk-all", [](io::Json& j) { j["index_topk"] = 64; });
  auto ref = load_reference("v4_tiny");
  const int64_t T = int64_t(ref.ids.size()), V = 256;
  for (const std::string& dir : {sliding, all}) {
    INFO(dir);
    const auto lg = full_logits(load(dir), ref.ids);
    double md = 0;
    for (int64_t i = 0; i < T * V; ++i)
      md = std::max(md, double(std::fabs(lg[size_t(i)] - ref.logits.data_as<float>()[i])));
    REQUIRE(md > 1.0);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("V4 bad configs and tensors give errors naming them", "[model][v4][malformed]") {
  auto expect = [](const std::string& dir, const std::string& a, const std::string& b) {
    REQUIRE_THROWS_WITH(load(dir), Catch::Contains(a) && Catch::Contains(b));
    std::filesystem::remove_all(dir);
  };
  expect(with_config("v4_tiny", "short", [](io::Json& j) { j["layer_types"].erase(3); }), "layer_types",
         "has 3 entries");
  expect(with_config("v4_tiny", "unknown", [](io::Json& j) { j["layer_types"][1] = "full_attention"; }),
         "layer_types[1]", "unknown layer type \"full_attention\"");
  expect(
      with_config("v4_tiny", "disagree", [](io::Json& j) { j["compress_rates"]["heavily_compressed_attention"] = 16; }),
      "layer_types[2]", "compress_ratios says heavily_compressed_attention with ratio 8");
  expect(with_config("v4_tiny", "scoring", [](io::Json& j) { j["scoring_func"] = "softmax"; }), "scoring_func",
         "unsupported scoring_func \"softmax\"");
  expect(with_config("v4_tiny", "ratio",
                     [](io::Json& j) {
                       j["compress_ratios"] = {0, 4, 8, -1};
                     }),
         "compress_ratios[3]", "out of range");
  expect(with_config("v4_mtp", "ratios-len",
                     [](io::Json& j) {
                       j["compress_ratios"] = {0, 4};
                     }),
         "compress_ratios", "has 2 entries");
  expect(with_config("v4_tiny", "csa8",
                     [](io::Json& j) {
                       j.erase("compress_ratios");
                       j["compress_rates"]["compressed_sparse_attention"] = 8;
                     }),
         "compress_rates", "compressed sparse attention with ratio 8 is not supported");

  {  // a context past the cache refuses before touching it
    const Model model = load(kModels + "v4_tiny");
    auto cache = model.make_cache(4);
    std::vector<int32_t> ids(5, 3);
    std::vector<float> lg(256);
    REQUIRE_THROWS_WITH(model.forward(ids.data(), 5, cache, lg.data()), Catch::Contains("exceeds the cache capacity"));
    REQUIRE(cache.size() == 0);
    ids[2] = 256;
    REQUIRE_THROWS_WITH(model.forward(ids.data(), 4, cache, lg.data()), Catch::Contains("token id 256 at index 2"));
    REQUIRE_THROWS_WITH(model.make_cache(models::CacheOptions{8, nn::CacheLayout::paged}),
                        Catch::Contains("no paged cache"));
    REQUIRE_THROWS_WITH(models::DeepSeekV3<cpu>(io::Checkpoint::open(kModels + "v4_tiny")),
                        Catch::Contains("models::DeepSeekV4"));
  }

  // tid2eid with an expert id past n_routed_experts: a copy of the weights with one entry patched.
  namespace fs = std::filesystem;
  const std::string dir = with_config("v4_tiny", "tid2eid", [](io::Json&) {});
  fs::remove(fs::path(dir) / "model.safetensors");
  fs::copy(kModels + "v4_tiny/model.safetensors", fs::path(dir) / "model.safetensors");
  {
    auto f = io::SafetensorsFile::open(kModels + "v4_tiny/model.safetensors");
    const io::TensorInfo* t = f->find("layers.1.ffn.gate.tid2eid");
    REQUIRE(t != nullptr);
    std::fstream out(fs::path(dir) / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const int64_t bad = 8;
    out.seekp(std::streamoff(f->header().data_offset + t->begin + 5 * sizeof(int64_t)));
    out.write(reinterpret_cast<const char*>(&bad), sizeof bad);
  }
  expect(dir, "layers.1.ffn.gate.tid2eid", "expert id 8 (token 2) is outside [0, 8)");

  // An expert stored as I8 (how the release packs its FP4 experts): refused by name, not converted.
  // The header edit keeps its length and the tensor's byte size: F32 [16, 64] -> I8 [16, 256].
  const std::string fp4 = with_config("v4_tiny", "fp4", [](io::Json&) {});
  fs::remove(fs::path(fp4) / "model.safetensors");
  {
    std::ifstream in(kModels + "v4_tiny/model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string from = "\"layers.0.ffn.experts.0.w1.weight\":{\"dtype\":\"F32\",\"shape\":[16,64]";
    const std::string to = "\"layers.0.ffn.experts.0.w1.weight\":{\"dtype\":\"I8\",\"shape\":[16,256]";
    const size_t at = bytes.find(from);
    REQUIRE(at != std::string::npos);
    bytes.replace(at, from.size(), to);
    std::ofstream(fs::path(fp4) / "model.safetensors", std::ios::binary) << bytes;
  }
  expect(fp4, "layers.0.ffn.experts.0.w1.weight", "not supported yet");
}
