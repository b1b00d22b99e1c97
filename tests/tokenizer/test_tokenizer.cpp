// Tokenizer layer tests against fixtures from tests/reference/make_tokenizer_fixtures.py (HF
// `tokenizers` ids, Oniguruma's Unicode classes, transformers-rendered chat templates).
#include <deepseek/tokenizer.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using deepseek::tokenizer::EncodeOptions;
using deepseek::tokenizer::SpecialTokens;
using deepseek::tokenizer::Tokenizer;
using deepseek::tokenizer::TokenId;
using nlohmann::json;

namespace {

const std::string kFixtures = std::string(DEEPSEEK_FIXTURES_DIR) + "/tokenizer/";
const std::string kTokenizerDir = std::string(DEEPSEEK_ASSETS_DIR) + "/tokenizers/deepseek-v3";

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Tokenizer& v3() {
  static const Tokenizer tok = Tokenizer::from_file(kTokenizerDir);
  return tok;
}

std::vector<TokenId> ids_of(const json& j) { return j.get<std::vector<TokenId>>(); }

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
  return out;
}

struct Corpus {
  std::string text;
  std::vector<TokenId> ids;
  json index;
};

const Corpus& corpus() {
  static const Corpus c = [] {
    Corpus r;
    r.text = slurp(kFixtures + "corpus.bin");
    const std::string raw = slurp(kFixtures + "corpus_ids.bin");
    r.ids.resize(raw.size() / 4);
    for (size_t i = 0; i < r.ids.size(); ++i) {  // little-endian uint32 regardless of host order
      const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + 4 * i);
      r.ids[i] = TokenId(p[0]) | TokenId(p[1]) << 8 | TokenId(p[2]) << 16 | TokenId(p[3]) << 24;
    }
    r.index = json::parse(slurp(kFixtures + "corpus_index.json"));
    return r;
  }();
  return c;
}

// A small synthetic byte-level tokenizer.json for loader tests: 256 byte symbols, a few merges.
json mini_tokenizer() {
  const auto alphabet = deepseek::tokenizer::byte_level_alphabet();
  json vocab = json::object();
  auto sym = [&](unsigned b) {
    std::string s;
    deepseek::tokenizer::unicode::append_utf8(s, alphabet[b]);
    return s;
  };
  for (unsigned b = 0; b < 256; ++b) vocab[sym(b)] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["hello"] = 259;
  vocab["Ġw"] = 260;
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = json::parse(R"({"type":"Sequence","pretokenizers":[
      {"type":"Split","pattern":{"Regex":"\\p{N}{1,3}"},"behavior":"Isolated","invert":false},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})");
  j["post_processor"] = nullptr;
  j["decoder"] = json::parse(R"({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true})");
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                {"merges", json::array({"h e", "l l", "he ll", "hell o", "Ġ w"})}};
  j["added_tokens"] = json::parse(R"([
      {"id":261,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
      {"id":262,"content":"[T]","single_word":false,"lstrip":true,"rstrip":true,"normalized":false,"special":false}])");
  return j;
}

