// Request decoding of the OpenAI-compatible API (see openai_wire.h): JSON bodies and
// query strings into plain structs, each refusal naming its parameter.
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <functional>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/validate.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/openai_wire.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;

constexpr size_t kMaxModelNameBytes = 100;      // as request_checks.h (kMaxModelBytes)
constexpr size_t kMaxContentBytes = 256 << 10;  // one message, as request_checks.h
constexpr size_t kMaxIdBytes = 64;
constexpr size_t kMaxUserTagBytes = 512;  // `user`, `safety_identifier`, `prompt_cache_key`

using Result = std::optional<RequestError>;

RequestError Invalid(std::string param, std::string message) {
  return RequestError{std::move(param), std::move(message), ""};
}

// A parameter aichat does not implement: refused by name, never dropped.
RequestError Unsupported(std::string param, std::string_view why) {
  std::string message = absl::StrCat(param, " is not supported by aichat");
  if (!why.empty()) absl::StrAppend(&message, ": ", Av(why));
  return RequestError{std::move(param), std::move(message), "unsupported_parameter"};
}

std::string_view View(json::string_view s) { return {s.data(), s.size()}; }

std::optional<json::object> ParseObject(std::string_view body, RequestError* error) {
  json::parse_options opts;
  opts.max_depth = kMaxJsonDepth;
  opts.allow_invalid_utf8 = false;
  json::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec, {}, opts);
  if (ec == json::error::too_deep) {
    *error = {"", absl::StrCat("the body nests JSON deeper than ", kMaxJsonDepth, " levels"),
              "invalid_json"};
    return std::nullopt;
  }
  if (ec) {
    *error = {"", absl::StrCat("the body is not valid JSON (", ec.message(), ")"), "invalid_json"};
    return std::nullopt;
  }
  if (!v.is_object()) {
    *error = {"", "the body must be a JSON object", "invalid_json"};
    return std::nullopt;
  }
  return std::move(v.as_object());
}

Result Text(const json::value& v, const std::string& param, size_t max_bytes, bool required,
            std::string* out) {
  if (!v.is_string()) return Invalid(param, absl::StrCat(param, " must be a string"));
  std::string_view s = View(v.get_string());
  // The parser checked the UTF-8 of raw bytes; \u escapes can still make a lone
  // surrogate or a NUL.
  if (absl::Status st = CheckText(param, s, max_bytes, required); !st.ok()) {
    return Invalid(param, std::string(st.message()));
  }
  out->assign(s);
  return std::nullopt;
}

Result Bool(const json::value& v, const std::string& param, bool* out) {
  if (!v.is_bool()) return Invalid(param, absl::StrCat(param, " must be true or false"));
  *out = v.get_bool();
  return std::nullopt;
}

std::optional<double> Number(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return std::nullopt;
}

Result Temperature(const json::value& v, const std::string& param, std::optional<double>* out) {
  if (v.is_null()) return std::nullopt;
  auto n = Number(v);
  if (!n.has_value()) return Invalid(param, absl::StrCat(param, " must be a number"));
  if (!(std::isfinite(*n) && *n >= 0 && *n <= 2)) {
    return Invalid(param, absl::StrCat(param, " must be between 0 and 2"));
  }
  *out = *n;
  return std::nullopt;
}

Result TokenLimit(const json::value& v, const std::string& param, std::optional<int32_t>* out) {
  if (v.is_null()) return std::nullopt;
  int64_t n = 0;
  if (v.is_int64()) {
    n = v.get_int64();
  } else if (v.is_uint64()) {
    n = std::numeric_limits<int64_t>::max();
  } else {
    return Invalid(param, absl::StrCat(param, " must be an integer"));
  }
  if (n < 1 || n > std::numeric_limits<int32_t>::max()) {
    return Invalid(param, absl::StrCat(param, " must be between 1 and 2147483647"));
  }
  *out = static_cast<int32_t>(n);
  return std::nullopt;
}

