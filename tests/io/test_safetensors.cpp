// The safetensors reader: real files written by the Python `safetensors` package, and malformed
// headers that must each become a deepseek::Error naming the file and tensor, never a crash or an
// out-of-bounds read (the ASan build runs these too).
#include "st_builder.hpp"

#include <deepseek/io/safetensors.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

#include <string>
#include <vector>

using namespace deepseek;
using deepseek::test::safetensors_bytes;

TEST_CASE("reads every dtype written by the Python safetensors package", "[safetensors]") {
  auto f = io::SafetensorsFile::open(DEEPSEEK_FIXTURES_DIR "/dtypes/dtypes.safetensors");
  auto i64 = f->view("i64_values");
  REQUIRE(i64.dtype() == DType::i64);
  REQUIRE(i64.shape() == Shape{5});
  const int64_t* a = i64.data_as<int64_t>();
  REQUIRE(a[0] == -(int64_t(1) << 62));
  REQUIRE(a[1] == -1);
  REQUIRE(a[4] == (int64_t(1) << 62));
  auto i32 = f->view("i32_values");
  REQUIRE(i32.data_as<int32_t>()[0] == INT32_MIN);
  REQUIRE(i32.data_as<int32_t>()[3] == INT32_MAX);
  auto u8 = f->view("u8_values");
  REQUIRE(u8.data_as<uint8_t>()[2] == 255);
  auto b = f->view("bool_values");
  REQUIRE(b.dtype() == DType::boolean);
  REQUIRE(b.data_as<uint8_t>()[0] == 1);
  REQUIRE(b.data_as<uint8_t>()[1] == 0);
  auto m = f->view("f32_matrix");
  REQUIRE(m.shape() == Shape{2, 3});
  REQUIRE(m.data_as<float>()[5] == 6.0f);
  auto t3 = f->view("f32_3d");
  REQUIRE(t3.shape() == Shape{2, 3, 4});
  REQUIRE(t3.data_as<float>()[23] == 23.0f);
  auto t4 = f->view("f16_4d");
  REQUIRE(t4.shape() == Shape{1, 2, 2, 3});
  REQUIRE(f16_to_f32(t4.data_as<uint16_t>()[11]) == 5.5f);
  REQUIRE(f->view("f32_to_bf16").dtype() == DType::bf16);
  REQUIRE(f->view("f32_to_f8_e4m3").dtype() == DType::f8_e4m3);
  // float8_e8m0fnu, the dtype of DeepSeek-V4's ue8m0 block scales: all 256 encodings, 2^(b - 127).
  const TensorView e8 = f->view("e8m0_all");
  REQUIRE(e8.dtype() == DType::e8m0);
  REQUIRE(e8.shape() == Shape{256});
  REQUIRE(e8m0_to_f32(e8.data_as<uint8_t>()[127]) == 1.0f);
  REQUIRE_THROWS_WITH(f->view("nope"), Catch::Contains("no such tensor") && Catch::Contains("nope"));
}