std::string reason_of(const json& j) {
  try {
    Tokenizer::from_json_text(j.dump());
  } catch (const deepseek::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("unicode tables match Oniguruma in HF tokenizers for every code point", "[tokenizer][unicode]") {
  namespace u = deepseek::tokenizer::unicode;
  const json classes = json::parse(slurp(kFixtures + "unicode_classes.json"));
  const std::pair<const char*, uint8_t> names[] = {{"L", u::kL}, {"M", u::kM}, {"N", u::kN}, {"P", u::kP}, {"S", u::kS}, {"space", u::kSpace}};
  for (const auto& [name, bit] : names) {
    std::vector<uint8_t> in(0x110000, 0);
    for (const auto& r : classes[name])
      for (uint32_t c = r[0].get<uint32_t>(); c <= r[1].get<uint32_t>(); ++c) in[c] = 1;
    size_t mismatches = 0;
    uint32_t first = 0;
    for (uint32_t c = 0; c < 0x110000; ++c) {
      if (c >= 0xD800 && c <= 0xDFFF) continue;  // not encodable in UTF-8, absent from the fixture
      if (((u::flags(c) & bit) != 0) != (in[c] != 0) && mismatches++ == 0) first = c;
    }
    INFO("class " << name << ", first mismatch at U+" << std::hex << first);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("spec examples", "[tokenizer]") {
  const Tokenizer& t = v3();
  CHECK(t.encode("Hello world") == std::vector<TokenId>{19923, 2058});
  CHECK(t.encode(" hello world ") == std::vector<TokenId>{44388, 2058, 223});
  CHECK(t.encode("Hello 你好 World 世界!") == std::vector<TokenId>{19923, 223, 30594, 4495, 223, 3427, 3});
  CHECK(t.encode("<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>") ==
        std::vector<TokenId>{0, 128803, 3085, 344, 223, 20, 13, 20, 33, 128804});
  CHECK(t.encode("Hello world", true) == std::vector<TokenId>{0, 19923, 2058});
  CHECK(t.bos_id() == TokenId{0});
  CHECK(t.eos_id() == TokenId{1});
  CHECK(t.add_bos_token());
  CHECK(t.encode("").empty());
}

TEST_CASE("short cases match HF tokenizers", "[tokenizer]") {
  const Tokenizer& t = v3();
  const json cases = json::parse(slurp(kFixtures + "cases.json"));
  CHECK(t.vocab_size() == cases["vocab_size_with_added"].get<size_t>());
  EncodeOptions non_special;
  non_special.special_tokens = SpecialTokens::kParseNonSpecial;
  for (const auto& c : cases["strings"]) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(t.encode(text) == ids_of(c["ids"]));
    CHECK(t.encode(text, non_special) == ids_of(c["ids_encode_special_tokens"]));
    CHECK(t.pre_tokenizer().pre_tokenize(text) == c["pieces"].get<std::vector<std::string>>());
    CHECK(t.decode(t.encode(text)) == text);
  }
  size_t mix_failures = 0;
  for (const auto& c : cases["random_mix"]) {
    const std::string text = c["text"];
    if (t.encode(text) != ids_of(c["ids"])) {
      UNSCOPED_INFO("random mix differs: " << c.dump());
      ++mix_failures;
    }
  }
  CHECK(cases["random_mix"].size() >= 1000);
  CHECK(mix_failures == 0);
  for (const auto& c : cases["invalid_utf8"]) {
    const std::string bytes = from_hex(c["hex"]);
    INFO("hex: " << c["hex"].get<std::string>());
    CHECK(t.encode(bytes) == ids_of(c["ids"]));
  }
  for (const auto& c : cases["decode"]) {
    const auto ids = ids_of(c["ids"]);
    CHECK(t.decode(ids) == c["text"].get<std::string>());
    CHECK(t.decode(ids, true) == c["text_skip_special"].get<std::string>());
    Tokenizer::StreamDecoder sd(t);
    std::string streamed;
    for (TokenId id : ids) {
      const std::string part = sd.push(id);
      CHECK(deepseek::tokenizer::unicode::is_valid(part));
      streamed += part;
    }
    streamed += sd.finish();
    CHECK(streamed == c["text"].get<std::string>());
  }
}

TEST_CASE("corpus parity with HF tokenizers, document by document", "[tokenizer][corpus]") {
  const Tokenizer& t = v3();
  const Corpus& c = corpus();
  REQUIRE(c.text.size() >= 5'000'000);
  std::vector<std::string> docs;
  size_t differing = 0, roundtrip_failures = 0;
  for (const auto& d : c.index["docs"]) {
    const std::string text = c.text.substr(d["text_offset"].get<size_t>(), d["text_len"].get<size_t>());
    const std::vector<TokenId> expected(c.ids.begin() + d["ids_offset"].get<ptrdiff_t>(),
                                        c.ids.begin() + d["ids_offset"].get<ptrdiff_t>() + d["ids_len"].get<ptrdiff_t>());
    const auto got = t.encode(text);
    if (got != expected) {
      size_t k = 0;
      while (k < got.size() && k < expected.size() && got[k] == expected[k]) ++k;
      UNSCOPED_INFO("document " << d["name"].get<std::string>() << " differs at id index " << k);
      ++differing;
    }
    if (t.decode(got) != text) {
      UNSCOPED_INFO("document " << d["name"].get<std::string>() << ": decode(encode(x)) != x");
      ++roundtrip_failures;
    }
    docs.push_back(text);
  }
  CHECK(differing == 0);
  CHECK(roundtrip_failures == 0);

  // Batch encode on several threads gives the same ids in the same order.
  const auto batch = t.encode_batch(docs, {}, 3);
  REQUIRE(batch.size() == docs.size());
  std::vector<TokenId> all;
  for (const auto& b : batch) all.insert(all.end(), b.begin(), b.end());
  CHECK(all == c.ids);
}

TEST_CASE("streaming decode never splits a UTF-8 character", "[tokenizer][stream]") {
  const Tokenizer& t = v3();
  const Corpus& c = corpus();
  const std::vector<TokenId> ids(c.ids.begin(), c.ids.begin() + std::min<size_t>(c.ids.size(), 200000));
  Tokenizer::StreamDecoder sd(t);
  std::string streamed;
  for (TokenId id : ids) {
    const std::string part = sd.push(id);
    REQUIRE(deepseek::tokenizer::unicode::is_valid(part));
    streamed += part;
  }
  streamed += sd.finish();
  CHECK(streamed == t.decode(ids));
  // An incomplete character at the end comes out as U+FFFD only on finish(). Byte 0xE2 (lead of a
  // 3-byte sequence) is printable Latin-1, so its byte-level symbol is U+00E2 itself.
  Tokenizer::StreamDecoder cut(t);
  std::string out;
  for (TokenId id : t.encode("a")) out += cut.push(id);
  const auto e2 = t.token_to_id("\u00e2");
  REQUIRE(e2);
  CHECK(t.decode({*e2}) == "\xEF\xBF\xBD");
  out += cut.push(*e2);
  CHECK(out == "a");
  CHECK(cut.finish() == "\xEF\xBF\xBD");
}

TEST_CASE("invalid UTF-8 is replaced per maximal subpart and never crashes", "[tokenizer][utf8]") {
  const Tokenizer& t = v3();
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& ch : s) ch = static_cast<char>(rng() % 4 == 0 ? 0x80 + rng() % 0x80 : rng() % 0x100);
    const auto ids = t.encode(s);
    const std::string repaired = deepseek::tokenizer::unicode::to_valid(s);
    REQUIRE(deepseek::tokenizer::unicode::is_valid(repaired));
    REQUIRE(ids == t.encode(repaired));
    REQUIRE(t.decode(ids) == repaired);
  }
}

TEST_CASE("decode rejects unknown ids", "[tokenizer]") {
  const Tokenizer& t = v3();
  CHECK_THROWS_AS(t.decode({19923, 129000}), deepseek::Error);
  CHECK_THROWS_AS(t.decode({128900}), deepseek::Error);  // 128815.. are unused embedding rows
  CHECK_THROWS_AS(t.id_to_token(4000000), deepseek::Error);
  Tokenizer::StreamDecoder sd(t);
  CHECK_THROWS_AS(sd.push(0xFFFFFFFFu), deepseek::Error);
  CHECK(t.decode({0, 19923, 1}, true) == "Hello");
}

TEST_CASE("added-token modes", "[tokenizer]") {
  const Tokenizer& t = v3();
  EncodeOptions as_text;
  as_text.special_tokens = SpecialTokens::kAsText;
  const auto ids = t.encode("<｜User｜>hi", as_text);
  CHECK(std::find(ids.begin(), ids.end(), 128803u) == ids.end());
  CHECK(t.decode(ids) == "<｜User｜>hi");
}

TEST_CASE("chat templates match transformers' rendering", "[tokenizer][chat]") {
  const Tokenizer& t = v3();
  const json chats = json::parse(slurp(kFixtures + "chat.json"));
  REQUIRE(chats.size() >= 20);
  for (size_t i = 0; i < chats.size(); ++i) {
    const auto messages = deepseek::chat::messages_from_json(chats[i]["messages"]);
    // A role the template does not know ("developer") is an error by default; with
    // ignore_unknown_roles it is dropped exactly as the Jinja template drops it.
    bool unknown_role = false;
    for (const auto& m : messages)
      unknown_role |= m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool";
    if (unknown_role) CHECK_THROWS_AS(deepseek::chat::format_v3(messages), deepseek::Error);
    for (const char* key : {"v3", "v3_gen", "r1", "r1_gen"}) {
      deepseek::chat::ChatOptions o;
      o.ignore_unknown_roles = unknown_role;
      o.add_generation_prompt = std::string(key).find("_gen") != std::string::npos;
      o.bos_token = t.bos_token();
      const std::string text = key[0] == 'v' ? deepseek::chat::format_v3(messages, o) : deepseek::chat::format_r1(messages, o);
      INFO("conversation " << i << " template " << key);
      CHECK(text == chats[i][key]["text"].get<std::string>());
      CHECK(t.encode(text) == ids_of(chats[i][key]["ids"]));
    }
  }
  CHECK_THROWS_AS(deepseek::chat::messages_from_json(json::parse(R"([{"role":"user"}])")), deepseek::Error);
  CHECK_THROWS_AS(deepseek::chat::format_v3({deepseek::chat::Message{"user", std::nullopt, {}}}), deepseek::Error);
}

TEST_CASE("loader: merges in both forms, flags, and named errors", "[tokenizer][loader]") {
  json j = mini_tokenizer();
  const Tokenizer a = Tokenizer::from_json_text(j.dump());
  CHECK(a.encode("hello w") == std::vector<TokenId>{259, 260});
  CHECK(a.encode("hello12345") == std::vector<TokenId>{259, 49, 50, 51, 52, 53});  // mini vocab: byte b has id b
  // lstrip/rstrip swallow the White_Space around "[T]"; "<s>" is special. Expected ids are what
  // HF tokenizers 0.23.3 gives for this same JSON (Tokenizer.from_str).
  CHECK(a.encode("a  [T]  b<s>") == std::vector<TokenId>{97, 262, 98, 261});
  CHECK(a.encode("x\u3000[T]\u2003y") == std::vector<TokenId>{120, 262, 121});
  CHECK(a.encode("[T]  ") == std::vector<TokenId>{262});
  CHECK(a.encode("  [T]") == std::vector<TokenId>{262});
  CHECK(a.decode({97, 261, 98}, true) == "ab");
  json arr = j;
  arr["model"]["merges"] = json::parse(R"([["h","e"],["l","l"],["he","ll"],["hell","o"],["Ġ","w"]])");
  CHECK(Tokenizer::from_json_text(arr.dump()).encode("hello w") == std::vector<TokenId>{259, 260});

  auto with = [&](const char* path, const json& v) {
    json k = j;
    k[json::json_pointer(path)] = v;
    return reason_of(k);
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(with("/normalizer", json::parse(R"({"type":"NFKC"})")), Contains("normalizer 'NFKC'"));
  CHECK_THAT(with("/post_processor", json::parse(R"({"type":"TemplateProcessing"})")), Contains("TemplateProcessing"));
  CHECK_THAT(with("/decoder", json::parse(R"({"type":"Metaspace"})")), Contains("decoder"));
  CHECK_THAT(with("/pre_tokenizer/pretokenizers/0/pattern/Regex", "[\\r\\n]"), Contains("DeepSeek-LLM"));
  CHECK_THAT(with("/pre_tokenizer/pretokenizers/1/use_regex", true), Contains("use_regex"));
  CHECK_THAT(with("/pre_tokenizer", json::parse(R"({"type":"Metaspace"})")), Contains("Metaspace"));
  CHECK_THAT(with("/model/type", "Unigram"), Contains("Unigram"));
  CHECK_THAT(with("/model/dropout", 0.1), Contains("dropout"));
  CHECK_THAT(with("/model/merges/0", "h e x"), Contains("merges[0]"));
  CHECK_THAT(with("/model/merges/0", "h zz"), Contains("missing from the vocab"));
  CHECK_THAT(with("/added_tokens/0/single_word", true), Contains("single_word"));
  CHECK_THAT(with("/truncation", json::object()), Contains("truncation"));
  json no_byte = j;
  no_byte["model"]["vocab"].erase("Ġ");
  CHECK_THAT(reason_of(no_byte), Contains("byte-level symbol"));
  CHECK_THROWS_AS(Tokenizer::from_json_text("{not json"), deepseek::Error);
  CHECK_THROWS_AS(Tokenizer::from_file("/nonexistent/dir"), deepseek::Error);
  CHECK_THROWS_AS(a.encode("x", true), deepseek::Error);  // no tokenizer_config: no BOS known
}

// Issue 14: hostile tokenizer files and chat inputs, one case per class.
TEST_CASE("hostile tokenizer.json: shared ids, duplicate keys, deep nesting, bad files", "[tokenizer][hostile]") {
  using Catch::Matchers::Contains;
  const json j = mini_tokenizer();
  // Two tokens sharing an id: decode would depend on hash order.
  json shared = j;
  shared["model"]["vocab"]["ll"] = 256;  // "he" has 256 too
  CHECK_THAT(reason_of(shared), Contains("vocab id 256 is shared by") && Contains("model.vocab"));
  // A vocab key given twice (nlohmann would keep the last silently).
  std::string text = j.dump();
  const size_t at = text.find("\"vocab\":{") + 9;
  text.insert(at, "\"he\":300,");
  try {
    Tokenizer::from_json_text(text, {}, "dup.json");
    FAIL("accepted a duplicated vocab key");
  } catch (const deepseek::Error& e) {
    CHECK_THAT(std::string(e.what()), Contains("duplicate JSON key \"he\"") && Contains("dup.json"));
  }
  // Nesting beyond kMaxJsonDepth anywhere (here in an unused field) is refused, not recursed into.
  std::string deep = j.dump();
  deep.insert(1, "\"x\":" + std::string(100000, '[') + std::string(100000, ']') + ",");
  CHECK_THROWS_WITH(Tokenizer::from_json_text(deep), Contains("kMaxJsonDepth"));
  // Same for tokenizer_config.json, and a config field of the wrong type names itself.
  CHECK_THROWS_WITH(Tokenizer::from_json_text(j.dump(), std::string(200, '[')), Contains("kMaxJsonDepth"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(j.dump(), R"({"bos_token": 5})"), Contains("bos_token") && Contains("found 5"));
  CHECK_THROWS_WITH(Tokenizer::from_json_text(j.dump(), R"({"bos_token": "<s>", "bos_token": "<s>"})"), Contains("duplicate JSON key"));
  // Messages do not echo unbounded input.
  json huge = j;
  huge["model"]["type"] = std::string(1 << 20, 'U');
  CHECK(reason_of(huge).size() < 400);
  // A FIFO or a directory named tokenizer.json is refused at once (used to block / fail vaguely).
  const std::string dir = "/tmp/deepseek-tok-hostile-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/d/tokenizer.json");
  REQUIRE(::mkfifo((dir + "/tokenizer.json").c_str(), 0600) == 0);
  CHECK_THROWS_WITH(Tokenizer::from_file(dir), Contains("is a FIFO"));
  CHECK_THROWS_WITH(Tokenizer::from_file(dir + "/d"), Contains("is a directory"));  // d/tokenizer.json/
  std::filesystem::remove_all(dir);
}

TEST_CASE("long BPE pieces merge like a plain lowest-rank-leftmost reference", "[tokenizer][bpe]") {
  // The heap path (pieces over 64 bytes) against the textbook loop, on random runs of the mini
  // vocabulary's letters (one piece each: the mini pre-tokenizer splits only digits).
  const Tokenizer t = Tokenizer::from_json_text(mini_tokenizer().dump());
  const std::vector<std::pair<std::string, std::string>> merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}};
  const std::map<std::string, TokenId> ids = {{"he", 256}, {"ll", 257}, {"hell", 258}, {"hello", 259}, {" w", 260}};
  auto reference = [&](const std::string& s) {
    std::vector<std::string> sym;
    for (char c : s) sym.emplace_back(1, c);
    for (;;) {
      size_t best = sym.size(), best_rank = merges.size();
      for (size_t i = 0; i + 1 < sym.size(); ++i)
        for (size_t r = 0; r < best_rank; ++r)
          if (merges[r].first == sym[i] && merges[r].second == sym[i + 1]) {
            best = i;
            best_rank = r;
          }
      if (best == sym.size()) break;
      sym[best] += sym[best + 1];
      sym.erase(sym.begin() + long(best) + 1);
    }
    std::vector<TokenId> out;
    for (const auto& x : sym) out.push_back(x.size() == 1 ? TokenId(static_cast<unsigned char>(x[0])) : ids.at(x));
    return out;
  };
  std::mt19937 rng(7);
  const std::string letters = "hello w";
  for (int trial = 0; trial < 40; ++trial) {
    std::string s(65 + rng() % 400, 'h');
    for (auto& c : s) c = letters[rng() % letters.size()];
    INFO(s);
    CHECK(t.encode(s) == reference(s));
  }
  // One letter repeated 3 MB: one piece, linear-ish time, ids as the reference rule gives them.
  const std::string run(3 << 20, 'l');
  const auto got = t.encode(run);
  REQUIRE(got.size() == run.size() / 2);
  CHECK(std::all_of(got.begin(), got.end(), [](TokenId id) { return id == 257; }));
}

