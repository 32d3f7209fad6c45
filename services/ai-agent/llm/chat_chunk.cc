// Boost.JSON coding of the chat completions wire format; see chat_chunk.h.
#include "services/ai-agent/llm/chat_chunk.h"

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;

std::optional<json::value> Parse(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec) {
    return std::nullopt;
  }
  return v;
}

// String member or "" (absent, null or another type).
std::string StringOf(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(json::string_view(key.data(), key.size()));
  if (v == nullptr || !v->is_string()) {
    return {};
  }
  return std::string(v->get_string());
}

// Integer member: accepts int64/uint64 and integral doubles; -1 if unusable.
int64_t IntOf(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(json::string_view(key.data(), key.size()));
  if (v == nullptr) {
    return -1;
  }
  if (v->is_int64()) {
    return v->get_int64();
  }
  if (v->is_uint64() && v->get_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    return static_cast<int64_t>(v->get_uint64());
  }
  if (v->is_double()) {
    double d = v->get_double();
    if (d >= 0 && d < 9e18 && static_cast<double>(static_cast<int64_t>(d)) == d) {
      return static_cast<int64_t>(d);
    }
  }
  return -1;
}

absl::StatusOr<std::optional<TokenUsage>> UsageOf(const json::object& root) {
  const json::value* u = root.if_contains("usage");
  if (u == nullptr || u->is_null()) {
    return std::nullopt;
  }
  if (!u->is_object()) {
    return absl::InvalidArgumentError("malformed chunk: usage is not an object");
  }
  const json::object& uo = u->get_object();
  TokenUsage usage;
  usage.prompt_tokens = IntOf(uo, "prompt_tokens");
  usage.completion_tokens = IntOf(uo, "completion_tokens");
  if (usage.prompt_tokens < 0 || usage.completion_tokens < 0) {
    return absl::InvalidArgumentError("malformed chunk: usage token counts missing or invalid");
  }
  if (const json::value* d = uo.if_contains("prompt_tokens_details");
      d != nullptr && d->is_object()) {
    usage.cached_tokens = std::max<int64_t>(0, IntOf(d->get_object(), "cached_tokens"));
  }
  return usage;
}

// Returns choices[0] if present; nullptr for an empty array.
absl::StatusOr<const json::object*> FirstChoice(const json::object& root) {
  const json::value* c = root.if_contains("choices");
  if (c == nullptr || c->is_null()) {
    return nullptr;
  }
  if (!c->is_array()) {
    return absl::InvalidArgumentError("malformed chunk: choices is not an array");
  }
  const json::array& arr = c->get_array();
  if (arr.empty()) {
    return nullptr;
  }
  if (!arr[0].is_object()) {
    return absl::InvalidArgumentError("malformed chunk: choice is not an object");
  }
  return &arr[0].get_object();
}

absl::Status ContentOf(const json::object& holder, std::string_view key, std::string& out) {
  const json::value* m = holder.if_contains(json::string_view(key.data(), key.size()));
  if (m == nullptr || m->is_null()) {
    return absl::OkStatus();
  }
  if (!m->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("malformed chunk: ", std::string(key), " is not an object"));
  }
  const json::value* content = m->get_object().if_contains("content");
  if (content == nullptr || content->is_null()) {
    return absl::OkStatus();
  }
  if (!content->is_string()) {
    return absl::InvalidArgumentError("malformed chunk: content is not a string");
  }
  out.assign(content->get_string().data(), content->get_string().size());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ChatChunk> DecodeChatChunk(std::string_view text) {
  std::optional<json::value> v = Parse(text);
  if (!v || !v->is_object()) {
    return absl::InvalidArgumentError("malformed chunk: not a JSON object");
  }
  const json::object& root = v->get_object();
  ChatChunk chunk;
  chunk.model = StringOf(root, "model");
  absl::StatusOr<const json::object*> choice = FirstChoice(root);
  if (!choice.ok()) {
    return choice.status();
  }
  if (*choice != nullptr) {
    if (absl::Status s = ContentOf(**choice, "delta", chunk.content); !s.ok()) {
      return s;
    }
    chunk.finish_reason = StringOf(**choice, "finish_reason");
  }
  absl::StatusOr<std::optional<TokenUsage>> usage = UsageOf(root);
  if (!usage.ok()) {
    return usage.status();
  }
  chunk.usage = *usage;
  return chunk;
}

absl::StatusOr<ChatCompletion> DecodeChatCompletion(std::string_view text) {
  std::optional<json::value> v = Parse(text);
  if (!v || !v->is_object()) {
    return absl::InvalidArgumentError("malformed completion: not a JSON object");
  }
  const json::object& root = v->get_object();
  ChatCompletion out;
  out.model = StringOf(root, "model");
  absl::StatusOr<const json::object*> choice = FirstChoice(root);
  if (!choice.ok()) {
    return choice.status();
  }
  if (*choice == nullptr) {
    return absl::InvalidArgumentError("malformed completion: no choices");
  }
  if (absl::Status s = ContentOf(**choice, "message", out.content); !s.ok()) {
    return s;
  }
  out.finish_reason = StringOf(**choice, "finish_reason");
  absl::StatusOr<std::optional<TokenUsage>> usage = UsageOf(root);
  if (!usage.ok()) {
    return usage.status();
  }
  out.usage = *usage;
  return out;
}

std::optional<ProviderError> DecodeProviderError(std::string_view text) {
  std::optional<json::value> v = Parse(text);
  if (!v || !v->is_object()) {
    return std::nullopt;
  }
  const json::value* e = v->get_object().if_contains("error");
  if (e == nullptr) {
    return std::nullopt;
  }
  ProviderError err;
  if (e->is_string()) {  // some compatible servers send {"error": "text"}
    err.message = std::string(e->get_string());
    return err;
  }
  if (!e->is_object()) {
    return std::nullopt;
  }
  const json::object& eo = e->get_object();
  err.message = StringOf(eo, "message");
  err.type = StringOf(eo, "type");
  if (const json::value* code = eo.if_contains("code"); code != nullptr) {
    if (code->is_string()) {
      err.code = std::string(code->get_string());
    } else if (code->is_int64()) {
      err.code = std::to_string(code->get_int64());
    }
  }
  return err;
}

std::string EncodeChatRequest(const ChatRequestBody& request) {
  json::object body;
  body["model"] = request.model;
  json::array messages;
  messages.reserve(request.messages.size());
  for (const ChatMessage& m : request.messages) {
    messages.push_back(json::object{{"role", m.role}, {"content", m.content}});
  }
  body["messages"] = std::move(messages);
  if (request.max_output_tokens > 0) {
    body[request.use_max_tokens_param ? "max_tokens" : "max_completion_tokens"] =
        request.max_output_tokens;
  }
  if (request.temperature.has_value()) {
    body["temperature"] = *request.temperature;
  }
  body["stream"] = request.stream;
  if (request.stream) {
    body["stream_options"] = json::object{{"include_usage", true}};
  }
  return json::serialize(body);
}

}  // namespace aichat::agent
