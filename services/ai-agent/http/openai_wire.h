// File: OpenAI's wire format for the agent's HTTP API, apart from any socket.
//
// Request bodies are decoded into plain structs: every field is checked (types,
// strict UTF-8, sizes) and every parameter aichat does not implement is refused by
// name, never dropped. The JSON the API answers with is built here too. No Beast,
// no gRPC, no protobuf: the unit tests and the fuzz target
// (fuzz/openai_request_fuzz.cc) run this file alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aichat::agent {

// A request the API refuses with 400 invalid_request_error before anything is done.
struct RequestError {
  std::string param;    // the parameter at fault, OpenAI style ("messages[2].content"); may be ""
  std::string message;  // says what is wrong and, for unsupported parameters, what to do instead
  std::string code;     // "" or e.g. "unsupported_parameter", "invalid_json"
};

// Limits of one decoded request, beyond the HTTP listener's byte limit.
inline constexpr int kMaxJsonDepth = 32;
inline constexpr size_t kMaxInputMessages = 2048;
inline constexpr size_t kMaxTitleBytes = 800;  // 200 characters of 4 bytes at most
inline constexpr size_t kMaxSystemPromptBytes = size_t{32} * 1024;

// One chat message of a request: role "system", "developer", "user" or "assistant"
// and its text (text parts joined).
struct InputMessage {
  std::string role;
  std::string content;
};

// POST /v1/chat/completions.
struct ChatCompletionRequest {
  std::string model;
  std::vector<InputMessage> messages;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<int32_t> max_output_tokens;
  std::string max_tokens_param;  // "max_completion_tokens" or "max_tokens", as the caller named it
  std::optional<double> temperature;
  // metadata.conversation_id as given ("conv_12" or "12"); "" for a stateless turn.
  std::string conversation;
};
std::optional<RequestError> DecodeChatCompletionRequest(std::string_view body,
                                                        ChatCompletionRequest* out);

// POST /v1/conversations. An empty body is an empty request.
struct CreateConversationRequest {
  std::string title;                         // metadata.title
  std::optional<std::string> model;          // metadata.model
  std::optional<std::string> system_prompt;  // a system or developer item
};
std::optional<RequestError> DecodeCreateConversationRequest(std::string_view body,
                                                            CreateConversationRequest* out);

// POST /v1/responses.
struct CreateResponseRequest {
  std::string model;
  std::vector<InputMessage> input;  // a string input is one user message
  std::string conversation;         // "conv_…" as given (string or {"id": …})
  std::string previous_response_id;
  std::optional<std::string> instructions;
  bool stream = false;
  bool store = true;
  std::optional<int32_t> max_output_tokens;
  std::optional<double> temperature;
};
std::optional<RequestError> DecodeCreateResponseRequest(std::string_view body,
                                                        CreateResponseRequest* out);

// GET /v1/conversations/{id}/items?limit=&order=&after=
struct ListItemsQuery {
  int limit = 20;          // 1 to 100
  bool ascending = false;  // order=asc; OpenAI's default is desc
  std::string after;       // an item id from an earlier page
};
std::optional<RequestError> DecodeListItemsQuery(std::string_view query, ListItemsQuery* out);

// Percent-decoding of one path segment (or, with plus_is_space, a query value);
// nullopt for a broken escape.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space = false);

// ---- Ids: stable strings derived from aichat's int64 ids. Parsing is strict
// (prefix, decimal digits, no sign or leading zero, within int64); anything else
// is nullopt, which the API answers as "not found".
std::string ConversationApiId(int64_t id);  // conv_12
std::optional<int64_t> ParseConversationApiId(std::string_view s);
// conv_12 or a bare 12 (metadata.conversation_id, the x-aichat-conversation-id header).
std::optional<int64_t> ParseConversationRef(std::string_view s);
std::string ResponseApiId(int64_t prompt_id);  // resp_34
std::optional<int64_t> ParseResponseApiId(std::string_view s);
std::string CompletionApiId(int64_t prompt_id);  // chatcmpl-34
// A message as a conversation item: msg_56 by message id; an assistant answer is
// named by the prompt that produced it (msg_r34), so that a streamed response can
// name its item before the answer is saved.
std::string MessageItemId(int64_t message_id);
std::string AnswerItemId(int64_t prompt_id);