TEST_CASE("long single-piece words match HF tokenizers through the heap's compaction", "[tokenizer][bpe]") {
  // 12,000 letters over small alphabets (an LCG the fixture script repeats): one piece each, merged
  // by the heap path. Its heap holds at most n + 64 entries and is compacted when full; these words
  // compact it 1-4 times ("th" and "ea" never), so a compaction that dropped a current entry or kept
  // a stale one would change ids here.
  const json j = json::parse(slurp(kFixtures + "long_pieces.json"));
  REQUIRE(j["cases"].size() == 7);
  for (const auto& c : j["cases"]) {
    const std::string alphabet = c["alphabet"].get<std::string>();
    std::string word(c["length"].get<size_t>(), ' ');
    uint32_t s = c["seed"].get<uint32_t>();
    for (auto& ch : word) {
      s = (s * 1103515245u + 12345u) & 0x7FFFFFFFu;
      ch = alphabet[(s >> 16) % alphabet.size()];
    }
    INFO("alphabet " << alphabet);
    CHECK(v3().encode(word) == ids_of(c["ids"]));
  }
}

TEST_CASE("chat: unknown roles and misplaced tool_calls are errors, not dropped", "[tokenizer][chat][hostile]") {
  using Catch::Matchers::Contains;
  using deepseek::chat::Message;
  using deepseek::chat::ToolCall;
  const auto wizard = deepseek::chat::messages_from_json(json::parse(R"([{"role":"wizard","content":"hi"},{"role":"user","content":"x"}])"));
  CHECK_THROWS_WITH(deepseek::chat::format_v3(wizard), Contains("message 0 has role \"wizard\""));
  CHECK_THROWS_WITH(deepseek::chat::format_r1(wizard), Contains("ignore_unknown_roles"));
  deepseek::chat::ChatOptions o;
  o.ignore_unknown_roles = true;
  CHECK(deepseek::chat::format_v3(wizard, o) == o.bos_token + "<｜User｜>x");
  // tool_calls the template would drop: on a user turn, or on an assistant turn with content.
  const std::vector<Message> on_user = {Message{"user", std::string("q"), {ToolCall{"function", "f", "{}"}}}};
  CHECK_THROWS_WITH(deepseek::chat::format_v3(on_user), Contains("tool_calls"));
  const std::vector<Message> with_content = {Message{"user", std::string("q"), {}},
                                             Message{"assistant", std::string(""), {ToolCall{"function", "f", "{}"}}}};
  CHECK_THROWS_WITH(deepseek::chat::format_v3(with_content), Contains("null content"));
  // Role names are cut short in the message.
  const std::vector<Message> long_role = {Message{std::string(1 << 20, 'r'), std::string("x"), {}}};
  try {
    deepseek::chat::format_v3(long_role);
    FAIL("accepted");
  } catch (const deepseek::Error& e) {
    CHECK(std::string(e.what()).size() < 400);
  }
}

