// DeepSeek-V3 and DeepSeek-R1 chat templates, rendered in C++ with the exact output of the Jinja
// templates (transformers `apply_chat_template(..., tokenize=False)`).
//
// V3 (tokenizer_config.json of DeepSeek-V3, Dec 2024), spec §8.8:
//   bos + all system contents joined by "\n\n", then per message
//   user       <｜User｜>content
//   assistant  content != null: <｜Assistant｜>content<｜end▁of▁sentence｜>, or, right after tool
//              outputs, <｜tool▁outputs▁end｜>content<｜end▁of▁sentence｜>
//              content == null: its tool calls; the very first call of the conversation opens
//              <｜Assistant｜><｜tool▁calls▁begin｜>, every later call is "\n"-prefixed and followed by
//              <｜tool▁calls▁end｜><｜end▁of▁sentence｜> (the template's never-reset is_first flag:
//              reproduced on purpose, it is what the model was trained on)
//   tool       first output of the conversation <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>...,
//              later ones "\n<｜tool▁output▁begin｜>...<｜tool▁output▁end｜>"
//   other roles are an error (the template drops them silently, so a "developer" or misspelt
//   "sytem" prompt would vanish); ChatOptions::ignore_unknown_roles drops them as the template
//   does. tool_calls on any message but an assistant turn with null content are an error too
//   (the template would drop them). A trailing tool output closes with
//   <｜tool▁outputs▁end｜>; the generation prompt <｜Assistant｜> is added unless the last message
//   was a tool output.
// R1 (DeepSeek-R1 tokenizer_config.json): the same, except an assistant's content (outside the
// after-tool-output branch) is cut to the text after its last </think>, so reasoning is never fed
// back, and the generation prompt is <｜Assistant｜><think>\n.
// Where Jinja would fail (null user/system/tool content, non-string arguments) we throw.
#pragma once

#include <deepseek/core/checked.hpp>
#include <deepseek/core/error.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace deepseek::chat {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, inserted verbatim
};

struct Message {
  std::string role;                    // "system", "user", "assistant", "tool"
  std::optional<std::string> content;  // null only for assistant turns that carry tool_calls
  std::vector<ToolCall> tool_calls;
};

struct ChatOptions {
  bool add_generation_prompt = false;
  bool ignore_unknown_roles = false;  // true: drop roles other than system/user/assistant/tool, as Jinja does
  std::string bos_token = "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>";
};

namespace detail {

inline const std::string& need_content(const Message& m, size_t i) {
  if (!m.content) throw Error("message " + std::to_string(i) + " (" + excerpt(m.role) + ") has null content");
  return *m.content;
}

inline void check_message(const Message& m, size_t i, const ChatOptions& opts) {
  const bool known = m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool";
  if (!known && !opts.ignore_unknown_roles)
    throw Error("message " + std::to_string(i) + " has role \"" + excerpt(m.role) +
                "\": the DeepSeek template knows system, user, assistant and tool (ChatOptions::ignore_unknown_roles drops others)",
                at_field("[" + std::to_string(i) + "].role"));
  if (!m.tool_calls.empty() && !(m.role == "assistant" && !m.content))
    throw Error("message " + std::to_string(i) + " (" + excerpt(m.role) +
                    ") has tool_calls, which the template renders only for an assistant message with null content",
                at_field("[" + std::to_string(i) + "].tool_calls"));
}

inline std::string render(const std::vector<Message>& messages, const ChatOptions& opts, bool r1) {
  for (size_t i = 0; i < messages.size(); ++i) check_message(messages[i], i, opts);
  const std::string kUser = "<｜User｜>", kAssistant = "<｜Assistant｜>", kEos = "<｜end▁of▁sentence｜>";
  const std::string kCallsBegin = "<｜tool▁calls▁begin｜>", kCallsEnd = "<｜tool▁calls▁end｜>";
  const std::string kCallBegin = "<｜tool▁call▁begin｜>", kCallEnd = "<｜tool▁call▁end｜>", kSep = "<｜tool▁sep｜>";
  const std::string kOutputsBegin = "<｜tool▁outputs▁begin｜>", kOutputsEnd = "<｜tool▁outputs▁end｜>";
  const std::string kOutputBegin = "<｜tool▁output▁begin｜>", kOutputEnd = "<｜tool▁output▁end｜>";

  std::string system_prompt;
  bool first_system = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role != "system") continue;
    if (!first_system) system_prompt += "\n\n";
    system_prompt += need_content(messages[i], i);
    first_system = false;
  }
  std::string out = opts.bos_token + system_prompt;
  bool is_first = false, is_tool = false, is_output_first = true;  // the template's namespace flags
  for (size_t i = 0; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "user") {
      is_tool = false;
      out += kUser + need_content(m, i);
    } else if (m.role == "assistant" && !m.content) {
      is_tool = false;
      for (const ToolCall& t : m.tool_calls) {
        const std::string call = t.type + kSep + t.name + "\n```json\n" + t.arguments + "\n```" + kCallEnd;
        if (!is_first) {
          out += kAssistant + kCallsBegin + kCallBegin + call;
          is_first = true;
        } else {
          out += "\n" + kCallBegin + call + kCallsEnd + kEos;
        }
      }
    } else if (m.role == "assistant") {
      if (is_tool) {
        out += kOutputsEnd + *m.content + kEos;
        is_tool = false;
      } else {
        std::string content = *m.content;
        if (r1) {
          const size_t p = content.rfind("</think>");
          if (p != std::string::npos) content = content.substr(p + 8);
        }
        out += kAssistant + content + kEos;
      }
    } else if (m.role == "tool") {
      is_tool = true;
      if (is_output_first) {
        out += kOutputsBegin + kOutputBegin + need_content(m, i) + kOutputEnd;
        is_output_first = false;
      } else {
        out += "\n" + kOutputBegin + need_content(m, i) + kOutputEnd;
      }
    }
  }
  if (is_tool) out += kOutputsEnd;
  if (opts.add_generation_prompt && !is_tool) out += r1 ? kAssistant + "<think>\n" : kAssistant;
  return out;
}

}  // namespace detail

