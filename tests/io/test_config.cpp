// config.json -> ModelConfig on the released configs (committed under tests/fixtures/configs,
// see the README there) and on broken ones; plus the sizes `deepseek-cli info` reports.
#include <deepseek/io/config.hpp>
#include <deepseek/models/model_info.hpp>

#include <catch2/catch.hpp>

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using namespace deepseek;

namespace {
io::ModelConfig fixture(const std::string& name) {
  return io::load_config(DEEPSEEK_FIXTURES_DIR "/configs/" + name + "/config.json");
}
io::Json fixture_json(const std::string& name) {
  const std::string path = DEEPSEEK_FIXTURES_DIR "/configs/" + name + "/config.json";
  return io::parse_json(io::read_text_file(path), path);
}
std::string config_error(const io::Json& j) {
  try {
    io::parse_config(j, "test-config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("released DeepSeek-V3 config", "[config]") {
  auto c = fixture("deepseek-v3");
  REQUIRE(c.model_type == "deepseek_v3");
  REQUIRE(c.architecture == "DeepseekV3ForCausalLM");
  REQUIRE(c.hidden_size == 7168);
  REQUIRE(c.num_hidden_layers == 61);
  REQUIRE(c.q_lora_rank == 1536);
  REQUIRE(c.kv_lora_rank == 512);
  REQUIRE(c.qk_head_dim() == 192);
  REQUIRE(c.n_routed_experts == 256);
  REQUIRE(c.topk_method == "noaux_tc");
  REQUIRE(c.scoring_func == "sigmoid");
  REQUIRE(c.routed_scaling_factor == 2.5);
  REQUIRE(c.rope_scaling.type == io::RopeType::yarn);
  REQUIRE(c.rope_scaling.factor == 40.0);
  REQUIRE(c.rope_scaling.original_max_position_embeddings == 4096);
  REQUIRE(c.rope_scaling.mscale_all_dim == 1.0);
  REQUIRE(c.rope_theta == 10000.0);
  REQUIRE(c.quantization.fp8);
  REQUIRE(c.quantization.block_rows == 128);
  REQUIRE(c.num_nextn_predict_layers == 1);
  REQUIRE_FALSE(c.is_moe_layer(2));
  REQUIRE(c.is_moe_layer(3));
  REQUIRE(c.eos_token_ids == std::vector<int64_t>{1});
}

TEST_CASE("transformers-5 style config equals the released style", "[config]") {
  auto a = fixture("deepseek-v3"), b = fixture("deepseek-v3-transformers5");
  REQUIRE(b.rope_scaling.type == io::RopeType::yarn);
  REQUIRE(b.rope_scaling.factor == a.rope_scaling.factor);
  REQUIRE(b.rope_scaling.original_max_position_embeddings == a.rope_scaling.original_max_position_embeddings);
  REQUIRE(b.rope_scaling.mscale_all_dim == a.rope_scaling.mscale_all_dim);
  REQUIRE(b.rope_theta == a.rope_theta);
  REQUIRE(b.num_nextn_predict_layers == 1);
}

TEST_CASE("V2-Lite, V3.2 and the OCR decoder", "[config]") {
  auto lite = fixture("deepseek-v2-lite");
  REQUIRE(lite.q_lora_rank == 0);
  REQUIRE(lite.topk_method == "greedy");
  REQUIRE(lite.scoring_func == "softmax");
  REQUIRE(lite.n_shared_experts == 2);
  REQUIRE(lite.rope_scaling.mscale == Approx(0.707));
  REQUIRE(lite.first_k_dense_replace == 1);
  auto v32 = fixture("deepseek-v3.2");
  REQUIRE(v32.has_indexer());
  REQUIRE(v32.index_n_heads == 64);
  REQUIRE(v32.index_head_dim == 128);
  REQUIRE(v32.index_topk == 2048);
  REQUIRE(v32.quantization.scale_ue8m0);
  auto ocr = fixture("deepseek-ocr");
  REQUIRE(ocr.model_type == "deepseek_vl_v2");
  REQUIRE_FALSE(ocr.use_mla);
  REQUIRE(ocr.head_dim == 128);
  REQUIRE(ocr.hidden_size == 1280);
  REQUIRE(ocr.n_routed_experts == 64);
  REQUIRE(ocr.rope_scaling.type == io::RopeType::none);
}

TEST_CASE("model sizes of the released configs", "[config][info]") {
  auto v3 = models::model_info(fixture("deepseek-v3"));
  // DeepSeek's README: 671B main-model parameters, 37B activated; 70,272 B/token bf16 latent cache.
  REQUIRE(v3.params_total / 1000000000 == 671);
  REQUIRE(v3.params_activated > 36500000000LL);  // README_WEIGHTS: 36.7B
  REQUIRE(v3.params_activated < 37600000000LL);
  REQUIRE(v3.kv_bytes_per_token_bf16 == 70272);
  REQUIRE(v3.kv_bytes_per_token_f32 == 140544);
  REQUIRE(v3.kv_bytes_per_token_fp8 == 656 * 61);  // FlashMLA's 656-byte FP8 row
  // V3.2: the 128-value DSA index key sits in the same row: (576 + 128) x 2 B x 61 layers
  auto v32 = models::model_info(fixture("deepseek-v3.2"));
  REQUIRE(v32.index_values_per_token_layer == 128);
  REQUIRE(v32.kv_bytes_per_token_bf16 == (576 + 128) * 2 * 61);
  REQUIRE(v32.kv_bytes_per_token_fp8 == (656 + 2 * 128) * 61);  // index key in bf16 after FlashMLA's row
  REQUIRE(v32.kv_bytes_per_token_fp8_index == (656 + 128 + 4) * 61);  // ... or e4m3 + one scale (FP8 indexer)
  REQUIRE(v3.kv_bytes_per_token_fp8_index == 0);
  REQUIRE(v3.full_kv_bytes_per_token_bf16 == 2LL * 128 * (192 + 128) * 61);
  REQUIRE(v3.dense_layers == 3);
  REQUIRE(v3.moe_layers == 58);
  REQUIRE(v3.mtp_params_unique / 100000000 == 116);  // README: "11.5B unique" MTP parameters
  auto lite = models::model_info(fixture("deepseek-v2-lite"));
  REQUIRE(lite.params_total / 100000000 == 157);  // DeepSeek-V2-Lite: 15.7B total
  REQUIRE(lite.params_activated / 100000000 == 24);  // 2.4B activated
}

TEST_CASE("config errors name the field", "[config][malformed]") {
  const io::Json v3 = fixture_json("deepseek-v3");
  struct Case {
    const char* what;
    io::Json j;
    const char* expect;
  };
  auto with = [&](const char* key, io::Json v) {
    io::Json j = v3;
    j[key] = std::move(v);
    return j;
  };
  auto without = [&](const char* key) {
    io::Json j = v3;
    j.erase(key);
    return j;
  };
  io::Json both = v3;
  both["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 8.0}, {"original_max_position_embeddings", 4096}};
  io::Json bad_rope = v3;
  bad_rope["rope_scaling"]["type"] = "longrope";
  io::Json no_factor = v3;
  no_factor["rope_scaling"].erase("factor");
  io::Json bad_quant = v3;
  bad_quant["quantization_config"]["quant_method"] = "gptq";
  io::Json bad_block = v3;
  bad_block["quantization_config"]["weight_block_size"] = {128};
  std::vector<Case> cases = {
      {"missing hidden_size", without("hidden_size"), "field hidden_size"},
      {"missing vocab", without("vocab_size"), "field vocab_size"},
      {"string layers", with("num_hidden_layers", "61"), "field num_hidden_layers"},
      {"negative heads", with("num_attention_heads", -1), "field num_attention_heads"},
      {"topk_group > n_group", with("topk_group", 9), "field topk_group"},
      {"groups don't divide", with("n_group", 7), "field n_group"},
      {"too many experts per token", with("num_experts_per_tok", 300), "field num_experts_per_tok"},
      {"unknown scoring", with("scoring_func", "relu"), "field scoring_func"},
      {"noaux_tc with softmax", with("scoring_func", "softmax"), "field scoring_func"},
      {"unknown model_type", with("model_type", "llama"), "field model_type"},
      {"rope spellings disagree", both, "field rope_parameters"},
      {"unsupported rope", bad_rope, "field rope_scaling.type"},
      {"yarn without factor", no_factor, "field rope_scaling.factor"},
      {"unknown quantization", bad_quant, "field quantization_config.quant_method"},
      {"bad block size", bad_block, "field quantization_config.weight_block_size"},
      {"eos outside vocab", with("eos_token_id", 200000), "field eos_token_id"},
      {"dense layers > layers", with("first_k_dense_replace", 100), "field first_k_dense_replace"},
      {"bool as number", with("rms_norm_eps", true), "field rms_norm_eps"},
      {"not an object", io::Json::array(), "not a JSON object"},
      {"integral float beyond int64", with("hidden_size", 2.52e29), "field hidden_size"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string msg = config_error(c.j);
    CHECK_THAT(msg, Catch::Contains(c.expect));
    CHECK_THAT(msg, Catch::Contains("test-config.json"));
  }
}

TEST_CASE("malformed config.json text names file and byte offset", "[config][malformed]") {
  try {
    io::parse_json(std::string("{\"hidden_size\": 7168,, }"), "cfg.json");
    FAIL("no error");
  } catch (const Error& e) {
    REQUIRE_THAT(e.what(), Catch::Contains("malformed JSON") && Catch::Contains("cfg.json") &&
                               Catch::Contains("byte offset"));
  }
  REQUIRE_THROWS_WITH(io::parse_json(std::string(R"({"a":1,"a":2})"), "cfg.json"), Catch::Contains("duplicate JSON key"));
  // A number beyond double range is nlohmann's out_of_range, not a parse_error: still our Error.
  REQUIRE_THROWS_WITH(io::parse_json(std::string(R"({"hidden_size": 1e400})"), "cfg.json"),
                      Catch::Contains("malformed JSON") && Catch::Contains("cfg.json"));
}

// Issue 14: every integer range-checked into its type, every float in range, bounded nesting and
// parameter counts; one case per class, the issue's examples among them.
TEST_CASE("hostile config values are refused by field, never truncated, wrapped or NaN-producing", "[config][hostile]") {
  const io::Json v3 = fixture_json("deepseek-v3");
  auto with = [&](const std::string& pointer, io::Json v) {
    io::Json j = v3;
    j[io::Json::json_pointer(pointer)] = std::move(v);
    return config_error(j);
  };
  struct Case {
    const char* pointer;
    io::Json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      // integer overflow and truncation
      {"/hidden_size", int64_t(1000000000000), "hidden_size = 1000000000000 is out of range [1, 1048576]"},
      {"/quantization_config/weight_block_size", {uint64_t(4294967424ull), 128}, "weight_block_size[0] = 4294967424 is out of range"},
      {"/quantization_config/weight_block_size", {128, uint64_t(1) << 31}, "weight_block_size[1] = 2147483648 is out of range"},
      {"/quantization_config/weight_block_size", {0, 128}, "weight_block_size[0] = 0 is out of range"},
      {"/num_hidden_layers", int64_t(1) << 40, "num_hidden_layers = 1099511627776 is out of range"},
      {"/vocab_size", int64_t(1) << 25, "vocab_size = 33554432 is out of range [1, 16777216]"},
      {"/max_position_embeddings", std::numeric_limits<uint64_t>::max(), "max_position_embeddings = 18446744073709551615"},
      {"/eos_token_id", {1, -7}, "eos_token_id[1] = -7 is out of range [0, 129279]"},
      {"/eos_token_id", {std::numeric_limits<uint64_t>::max()}, "eos_token_id[0] = 18446744073709551615 is out of range"},
      {"/eos_token_id", {1, "2"}, "field eos_token_id[1]"},
      {"/eos_token_id", -5, "eos_token_id = -5 is out of range"},
      {"/bos_token_id", std::numeric_limits<uint64_t>::max(), "bos_token_id = 18446744073709551615"},
      {"/n_routed_experts", 1e300, "n_routed_experts"},
      // floats that would only give NaN/inf logits
      {"/rms_norm_eps", -1, "rms_norm_eps = -1 is out of range (0, 1]"},
      {"/rms_norm_eps", 0, "rms_norm_eps = 0 is out of range (0, 1]"},
      {"/routed_scaling_factor", 0, "routed_scaling_factor = 0 is out of range"},
      {"/rope_theta", -1, "rope_theta"},
      {"/rope_scaling/beta_fast", -32, "rope_scaling.beta_fast"},
      {"/rope_scaling/mscale", -1, "rope_scaling.mscale = -1"},
      {"/rope_scaling/original_max_position_embeddings", int64_t(1) << 40, "rope_scaling.original_max_position_embeddings"},
      // DSA and MTP fields
      {"/index_topk", int64_t(1) << 40, "index_topk = 1099511627776 is out of range [0, 16777216]"},
      {"/index_head_dim", int64_t(1) << 30, "index_head_dim"},
      {"/index_n_heads", 100000, "index_n_heads"},
      {"/num_nextn_predict_layers", 65, "num_nextn_predict_layers = 65 is out of range [0, 64]"},
      {"/num_nextn_predict_layers", -1, "num_nextn_predict_layers"},
      // the parameter count as a whole (each width alone is in range)
      {"/n_routed_experts", int64_t(1) << 20, "parameters, more than the limit of 1125899906842624 (kMaxParameters)"},
      // unbounded text is not echoed
      {"/scoring_func", std::string(1 << 20, 's'), "(1048576 bytes)"},
  };
  for (const auto& c : cases) {
    INFO(c.pointer << " = " << c.value.dump().substr(0, 60));
    const std::string msg = with(c.pointer, c.value);
    CHECK_THAT(msg, Catch::Contains(c.expect));
    CHECK_THAT(msg, Catch::Contains("test-config.json"));
    CHECK(msg.size() < 500);
  }
  // MHA: num_attention_heads must be a multiple of num_key_value_heads.
  io::Json mha = fixture_json("deepseek-ocr");
  mha["language_config"]["num_key_value_heads"] = 7;
  CHECK_THAT(config_error(mha), Catch::Contains("field language_config.num_key_value_heads"));
  // A yarn factor so large that max_position_embeddings / factor < 1.
  io::Json yarn = v3;
  yarn["rope_scaling"].erase("original_max_position_embeddings");
  yarn["rope_scaling"]["factor"] = 1e9;
  CHECK_THAT(config_error(yarn), Catch::Contains("leaves no original context"));
  // The largest widths that pass still count parameters without overflow (UBSan build checks it).
  io::Json big = v3;
  big["hidden_size"] = 1 << 20;
  big["vocab_size"] = 1 << 24;
  big["num_hidden_layers"] = 1;
  big["first_k_dense_replace"] = 1;
  big["intermediate_size"] = 1 << 20;
  big["num_nextn_predict_layers"] = 0;
  const auto c = io::parse_config(big, "big.json");
  const auto m = models::model_info(c);
  CHECK(m.params_total > (int64_t(1) << 45));
  CHECK(double(m.params_total) <= double(kMaxParameters));
}

TEST_CASE("config.json: deep nesting and non-regular files", "[config][hostile]") {
  // The 100,000-level hidden_size that crashed `deepseek-cli info` (recursive dump in the error path).
  const std::string deep = "{\"hidden_size\": " + std::string(100000, '[') + "1" + std::string(100000, ']') + "}";
  CHECK_THROWS_WITH(io::parse_json(deep, "config.json"), Catch::Contains("kMaxJsonDepth") && Catch::Contains("config.json"));
  const std::string dir = "/tmp/deepseek-cfg-hostile-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/config.json.d");
  REQUIRE(::mkfifo((dir + "/config.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(io::load_config(dir + "/config.json"), Catch::Contains("is a FIFO"));
  CHECK_THROWS_WITH(io::load_config(dir + "/config.json.d"), Catch::Contains("is a directory"));
  std::filesystem::remove_all(dir);
}
