// The two services a chat turn talks to, as small asynchronous interfaces in domain
// types: the turn never touches a generated stub (grpc_peers.cc does), and tests swap
// these for fakes. Every call returns at once; `done` runs exactly once, on a gRPC
// callback thread (or the caller's, for fakes), and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "common/money.h"

namespace grpc {
class CallbackServerContext;
}  // namespace grpc

namespace aichat::agent {

// Set (as a payload) on a peer's error when the peer could not be reached at all, as
// opposed to a peer that answered with an error (e.g. its own database is down).
inline constexpr char kPeerUnreachable[] = "type.aichat.dev/peer-unreachable";
inline bool IsPeerUnreachable(const absl::Status& s) {
  return s.GetPayload(kPeerUnreachable).has_value();
}

// Who a peer call acts for and how long it may take. With `parent` set, the call
// inherits the client's deadline and cancellation (the client hung up: the peer
// call is cancelled too); saves after the provider answered set no parent, so a
// client that leaves cannot stop them.
struct PeerCall {
  int64_t user_id = 0;
  absl::Time deadline = absl::InfiniteFuture();
  const grpc::CallbackServerContext* parent = nullptr;
};

enum class MessageRole { kUser, kAssistant, kSystem };

// The role as the chat APIs spell it ("user", "assistant", "system").
inline const char* RoleName(MessageRole r) {
  switch (r) {
    case MessageRole::kAssistant:
      return "assistant";
    case MessageRole::kSystem:
      return "system";
    case MessageRole::kUser:
      break;
  }
  return "user";
}

struct ContextMessage {
  int64_t id = 0;
  MessageRole role = MessageRole::kUser;
  std::string content;
  int32_t token_count = 0;
};

// One read of a conversation for a turn: its settings and its newest messages.
struct TurnContext {
  std::string model;  // the conversation's model; "" for the default
  std::string system_prompt;
  int32_t system_prompt_tokens = 0;
  std::vector<ContextMessage> messages;  // oldest first
  bool truncated = false;                // older messages were left out
};

struct NewTurnMessage {
  int64_t conversation_id = 0;
  MessageRole role = MessageRole::kUser;
  std::string content;
  std::optional<int32_t> token_count;
  int64_t prompt_id = 0;            // the append is idempotent on (prompt, role)
  int64_t replaces_message_id = 0;  // a regenerated answer replaces this one
};

// A conversation's own fields (the HTTP API's Conversations objects).
struct ConversationInfo {
  int64_t id = 0;
  std::string title;
  std::string model;
  std::string system_prompt;
  int64_t message_count = 0;
  absl::Time created_at;
  absl::Time updated_at;
};

struct NewConversation {
  std::string title;
  std::optional<std::string> model;
  std::optional<std::string> system_prompt;
};

// A stored message, as ListMessages returns it.
struct ConversationMessage {
  int64_t id = 0;
  MessageRole role = MessageRole::kUser;
  std::string content;
  int64_t prompt_id = 0;  // the turn that wrote it (answers) or consumed it; 0 for none
  int64_t position = 0;
  bool superseded = false;  // replaced by a regenerated answer
  absl::Time created_at;
};

struct MessagePage {
  std::vector<ConversationMessage> messages;  // oldest first
  std::string next_page_token;                // "" at the end
};

class ConversationPeer {
 public:
  virtual ~ConversationPeer() = default;
  // The conversation's settings and the newest messages within max_tokens.
  // NOT_FOUND for a conversation the user does not own.
  virtual void ReadContext(const PeerCall& call, int64_t conversation_id, int32_t max_tokens,
                           std::function<void(absl::StatusOr<TurnContext>)> done) = 0;
  // The new message's id; a retry of the same (prompt, role) returns the first one.
  virtual void Append(const PeerCall& call, const NewTurnMessage& message,
                      std::function<void(absl::StatusOr<int64_t>)> done) = 0;
  // Removes the user message of a prompt whose turn was refused. Idempotent.
  virtual void Retract(const PeerCall& call, int64_t conversation_id, int64_t prompt_id,
                       std::function<void(absl::Status)> done) = 0;

  // For the HTTP API's Conversations (services/ai-agent/http/), acting for
  // call.user_id. NOT_FOUND for a conversation the user does not own. Not pure, so
  // that fakes written before them still compile: they answer UNIMPLEMENTED.
  virtual void CreateConversation(const PeerCall& call, const NewConversation& conversation,
                                  std::function<void(absl::StatusOr<ConversationInfo>)> done);
  virtual void GetConversation(const PeerCall& call, int64_t conversation_id,
                               std::function<void(absl::StatusOr<ConversationInfo>)> done);
  virtual void DeleteConversation(const PeerCall& call, int64_t conversation_id,
                                  std::function<void(absl::Status)> done);
  // One page of messages, oldest first; page_size 1 to 500.
  virtual void ListMessages(const PeerCall& call, int64_t conversation_id, int32_t page_size,
                            const std::string& page_token,
                            std::function<void(absl::StatusOr<MessagePage>)> done);
};

// An access token for an API key (UserService.Login with api_key).
struct ApiKeyLogin {
  std::string access_token;  // never logged
  absl::Time expires_at;
};

// The user service, for the HTTP API's `Authorization: Bearer aik_…`.
class UserPeer {
 public:
  virtual ~UserPeer() = default;
  // UNAUTHENTICATED for an unknown or revoked key.
  virtual void LoginWithApiKey(const std::string& api_key, absl::Time deadline,
                               std::function<void(absl::StatusOr<ApiKeyLogin>)> done) = 0;
};

struct ReserveRequest {
  std::string event_id;
  int64_t max_cost_nanos = 0;
  int32_t requests_per_minute = 0;
};

struct ReserveDecision {
  bool allowed = false;
  bool rate_limited = false;  // refused by the request rate (else by the budget)
  std::string message;
  std::optional<absl::Time> retry_at;
};

// One turn's usage, as published to the ledger.
struct UsageRecord {
  std::string event_id;
  int64_t user_id = 0;
  int64_t conversation_id = 0;
  int64_t prompt_id = 0;
  std::string model;
  std::string provider_model;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  Prices prices;
  int64_t cost_nanos = 0;
  bool estimated = false;
  enum class Outcome { kCompleted = 1, kFailed = 2, kCancelled = 3 } outcome = Outcome::kCompleted;
  absl::Time occurred_at;
};

class UsagePeer {
 public:
  virtual ~UsagePeer() = default;
  virtual void Reserve(const PeerCall& call, const ReserveRequest& request,
                       std::function<void(absl::StatusOr<ReserveDecision>)> done) = 0;
  // Fire and forget: an unreleased reservation expires on its own.
  virtual void Release(const std::string& event_id) = 0;
  // Records the events in one call; `recorded[i]` is false for a duplicate.
  virtual void Record(std::vector<UsageRecord> events, absl::Time deadline,
                      std::function<void(absl::StatusOr<std::vector<bool>>)> done) = 0;
};

// The usage event's wire form (what the outbox stores) and back.
std::string EncodeUsageRecord(const UsageRecord& record);
std::optional<UsageRecord> DecodeUsageRecord(const std::string& bytes);

}  // namespace aichat::agent
