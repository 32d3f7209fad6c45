#include "services/ai-agent/grpc_peers.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "common/auth.h"
#include "common/log.h"
#include "common/proto_time.h"
#include "common/status.h"

namespace aichat::agent {
namespace {

namespace cv1 = conversation::v1;
namespace uv1 = usage::v1;

// A peer's failure, named after the peer so operators know where to look. The
// transport's own failures (no answer at all) carry kPeerUnreachable.
absl::Status PeerError(const char* peer, const grpc::Status& st) {
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      // Our services answer "database unavailable" when their PostgreSQL is down;
      // anything else is gRPC's own word that the peer could not be reached.
      if (st.error_message() == "database unavailable") {
        return absl::UnavailableError(absl::StrCat(peer, " service unavailable"));
      }
      [[fallthrough]];
    case grpc::StatusCode::DEADLINE_EXCEEDED: {
      absl::Status s = absl::UnavailableError(absl::StrCat(peer, " service unavailable"));
      s.SetPayload(kPeerUnreachable, absl::Cord());
      return s;
    }
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::UnavailableError(absl::StrCat(peer, " service unavailable"));
    default:
      return FromGrpcStatus(st);
  }
}

// Request, response and context of one call, alive until its callback has run.
template <typename Req, typename Resp>
struct Call {
  std::unique_ptr<grpc::ClientContext> ctx;
  Req req;
  Resp resp;
};

std::unique_ptr<grpc::ClientContext> NewContext(const PeerCall& call, const GrpcPeerOptions& o) {
  std::unique_ptr<grpc::ClientContext> ctx =
      call.parent != nullptr ? grpc::ClientContext::FromCallbackServerContext(*call.parent)
                             : std::make_unique<grpc::ClientContext>();
  // With a parent, gRPC keeps the earlier of this and the client's deadline.
  ctx->set_deadline(absl::ToChronoTime(std::min(call.deadline, absl::Now() + o.call_timeout)));
  ctx->AddMetadata("authorization", absl::StrCat("Bearer ", o.service_token));
  if (call.user_id > 0) ctx->AddMetadata(kActingUserHeader, absl::StrCat(call.user_id));
  return ctx;
}

MessageRole FromProto(cv1::MessageRole r) {
  switch (r) {
    case cv1::MESSAGE_ROLE_ASSISTANT:
      return MessageRole::kAssistant;
    case cv1::MESSAGE_ROLE_SYSTEM:
      return MessageRole::kSystem;
    default:
      return MessageRole::kUser;
  }
}

cv1::MessageRole ToProto(MessageRole r) {
  switch (r) {
    case MessageRole::kAssistant:
      return cv1::MESSAGE_ROLE_ASSISTANT;
    case MessageRole::kSystem:
      return cv1::MESSAGE_ROLE_SYSTEM;
    case MessageRole::kUser:
      break;
  }
  return cv1::MESSAGE_ROLE_USER;
}

class GrpcConversationPeer final : public ConversationPeer {
 public:
  GrpcConversationPeer(std::shared_ptr<grpc::Channel> channel, GrpcPeerOptions options)
      : stub_(cv1::ConversationService::NewStub(std::move(channel))),
        options_(std::move(options)) {}

  void ReadContext(const PeerCall& call, int64_t conversation_id, int32_t max_tokens,
                   std::function<void(absl::StatusOr<TurnContext>)> done) override {
    auto* c = new Call<cv1::GetContextRequest, cv1::GetContextResponse>;
    c->ctx = Ready(call);
    c->req.set_conversation_id(conversation_id);
    c->req.set_max_tokens(max_tokens);
    stub_->async()->GetContext(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          if (!st.ok()) return done(PeerError("conversation", st));
          TurnContext out;
          cv1::GetContextResponse& r = c->resp;
          out.model = std::move(*r.mutable_conversation()->mutable_model());
          out.system_prompt = std::move(*r.mutable_system_prompt());
          out.system_prompt_tokens = r.system_prompt_tokens();
          out.truncated = r.truncated();
          out.messages.reserve(r.messages_size());
          for (auto& m : *r.mutable_messages()) {
            out.messages.push_back(
                {m.id(), FromProto(m.role()), std::move(*m.mutable_content()), m.token_count()});
          }
          done(std::move(out));
        });
  }