// Accepted only at the value that means "as if absent" (null included).
Result OnlyDefault(const json::value& v, const std::string& param, double neutral,
                   std::string_view why) {
  if (v.is_null()) return std::nullopt;
  auto n = Number(v);
  if (!n.has_value()) return Invalid(param, absl::StrCat(param, " must be a number"));
  if (*n != neutral) return Unsupported(param, why);
  return std::nullopt;
}

bool IsEmptyOrNull(const json::value& v) {
  return v.is_null() || (v.is_array() && v.get_array().empty()) ||
         (v.is_object() && v.get_object().empty());
}

// Identifiers for the provider's abuse monitoring and caching: no effect on the answer.
Result Tag(const json::value& v, const std::string& param) {
  if (v.is_null()) return std::nullopt;
  std::string ignored;
  return Text(v, param, kMaxUserTagBytes, false, &ignored);
}

Result ServiceTier(const json::value& v) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string() && (v.get_string() == "auto" || v.get_string() == "default")) {
    return std::nullopt;
  }
  return Unsupported("service_tier", "only \"auto\" and \"default\" are accepted");
}

// Text of one message's content: a string, or an array of text parts.
Result Content(const json::value& v, const std::string& param,
               std::initializer_list<std::string_view> text_types, std::string* out) {
  if (v.is_string()) return Text(v, param, kMaxContentBytes, false, out);
  if (v.is_null()) return Invalid(param, absl::StrCat(param, " is required"));
  if (!v.is_array()) {
    return Invalid(param, absl::StrCat(param, " must be a string or an array of text parts"));
  }
  const json::array& parts = v.get_array();
  out->clear();
  for (size_t j = 0; j < parts.size(); ++j) {
    const std::string part = absl::StrCat(param, "[", j, "]");
    if (!parts[j].is_object()) return Invalid(part, absl::StrCat(part, " must be an object"));
    const json::object& p = parts[j].get_object();
    const json::value* type = p.if_contains("type");
    if (type == nullptr || !type->is_string()) {
      return Invalid(part + ".type", absl::StrCat(part, ".type must be a string"));
    }
    bool is_text = false;
    for (std::string_view t : text_types) is_text = is_text || View(type->get_string()) == t;
    if (!is_text) {
      return Unsupported(part + ".type", absl::StrCat("only text parts are accepted, not \"",
                                                      Av(View(type->get_string())), "\""));
    }
    std::string text;
    for (const auto& kv : p) {
      std::string_view key = View(kv.key());
      if (key == "type") continue;
      if (key == "text") {
        if (auto e = Text(kv.value(), part + ".text", kMaxContentBytes, false, &text)) return e;
      } else if (key == "annotations" || key == "logprobs") {
        if (!IsEmptyOrNull(kv.value())) {
          return Unsupported(absl::StrCat(part, ".", Av(key)), "only an empty list is accepted");
        }
      } else {
        return Unsupported(absl::StrCat(part, ".", Av(key)), "");
      }
    }
    if (p.if_contains("text") == nullptr) {
      return Invalid(part + ".text", absl::StrCat(part, ".text is required"));
    }
    if (out->size() + text.size() > kMaxContentBytes) {
      return Invalid(param, absl::StrCat(param, " is longer than ", kMaxContentBytes, " bytes"));
    }
    out->append(text);
  }
  return std::nullopt;
}

Result Role(const json::value* v, const std::string& param, std::string* out) {
  if (v == nullptr) return Invalid(param, absl::StrCat(param, " is required"));
  if (!v->is_string()) return Invalid(param, absl::StrCat(param, " must be a string"));
  std::string_view role = View(v->get_string());
  if (role == "system" || role == "developer" || role == "user" || role == "assistant") {
    out->assign(role);
    return std::nullopt;
  }
  if (role == "tool" || role == "function") {
    return Unsupported(param, "aichat runs no tools, so there are no tool messages");
  }
  return Invalid(param, absl::StrCat(param, " must be system, developer, user or assistant"));
}

