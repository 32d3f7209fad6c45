// POST /v1/chat/completions: a stateless turn on the caller's messages as given, or,
// bound to a stored conversation (metadata.conversation_id or the
// x-aichat-conversation-id header), a turn of that conversation: only the last user
// message is taken from the request, the history comes from the store and both
// messages are saved — exactly what StreamMessage does.
#include "absl/strings/str_cat.h"
#include "services/ai-agent/http/api_internal.h"

namespace aichat::agent {
namespace {

class ChatTurn final : public HttpTurn {
 public:
  ChatTurn(std::shared_ptr<ApiCall> call, TurnKey key, const ChatCompletionRequest& request,
           ParamNames names)
      : HttpTurn(std::move(call), std::move(key), request.stream, std::move(names)),
        include_usage_(request.include_usage) {}

 protected:
  std::string StreamBegin(const v1::Started& started) override {
    writer_.emplace(started.prompt_id(), UnixSeconds(call_->received), started.model(),
                    include_usage_);
    return writer_->Role();
  }
  void StreamDelta(std::string_view text, std::string* out) override {
    writer_->AppendDelta(text, out);
  }
  std::string StreamEnd(const v1::TurnResult& r) override {
    std::string out = writer_->Finish(r.finish_reason());
    if (include_usage_) out += writer_->Usage(Figures(r));
    out += ChunkWriter::Done();
    return out;
  }
  // The OpenAI SDKs raise an APIError for a `data:` event that holds an error.
  std::string StreamError(const ApiError& e) override {
    return absl::StrCat("data: ", e.Body(), "\n\n");
  }
  std::string WholeBody(const v1::TurnResult& r) override {
    CompletionFacts c;
    c.prompt_id = r.prompt_id();
    c.created = UnixSeconds(call_->received);
    c.model = r.model();
    c.text = r.text();
    c.finish_reason = r.finish_reason();
    c.usage = Figures(r);
    return ChatCompletionJson(c);
  }

 private:
  const bool include_usage_;
  std::optional<ChunkWriter> writer_;  // once the stream begins (under HttpTurn's mu_)
};

}  // namespace

void CreateChatCompletion(std::shared_ptr<ApiCall> call) {
  ChatCompletionRequest req;
  if (auto e = DecodeChatCompletionRequest(call->request.body, &req)) {
    return ReplyError(*call->exchange, ApiErrorFromRequest(*e));
  }
  std::string conversation = req.conversation;
  std::string conversation_param = "metadata.conversation_id";
  if (std::string_view header = call->request.Header("x-aichat-conversation-id"); !header.empty()) {
    if (!conversation.empty() && conversation != header) {
      return ReplyError(*call->exchange,
                        ApiErrorFromRequest({conversation_param,
                                             "metadata.conversation_id and the "
                                             "x-aichat-conversation-id header name different "
                                             "conversations",
                                             ""}));
    }
    conversation = std::string(header);
    conversation_param = "x-aichat-conversation-id";
  }

  TurnRequest t;
  t.caller = call->caller;
  t.model = req.model;
  t.max_output_tokens = req.max_output_tokens;
  t.temperature = req.temperature;
  t.deadline = ClientDeadline(*call);
  ParamNames names = {
      {"model", "model"},
      {"temperature", "temperature"},
      {"max_output_tokens",
       req.max_tokens_param.empty() ? "max_completion_tokens" : req.max_tokens_param},
      {"idempotency_key", "Idempotency-Key"},
      {"messages", "messages"},
  };
  if (!conversation.empty()) {
    auto id = ParseConversationRef(conversation);
    if (!id.has_value()) {
      return ReplyError(
          *call->exchange,
          NotFoundError(absl::StrCat("No conversation found with id '", conversation, "'"),
                        conversation_param));
    }
    // The conversation holds the history: only the newest user message is new.
    int64_t last_user = -1;
    for (int64_t i = static_cast<int64_t>(req.messages.size()) - 1; i >= 0; --i) {
      if (req.messages[i].role == "user") {
        last_user = i;
        break;
      }
    }
    if (last_user < 0) {
      return ReplyError(*call->exchange,
                        ApiErrorFromRequest({"messages",
                                             "a request bound to a conversation needs a user "
                                             "message (the last one is sent)",
                                             ""}));
    }
    t.conversation_id = *id;
    t.content = std::move(req.messages[last_user].content);
    names["content"] = absl::StrCat("messages[", last_user, "].content");
    names["conversation_id"] = conversation_param;
  } else {
    t.stateless = true;
    t.messages.reserve(req.messages.size());
    for (auto& m : req.messages) t.messages.emplace_back(m.role, std::move(m.content));
  }
  auto turn = std::make_shared<ChatTurn>(call, KeyFor(*call), req, std::move(names));
  turn->Start(std::move(t));
}

}  // namespace aichat::agent
