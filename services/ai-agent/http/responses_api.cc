// The Responses subset. A response is an aichat prompt (resp_<prompt id>); it lives
// in a conversation:
//   conversation           the turn runs in that conversation;
//   previous_response_id   in the conversation of that response, which must be the
//                          conversation's latest (aichat conversations do not branch);
//   neither                in a new conversation (instructions become its system
//                          prompt), so that the answer can be continued from;
//   store: false           a stateless turn on the input as given (not continuable).
// In a conversation the input is the one new user message; the history is the store's.
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/validate.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/api_internal.h"

namespace aichat::agent {
namespace {

class ResponseTurn final : public HttpTurn {
 public:
  ResponseTurn(std::shared_ptr<ApiCall> call, TurnKey key, bool stream, ParamNames names,
               ResponseFacts base, std::function<void()> on_refused)
      : HttpTurn(std::move(call), std::move(key), stream, std::move(names)),
        base_(std::move(base)),
        on_refused_(std::move(on_refused)) {}

 protected:
  std::string StreamBegin(const v1::Started& started) override {
    base_.prompt_id = started.prompt_id();
    base_.model = started.model();
    writer_.emplace(base_);
    return writer_->Begin();
  }
  void StreamDelta(std::string_view text, std::string* out) override {
    writer_->AppendDelta(text, out);
  }
  std::string StreamEnd(const v1::TurnResult& r) override { return writer_->Complete(Final(r)); }
  std::string StreamError(const ApiError& e) override {
    return writer_->Fail(e.code.empty() ? "server_error" : e.code, e.message);
  }
  std::string WholeBody(const v1::TurnResult& r) override { return ResponseJson(Final(r)); }
  void Refused() override {
    if (on_refused_) on_refused_();
  }

 private:
  ResponseFacts Final(const v1::TurnResult& r) const {
    ResponseFacts f = base_;
    f.prompt_id = r.prompt_id();
    f.model = r.model();
    f.text = r.text();
    f.has_output = true;
    f.finish_reason = r.finish_reason();
    f.status = r.finish_reason() == "length" ? "incomplete" : "completed";
    f.usage = Figures(r);
    return f;
  }