  void Append(const PeerCall& call, const NewTurnMessage& m,
              std::function<void(absl::StatusOr<int64_t>)> done) override {
    auto* c = new Call<cv1::AppendMessageRequest, cv1::Message>;
    c->ctx = Ready(call);
    c->req.set_conversation_id(m.conversation_id);
    c->req.set_role(ToProto(m.role));
    c->req.set_content(m.content);
    if (m.token_count.has_value()) c->req.set_token_count(*m.token_count);
    if (m.prompt_id > 0) c->req.set_prompt_id(m.prompt_id);
    if (m.replaces_message_id > 0) c->req.set_replaces_message_id(m.replaces_message_id);
    stub_->async()->AppendMessage(c->ctx.get(), &c->req, &c->resp,
                                  [c, done = std::move(done)](grpc::Status st) {
                                    std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
                                    if (!st.ok()) return done(PeerError("conversation", st));
                                    done(c->resp.id());
                                  });
  }

  void Retract(const PeerCall& call, int64_t conversation_id, int64_t prompt_id,
               std::function<void(absl::Status)> done) override {
    auto* c = new Call<cv1::RetractMessageRequest, cv1::RetractMessageResponse>;
    c->ctx = Ready(call);
    c->req.set_conversation_id(conversation_id);
    c->req.set_prompt_id(prompt_id);
    stub_->async()->RetractMessage(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          done(st.ok() ? absl::OkStatus() : PeerError("conversation", st));
        });
  }

  void CreateConversation(const PeerCall& call, const NewConversation& conversation,
                          std::function<void(absl::StatusOr<ConversationInfo>)> done) override {
    auto* c = new Call<cv1::CreateConversationRequest, cv1::Conversation>;
    c->ctx = Ready(call);
    c->req.set_title(conversation.title);
    if (conversation.model.has_value()) c->req.set_model(*conversation.model);
    if (conversation.system_prompt.has_value()) {
      c->req.set_system_prompt(*conversation.system_prompt);
    }
    stub_->async()->CreateConversation(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          if (!st.ok()) return done(PeerError("conversation", st));
          done(InfoFromProto(std::move(c->resp)));
        });
  }

  void GetConversation(const PeerCall& call, int64_t conversation_id,
                       std::function<void(absl::StatusOr<ConversationInfo>)> done) override {
    auto* c = new Call<cv1::GetConversationRequest, cv1::Conversation>;
    c->ctx = Ready(call);
    c->req.set_id(conversation_id);
    stub_->async()->GetConversation(c->ctx.get(), &c->req, &c->resp,
                                    [c, done = std::move(done)](grpc::Status st) {
                                      std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
                                      if (!st.ok()) return done(PeerError("conversation", st));
                                      done(InfoFromProto(std::move(c->resp)));
                                    });
  }

  void DeleteConversation(const PeerCall& call, int64_t conversation_id,
                          std::function<void(absl::Status)> done) override {
    auto* c = new Call<cv1::DeleteConversationRequest, cv1::DeleteConversationResponse>;
    c->ctx = Ready(call);
    c->req.set_id(conversation_id);
    stub_->async()->DeleteConversation(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          done(st.ok() ? absl::OkStatus() : PeerError("conversation", st));
        });
  }

  void ListMessages(const PeerCall& call, int64_t conversation_id, int32_t page_size,
                    const std::string& page_token,
                    std::function<void(absl::StatusOr<MessagePage>)> done) override {
    auto* c = new Call<cv1::ListMessagesRequest, cv1::ListMessagesResponse>;
    c->ctx = Ready(call);
    c->req.set_conversation_id(conversation_id);
    c->req.set_page_size(page_size);
    c->req.set_page_token(page_token);
    stub_->async()->ListMessages(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          if (!st.ok()) return done(PeerError("conversation", st));
          MessagePage page;
          page.messages.reserve(c->resp.messages_size());
          for (auto& m : *c->resp.mutable_messages()) {
            page.messages.push_back({m.id(), FromProto(m.role()), std::move(*m.mutable_content()),
                                     m.prompt_id(), m.position(), m.superseded(),
                                     aichat::FromProto(m.created_at())});
          }
          page.next_page_token = std::move(*c->resp.mutable_next_page_token());
          done(std::move(page));
        });
  }

 private:
  static ConversationInfo InfoFromProto(cv1::Conversation&& p) {
    ConversationInfo info;
    info.id = p.id();
    info.title = std::move(*p.mutable_title());
    info.model = std::move(*p.mutable_model());
    info.system_prompt = std::move(*p.mutable_system_prompt());
    info.message_count = p.message_count();
    info.created_at = aichat::FromProto(p.created_at());
    info.updated_at = aichat::FromProto(p.updated_at());
    return info;
  }

  // A conversation replica that just restarted is reconnected to within the
  // deadline instead of failing at once while the channel is in backoff.
  std::unique_ptr<grpc::ClientContext> Ready(const PeerCall& call) {
    auto ctx = NewContext(call, options_);
    ctx->set_wait_for_ready(true);
    return ctx;
  }

  std::unique_ptr<cv1::ConversationService::Stub> stub_;
  GrpcPeerOptions options_;
};

