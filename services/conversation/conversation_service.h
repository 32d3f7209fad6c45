// The ConversationService gRPC handlers: authenticate, validate, call the store,
// map to protos. Every data RPC acts for one user: the caller, or the user a
// service caller names in x-aichat-user-id.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "common/auth.h"
#include "common/worker_pool.h"
#include "services/conversation/conversation_store.h"

namespace aichat::conversation {

struct ConversationServiceOptions {
  size_t max_title_chars = 200;
  size_t max_model_chars = 100;
  size_t max_system_prompt_bytes = 32 * 1024;
  size_t max_content_bytes = 256 * 1024;
  // Message contents (and system prompts) per response stay under this, so a
  // page never exceeds the gRPC message limit: pages end early, GetContext
  // leaves older messages out (truncated).
  size_t max_response_bytes = 3 * 1024 * 1024;
};

// The largest token_count a caller may give for one message.
inline constexpr int32_t kMaxMessageTokens = 10'000'000;
// Tokens added to every estimate for the chat format's per-message framing.
inline constexpr int32_t kEstimateOverheadTokens = 4;

// The token estimate used when no tokenizer count is given: one token per 4 ASCII
// bytes (rounded up) plus one per non-ASCII code point, plus the per-message
// overhead; 0 for empty text. It errs high for accented and CJK text (where
// tokenizers spend about one token per character), so a context built from
// estimates does not overflow the model's window.
int32_t EstimateTokens(std::string_view text);

class ConversationServiceImpl final : public v1::ConversationService::CallbackService {
 public:
  ConversationServiceImpl(ConversationStore* store, const Authenticator* auth, WorkerPool* pool,
                          ConversationServiceOptions options);

  grpc::ServerUnaryReactor* CreateConversation(grpc::CallbackServerContext* ctx,
                                               const v1::CreateConversationRequest* req,
                                               v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* GetConversation(grpc::CallbackServerContext* ctx,
                                            const v1::GetConversationRequest* req,
                                            v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* ListConversations(grpc::CallbackServerContext* ctx,
                                              const v1::ListConversationsRequest* req,
                                              v1::ListConversationsResponse* resp) override;
  grpc::ServerUnaryReactor* UpdateConversation(grpc::CallbackServerContext* ctx,
                                               const v1::UpdateConversationRequest* req,
                                               v1::Conversation* resp) override;
  grpc::ServerUnaryReactor* DeleteConversation(grpc::CallbackServerContext* ctx,
                                               const v1::DeleteConversationRequest* req,
                                               v1::DeleteConversationResponse* resp) override;
  grpc::ServerUnaryReactor* AppendMessage(grpc::CallbackServerContext* ctx,
                                          const v1::AppendMessageRequest* req,
                                          v1::Message* resp) override;
  grpc::ServerUnaryReactor* ListMessages(grpc::CallbackServerContext* ctx,
                                         const v1::ListMessagesRequest* req,
                                         v1::ListMessagesResponse* resp) override;
  grpc::ServerUnaryReactor* GetContext(grpc::CallbackServerContext* ctx,
                                       const v1::GetContextRequest* req,
                                       v1::GetContextResponse* resp) override;

 private:
  // The user the call acts for; PERMISSION_DENIED for a service token that names none.
  absl::StatusOr<Caller> Authorize(grpc::CallbackServerContext* ctx) const;
  absl::Status CheckTitle(std::string_view title) const;
  absl::Status CheckModel(std::string_view model) const;
  absl::Status CheckSystemPrompt(std::string_view prompt) const;

  ConversationStore* store_;
  const Authenticator* auth_;
  WorkerPool* pool_;
  ConversationServiceOptions options_;
};

}  // namespace aichat::conversation