Result ChatMessage(const json::value& v, const std::string& param, InputMessage* out) {
  if (!v.is_object()) return Invalid(param, absl::StrCat(param, " must be an object"));
  const json::object& m = v.get_object();
  if (auto e = Role(m.if_contains("role"), param + ".role", &out->role)) return e;
  bool has_content = false;
  for (const auto& kv : m) {
    std::string_view key = View(kv.key());
    const std::string field = absl::StrCat(param, ".", Av(key));
    if (key == "role") continue;
    if (key == "content") {
      has_content = true;
      if (auto e = Content(kv.value(), field, {"text"}, &out->content)) return e;
    } else if (key == "tool_calls" || key == "function_call" || key == "audio" ||
               key == "refusal") {
      if (!IsEmptyOrNull(kv.value())) return Unsupported(field, "");
    } else if (key == "name") {
      return Unsupported(field, "messages carry no participant names in aichat");
    } else {
      return Unsupported(field, "");
    }
  }
  if (!has_content) return Invalid(param + ".content", absl::StrCat(param, ".content is required"));
  return std::nullopt;
}

Result Metadata(const json::value& v, const std::string& param,
                const std::function<Result(std::string_view key, const std::string& field,
                                           const json::value& value)>& each) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_object()) return Invalid(param, absl::StrCat(param, " must be an object"));
  for (const auto& kv : v.get_object()) {
    const std::string field = absl::StrCat(param, ".", Av(View(kv.key())));
    if (!kv.value().is_string()) return Invalid(field, absl::StrCat(field, " must be a string"));
    if (auto e = each(View(kv.key()), field, kv.value())) return e;
  }
  return std::nullopt;
}

}  // namespace