void ToProto(const UsageRecord& r, uv1::UsageEvent* e) {
  e->set_event_id(r.event_id);
  e->set_user_id(r.user_id);
  e->set_conversation_id(r.conversation_id);
  e->set_prompt_id(r.prompt_id);
  e->set_model(r.model);
  e->set_provider_model(r.provider_model);
  e->set_prompt_tokens(r.prompt_tokens);
  e->set_completion_tokens(r.completion_tokens);
  e->set_cached_tokens(r.cached_tokens);
  e->set_input_price_micros_per_mtok(r.prices.input_micros_per_mtok);
  e->set_cached_input_price_micros_per_mtok(r.prices.cached_input_micros_per_mtok);
  e->set_output_price_micros_per_mtok(r.prices.output_micros_per_mtok);
  e->set_cost_nanos(r.cost_nanos);
  e->set_estimated(r.estimated);
  e->set_outcome(static_cast<uv1::Outcome>(static_cast<int>(r.outcome)));
  aichat::ToProto(r.occurred_at, e->mutable_occurred_at());
}

class GrpcUsagePeer final : public UsagePeer {
 public:
  GrpcUsagePeer(std::shared_ptr<grpc::Channel> channel, GrpcPeerOptions options)
      : stub_(uv1::UsageService::NewStub(std::move(channel))), options_(std::move(options)) {}

  void Reserve(const PeerCall& call, const ReserveRequest& request,
               std::function<void(absl::StatusOr<ReserveDecision>)> done) override {
    auto* c = new Call<uv1::ReserveBudgetRequest, uv1::ReserveBudgetResponse>;
    // No wait_for_ready: usage down must read "unreachable" now, not at the deadline.
    c->ctx = NewContext(call, options_);
    c->req.set_user_id(call.user_id);
    c->req.set_event_id(request.event_id);
    c->req.set_max_cost_nanos(request.max_cost_nanos);
    c->req.set_requests_per_minute(request.requests_per_minute);
    stub_->async()->ReserveBudget(
        c->ctx.get(), &c->req, &c->resp, [c, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          if (!st.ok()) return done(PeerError("usage", st));
          ReserveDecision d;
          d.allowed = c->resp.allowed();
          d.rate_limited = c->resp.reason() == uv1::REFUSAL_REASON_RATE_LIMITED;
          d.message = std::move(*c->resp.mutable_message());
          if (c->resp.has_retry_at()) d.retry_at = aichat::FromProto(c->resp.retry_at());
          done(std::move(d));
        });
  }

  void Release(const std::string& event_id) override {
    auto* c = new Call<uv1::ReleaseBudgetRequest, uv1::ReleaseBudgetResponse>;
    c->ctx = NewContext(PeerCall{}, options_);
    c->req.set_event_id(event_id);
    stub_->async()->ReleaseBudget(c->ctx.get(), &c->req, &c->resp, [c](grpc::Status) {
      delete c;  // a reservation left behind expires (usage's TTL)
    });
  }

  void Record(std::vector<UsageRecord> events, absl::Time deadline,
              std::function<void(absl::StatusOr<std::vector<bool>>)> done) override {
    auto* c = new Call<uv1::RecordUsageBatchRequest, uv1::RecordUsageBatchResponse>;
    c->ctx = NewContext(PeerCall{.deadline = deadline}, options_);
    for (const auto& e : events) ToProto(e, c->req.add_events());
    const size_t n = events.size();
    stub_->async()->RecordUsageBatch(
        c->ctx.get(), &c->req, &c->resp, [c, n, done = std::move(done)](grpc::Status st) {
          std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
          if (!st.ok()) return done(PeerError("usage", st));
          if (static_cast<size_t>(c->resp.recorded_size()) != n) {
            return done(absl::UnavailableError("usage service answered a batch of another size"));
          }
          done(std::vector<bool>(c->resp.recorded().begin(), c->resp.recorded().end()));
        });
  }

 private:
  std::unique_ptr<uv1::UsageService::Stub> stub_;
  GrpcPeerOptions options_;
};

