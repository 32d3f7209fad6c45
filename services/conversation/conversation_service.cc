#include "services/conversation/conversation_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/page_token.h"
#include "common/proto_time.h"
#include "common/unary.h"

namespace aichat::conversation {
namespace {

absl::Status CheckId(std::string_view field, int64_t id) {
  if (id <= 0)
    return absl::InvalidArgumentError(absl::StrCat(std::string(field), " must be positive"));
  return absl::OkStatus();
}

v1::MessageRole ToProtoRole(MessageRole r) {
  switch (r) {
    case MessageRole::kAssistant:
      return v1::MESSAGE_ROLE_ASSISTANT;
    case MessageRole::kSystem:
      return v1::MESSAGE_ROLE_SYSTEM;
    case MessageRole::kUser:
      break;
  }
  return v1::MESSAGE_ROLE_USER;
}

void ToProto(const ConversationRecord& c, v1::Conversation* out) {
  out->set_id(c.id);
  out->set_user_id(c.user_id);
  out->set_title(c.title);
  out->set_model(c.model);
  out->set_system_prompt(c.system_prompt);
  out->set_message_count(c.message_count);
  aichat::ToProto(c.created_at, out->mutable_created_at());
  aichat::ToProto(c.updated_at, out->mutable_updated_at());
}

void ToProto(MessageRecord&& m, v1::Message* out) {
  out->set_id(m.id);
  out->set_conversation_id(m.conversation_id);
  out->set_role(ToProtoRole(m.role));
  out->set_content(std::move(m.content));
  out->set_token_count(m.token_count);
  out->set_token_count_estimated(m.token_count_estimated);
  out->set_prompt_id(m.prompt_id);
  out->set_position(m.position);
  out->set_superseded(m.superseded);
  aichat::ToProto(m.created_at, out->mutable_created_at());
}

absl::StatusOr<int64_t> ParseInt(const std::string& s) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(s, &v)) return absl::InvalidArgumentError("page_token is invalid");
  return v;
}

}  // namespace

ConversationServiceImpl::ConversationServiceImpl(ConversationStore* store,
                                                 const Authenticator* auth, WorkerPool* pool,
                                                 ConversationServiceOptions options)
    : store_(store),
      auth_(auth),
      pool_(pool),
      options_(options),
      append_limiter_(options.append_rate_per_minute, options.append_burst) {}

absl::StatusOr<Caller> ConversationServiceImpl::Authorize(grpc::CallbackServerContext* ctx) const {
  auto caller = auth_->Authenticate(*ctx);
  if (!caller.ok()) return caller.status();
  if (caller->is_service() && !caller->acting_for_user) {
    return absl::PermissionDeniedError(
        absl::StrCat("service callers must name the acting user in ", kActingUserHeader));
  }
  if (caller->user_id <= 0) {
    return absl::PermissionDeniedError("this token names no user");
  }
  return caller;
}

