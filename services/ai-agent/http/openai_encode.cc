// The JSON of the OpenAI-compatible API's answers (see openai_wire.h). Whole objects
// go through Boost.JSON; the per-delta events of a stream are a precomputed head and
// tail around the escaped text, so a delta costs one string append.
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "absl/strings/str_cat.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/openai_wire.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;

json::string_view Js(std::string_view s) { return {s.data(), s.size()}; }

// JSON string literal (quotes included); text is valid UTF-8, passed through as is.
void AppendQuoted(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t run = 0;  // start of the bytes not yet copied
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        out->append("\\u00");
        out->push_back(kHex[c >> 4]);
        out->push_back(kHex[c & 15]);
    }
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
}

std::string Quoted(std::string_view s) {
  std::string out;
  AppendQuoted(s, &out);
  return out;
}

json::value NullOr(std::string_view s) {
  if (s.empty()) return nullptr;
  return json::string(Js(s));
}

json::object ChatUsage(const TokenFigures& u) {
  return {
      {"prompt_tokens", u.prompt_tokens},
      {"completion_tokens", u.completion_tokens},
      {"total_tokens", u.prompt_tokens + u.completion_tokens},
      {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}, {"audio_tokens", 0}}},
      {"completion_tokens_details",
       {{"reasoning_tokens", 0},
        {"audio_tokens", 0},
        {"accepted_prediction_tokens", 0},
        {"rejected_prediction_tokens", 0}}},
      // aichat's own: the exact charge in billionths of a USD, as the ledger has it.
      {"cost_nanos", u.cost_nanos},
      {"estimated", u.estimated},
  };
}

json::object ResponseUsage(const TokenFigures& u) {
  return {
      {"input_tokens", u.prompt_tokens},
      {"input_tokens_details", {{"cached_tokens", u.cached_tokens}}},
      {"output_tokens", u.completion_tokens},
      {"output_tokens_details", {{"reasoning_tokens", 0}}},
      {"total_tokens", u.prompt_tokens + u.completion_tokens},
      {"cost_nanos", u.cost_nanos},
      {"estimated", u.estimated},
  };
}

std::string FinishReason(std::string_view r) { return r.empty() ? "stop" : std::string(r); }

json::object OutputText(std::string_view text) {
  return {{"type", "output_text"},
          {"text", Js(text)},
          {"annotations", json::array()},
          {"logprobs", json::array()}};
}

json::object OutputItem(int64_t prompt_id, std::string_view status, const std::string* text) {
  json::array content;
  if (text != nullptr) content.push_back(OutputText(*text));
  return {{"id", AnswerItemId(prompt_id)},
          {"type", "message"},
          {"status", Js(status)},
          {"role", "assistant"},
          {"content", std::move(content)}};
}

json::object ResponseObject(const ResponseFacts& r) {
  json::array output;
  if (r.has_output) {
    const bool done = r.status != "in_progress";
    output.push_back(OutputItem(
        r.prompt_id, done ? (r.status == "completed" ? "completed" : "incomplete") : "in_progress",
        &r.text));
  }
  json::object o{
      {"id", ResponseApiId(r.prompt_id)},
      {"object", "response"},
      {"created_at", r.created},
      {"status", Js(r.status)},
      {"background", false},
      {"error", nullptr},
      {"incomplete_details", nullptr},
      {"instructions", NullOr(r.instructions)},
      {"max_output_tokens", nullptr},
      {"model", Js(r.model)},
      {"output", std::move(output)},
      {"parallel_tool_calls", false},
      {"previous_response_id", NullOr(r.previous_response_id)},
      {"reasoning", {{"effort", nullptr}, {"summary", nullptr}}},
      {"store", r.store},
      {"temperature", nullptr},
      {"text", {{"format", {{"type", "text"}}}}},
      {"tool_choice", "none"},
      {"tools", json::array()},
      {"top_p", 1},
      {"truncation", "auto"},
      {"usage", nullptr},
      {"user", nullptr},
      {"metadata", json::object()},
  };
  if (r.max_output_tokens.has_value()) o["max_output_tokens"] = *r.max_output_tokens;
  if (r.temperature.has_value()) o["temperature"] = *r.temperature;
  if (r.usage.has_value()) o["usage"] = ResponseUsage(*r.usage);
  if (r.conversation_id > 0) o["conversation"] = {{"id", ConversationApiId(r.conversation_id)}};
  if (r.status == "incomplete") {
    o["incomplete_details"] = {{"reason", "max_output_tokens"}};
  }
  if (r.status == "failed" || !r.error_message.empty()) {
    o["error"] = {{"code", r.error_code.empty() ? "server_error" : r.error_code},
                  {"message", Js(r.error_message)}};
  }
  return o;
}

}  // namespace

