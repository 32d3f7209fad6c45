// The AiAgentService gRPC handlers: chat turns (unary and streaming reactors over
// Turn), prompts, and model configuration.
#pragma once

#include "aichat/agent/v1/agent.grpc.pb.h"
#include "common/auth.h"
#include "services/ai-agent/turn.h"

namespace aichat::agent {

class AgentServiceImpl final : public v1::AiAgentService::CallbackService {
 public:
  AgentServiceImpl(TurnDeps* deps, const Authenticator* auth) : deps_(deps), auth_(auth) {}

  grpc::ServerUnaryReactor* SendMessage(grpc::CallbackServerContext* ctx,
                                        const v1::SendMessageRequest* req,
                                        v1::TurnResult* resp) override;
  grpc::ServerWriteReactor<v1::TurnEvent>* StreamMessage(
      grpc::CallbackServerContext* ctx, const v1::SendMessageRequest* req) override;
  grpc::ServerWriteReactor<v1::TurnEvent>* RegenerateResponse(
      grpc::CallbackServerContext* ctx, const v1::RegenerateResponseRequest* req) override;
  grpc::ServerUnaryReactor* GetPrompt(grpc::CallbackServerContext* ctx,
                                      const v1::GetPromptRequest* req, v1::Prompt* resp) override;
  grpc::ServerUnaryReactor* ListPrompts(grpc::CallbackServerContext* ctx,
                                        const v1::ListPromptsRequest* req,
                                        v1::ListPromptsResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const v1::ListModelsRequest* req,
                                       v1::ListModelsResponse* resp) override;
  grpc::ServerUnaryReactor* UpsertModel(grpc::CallbackServerContext* ctx,
                                        const v1::UpsertModelRequest* req,
                                        v1::ModelConfig* resp) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* ctx,
                                        const v1::DeleteModelRequest* req,
                                        v1::DeleteModelResponse* resp) override;

 private:
  TurnDeps* deps_;
  const Authenticator* auth_;
};

}  // namespace aichat::agent