namespace {
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    io::parse_safetensors_header(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
const std::vector<uint8_t> k8(8, 0);

}  // namespace

TEST_CASE("a valid hand-made header parses", "[safetensors]") {
  auto bytes = safetensors_bytes(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", k8);
  auto h = io::parse_safetensors_header(bytes.data(), bytes.size(), "ok.safetensors");
  REQUIRE(h.tensors.size() == 1);
  REQUIRE(h.metadata.at("format") == "pt");
  REQUIRE(h.tensors[0].shape == Shape{2});
}

TEST_CASE("F8_E8M0 tensors parse as e8m0, one byte per element", "[safetensors]") {
  // A V4-style FP8 pair: an e4m3 weight [2, 4] and its ue8m0 block scale [1, 1].
  auto bytes = safetensors_bytes(R"({"w.weight":{"dtype":"F8_E4M3","shape":[2,4],"data_offsets":[0,8]},)"
                                 R"("w.scale":{"dtype":"F8_E8M0","shape":[1,1],"data_offsets":[8,9]}})",
                                 std::vector<uint8_t>(9, 127));
  auto h = io::parse_safetensors_header(bytes.data(), bytes.size(), "v4.safetensors");
  REQUIRE(h.tensors.size() == 2);
  const auto scale =
      std::find_if(h.tensors.begin(), h.tensors.end(), [](const io::TensorInfo& t) { return t.name == "w.scale"; });
  REQUIRE(scale != h.tensors.end());
  REQUIRE(scale->dtype == DType::e8m0);
  REQUIRE(scale->shape == Shape{1, 1});
  REQUIRE(std::string(dtype_name(DType::e8m0)) == "e8m0");
  // The byte count is checked against one byte per element.
  REQUIRE_THAT(parse_error(safetensors_bytes(R"({"s":{"dtype":"F8_E8M0","shape":[2,3],"data_offsets":[0,8]}})", k8)),
               Catch::Contains("needs 6 bytes"));
  // The dtype string is case-sensitive, as in the safetensors format.
  REQUIRE_THAT(parse_error(safetensors_bytes(R"({"s":{"dtype":"f8_e8m0","shape":[8],"data_offsets":[0,8]}})", k8)),
               Catch::Contains("unknown or unsupported dtype \"f8_e8m0\""));
}

TEST_CASE("malformed safetensors headers give clear errors", "[safetensors][malformed]") {
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* expect;
  };
  const std::string t = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<Case> cases = {
      {"empty file", {}, "too short"},
      {"truncated length", {1, 0, 0}, "too short"},
      {"length past end", safetensors_bytes("{" + t + "}", k8, 5000), "runs past the end"},
      {"huge length", safetensors_bytes("{" + t + "}", k8, int64_t(1) << 60), "(100 MiB) limit (kMaxSafetensorsHeader)"},
      {"zero length", safetensors_bytes("", k8, 0), "empty"},
      {"not json", safetensors_bytes("{not json}", {}), "malformed JSON"},
      {"truncated json", safetensors_bytes(R"({"t":{"dtype":"F32")", {}), "malformed JSON"},
      {"not an object", safetensors_bytes("[1,2]", {}), "not a JSON object"},
      {"entry not object", safetensors_bytes(R"({"t":3})", {}), "not an object"},
      {"unknown dtype", safetensors_bytes(R"({"t":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", k8), "unknown or unsupported dtype \"F12\""},
      {"missing dtype", safetensors_bytes(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", k8), "\"dtype\""},
      {"missing shape", safetensors_bytes(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", k8), "\"shape\""},
      {"negative dim", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", k8), "non-negative"},
      {"float dim", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", k8), "non-negative integers"},
      {"rank 5", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})", k8), "rank 5"},
      {"huge shape", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", k8), "too large"},
      {"offsets wrong arity", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", k8), "[begin, end]"},
      {"begin > end", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", k8), "begin > end"},
      {"end past data", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", k8), "past the data section"},
      {"size mismatch", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", k8), "needs 12 bytes"},
      {"overlap", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", k8), "overlaps"},
      {"hole", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", k8), "hole of 4 bytes"},
      {"trailing bytes", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", k8), "after the last tensor"},
      {"duplicate name", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", k8), "duplicate JSON key \"a\""},
      {"misaligned", safetensors_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[1,3]}})", {0, 0, 0}), "not aligned"},
      {"metadata not strings", safetensors_bytes(R"({"__metadata__":{"x":1}})", {}), "must be strings"},
      {"offsets negative", safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", k8), "non-negative integers"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string msg = parse_error(c.bytes);
    CHECK_THAT(msg, Catch::Contains(c.expect));
    CHECK_THAT(msg, Catch::Contains("bad.safetensors"));
  }
  REQUIRE(cases.size() >= 20);
}

TEST_CASE("errors name the tensor", "[safetensors][malformed]") {
  auto bytes = safetensors_bytes(R"({"model.norm.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", k8);
  REQUIRE_THAT(parse_error(bytes), Catch::Contains("tensor model.norm.weight"));
}

TEST_CASE("truncating a real file anywhere never crashes", "[safetensors][malformed]") {
  auto f = io::MappedFile::open(DEEPSEEK_FIXTURES_DIR "/dtypes/dtypes.safetensors");
  std::vector<uint8_t> all(f->data(), f->data() + f->size());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | all[size_t(i)];
  for (size_t cut : {size_t(0), size_t(4), size_t(9), size_t(8 + header_len / 2), size_t(8 + header_len),
                     size_t(8 + header_len + 1), all.size() - 1}) {
    INFO("cut at " << cut);
    std::vector<uint8_t> part(all.begin(), all.begin() + long(cut));
    REQUIRE_THROWS_AS(io::parse_safetensors_header(part.data(), part.size(), "cut.safetensors"), Error);
  }
}

// Issue 14: a valid header with many entries parsed in quadratic time (10k entries 0.4 s, 40k
// 21 s). It is linear now; bench/bench_safetensors.cpp measures it up to kMaxSafetensorsTensors
// (no timing bound here: a quadratic parse of these 100k entries would take minutes and reach
// ctest's timeout instead).
TEST_CASE("a header with many tensors parses; one over kMaxSafetensorsTensors is refused", "[safetensors][hostile]") {
  std::string h = "{";
  const int n = 100000;
  for (int i = 0; i < n; ++i)
    h += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" + std::to_string(i) + "," +
         std::to_string(i + 1) + "]}";
  h += "}";
  const auto many = test::safetensors_bytes(h, std::vector<uint8_t>(size_t(n), 7));
  CHECK(io::parse_safetensors_header(many.data(), many.size(), "many.safetensors").tensors.size() == size_t(n));
  // The count is checked before any entry is validated, so entries that are not even tensor
  // objects show the limit. __metadata__ is not a tensor: kMaxSafetensorsTensors of them with it
  // pass the count (and fail later on the first entry), one more without it is refused.
  auto numbered = [](uint64_t count, bool metadata) {
    std::string s = metadata ? "{\"__metadata__\":{}" : "{\"x\":0";
    for (uint64_t i = 1; i < count; ++i) s += ",\"" + std::to_string(i) + "\":0";
    if (metadata) s += ",\"0\":0";
    return test::safetensors_bytes(s + "}", {});
  };
  const auto at_limit = numbered(kMaxSafetensorsTensors, true);
  CHECK_THROWS_WITH(io::parse_safetensors_header(at_limit.data(), at_limit.size(), "at.safetensors"),
                    Catch::Contains("tensor entry is not an object"));
  const auto f_over = numbered(kMaxSafetensorsTensors + 1, false);
  CHECK_THROWS_WITH(io::parse_safetensors_header(f_over.data(), f_over.size(), "over.safetensors"),
                    Catch::Contains("lists 1048577 tensors, more than the 1048576 limit (kMaxSafetensorsTensors)") &&
                        Catch::Contains("over.safetensors"));
  // Duplicate names are still found, wherever they are.
  std::string dup = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}";
  for (int i = 0; i < 1000; ++i) dup += ",\"t" + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,1]}";
  dup += ",\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,1]}}";
  const auto f = test::safetensors_bytes(dup, {1});
  CHECK_THROWS_WITH(io::parse_safetensors_header(f.data(), f.size(), "dup.safetensors"), Catch::Contains("duplicate JSON key \"a\""));
}