std::string ChatCompletionJson(const CompletionFacts& c) {
  json::object message{{"role", "assistant"},
                       {"content", Js(c.text)},
                       {"refusal", nullptr},
                       {"annotations", json::array()}};
  json::object choice{{"index", 0},
                      {"message", std::move(message)},
                      {"logprobs", nullptr},
                      {"finish_reason", FinishReason(c.finish_reason)}};
  json::object o{{"id", CompletionApiId(c.prompt_id)},
                 {"object", "chat.completion"},
                 {"created", c.created},
                 {"model", Js(c.model)},
                 {"choices", json::array{std::move(choice)}},
                 {"usage", ChatUsage(c.usage)},
                 {"service_tier", "default"},
                 {"system_fingerprint", nullptr}};
  return json::serialize(o);
}

ChunkWriter::ChunkWriter(int64_t prompt_id, int64_t created, std::string_view model,
                         bool include_usage) {
  id_part_ = absl::StrCat("{\"id\":", Quoted(CompletionApiId(prompt_id)),
                          ",\"object\":\"chat.completion.chunk\",\"created\":", created,
                          ",\"model\":", Quoted(model),
                          ",\"service_tier\":\"default\",\"system_fingerprint\":null");
  head_ = absl::StrCat("data: ", id_part_, ",\"choices\":[{\"index\":0,\"delta\":");
  tail_ = absl::StrCat(",\"logprobs\":null,\"finish_reason\":null}]",
                       include_usage ? ",\"usage\":null" : "", "}\n\n");
}

std::string ChunkWriter::Role() const {
  return absl::StrCat(head_, "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", tail_);
}

void ChunkWriter::AppendDelta(std::string_view text, std::string* out) const {
  out->append(head_);
  out->append("{\"content\":");
  AppendQuoted(text, out);
  out->push_back('}');
  out->append(tail_);
}

std::string ChunkWriter::Finish(std::string_view finish_reason) const {
  // The tail with this finish reason instead of null.
  std::string tail = tail_;
  const std::string_view null_reason = "\"finish_reason\":null";
  tail.replace(tail.find(null_reason), null_reason.size(),
               absl::StrCat("\"finish_reason\":", Quoted(FinishReason(finish_reason))));
  return absl::StrCat(head_, "{}", tail);
}

std::string ChunkWriter::Usage(const TokenFigures& usage) const {
  std::string out = "data: ";
  out.append(id_part_, 0, id_part_.size());
  out.append(",\"choices\":[],\"usage\":");
  out.append(json::serialize(ChatUsage(usage)));
  out.append("}\n\n");
  return out;
}

std::string ModelJson(const ModelFacts& m) {
  return json::serialize(json::object{
      {"id", Js(m.name)}, {"object", "model"}, {"created", m.created}, {"owned_by", "aichat"}});
}

