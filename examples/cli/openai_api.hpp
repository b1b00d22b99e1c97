// The OpenAI-compatible request bodies `deepseek-cli serve` accepts, parsed and checked before
// anything runs (fuzz/fuzz_openai_request.cpp feeds it arbitrary bytes).
//
//   POST /v1/chat/completions  messages (system / user / assistant / tool, content a string, null
//                              for tool-call turns, or an array of {"type": "text", "text"} parts)
//   POST /v1/completions       prompt: a string, an array of one string, or an array of token ids
//   both                       model (any string), max_tokens (>= 1; chat also max_completion_tokens),
//                              temperature [0, 2] (0: greedy), top_p (0, 1], top_k >= 0, seed,
//                              stop (a string or up to 4), n = 1, stream, stream_options.include_usage,
//                              ignore_eos (vLLM's extension)
// A known field of the wrong type or out of range is a 400 naming it (param); so is a feature we do
// not implement given a value other than its default (n > 1, logprobs, tools, penalties, ...), rather
// than silently ignored. Unknown fields are ignored, as OpenAI's own server does for new clients.
#pragma once

#include <deepseek/core/json.hpp>
#include <deepseek/generate/sampler.hpp>
#include <deepseek/tokenizer/chat.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace deepseek::serve {

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string type = "invalid_request_error")
      : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param, type;
};

inline std::string error_body(const std::string& message, const std::string& param = {}, const std::string& type = "invalid_request_error") {
  nlohmann::ordered_json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  return nlohmann::ordered_json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

enum class Endpoint { chat, completions };

struct ApiRequest {
  Endpoint endpoint = Endpoint::chat;
  std::vector<chat::Message> messages;   // chat
  std::optional<std::string> prompt;     // completions: text
  std::vector<int32_t> prompt_ids;       // completions: token ids (when prompt is empty)
  std::optional<int64_t> max_tokens;
  generate::SamplingOptions sampling;    // temperature 0: greedy
  std::vector<std::string> stop;
  bool seed_given = false;  // else the server draws a seed
  bool stream = false, include_usage = false, ignore_eos = false;
  std::string model;
};

namespace detail {

inline std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

inline ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, message, param); }

inline double number_in(const Json& j, const std::string& key, double lo, double hi, bool lo_open = false) {
  const Json& v = j.at(key);
  if (!v.is_number()) throw bad(key, "'" + key + "' must be a number, got " + json_excerpt(v));
  const double x = v.get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
    throw bad(key, "'" + key + "' = " + json_excerpt(v) + " is outside " + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + "]");
  return x;
}

inline int64_t integer_in(const Json& j, const std::string& key, int64_t lo, int64_t hi) {
  const Json& v = j.at(key);
  if (!v.is_number_integer()) throw bad(key, "'" + key + "' must be an integer, got " + json_excerpt(v));
  if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(hi) : (v.get<int64_t>() < lo || v.get<int64_t>() > hi))
    throw bad(key, "'" + key + "' = " + json_excerpt(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v.get<int64_t>();
}

inline bool boolean(const Json& j, const std::string& key) {
  const Json& v = j.at(key);
  if (!v.is_boolean()) throw bad(key, "'" + key + "' must be true or false, got " + json_excerpt(v));
  return v.get<bool>();
}

// A feature we do not implement: its default (or null) is fine, anything else is a 400.
inline void unsupported_unless(const Json& j, const std::string& key, const Json& default_value, const std::string& why) {
  if (!j.contains(key) || j[key].is_null() || j[key] == default_value) return;
  throw bad(key, "'" + key + "' = " + json_excerpt(j[key]) + " is not supported by this server (" + why + ")");
}

// OpenAI lets content be an array of parts; text parts are joined, others refused.
inline Json normalise_messages(const Json& messages) {
  if (!messages.is_array()) throw bad("messages", "'messages' must be an array of messages");
  if (messages.empty()) throw bad("messages", "'messages' is empty");
  Json out = messages;
  for (size_t i = 0; i < out.size(); ++i) {
    Json& m = out[i];
    if (!m.is_object() || !m.contains("content") || !m["content"].is_array()) continue;
    std::string text;
    for (size_t k = 0; k < m["content"].size(); ++k) {
      const Json& part = m["content"][k];
      const std::string at = "messages[" + std::to_string(i) + "].content[" + std::to_string(k) + "]";
      if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
        throw bad(at, "only {\"type\": \"text\", \"text\": ...} content parts are supported (this is a text model)");
      text += part["text"].get<std::string>();
    }
    m["content"] = text;
  }
  return out;
}

}  // namespace detail