std::optional<RequestError> DecodeChatCompletionRequest(std::string_view body,
                                                        ChatCompletionRequest* out) {
  RequestError error;
  auto obj = ParseObject(body, &error);
  if (!obj.has_value()) return error;
  *out = ChatCompletionRequest{};
  const json::value* stream_options = nullptr;
  for (const auto& kv : *obj) {
    const std::string key(View(kv.key()));
    const json::value& v = kv.value();
    Result e;
    if (key == "model") {
      e = Text(v, key, kMaxModelNameBytes, true, &out->model);
    } else if (key == "messages") {
      if (!v.is_array()) return Invalid(key, "messages must be an array");
      const json::array& a = v.get_array();
      if (a.empty()) return Invalid(key, "messages must not be empty");
      if (a.size() > kMaxInputMessages) {
        return Invalid(key, absl::StrCat("messages holds more than ", kMaxInputMessages));
      }
      out->messages.resize(a.size());
      for (size_t i = 0; i < a.size() && !e; ++i) {
        e = ChatMessage(a[i], absl::StrCat("messages[", i, "]"), &out->messages[i]);
      }
    } else if (key == "stream") {
      if (!v.is_null()) e = Bool(v, key, &out->stream);
    } else if (key == "stream_options") {
      stream_options = &v;
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      if (!v.is_null() && !out->max_tokens_param.empty()) {
        return Invalid(key, "give max_completion_tokens or max_tokens, not both");
      }
      if (!v.is_null()) out->max_tokens_param = key;
      e = TokenLimit(v, key, &out->max_output_tokens);
    } else if (key == "temperature") {
      e = Temperature(v, key, &out->temperature);
    } else if (key == "top_p") {
      e = OnlyDefault(v, key, 1, "only 1 is accepted; use temperature");
    } else if (key == "presence_penalty" || key == "frequency_penalty") {
      e = OnlyDefault(v, key, 0, "only 0 is accepted");
    } else if (key == "n") {
      e = OnlyDefault(v, key, 1, "aichat answers with one choice");
    } else if (key == "logprobs" || key == "parallel_tool_calls" || key == "store") {
      if (!v.is_null() && !(v.is_bool() && !v.get_bool())) {
        e = Unsupported(key, key == "store" ? "every turn is kept as an aichat prompt; bind the "
                                              "request to a conversation with "
                                              "metadata.conversation_id to keep the messages"
                                            : "");
      }
    } else if (key == "tools" || key == "functions" || key == "logit_bias" || key == "stop" ||
               key == "seed" || key == "top_logprobs" || key == "audio" || key == "prediction" ||
               key == "reasoning_effort" || key == "verbosity" || key == "web_search_options" ||
               key == "function_call") {
      if (!IsEmptyOrNull(v)) e = Unsupported(key, "");
    } else if (key == "tool_choice") {
      if (!v.is_null() && !(v.is_string() && v.get_string() == "none")) {
        e = Unsupported(key, "aichat runs no tools");
      }
    } else if (key == "response_format") {
      const json::value* type = v.is_object() ? v.get_object().if_contains("type") : nullptr;
      if (!v.is_null() && !(type != nullptr && type->is_string() && type->get_string() == "text" &&
                            v.get_object().size() == 1)) {
        e = Unsupported(key, "only {\"type\": \"text\"} is accepted");
      }
    } else if (key == "modalities") {
      if (!v.is_null() &&
          !(v.is_array() && v.get_array().size() == 1 && v.get_array()[0].is_string() &&
            v.get_array()[0].get_string() == "text")) {
        e = Unsupported(key, "only [\"text\"] is accepted");
      }
    } else if (key == "metadata") {
      e = Metadata(v, key,
                   [out](std::string_view name, const std::string& field,
                         const json::value& value) -> Result {
                     if (name != "conversation_id") {
                       return Unsupported(field,
                                          "metadata is not stored; only conversation_id is "
                                          "accepted (it binds the request to a conversation)");
                     }
                     return Text(value, field, kMaxIdBytes, true, &out->conversation);
                   });
    } else if (key == "user" || key == "safety_identifier" || key == "prompt_cache_key") {
      e = Tag(v, key);
    } else if (key == "service_tier") {
      e = ServiceTier(v);
    } else {
      e = RequestError{key, absl::StrCat("Unrecognized request argument supplied: ", key),
                       "unsupported_parameter"};
    }
    if (e) return e;
  }
  if (stream_options != nullptr && !stream_options->is_null()) {
    const std::string param = "stream_options";
    if (!out->stream) return Invalid(param, "stream_options is only allowed when stream is true");
    if (!stream_options->is_object()) return Invalid(param, "stream_options must be an object");
    for (const auto& kv : stream_options->get_object()) {
      const std::string field = absl::StrCat(param, ".", Av(View(kv.key())));
      if (View(kv.key()) == "include_usage") {
        if (!kv.value().is_null()) {
          if (auto e = Bool(kv.value(), field, &out->include_usage)) return e;
        }
      } else if (View(kv.key()) == "include_obfuscation") {
        bool on = false;
        if (!kv.value().is_null()) {
          if (auto e = Bool(kv.value(), field, &on)) return e;
        }
        if (on) return Unsupported(field, "only false is accepted");
      } else {
        return Unsupported(field, "");
      }
    }
  }
  if (obj->if_contains("model") == nullptr) return Invalid("model", "model is required");
  if (obj->if_contains("messages") == nullptr) return Invalid("messages", "messages is required");
  return std::nullopt;
}

