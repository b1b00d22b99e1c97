// Checkpoint directories (single file, sharded through model.safetensors.index.json, config
// only) and the Weights view: shape checks, FP8 weight + scale pairs, nearest-name suggestions,
// and broken indexes.
#include "st_builder.hpp"

#include <deepseek/io/checkpoint.hpp>
#include <deepseek/io/weights.hpp>

#include <catch2/catch.hpp>

#include <filesystem>

#include <sys/stat.h>
#include <unistd.h>

using namespace deepseek;
namespace fs = std::filesystem;

namespace {
const std::string kModels = DEEPSEEK_FIXTURES_DIR "/models";

// A scratch copy of a fixture directory that a test may break.
struct Scratch {
  fs::path dir;
  explicit Scratch(const std::string& from, const std::string& tag) {
    dir = fs::temp_directory_path() / ("deepseek-test-" + tag + "-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(from)) fs::copy(e.path(), dir / e.path().filename());
  }
  ~Scratch() { fs::remove_all(dir); }
  std::string str() const { return dir.string(); }
};

std::string open_error(const std::string& dir) {
  try {
    io::Checkpoint::open(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("single-file and sharded checkpoints open", "[checkpoint]") {
  auto bf16 = io::Checkpoint::open(kModels + "/v3_yarn_qlora_bf16");
  REQUIRE(bf16->has_weights());
  REQUIRE(bf16->num_files() == 1);
  REQUIRE(bf16->find("model.embed_tokens.weight"));
  REQUIRE(bf16->view("model.norm.weight").dtype() == DType::bf16);

  auto fp8 = io::Checkpoint::open(kModels + "/v3_fp8");
  REQUIRE(fp8->num_files() == 2);
  io::Weights w(fp8, "model.layers.0.self_attn.");
  auto kv_a = w.matrix("kv_a_proj_with_mqa", 160 + 16, 320);
  REQUIRE(kv_a.weight.dtype() == DType::f8_e4m3);
  REQUIRE(kv_a.scale_inv.shape() == Shape{2, 3});
}

TEST_CASE("FP8 block dequantization is bit-exact against torch", "[checkpoint][fp8]") {
  auto f = io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/dtypes/dtypes.safetensors");
  auto w = f->view("fp8_weight");
  auto s = f->view("fp8_weight_scale_inv");
  auto ref = f->view("fp8_weight_dequant_f32");
  REQUIRE(w.shape() == Shape{300, 200});
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 200; ++j) {
      const float ours = f8_e4m3_to_f32(w.data_as<uint8_t>()[i * 200 + j]) * s.data_as<float>()[(i / 128) * 2 + j / 128];
      REQUIRE(f32_bits(ours) == f32_bits(ref.data_as<float>()[i * 200 + j]));
    }
}

TEST_CASE("config-only directories open without weights", "[checkpoint]") {
  auto c = io::Checkpoint::open(DEEPSEEK_FIXTURES_DIR "/configs/deepseek-v3");
  REQUIRE_FALSE(c->has_weights());
  REQUIRE(c->config().hidden_size == 7168);
}

TEST_CASE("Weights errors name tensor, expected and found shape, and the nearest name", "[checkpoint][malformed]") {
  auto ckpt = io::Checkpoint::open(kModels + "/v3_yarn_qlora_bf16");
  io::Weights w(ckpt, "model.layers.1.");
  REQUIRE_THROWS_WITH(w.get("self_attn.q_a_proj.weight", Shape{96, 127}),
                      Catch::Contains("expected shape [96, 127]") && Catch::Contains("[96, 128]") &&
                          Catch::Contains("model.layers.1.self_attn.q_a_proj.weight"));
  REQUIRE_THROWS_WITH(w.get("self_attn.q_a_prj.weight"),
                      Catch::Contains("missing tensor") && Catch::Contains("nearest existing name: model.layers.1.self_attn.q_a_proj.weight"));
  REQUIRE_THROWS_WITH(w.get("self_attn.kv_a_layernorm.weight", Shape{64}, {DType::f32}),
                      Catch::Contains("unsupported dtype bf16"));
  REQUIRE(w.sub("mlp").sub("experts").sub("3").has("up_proj.weight"));
}

TEST_CASE("broken checkpoint directories give clear errors", "[checkpoint][malformed]") {
  SECTION("missing directory") { REQUIRE_THAT(open_error("/nonexistent/deepseek"), Catch::Contains("does not exist")); }
  SECTION("missing config.json") {
    Scratch s(kModels + "/v3_noqlora_f32", "noconfig");
    fs::remove(s.dir / "config.json");
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("no config.json"));
  }
  SECTION("index names a missing shard") {
    Scratch s(kModels + "/v3_fp8", "noshard");
    fs::remove(s.dir / "model-00002-of-00002.safetensors");
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("model-00002-of-00002.safetensors") && Catch::Contains("does not exist"));
  }
  SECTION("index names a tensor the shard lacks") {
    Scratch s(kModels + "/v3_fp8", "notensor");
    auto path = (s.dir / "model.safetensors.index.json").string();
    auto j = io::parse_json(io::read_text_file(path), path);
    j["weight_map"]["model.layers.0.ghost.weight"] = "model-00001-of-00002.safetensors";
    test::write_text(path, j.dump());
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("shard lacks it") && Catch::Contains("model.layers.0.ghost.weight"));
  }
  SECTION("index escapes the directory") {
    Scratch s(kModels + "/v3_fp8", "escape");
    auto path = (s.dir / "model.safetensors.index.json").string();
    test::write_text(path, R"({"weight_map":{"a":"../evil.safetensors"}})");
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("plain file name"));
  }
  SECTION("index without weight_map") {
    Scratch s(kModels + "/v3_fp8", "nomap");
    test::write_text((s.dir / "model.safetensors.index.json").string(), R"({"metadata":{}})");
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("weight_map"));
  }
  SECTION("malformed index JSON") {
    Scratch s(kModels + "/v3_fp8", "badjson");
    test::write_text((s.dir / "model.safetensors.index.json").string(), R"({"weight_map": {)");
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("malformed JSON") && Catch::Contains("model.safetensors.index.json"));
  }
  SECTION("weights that are not model.safetensors are not loaded without an index") {
    Scratch s(kModels + "/v3_noqlora_f32", "rename");
    fs::rename(s.dir / "model.safetensors", s.dir / "weights.safetensors");
    REQUIRE_FALSE(io::Checkpoint::open(s.str())->has_weights());
  }
  SECTION("a truncated shard") {
    Scratch s(kModels + "/v3_noqlora_f32", "trunc");
    fs::resize_file(s.dir / "model.safetensors", 1000);
    REQUIRE_THAT(open_error(s.str()), Catch::Contains("model.safetensors"));
  }
  SECTION("FP8 weight without its scale") {
    Scratch s(kModels + "/v3_noqlora_f32", "noscale");
    auto ckpt = io::Checkpoint::open(kModels + "/v3_fp8");
    io::Weights w(ckpt, "model.layers.0.self_attn.");
    REQUIRE_THROWS_WITH(w.matrix("kv_a_proj_with_mqa", 176, 321), Catch::Contains("expected shape [176, 321]"));
  }
}