// ---- Answers.

struct TokenFigures {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t cost_nanos = 0;  // aichat's exact charge, as the ledger records it
  bool estimated = false;
};

// A finished chat turn, as the chat completions API shows it.
struct CompletionFacts {
  int64_t prompt_id = 0;
  int64_t created = 0;  // unix seconds
  std::string model;
  std::string text;
  std::string finish_reason;
  TokenFigures usage;
};
std::string ChatCompletionJson(const CompletionFacts& c);

// The pieces of a chat.completion.chunk stream. Every event is "data: {…}\n\n".
class ChunkWriter {
 public:
  ChunkWriter(int64_t prompt_id, int64_t created, std::string_view model, bool include_usage);
  std::string Role() const;  // the first chunk: delta {"role":"assistant","content":""}
  void AppendDelta(std::string_view text, std::string* out) const;
  std::string Finish(std::string_view finish_reason) const;  // the empty delta with the reason
  std::string Usage(const TokenFigures& usage) const;        // choices [] with usage
  static std::string Done() { return "data: [DONE]\n\n"; }

 private:
  std::string head_;  // `data: {"id":…,"choices":[{"index":0,"delta":`
  std::string tail_;  // `,"logprobs":null,"finish_reason":null}]…}\n\n`
  std::string id_part_;
};

struct ModelFacts {
  std::string name;
  int64_t created = 0;
};
std::string ModelJson(const ModelFacts& m);
std::string ModelListJson(const std::vector<ModelFacts>& models);

struct ConversationFacts {
  int64_t id = 0;
  int64_t created = 0;
  std::string title;
  std::string model;
};
std::string ConversationJson(const ConversationFacts& c);
std::string ConversationDeletedJson(int64_t id);

struct ItemFacts {
  std::string id;
  std::string role;  // user, assistant, system
  std::string text;
};
std::string ItemJson(const ItemFacts& item);
std::string ItemListJson(const std::vector<ItemFacts>& items, bool has_more);

// A response of the Responses API (a prompt of aichat).
struct ResponseFacts {
  int64_t prompt_id = 0;
  int64_t created = 0;
  std::string status;  // in_progress, completed, incomplete, failed, cancelled
  std::string model;
  int64_t conversation_id = 0;  // 0: none
  std::string previous_response_id;
  std::string instructions;
  std::optional<int32_t> max_output_tokens;
  std::optional<double> temperature;
  bool store = true;
  std::string text;           // the answer so far
  bool has_output = false;    // an output message item exists
  std::string finish_reason;  // "length" -> incomplete_details max_output_tokens
  std::optional<TokenFigures> usage;
  std::string error_code;  // failed: e.g. "server_error", "rate_limit_exceeded"
  std::string error_message;
};
std::string ResponseJson(const ResponseFacts& r);

// The Server-Sent Events of a streamed response, numbered in order.
class ResponseEventWriter {
 public:
  explicit ResponseEventWriter(ResponseFacts facts) : facts_(std::move(facts)) {}
  // response.created, response.in_progress, output_item.added, content_part.added.
  std::string Begin();
  void AppendDelta(std::string_view text, std::string* out);
  // output_text.done … response.completed (or .incomplete), with usage.
  std::string Complete(const ResponseFacts& final_facts);
  // `error` then response.failed.
  std::string Fail(std::string_view code, std::string_view message);

 private:
  std::string Event(std::string_view type, const std::string& fields);  // fields: JSON members
  ResponseFacts facts_;
  int64_t sequence_ = 0;
  std::string text_;
};

// {"error":{"message":…,"type":…,"param":…,"code":…}}; empty param/code are null.
std::string ErrorJson(std::string_view message, std::string_view type, std::string_view param,
                      std::string_view code);

}  // namespace aichat::agent