std::optional<RequestError> DecodeCreateConversationRequest(std::string_view body,
                                                            CreateConversationRequest* out) {
  *out = CreateConversationRequest{};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return std::nullopt;
  RequestError error;
  auto obj = ParseObject(body, &error);
  if (!obj.has_value()) return error;
  for (const auto& kv : *obj) {
    const std::string key(View(kv.key()));
    const json::value& v = kv.value();
    Result e;
    if (key == "metadata") {
      e = Metadata(v, key,
                   [out](std::string_view name, const std::string& field,
                         const json::value& value) -> Result {
                     if (name == "title")
                       return Text(value, field, kMaxTitleBytes, false, &out->title);
                     if (name == "model") {
                       std::string model;
                       if (auto e = Text(value, field, kMaxModelNameBytes, false, &model)) return e;
                       out->model = std::move(model);
                       return std::nullopt;
                     }
                     return Unsupported(field, "the metadata aichat keeps is title and model");
                   });
    } else if (key == "items") {
      if (v.is_null()) continue;
      if (!v.is_array()) return Invalid(key, "items must be an array");
      const json::array& items = v.get_array();
      for (size_t i = 0; i < items.size(); ++i) {
        const std::string param = absl::StrCat("items[", i, "]");
        if (!items[i].is_object()) return Invalid(param, absl::StrCat(param, " must be an object"));
        const json::object& item = items[i].get_object();
        if (const json::value* t = item.if_contains("type");
            t != nullptr && !(t->is_string() && t->get_string() == "message")) {
          return Unsupported(param + ".type", "only message items are accepted");
        }
        InputMessage m;
        if (auto e2 = Role(item.if_contains("role"), param + ".role", &m.role)) return e2;
        if (m.role != "system" && m.role != "developer") {
          return Unsupported(param + ".role",
                             "a new conversation takes only its system (or developer) message; "
                             "send user messages with POST /v1/responses");
        }
        if (out->system_prompt.has_value()) {
          return Invalid(param, "a conversation has one system message");
        }
        const json::value* content = item.if_contains("content");
        if (content == nullptr) {
          return Invalid(param + ".content", absl::StrCat(param, ".content is required"));
        }
        if (auto e2 = Content(*content, param + ".content", {"input_text", "text"}, &m.content)) {
          return e2;
        }
        if (m.content.size() > kMaxSystemPromptBytes) {
          return Invalid(param + ".content", absl::StrCat(param, ".content is longer than ",
                                                          kMaxSystemPromptBytes, " bytes"));
        }
        for (const auto& f : item) {
          std::string_view k = View(f.key());
          if (k != "type" && k != "role" && k != "content") {
            return Unsupported(absl::StrCat(param, ".", Av(k)), "");
          }
        }
        out->system_prompt = std::move(m.content);
      }
    } else {
      e = RequestError{key, absl::StrCat("Unrecognized request argument supplied: ", key),
                       "unsupported_parameter"};
    }
    if (e) return e;
  }
  return std::nullopt;
}

namespace {

Result ResponseInputItem(const json::value& v, const std::string& param, InputMessage* out) {
  if (!v.is_object()) return Invalid(param, absl::StrCat(param, " must be an object"));
  const json::object& item = v.get_object();
  if (const json::value* t = item.if_contains("type");
      t != nullptr && !(t->is_string() && t->get_string() == "message")) {
    return Unsupported(param + ".type", "only message items are accepted (aichat runs no tools)");
  }
  if (auto e = Role(item.if_contains("role"), param + ".role", &out->role)) return e;
  const json::value* content = item.if_contains("content");
  if (content == nullptr) {
    return Invalid(param + ".content", absl::StrCat(param, ".content is required"));
  }
  if (auto e = Content(*content, param + ".content", {"input_text", "output_text", "text"},
                       &out->content)) {
    return e;
  }
  for (const auto& f : item) {
    std::string_view k = View(f.key());
    if (k == "type" || k == "role" || k == "content") continue;
    if (k == "id" || k == "status") {
      if (!f.value().is_string()) {
        return Invalid(absl::StrCat(param, ".", Av(k)),
                       absl::StrCat(param, ".", Av(k), " must be a string"));
      }
      continue;  // an earlier output item sent back as it came
    }
    return Unsupported(absl::StrCat(param, ".", Av(k)), "");
  }
  return std::nullopt;
}

}  // namespace