inline ApiRequest parse_request(const std::string& body, Endpoint endpoint) {
  using namespace detail;
  Json j;
  try {
    j = parse_json(body, "request body");
  } catch (const Error& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  ApiRequest r;
  r.endpoint = endpoint;
  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string()) throw bad("model", "'model' must be a string");
    r.model = j["model"].get<std::string>();
  }
  if (endpoint == Endpoint::chat) {
    if (!j.contains("messages")) throw bad("messages", "'messages' is required");
    try {
      r.messages = chat::messages_from_json(normalise_messages(j["messages"]));
      for (size_t i = 0; i < r.messages.size(); ++i) chat::detail::check_message(r.messages[i], i, chat::ChatOptions{});
    } catch (const ApiError&) {
      throw;
    } catch (const Error& e) {
      throw bad("messages", e.what());
    }
    if (r.messages.back().role == "assistant") throw bad("messages", "the last message is the assistant's: there is nothing to answer");
  } else {
    if (!j.contains("prompt")) throw bad("prompt", "'prompt' is required");
    const Json& p = j["prompt"];
    if (p.is_string()) {
      r.prompt = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt = p[0].get<std::string>();
    } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
      for (size_t i = 0; i < p.size(); ++i) {
        if (!p[i].is_number_integer() || p[i].get<int64_t>() < 0 || p[i].get<int64_t>() > INT32_MAX)
          throw bad("prompt", "prompt[" + std::to_string(i) + "] = " + json_excerpt(p[i]) + " is not a token id");
        r.prompt_ids.push_back(int32_t(p[i].get<int64_t>()));
      }
    } else if (p.is_array() && p.size() > 1) {
      throw bad("prompt", "one prompt per request (n = 1): send an array of prompts as separate requests");
    } else {
      throw bad("prompt", "'prompt' must be a string, an array of one string or an array of token ids");
    }
    if (r.prompt && r.prompt->empty()) throw bad("prompt", "'prompt' is empty");
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (j.contains(key) && !j[key].is_null()) {
      if (std::string(key) == "max_completion_tokens" && endpoint != Endpoint::chat) continue;
      const int64_t n = integer_in(j, key, INT64_MIN, INT64_MAX);
      if (n < 1) throw bad(key, std::string("'") + key + "' must be at least 1, got " + std::to_string(n));
      r.max_tokens = n;
    }
  if (j.contains("temperature") && !j["temperature"].is_null()) {
    const double t = number_in(j, "temperature", 0, 2);
    r.sampling.greedy = t == 0;
    r.sampling.temperature = t == 0 ? 1.0f : float(t);
  } else {
    r.sampling.greedy = false;  // OpenAI's default: temperature 1
  }
  if (j.contains("top_p") && !j["top_p"].is_null()) r.sampling.top_p = float(number_in(j, "top_p", 0, 1, true));
  if (j.contains("top_k") && !j["top_k"].is_null()) r.sampling.top_k = int(integer_in(j, "top_k", 0, INT32_MAX));
  if (j.contains("seed") && !j["seed"].is_null()) {
    r.sampling.seed = uint64_t(integer_in(j, "seed", INT64_MIN, INT64_MAX));
    r.seed_given = true;
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const Json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 4) {
      for (const auto& x : s) {
        if (!x.is_string()) throw bad("stop", "'stop' must be a string or an array of up to 4 strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of up to 4 strings");
    }
    for (const auto& x : r.stop)
      if (x.empty()) throw bad("stop", "a stop string is empty");
  }
  if (j.contains("n") && !j["n"].is_null() && integer_in(j, "n", 1, 1) != 1) throw bad("n", "only n = 1 is supported");
  if (j.contains("stream") && !j["stream"].is_null()) r.stream = boolean(j, "stream");
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const Json& so = j["stream_options"];
    if (!so.is_object()) throw bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) throw bad("stream_options", "'stream_options' is only allowed with stream: true");
    if (so.contains("include_usage") && !so["include_usage"].is_null()) r.include_usage = boolean(so, "include_usage");
  }
  if (j.contains("ignore_eos") && !j["ignore_eos"].is_null()) r.ignore_eos = boolean(j, "ignore_eos");
  unsupported_unless(j, "logprobs", endpoint == Endpoint::chat ? Json(false) : Json(nullptr), "no log probabilities");
  unsupported_unless(j, "top_logprobs", Json(0), "no log probabilities");
  unsupported_unless(j, "echo", Json(false), "the prompt is not echoed");
  unsupported_unless(j, "best_of", Json(1), "one sample per request");
  unsupported_unless(j, "suffix", Json(""), "no insertion");
  unsupported_unless(j, "presence_penalty", Json(0), "no penalties");
  unsupported_unless(j, "frequency_penalty", Json(0), "no penalties");
  unsupported_unless(j, "logit_bias", Json::object(), "no logit bias");
  unsupported_unless(j, "tools", Json::array(), "no tool calling");
  unsupported_unless(j, "response_format", Json{{"type", "text"}}, "text responses only");
  return r;
}

}  // namespace deepseek::serve