// R1's streamed answer split into reasoning and reply at every possible piece boundary: the
// result must not depend on where the stream was cut (a "</think>" split across pieces included).
TEST_CASE("ThinkingSplitter: reasoning and reply, whatever the pieces", "[tokenizer][chat]") {
  const std::string text = "Let me think. a </thin b </think>\n\nThe answer is 4.\n</think> stays";
  const std::string want_reasoning = "Let me think. a </thin b ", want_content = "The answer is 4.\n</think> stays";
  for (size_t a = 0; a <= text.size(); ++a)
    for (size_t b = a; b <= text.size(); b += 3) {
      deepseek::chat::ThinkingSplitter s;
      std::string reasoning, content;
      for (const std::string& piece : {text.substr(0, a), text.substr(a, b - a), text.substr(b)}) {
        const auto p = s.push(piece);
        reasoning += p.reasoning;
        content += p.content;
      }
      const auto f = s.finish();
      reasoning += f.reasoning;
      content += f.content;
      INFO("cut at " << a << ", " << b);
      REQUIRE(reasoning == want_reasoning);
      REQUIRE(content == want_content);
    }
  // Never closed: all reasoning, a held-back "</thi" included.
  deepseek::chat::ThinkingSplitter open;
  auto p = open.push("still thinking </thi");
  REQUIRE(p.reasoning == "still thinking ");
  REQUIRE(open.finish().reasoning == "</thi");
  // V3 (no thinking): all content, newlines kept.
  deepseek::chat::ThinkingSplitter v3(false);
  REQUIRE(v3.push("\n\nhi </think>").content == "\n\nhi </think>");
}