// Issue 14: what a checkpoint directory may hold in place of its files.
TEST_CASE("hostile checkpoint directories: NUL shard names, FIFOs, symlinks, block sizes", "[checkpoint][hostile]") {
  SECTION("a shard name with an embedded NUL or control byte") {
    Scratch s(kModels + "/v3_fp8", "nul");
    const std::string path = (s.dir / "model.safetensors.index.json").string();
    // "model-00001-of-00002.safetensors\0x" used to open model-00001-of-00002.safetensors.
    test::write_text(path, R"({"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors\u0000x"}})");
    const std::string msg = open_error(s.str());
    CHECK_THAT(msg, Catch::Contains("control character") && Catch::Contains("\\x00x"));
    CHECK(msg.find('\0') == std::string::npos);
    test::write_text(path, R"({"weight_map":{"a":"model-00001-of-00002.safetensors\n"}})");
    CHECK_THAT(open_error(s.str()), Catch::Contains("control character"));
  }
  SECTION("a FIFO as model.safetensors is refused at once") {
    Scratch s(kModels + "/v3_noqlora_f32", "fifo");
    fs::remove(s.dir / "model.safetensors");
    REQUIRE(::mkfifo((s.dir / "model.safetensors").c_str(), 0600) == 0);
    CHECK_THAT(open_error(s.str()), Catch::Contains("is a FIFO, not a regular file") && Catch::Contains("model.safetensors"));
  }
  SECTION("a FIFO as config.json or as the index") {
    Scratch s(kModels + "/v3_fp8", "fifoindex");
    fs::remove(s.dir / "model.safetensors.index.json");
    REQUIRE(::mkfifo((s.dir / "model.safetensors.index.json").c_str(), 0600) == 0);
    CHECK_THAT(open_error(s.str()), Catch::Contains("is a FIFO"));
    fs::remove(s.dir / "config.json");
    REQUIRE(::mkfifo((s.dir / "config.json").c_str(), 0600) == 0);
    CHECK_THAT(open_error(s.str()), Catch::Contains("is a FIFO") && Catch::Contains("config.json"));
  }
  SECTION("a directory as model.safetensors") {
    Scratch s(kModels + "/v3_noqlora_f32", "dirweights");
    fs::remove(s.dir / "model.safetensors");
    fs::create_directory(s.dir / "model.safetensors");
    CHECK_THAT(open_error(s.str()), Catch::Contains("is a directory"));
  }
  SECTION("symlinked files are followed, as in the Hugging Face cache") {
    Scratch s(kModels + "/v3_fp8", "symlinks");
    for (const char* f : {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                          "model-00002-of-00002.safetensors"}) {
      fs::rename(s.dir / f, s.dir / (std::string("blob-") + f));
      fs::create_symlink(s.dir / (std::string("blob-") + f), s.dir / f);
    }
    auto ckpt = io::Checkpoint::open(s.str());
    CHECK(ckpt->num_files() == 2);
    CHECK(ckpt->has_weights());
  }
  SECTION("a weight_block_size that does not match the scales names the config field") {
    Scratch s(kModels + "/v3_fp8", "blocksize");
    const std::string path = (s.dir / "config.json").string();
    auto j = io::parse_json(io::read_text_file(path), path);
    j["quantization_config"]["weight_block_size"] = {64, 128};
    test::write_text(path, j.dump());
    auto ckpt = io::Checkpoint::open(s.str());
    io::Weights w(ckpt, "model.layers.0.self_attn.");
    CHECK_THROWS_WITH(w.matrix("kv_a_proj_with_mqa", 176, 320),
                      Catch::Contains("quantization_config.weight_block_size") && Catch::Contains("64x128 blocks"));
  }
}