  ResponseFacts base_;
  std::function<void()> on_refused_;
  std::optional<ResponseEventWriter> writer_;  // once the stream begins
};

void Refuse(const ApiCall& call, std::string param, std::string message) {
  ReplyError(*call.exchange, ApiErrorFromRequest({std::move(param), std::move(message), ""}));
}

// A title from the first line of the first message: at most 60 characters.
std::string TitleFrom(std::string_view text) {
  text = text.substr(0, text.find('\n'));
  text = Sv(absl::StripAsciiWhitespace(Av(text)));
  size_t chars = 0;
  size_t i = 0;
  while (i < text.size() && chars < 60) {
    const auto c = static_cast<unsigned char>(text[i]);
    i += c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    ++chars;
  }
  return std::string(text.substr(0, std::min(i, text.size())));
}

struct Pending {
  std::shared_ptr<ApiCall> call;
  CreateResponseRequest request;
  ResponseFacts base;
  ParamNames names;
};

// The turn, in a conversation, on the one user message the input must be.
void RunInConversation(std::shared_ptr<Pending> p, int64_t conversation_id,
                       std::function<void()> on_refused = nullptr) {
  const ApiCall& call = *p->call;
  const auto& input = p->request.input;
  if (input.size() != 1 || input[0].role != "user") {
    if (on_refused) on_refused();
    return Refuse(call, "input",
                  "in a conversation, input is the one new user message (the conversation keeps "
                  "the history and its system prompt)");
  }
  TurnRequest t;
  t.caller = call.caller;
  t.conversation_id = conversation_id;
  t.content = input[0].content;
  t.model = p->request.model;
  t.max_output_tokens = p->request.max_output_tokens;
  t.temperature = p->request.temperature;
  t.deadline = ClientDeadline(call);
  p->base.conversation_id = conversation_id;
  auto turn = std::make_shared<ResponseTurn>(p->call, KeyFor(call), p->request.stream, p->names,
                                             p->base, std::move(on_refused));
  turn->Start(std::move(t));
}

// previous_response_id: that response's conversation, if it is the latest there.
void ContinueFrom(std::shared_ptr<Pending> p, int64_t prompt_id) {
  p->call->deps->workers->Submit([p, prompt_id] {
    const ApiCall& call = *p->call;
    AgentStore* store = call.deps->store;
    auto prev = store->GetPrompt(call.caller.user_id, prompt_id);
    if (absl::IsNotFound(prev.status())) {
      return ReplyError(*call.exchange,
                        NotFoundError(absl::StrCat("Previous response with id '",
                                                   p->request.previous_response_id, "' not found."),
                                      "previous_response_id"));
    }
    if (!prev.ok()) return ReplyStatus(call, prev.status());
    if (prev->conversation_id <= 0) {
      return Refuse(call, "previous_response_id",
                    "previous_response_id names a response that is not in a conversation "
                    "(made with store: false, or by /v1/chat/completions without one)");
    }
    auto recent = store->ListPrompts(call.caller.user_id, prev->conversation_id, 0, 20);
    if (!recent.ok()) return ReplyStatus(call, recent.status());
    for (const PromptRecord& r : *recent) {
      const bool in_conversation = r.response_message_id > 0 || r.answer_pending ||
                                   r.status == PromptStatus::kPending ||
                                   r.status == PromptStatus::kStreaming;
      if (!in_conversation) continue;  // refused turns left nothing behind
      if (r.id != prompt_id) {
        return Refuse(call, "previous_response_id",
                      absl::StrCat("previous_response_id: ", p->request.previous_response_id,
                                   " is not the latest response of its conversation (aichat "
                                   "conversations do not branch); continue from ",
                                   ResponseApiId(r.id)));
      }
      break;
    }
    RunInConversation(p, prev->conversation_id);
  });
}

// Neither conversation nor previous_response_id, stored: a new conversation whose
// system prompt is the instructions and the input's system items; an answer refused
// before it began takes the conversation away again.
void RunInNewConversation(std::shared_ptr<Pending> p) {
  std::string system = p->request.instructions.value_or("");
  auto& input = p->request.input;
  size_t first = 0;
  while (first < input.size() &&
         (input[first].role == "system" || input[first].role == "developer")) {
    if (!system.empty() && !input[first].content.empty()) system += "\n\n";
    system += input[first].content;
    ++first;
  }
  if (first + 1 != input.size() || input[first].role != "user") {
    return Refuse(*p->call, "input",
                  "input is system or developer messages and then one user message; send earlier "
                  "turns with store: false, or continue with previous_response_id");
  }
  input.erase(input.begin(), input.begin() + static_cast<ptrdiff_t>(first));
  if (system.size() > kMaxSystemPromptBytes) {
    return Refuse(
        *p->call, "instructions",
        absl::StrCat("instructions and system messages exceed ", kMaxSystemPromptBytes, " bytes"));
  }
  NewConversation n;
  n.title = TitleFrom(input[0].content);
  n.model = p->request.model;
  if (!system.empty()) n.system_prompt = system;
  p->base.instructions = p->request.instructions.value_or("");
  ApiCall& call = *p->call;
  call.deps->conversation->CreateConversation(
      ForUser(call), n, [p](absl::StatusOr<ConversationInfo> info) {
        if (!info.ok()) {
          return ReplyStatus(
              *p->call, info.status(),
              {{"title", "input"}, {"model", "model"}, {"system_prompt", "instructions"}});
        }
        std::shared_ptr<ApiCall> call = p->call;
        const int64_t id = info->id;
        RunInConversation(p, id, [call, id] {
          call->deps->conversation->DeleteConversation(ForUser(*call), id, [](absl::Status) {});
        });
      });
}

const char* ResponseStatus(const PromptRecord& p) {
  switch (p.status) {
    case PromptStatus::kPending:
    case PromptStatus::kStreaming:
      return "in_progress";
    case PromptStatus::kCompleted:
      return p.finish_reason == "length" ? "incomplete" : "completed";
    case PromptStatus::kCancelled:
      return "cancelled";
    case PromptStatus::kFailed:
    case PromptStatus::kRateLimited:
    case PromptStatus::kBudgetExceeded:
      break;
  }
  return "failed";
}

}  // namespace

void CreateResponse(std::shared_ptr<ApiCall> call) {
  auto p = std::make_shared<Pending>();
  p->call = call;
  if (auto e = DecodeCreateResponseRequest(call->request.body, &p->request)) {
    return ReplyError(*call->exchange, ApiErrorFromRequest(*e));
  }
  const CreateResponseRequest& r = p->request;
  p->base.created = UnixSeconds(call->received);
  p->base.model = r.model;
  p->base.max_output_tokens = r.max_output_tokens;
  p->base.temperature = r.temperature;
  p->base.store = r.store;
  p->base.previous_response_id = r.previous_response_id;
  p->names = {{"model", "model"},
              {"temperature", "temperature"},
              {"max_output_tokens", "max_output_tokens"},
              {"idempotency_key", "Idempotency-Key"},
              {"content", "input"},
              {"messages", "input"},
              {"conversation_id", "conversation"}};
  const bool continues = !r.conversation.empty() || !r.previous_response_id.empty();
  if (continues && !r.store) {
    return Refuse(*call, "store",
                  "a response in a conversation is kept in it: store must be true (or absent)");
  }
  if (continues && r.instructions.has_value()) {
    ReplyError(*call->exchange,
               ApiErrorFromRequest({"instructions",
                                    "instructions is not supported by aichat in a conversation: "
                                    "its system prompt is set when it is created",
                                    "unsupported_parameter"}));
    return;
  }
  if (!r.conversation.empty()) {
    auto id = ParseConversationApiId(r.conversation);
    if (!id.has_value()) {
      return ReplyError(
          *call->exchange,
          NotFoundError(absl::StrCat("No conversation found with id '", r.conversation, "'"),
                        "conversation"));
    }
    return RunInConversation(p, *id);
  }
  if (!r.previous_response_id.empty()) {
    auto id = ParseResponseApiId(r.previous_response_id);
    if (!id.has_value()) {
      return ReplyError(*call->exchange,
                        NotFoundError(absl::StrCat("Previous response with id '",
                                                   r.previous_response_id, "' not found."),
                                      "previous_response_id"));
    }
    return ContinueFrom(p, *id);
  }
  if (r.store) return RunInNewConversation(p);
  // store: false — the input as given, nothing kept in a conversation.
  TurnRequest t;
  t.caller = call->caller;
  t.stateless = true;
  if (r.instructions.has_value() && !r.instructions->empty()) {
    t.messages.emplace_back("system", *r.instructions);
  }
  for (auto& m : p->request.input) t.messages.emplace_back(m.role, std::move(m.content));
  t.model = r.model;
  t.max_output_tokens = r.max_output_tokens;
  t.temperature = r.temperature;
  t.deadline = ClientDeadline(*call);
  p->base.instructions = r.instructions.value_or("");
  auto turn =
      std::make_shared<ResponseTurn>(call, KeyFor(*call), r.stream, p->names, p->base, nullptr);
  turn->Start(std::move(t));
}

void GetResponse(std::shared_ptr<ApiCall> call) {
  auto id = ParseResponseApiId(call->id);
  if (!id.has_value()) {
    return ReplyError(*call->exchange,
                      NotFoundError(absl::StrCat("Response with id '", call->id, "' not found.")));
  }
  call->deps->workers->Submit([call, id = *id] {
    auto p = call->deps->store->GetPrompt(call->caller.user_id, id);
    if (absl::IsNotFound(p.status())) {
      return ReplyError(*call->exchange, NotFoundError(absl::StrCat("Response with id '", call->id,
                                                                    "' not found.")));
    }
    if (!p.ok()) return ReplyStatus(*call, p.status());
    ResponseFacts f;
    f.prompt_id = p->id;
    f.created = UnixSeconds(p->created_at);
    f.status = ResponseStatus(*p);
    f.model = p->model;
    f.conversation_id = p->conversation_id;
    f.store = p->conversation_id > 0;
    f.max_output_tokens = p->max_output_tokens;
    f.text = p->response_text;
    f.has_output = !p->response_text.empty() || p->status == PromptStatus::kCompleted;
    f.finish_reason = p->finish_reason;
    if (IsTerminal(p->status) && (p->prompt_tokens > 0 || p->completion_tokens > 0)) {
      f.usage = TokenFigures{p->prompt_tokens, p->completion_tokens, p->cached_tokens,
                             p->cost_nanos, p->estimated};
    }
    if (std::string_view(f.status) == "failed") {
      f.error_code = p->status == PromptStatus::kRateLimited      ? "rate_limit_exceeded"
                     : p->status == PromptStatus::kBudgetExceeded ? "insufficient_quota"
                                                                  : "server_error";
      f.error_message = p->error;
    }
    ReplyJson(*call->exchange, 200, ResponseJson(f));
  });
}

}  // namespace aichat::agent
