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
#include "services/conversation/append_rate_limiter.h"
#include "services/conversation/conversation_checks.h"
#include "services/conversation/conversation_store.h"

namespace aichat::conversation {

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
  grpc::ServerUnaryReactor* RetractMessage(grpc::CallbackServerContext* ctx,
                                           const v1::RetractMessageRequest* req,
                                           v1::RetractMessageResponse* resp) override;

 private:
  // The user the call acts for; PERMISSION_DENIED for a service token that names none.
  absl::StatusOr<Caller> Authorize(grpc::CallbackServerContext* ctx) const;

  ConversationStore* store_;
  const Authenticator* auth_;
  WorkerPool* pool_;
  ConversationServiceOptions options_;
  AppendRateLimiter append_limiter_;  // USER appends by users
};

}  // namespace aichat::conversation