std::string ModelListJson(const std::vector<ModelFacts>& models) {
  json::array data;
  for (const auto& m : models) {
    data.push_back(json::object{
        {"id", Js(m.name)}, {"object", "model"}, {"created", m.created}, {"owned_by", "aichat"}});
  }
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

namespace {
json::object ConversationObject(const ConversationFacts& c) {
  json::object metadata;
  if (!c.title.empty()) metadata["title"] = Js(c.title);
  if (!c.model.empty()) metadata["model"] = Js(c.model);
  return {{"id", ConversationApiId(c.id)},
          {"object", "conversation"},
          {"created_at", c.created},
          {"metadata", std::move(metadata)}};
}

json::object ItemObject(const ItemFacts& item) {
  const bool output = item.role == "assistant";
  json::object part{{"type", output ? "output_text" : "input_text"}, {"text", Js(item.text)}};
  if (output) part["annotations"] = json::array();
  return {{"type", "message"},
          {"id", Js(item.id)},
          {"status", "completed"},
          {"role", Js(item.role)},
          {"content", json::array{std::move(part)}}};
}
}  // namespace

std::string ConversationJson(const ConversationFacts& c) {
  return json::serialize(ConversationObject(c));
}

std::string ConversationDeletedJson(int64_t id) {
  return json::serialize(json::object{
      {"id", ConversationApiId(id)}, {"object", "conversation.deleted"}, {"deleted", true}});
}

std::string ItemJson(const ItemFacts& item) { return json::serialize(ItemObject(item)); }

std::string ItemListJson(const std::vector<ItemFacts>& items, bool has_more) {
  json::array data;
  for (const auto& item : items) data.push_back(ItemObject(item));
  json::value first = nullptr;
  json::value last = nullptr;
  if (!items.empty()) {
    first = Js(items.front().id);
    last = Js(items.back().id);
  }
  return json::serialize(json::object{{"object", "list"},
                                      {"data", std::move(data)},
                                      {"first_id", std::move(first)},
                                      {"last_id", std::move(last)},
                                      {"has_more", has_more}});
}

std::string ResponseJson(const ResponseFacts& r) { return json::serialize(ResponseObject(r)); }

std::string ResponseEventWriter::Event(std::string_view type, const std::string& fields) {
  std::string out = absl::StrCat("event: ", Av(type), "\ndata: {\"type\":", Quoted(type),
                                 ",\"sequence_number\":", sequence_++);
  if (!fields.empty()) absl::StrAppend(&out, ",", fields);
  out.append("}\n\n");
  return out;
}

std::string ResponseEventWriter::Begin() {
  ResponseFacts start = facts_;
  start.status = "in_progress";
  start.has_output = false;
  const std::string item_id = Quoted(AnswerItemId(facts_.prompt_id));
  std::string response = json::serialize(ResponseObject(start));
  std::string out = Event("response.created", absl::StrCat("\"response\":", response));
  out += Event("response.in_progress", absl::StrCat("\"response\":", response));
  out += Event("response.output_item.added",
               absl::StrCat("\"output_index\":0,\"item\":",
                            json::serialize(OutputItem(facts_.prompt_id, "in_progress", nullptr))));
  out += Event("response.content_part.added",
               absl::StrCat("\"item_id\":", item_id, ",\"output_index\":0,\"content_index\":0,",
                            "\"part\":", json::serialize(OutputText(""))));
  return out;
}

void ResponseEventWriter::AppendDelta(std::string_view text, std::string* out) {
  text_.append(text);
  std::string fields = absl::StrCat("\"item_id\":", Quoted(AnswerItemId(facts_.prompt_id)),
                                    ",\"output_index\":0,\"content_index\":0,\"delta\":");
  AppendQuoted(text, &fields);
  fields.append(",\"logprobs\":[]");
  out->append(Event("response.output_text.delta", fields));
}

std::string ResponseEventWriter::Complete(const ResponseFacts& final_facts) {
  ResponseFacts f = final_facts;
  f.has_output = true;
  const std::string item_id = Quoted(AnswerItemId(f.prompt_id));
  const std::string done_status = f.status == "completed" ? "completed" : "incomplete";
  std::string out =
      Event("response.output_text.done",
            absl::StrCat("\"item_id\":", item_id, ",\"output_index\":0,\"content_index\":0,",
                         "\"text\":", Quoted(f.text), ",\"logprobs\":[]"));
  out += Event("response.content_part.done",
               absl::StrCat("\"item_id\":", item_id, ",\"output_index\":0,\"content_index\":0,",
                            "\"part\":", json::serialize(OutputText(f.text))));
  out += Event("response.output_item.done",
               absl::StrCat("\"output_index\":0,\"item\":",
                            json::serialize(OutputItem(f.prompt_id, done_status, &f.text))));
  out += Event(f.status == "completed" ? "response.completed" : "response.incomplete",
               absl::StrCat("\"response\":", json::serialize(ResponseObject(f))));
  return out;
}

std::string ResponseEventWriter::Fail(std::string_view code, std::string_view message) {
  std::string out = Event(
      "error",
      absl::StrCat("\"code\":", Quoted(code), ",\"message\":", Quoted(message), ",\"param\":null"));
  ResponseFacts f = facts_;
  f.status = "failed";
  f.text = text_;
  f.has_output = !text_.empty();
  f.error_code = std::string(code);
  f.error_message = std::string(message);
  out +=
      Event("response.failed", absl::StrCat("\"response\":", json::serialize(ResponseObject(f))));
  return out;
}

std::string ErrorJson(std::string_view message, std::string_view type, std::string_view param,
                      std::string_view code) {
  return json::serialize(json::object{{"error",
                                       {{"message", Js(message)},
                                        {"type", Js(type)},
                                        {"param", NullOr(param)},
                                        {"code", NullOr(code)}}}});
}

}  // namespace aichat::agent