std::optional<RequestError> DecodeCreateResponseRequest(std::string_view body,
                                                        CreateResponseRequest* out) {
  RequestError error;
  auto obj = ParseObject(body, &error);
  if (!obj.has_value()) return error;
  *out = CreateResponseRequest{};
  for (const auto& kv : *obj) {
    const std::string key(View(kv.key()));
    const json::value& v = kv.value();
    Result e;
    if (key == "model") {
      e = Text(v, key, kMaxModelNameBytes, true, &out->model);
    } else if (key == "input") {
      if (v.is_string()) {
        out->input.push_back({"user", ""});
        e = Text(v, key, kMaxContentBytes, true, &out->input.back().content);
      } else if (v.is_array()) {
        const json::array& a = v.get_array();
        if (a.empty()) return Invalid(key, "input must not be empty");
        if (a.size() > kMaxInputMessages) {
          return Invalid(key, absl::StrCat("input holds more than ", kMaxInputMessages, " items"));
        }
        out->input.resize(a.size());
        for (size_t i = 0; i < a.size() && !e; ++i) {
          e = ResponseInputItem(a[i], absl::StrCat("input[", i, "]"), &out->input[i]);
        }
      } else {
        e = Invalid(key, "input must be a string or an array of message items");
      }
    } else if (key == "conversation") {
      if (v.is_object()) {
        const json::value* id = v.get_object().if_contains("id");
        if (id == nullptr || v.get_object().size() != 1) {
          return Invalid("conversation", "conversation must be an id or {\"id\": …}");
        }
        e = Text(*id, "conversation.id", kMaxIdBytes, true, &out->conversation);
      } else if (!v.is_null()) {
        e = Text(v, key, kMaxIdBytes, true, &out->conversation);
      }
    } else if (key == "previous_response_id") {
      if (!v.is_null()) e = Text(v, key, kMaxIdBytes, true, &out->previous_response_id);
    } else if (key == "instructions") {
      if (!v.is_null()) {
        std::string text;
        e = Text(v, key, kMaxSystemPromptBytes, false, &text);
        out->instructions = std::move(text);
      }
    } else if (key == "stream") {
      if (!v.is_null()) e = Bool(v, key, &out->stream);
    } else if (key == "store") {
      if (!v.is_null()) e = Bool(v, key, &out->store);
    } else if (key == "max_output_tokens") {
      e = TokenLimit(v, key, &out->max_output_tokens);
    } else if (key == "temperature") {
      e = Temperature(v, key, &out->temperature);
    } else if (key == "top_p") {
      e = OnlyDefault(v, key, 1, "only 1 is accepted; use temperature");
    } else if (key == "metadata") {
      if (!IsEmptyOrNull(v)) e = Unsupported(key, "responses keep no metadata in aichat");
    } else if (key == "tools" || key == "include" || key == "reasoning" || key == "prompt" ||
               key == "max_tool_calls" || key == "top_logprobs" || key == "conversation_items") {
      if (!IsEmptyOrNull(v) && !(key == "top_logprobs" && Number(v) == 0.0)) {
        e = Unsupported(key, "");
      }
    } else if (key == "tool_choice") {
      if (!v.is_null() &&
          !(v.is_string() && (v.get_string() == "none" || v.get_string() == "auto"))) {
        e = Unsupported(key, "aichat runs no tools");
      }
    } else if (key == "parallel_tool_calls") {
      if (!v.is_null() && !v.is_bool()) e = Invalid(key, "parallel_tool_calls must be a boolean");
    } else if (key == "background") {
      if (!v.is_null() && !(v.is_bool() && !v.get_bool())) e = Unsupported(key, "");
    } else if (key == "truncation") {
      if (!v.is_null() && !(v.is_string() && v.get_string() == "auto")) {
        e = Unsupported(key,
                        "aichat always leaves the oldest messages out of a context that is "
                        "too long (\"auto\")");
      }
    } else if (key == "text") {
      const json::object* t = v.is_object() ? &v.get_object() : nullptr;
      const json::value* format = t != nullptr ? t->if_contains("format") : nullptr;
      const json::value* type = format != nullptr && format->is_object()
                                    ? format->get_object().if_contains("type")
                                    : nullptr;
      const bool plain = t != nullptr && t->size() == 1 && type != nullptr &&
                         format->get_object().size() == 1 && type->is_string() &&
                         type->get_string() == "text";
      if (!v.is_null() && !(t != nullptr && t->empty()) && !plain) {
        e = Unsupported(key, "only {\"format\": {\"type\": \"text\"}} is accepted");
      }
    } else if (key == "stream_options") {
      if (!v.is_null()) {
        if (!v.is_object()) return Invalid(key, "stream_options must be an object");
        for (const auto& so : v.get_object()) {
          const std::string field = absl::StrCat(key, ".", Av(View(so.key())));
          if (View(so.key()) != "include_obfuscation" ||
              !(so.value().is_null() || (so.value().is_bool() && !so.value().get_bool()))) {
            return Unsupported(field, "");
          }
        }
      }
    } else if (key == "user" || key == "safety_identifier" || key == "prompt_cache_key") {
      e = Tag(v, key);
    } else if (key == "service_tier") {
      e = ServiceTier(v);
    } else {
      e = RequestError{key, absl::StrCat("Unrecognized request argument supplied: ", key),
                       "unsupported_parameter"};
    }
    if (e) return e;
  }
  if (obj->if_contains("model") == nullptr) return Invalid("model", "model is required");
  if (out->input.empty()) return Invalid("input", "input is required");
  if (!out->conversation.empty() && !out->previous_response_id.empty()) {
    return Invalid("previous_response_id", "give conversation or previous_response_id, not both");
  }
  return std::nullopt;
}