inline std::string format_v3(const std::vector<Message>& messages, const ChatOptions& opts = {}) {
  return detail::render(messages, opts, false);
}

inline std::string format_r1(const std::vector<Message>& messages, const ChatOptions& opts = {}) {
  return detail::render(messages, opts, true);
}

// Messages in the OpenAI/transformers form: [{"role", "content", "tool_calls": [{"type",
// "function": {"name", "arguments"}}]}]. "content" must be present (null allowed), as the Jinja
// template fails without it; "arguments" must be a string (the template concatenates it).
inline std::vector<Message> messages_from_json(const nlohmann::json& j, const std::string& file = {}) {
  if (!j.is_array()) throw Error("messages must be a JSON array", in_file(file));
  std::vector<Message> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    const std::string at = "[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) throw Error("message needs a string role", at_field(at + ".role", file));
    Message msg;
    msg.role = m["role"].get<std::string>();
    if (!m.contains("content")) throw Error("message has no content (use null for tool-call turns)", at_field(at + ".content", file));
    if (m["content"].is_string()) {
      msg.content = m["content"].get<std::string>();
    } else if (!m["content"].is_null()) {
      throw Error("content must be a string or null", at_field(at + ".content", file));
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) throw Error("tool_calls must be an array", at_field(at + ".tool_calls", file));
      for (size_t k = 0; k < m["tool_calls"].size(); ++k) {
        const auto& t = m["tool_calls"][k];
        const std::string tat = at + ".tool_calls[" + std::to_string(k) + "]";
        if (!t.is_object() || !t.contains("type") || !t["type"].is_string() || !t.contains("function") || !t["function"].is_object())
          throw Error("tool call needs a string type and a function object", at_field(tat, file));
        const auto& f = t["function"];
        if (!f.contains("name") || !f["name"].is_string() || !f.contains("arguments") || !f["arguments"].is_string())
          throw Error("tool call function needs string name and arguments (arguments as JSON text)", at_field(tat + ".function", file));
        msg.tool_calls.push_back(ToolCall{t["type"].get<std::string>(), f["name"].get<std::string>(), f["arguments"].get<std::string>()});
      }
    }
    out.push_back(std::move(msg));
  }
  return out;
}

// R1's answer after its generation prompt "<think>\n": the reasoning, "</think>", then the reply
// (usually after "\n\n"). Splits streamed text into the two parts as it comes, as DeepSeek's API
// returns them (reasoning_content and content): the "</think>" itself and the newlines right
// after it belong to neither; a possible partial "</think>" at the end of a piece is held back
// until the next piece decides it. thinking = false (V3): everything is content.
class ThinkingSplitter {
 public:
  struct Parts {
    std::string reasoning, content;
  };
  explicit ThinkingSplitter(bool thinking = true) : in_think_(thinking), started_content_(!thinking) {}

  Parts push(const std::string& text) {
    Parts out;
    if (!in_think_) {
      append_content(out, text);
      return out;
    }
    held_ += text;
    const std::string kEnd = "</think>";
    const size_t at = held_.find(kEnd);
    if (at != std::string::npos) {
      out.reasoning = held_.substr(0, at);
      in_think_ = false;
      const std::string rest = held_.substr(at + kEnd.size());
      held_.clear();
      append_content(out, rest);
      return out;
    }
    size_t keep = 0;
    for (size_t k = std::min(kEnd.size() - 1, held_.size()); k > 0; --k)
      if (held_.compare(held_.size() - k, k, kEnd, 0, k) == 0) {
        keep = k;
        break;
      }
    out.reasoning = held_.substr(0, held_.size() - keep);
    held_.erase(0, held_.size() - keep);
    return out;
  }
  // The end of the text: a held-back partial "</think>" was reasoning after all.
  Parts finish() {
    Parts out;
    if (in_think_) out.reasoning = held_;
    held_.clear();
    return out;
  }
  bool thinking() const { return in_think_; }

 private:
  void append_content(Parts& out, const std::string& text) {
    size_t i = 0;
    if (!started_content_)
      while (i < text.size() && text[i] == '\n') ++i;
    if (i < text.size()) started_content_ = true;
    out.content += text.substr(i);
  }

  bool in_think_;
  bool started_content_;
  std::string held_;
};

}  // namespace deepseek::chat