grpc::ServerUnaryReactor* ConversationServiceImpl::CreateConversation(
    grpc::CallbackServerContext* ctx, const v1::CreateConversationRequest* req,
    v1::Conversation* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckTitle(req->title(), options_); !st.ok()) return st;
    if (auto st = CheckModel(req->model(), options_); !st.ok()) return st;
    if (auto st = CheckSystemPrompt(req->system_prompt(), options_); !st.ok()) return st;
    NewConversation c{.title = req->title(),
                      .model = req->model(),
                      .system_prompt = req->system_prompt(),
                      .system_prompt_tokens = EstimateTokens(req->system_prompt())};
    auto rec = store_->CreateConversation(caller->user_id, c);
    if (!rec.ok()) return rec.status();
    ToProto(*rec, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::GetConversation(
    grpc::CallbackServerContext* ctx, const v1::GetConversationRequest* req,
    v1::Conversation* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("id", req->id()); !st.ok()) return st;
    auto rec = store_->GetConversation(caller->user_id, req->id());
    if (!rec.ok()) return rec.status();
    ToProto(*rec, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::ListConversations(
    grpc::CallbackServerContext* ctx, const v1::ListConversationsRequest* req,
    v1::ListConversationsResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    auto size = NormalizePageSize(req->page_size());
    if (!size.ok()) return size.status();
    std::optional<ConversationCursor> after;
    if (!req->page_token().empty()) {
      auto parts = DecodePageToken(req->page_token(), 2);
      if (!parts.ok()) return parts.status();
      auto micros = ParseInt((*parts)[0]);
      auto id = ParseInt((*parts)[1]);
      if (!micros.ok() || !id.ok()) return absl::InvalidArgumentError("page_token is invalid");
      after = ConversationCursor{absl::FromUnixMicros(*micros), *id};
    }
    // Keyset on (updated_at, id), newest first. A conversation updated during a
    // pass moves to the front: if already listed it is not listed again; if not
    // yet listed it is skipped by this pass (a new first page shows it). New
    // conversations likewise appear only on a new first page. No row is ever
    // listed twice, and rows untouched during the pass are listed exactly once.
    auto rows = store_->ListConversations(caller->user_id, after, *size + 1);
    if (!rows.ok()) return rows.status();
    bool more = static_cast<int>(rows->size()) > *size;
    if (more) rows->pop_back();
    size_t bytes = 0;
    const ConversationRecord* last = nullptr;
    for (const auto& c : *rows) {
      size_t row_bytes = c.title.size() + c.model.size() + c.system_prompt.size();
      if (last != nullptr && bytes + row_bytes > options_.max_response_bytes) {
        more = true;  // a shorter page; the next one starts here
        break;
      }
      bytes += row_bytes;
      ToProto(c, resp->add_conversations());
      last = &c;
    }
    if (more && last != nullptr) {
      resp->set_next_page_token(EncodePageToken(
          {absl::StrCat(absl::ToUnixMicros(last->updated_at)), absl::StrCat(last->id)}));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::UpdateConversation(
    grpc::CallbackServerContext* ctx, const v1::UpdateConversationRequest* req,
    v1::Conversation* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("id", req->id()); !st.ok()) return st;
    ConversationPatch patch;
    if (req->has_title()) {
      if (auto st = CheckTitle(req->title(), options_); !st.ok()) return st;
      patch.title = req->title();
    }
    if (req->has_model()) {
      if (auto st = CheckModel(req->model(), options_); !st.ok()) return st;
      patch.model = req->model();
    }
    if (req->has_system_prompt()) {
      if (auto st = CheckSystemPrompt(req->system_prompt(), options_); !st.ok()) return st;
      patch.system_prompt = req->system_prompt();
      patch.system_prompt_tokens = EstimateTokens(req->system_prompt());
    }
    auto rec = store_->UpdateConversation(caller->user_id, req->id(), patch);
    if (!rec.ok()) return rec.status();
    ToProto(*rec, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::DeleteConversation(
    grpc::CallbackServerContext* ctx, const v1::DeleteConversationRequest* req,
    v1::DeleteConversationResponse* /*resp*/) {
  return RunUnary(ctx, *pool_, [this, ctx, req]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("id", req->id()); !st.ok()) return st;
    return store_->DeleteConversation(caller->user_id, req->id());
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::AppendMessage(
    grpc::CallbackServerContext* ctx, const v1::AppendMessageRequest* req, v1::Message* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("conversation_id", req->conversation_id()); !st.ok()) return st;
    NewMessage m;
    switch (req->role()) {
      case v1::MESSAGE_ROLE_USER:
        m.role = MessageRole::kUser;
        break;
      case v1::MESSAGE_ROLE_ASSISTANT:
        m.role = MessageRole::kAssistant;
        break;
      case v1::MESSAGE_ROLE_SYSTEM:
        m.role = MessageRole::kSystem;
        break;
      default:
        return absl::InvalidArgumentError(
            "role must be MESSAGE_ROLE_USER, MESSAGE_ROLE_ASSISTANT or MESSAGE_ROLE_SYSTEM");
    }
    if (m.role != MessageRole::kUser && !caller->is_service()) {
      return absl::PermissionDeniedError(
          "only aichat services may append ASSISTANT or SYSTEM messages");
    }
    // An answer is saved whole: it has its own, larger limit.
    if (auto st = m.role == MessageRole::kAssistant
                      ? CheckAssistantContent(req->content(), options_)
                      : CheckContent(req->content(), options_);
        !st.ok()) {
      return st;
    }
    if (req->has_token_count()) {
      if (auto st = CheckTokenCount(req->token_count()); !st.ok()) return st;
      m.token_count = req->token_count();
    } else {
      m.token_count = EstimateTokens(req->content());
      m.token_count_estimated = true;
    }
    if (req->has_prompt_id()) {
      if (auto st = CheckId("prompt_id", req->prompt_id()); !st.ok()) return st;
      m.prompt_id = req->prompt_id();
    }
    if (req->has_replaces_message_id()) {
      if (auto st = CheckId("replaces_message_id", req->replaces_message_id()); !st.ok()) {
        return st;
      }
      m.replaces_message_id = req->replaces_message_id();
    }
    // The agent sizes budget reservations from stored counts: a user who could
    // declare their own messages free would reserve nothing.
    if (req->has_token_count() && !caller->is_service()) {
      return absl::PermissionDeniedError("token_count may only be set by aichat services");
    }
    // A prompt's messages and replacements are the ai-agent's: a user's prompt_id
    // would take the slot of a future turn's message (a retried append returns
    // the message already there) and let a retract of that turn delete it; a
    // user's replaces_message_id would hide any message from every context.
    if (req->has_prompt_id() && !caller->is_service()) {
      return absl::PermissionDeniedError("prompt_id may only be set by aichat services");
    }
    if (req->has_replaces_message_id() && !caller->is_service()) {
      return absl::PermissionDeniedError("replaces_message_id may only be set by aichat services");
    }
    // Counted once the request is known to be valid: a refused one writes nothing.
    if (!caller->is_service()) {
      if (auto st = append_limiter_.Admit(caller->user_id); !st.ok()) return st;
    }
    m.content = req->content();
    auto rec = store_->AppendMessage(caller->user_id, req->conversation_id(), m);
    if (!rec.ok()) return rec.status();
    rec->content = std::move(m.content);
    ToProto(*std::move(rec), resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::ListMessages(grpc::CallbackServerContext* ctx,
                                                                const v1::ListMessagesRequest* req,
                                                                v1::ListMessagesResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("conversation_id", req->conversation_id()); !st.ok()) return st;
    auto size = NormalizePageSize(req->page_size());
    if (!size.ok()) return size.status();
    int64_t after = 0;
    if (!req->page_token().empty()) {
      // The token carries its conversation, so it cannot be replayed on another one.
      auto parts = DecodePageToken(req->page_token(), 2);
      if (!parts.ok()) return parts.status();
      auto conv = ParseInt((*parts)[0]);
      auto pos = ParseInt((*parts)[1]);
      if (!conv.ok() || !pos.ok() || *conv != req->conversation_id() || *pos < 0) {
        return absl::InvalidArgumentError("page_token is invalid");
      }
      after = *pos;
    }
    // The store ends the page early when the contents reach the response budget
    // and reads no content past it.
    auto page = store_->ListMessages(caller->user_id, req->conversation_id(), after, *size,
                                     options_.max_response_bytes);
    if (!page.ok()) return page.status();
    const bool more = page->more;
    int64_t last = 0;
    for (auto& m : page->messages) {
      last = m.position;
      ToProto(std::move(m), resp->add_messages());
    }
    if (more && last != 0) {
      resp->set_next_page_token(
          EncodePageToken({absl::StrCat(req->conversation_id()), absl::StrCat(last)}));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::GetContext(grpc::CallbackServerContext* ctx,
                                                              const v1::GetContextRequest* req,
                                                              v1::GetContextResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckId("conversation_id", req->conversation_id()); !st.ok()) return st;
    if (req->max_tokens() < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
    // No model has a larger window: a bigger request is served as the largest.
    const int64_t max_tokens = std::min<int64_t>(req->max_tokens(), options_.max_context_tokens);
    auto window = store_->GetContext(caller->user_id, req->conversation_id(), max_tokens,
                                     options_.max_response_bytes);
    if (!window.ok()) return window.status();
    resp->set_system_prompt(window->conversation.system_prompt);
    resp->set_system_prompt_tokens(window->conversation.system_prompt_tokens);
    ToProto(window->conversation, resp->mutable_conversation());
    // Never above max_tokens except when the system prompt alone is larger.
    resp->set_token_count(static_cast<int32_t>(window->token_count));
    resp->set_truncated(window->truncated);
    for (auto& m : window->messages) ToProto(std::move(m), resp->add_messages());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* ConversationServiceImpl::RetractMessage(
    grpc::CallbackServerContext* ctx, const v1::RetractMessageRequest* req,
    v1::RetractMessageResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = Authorize(ctx);
    if (!caller.ok()) return caller.status();
    // Undoing a turn's user message is the ai-agent's step, as writing it was.
    if (!caller->is_service()) {
      return absl::PermissionDeniedError("only aichat services may retract messages");
    }
    if (auto st = CheckId("conversation_id", req->conversation_id()); !st.ok()) return st;
    if (auto st = CheckId("prompt_id", req->prompt_id()); !st.ok()) return st;
    auto removed =
        store_->RetractMessage(caller->user_id, req->conversation_id(), req->prompt_id());
    if (!removed.ok()) return removed.status();
    resp->set_removed(*removed);
    return absl::OkStatus();
  });
}

}  // namespace aichat::conversation