class GrpcUserPeer final : public UserPeer {
 public:
  explicit GrpcUserPeer(std::shared_ptr<grpc::Channel> channel)
      : stub_(user::v1::UserService::NewStub(std::move(channel))) {}

  void LoginWithApiKey(const std::string& api_key, absl::Time deadline,
                       std::function<void(absl::StatusOr<ApiKeyLogin>)> done) override {
    auto* c = new Call<user::v1::LoginRequest, user::v1::LoginResponse>;
    // Login takes no token: the key is the credential.
    c->ctx = std::make_unique<grpc::ClientContext>();
    c->ctx->set_deadline(absl::ToChronoTime(deadline));
    c->ctx->set_wait_for_ready(true);
    c->req.set_api_key(api_key);
    stub_->async()->Login(c->ctx.get(), &c->req, &c->resp,
                          [c, done = std::move(done)](grpc::Status st) {
                            std::unique_ptr<std::remove_pointer_t<decltype(c)>> owned(c);
                            if (!st.ok()) {
                              // UNAUTHENTICATED (a bad key) and RESOURCE_EXHAUSTED (the
                              // login throttle) are the caller's to hear as they are.
                              if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                                  st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                                  st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
                                return done(FromGrpcStatus(st));
                              }
                              return done(PeerError("user", st));
                            }
                            ApiKeyLogin login;
                            login.access_token = std::move(*c->resp.mutable_access_token());
                            login.expires_at = aichat::FromProto(c->resp.expires_at());
                            done(std::move(login));
                          });
  }

 private:
  std::unique_ptr<user::v1::UserService::Stub> stub_;
};

}  // namespace

// The HTTP API's conversation calls, for fakes that predate them.
void ConversationPeer::CreateConversation(
    const PeerCall&, const NewConversation&,
    std::function<void(absl::StatusOr<ConversationInfo>)> done) {
  done(absl::UnimplementedError("CreateConversation is not implemented by this peer"));
}
void ConversationPeer::GetConversation(const PeerCall&, int64_t,
                                       std::function<void(absl::StatusOr<ConversationInfo>)> done) {
  done(absl::UnimplementedError("GetConversation is not implemented by this peer"));
}
void ConversationPeer::DeleteConversation(const PeerCall&, int64_t,
                                          std::function<void(absl::Status)> done) {
  done(absl::UnimplementedError("DeleteConversation is not implemented by this peer"));
}
void ConversationPeer::ListMessages(const PeerCall&, int64_t, int32_t, const std::string&,
                                    std::function<void(absl::StatusOr<MessagePage>)> done) {
  done(absl::UnimplementedError("ListMessages is not implemented by this peer"));
}

std::string EncodeUsageRecord(const UsageRecord& record) {
  uv1::UsageEvent e;
  ToProto(record, &e);
  return e.SerializeAsString();
}

std::optional<UsageRecord> DecodeUsageRecord(const std::string& bytes) {
  uv1::UsageEvent e;
  if (!e.ParseFromString(bytes)) return std::nullopt;
  UsageRecord r;
  r.event_id = e.event_id();
  r.user_id = e.user_id();
  r.conversation_id = e.conversation_id();
  r.prompt_id = e.prompt_id();
  r.model = e.model();
  r.provider_model = e.provider_model();
  r.prompt_tokens = e.prompt_tokens();
  r.completion_tokens = e.completion_tokens();
  r.cached_tokens = e.cached_tokens();
  r.prices = {e.input_price_micros_per_mtok(), e.cached_input_price_micros_per_mtok(),
              e.output_price_micros_per_mtok()};
  r.cost_nanos = e.cost_nanos();
  r.estimated = e.estimated();
  r.outcome = static_cast<UsageRecord::Outcome>(static_cast<int>(e.outcome()));
  r.occurred_at = aichat::FromProto(e.occurred_at());
  return r;
}

std::unique_ptr<ConversationPeer> MakeGrpcConversationPeer(std::shared_ptr<grpc::Channel> channel,
                                                           GrpcPeerOptions options) {
  return std::make_unique<GrpcConversationPeer>(std::move(channel), std::move(options));
}

std::unique_ptr<UsagePeer> MakeGrpcUsagePeer(std::shared_ptr<grpc::Channel> channel,
                                             GrpcPeerOptions options) {
  return std::make_unique<GrpcUsagePeer>(std::move(channel), std::move(options));
}

std::unique_ptr<UserPeer> MakeGrpcUserPeer(std::shared_ptr<grpc::Channel> channel) {
  return std::make_unique<GrpcUserPeer>(std::move(channel));
}

}  // namespace aichat::agent