std::optional<RequestError> DecodeListItemsQuery(std::string_view query, ListItemsQuery* out) {
  *out = ListItemsQuery{};
  if (query.empty()) return std::nullopt;
  for (absl::string_view pair_view : absl::StrSplit(Av(query), '&', absl::SkipEmpty())) {
    std::string_view pair = Sv(pair_view);
    size_t eq = pair.find('=');
    auto key = PercentDecode(pair.substr(0, eq), true);
    auto value = PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1), true);
    if (!key.has_value() || !value.has_value() || !IsValidUtf8(*key) || !IsValidUtf8(*value)) {
      return Invalid("", "the query string is not valid");
    }
    if (*key == "limit") {
      int n = 0;
      if (!absl::SimpleAtoi(Av(*value), &n) || n < 1 || n > 100) {
        return Invalid("limit", "limit must be an integer between 1 and 100");
      }
      out->limit = n;
    } else if (*key == "order") {
      if (*value != "asc" && *value != "desc") return Invalid("order", "order must be asc or desc");
      out->ascending = *value == "asc";
    } else if (*key == "after") {
      if (!CheckText("after", *value, kMaxIdBytes, false).ok()) {
        return Invalid("after", "after is not an item id");
      }
      out->after = *value;
    } else if (*key == "include" || key->starts_with("include[")) {
      return Unsupported("include", "");
    } else {
      return RequestError{*key, absl::StrCat("Unrecognized query parameter: ", *key),
                          "unsupported_parameter"};
    }
  }
  return std::nullopt;
}

std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex(s[i + 1]);
      int lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// ---- ids

namespace {

std::optional<int64_t> ParseDecimal(std::string_view digits) {
  if (digits.empty() || digits.size() > 19 || (digits.size() > 1 && digits[0] == '0')) {
    return std::nullopt;
  }
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (std::numeric_limits<int64_t>::max() - (c - '0')) / 10) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return std::nullopt;
  return v;
}

std::optional<int64_t> WithPrefix(std::string_view s, std::string_view prefix) {
  if (!s.starts_with(prefix)) return std::nullopt;
  return ParseDecimal(s.substr(prefix.size()));
}

}  // namespace

std::string ConversationApiId(int64_t id) { return absl::StrCat("conv_", id); }
std::optional<int64_t> ParseConversationApiId(std::string_view s) { return WithPrefix(s, "conv_"); }
std::optional<int64_t> ParseConversationRef(std::string_view s) {
  if (s.starts_with("conv_")) return ParseConversationApiId(s);
  return ParseDecimal(s);
}
std::string ResponseApiId(int64_t prompt_id) { return absl::StrCat("resp_", prompt_id); }
std::optional<int64_t> ParseResponseApiId(std::string_view s) { return WithPrefix(s, "resp_"); }
std::string CompletionApiId(int64_t prompt_id) { return absl::StrCat("chatcmpl-", prompt_id); }
std::string MessageItemId(int64_t message_id) { return absl::StrCat("msg_", message_id); }
std::string AnswerItemId(int64_t prompt_id) { return absl::StrCat("msg_r", prompt_id); }

}  // namespace aichat::agent
