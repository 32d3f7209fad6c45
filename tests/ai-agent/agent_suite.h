// The ai-agent with its real peers in one process: conversation and usage
// services on their own PostgreSQL databases, the agent on a third, the fake
// LLM provider over real TLS. Tokens are minted with the suite's test keys.
#pragma once

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "aichat/agent/v1/agent.grpc.pb.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/pg.h"
#include "common/server.h"
#include "common/worker_pool.h"
#include "services/ai-agent/agent_metrics.h"
#include "services/ai-agent/agent_service.h"
#include "services/ai-agent/grpc_peers.h"
#include "services/ai-agent/janitor.h"
#include "services/ai-agent/model_registry.h"
#include "services/ai-agent/outbox_publisher.h"
#include "services/ai-agent/pg_agent_store.h"
#include "services/conversation/conversation_service.h"
#include "services/conversation/pg_conversation_store.h"
#include "services/usage/pg_usage_store.h"
#include "services/usage/usage_service.h"
#include "tests/fakes/fake_llm_server.h"
#include "tests/testing/helpers.h"

namespace aichat::agent {

inline constexpr char kApiKey[] = "sk-test-NEVER-LOG-THIS-9f3a";

class AgentSuite : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Services that tests stop and start again (same port).
  void StopUsage();
  void StartUsage();
  void StopConversation();

  std::string UserToken(int64_t user_id, int32_t rpm = 100000) const {
    return keys_.Token(user_id, Role::kUser, rpm, absl::Minutes(10));
  }
  std::string AdminToken(int64_t user_id) const {
    return keys_.Token(user_id, Role::kAdmin, 100000, absl::Minutes(10));
  }
  // A conversation of `user_id`, made through the conversation service.
  int64_t NewConversation(int64_t user_id, const std::string& system_prompt = "");

  // Every `data:` payload of the provider requests, parsed (messages, model...).
  std::vector<std::string> ProviderBodies() const;

  int64_t Count(PgPool& pool, const std::string& sql, const std::vector<PgArg>& args = {});

  // The suite's parts.
  testing::TestKeys keys_;
  std::unique_ptr<fakes::FakeLlmServer> fake_;
  prometheus::Registry registry_;
  std::unique_ptr<WorkerPool> workers_;

  std::unique_ptr<PgPool> conv_pool_;
  std::unique_ptr<conversation::PgConversationStore> conv_store_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<conversation::ConversationServiceImpl> conv_service_;
  std::unique_ptr<ServiceServer> conv_server_;
  int conv_port_ = 0;

  std::unique_ptr<PgPool> usage_pool_;
  std::unique_ptr<usage::PgUsageStore> usage_store_;
  std::unique_ptr<usage::UsageServiceImpl> usage_service_;
  std::unique_ptr<ServiceServer> usage_server_;
  int usage_port_ = 0;

  std::unique_ptr<PgPool> agent_pool_;
  std::unique_ptr<PgAgentStore> agent_store_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<LlmClient> llm_;
  std::unique_ptr<ConversationPeer> conv_peer_;
  std::unique_ptr<UsagePeer> usage_peer_;
  std::unique_ptr<PromptIds> prompt_ids_;
  RunningTurns running_;
  Router router_;
  std::unique_ptr<AgentMetrics> metrics_;
  std::unique_ptr<OutboxPublisher> outbox_;
  TurnDeps deps_;
  std::unique_ptr<Janitor> janitor_;
  std::unique_ptr<AgentServiceImpl> agent_service_;
  std::unique_ptr<ServiceServer> agent_server_;

  // Client stubs, as a user would hold them.
  std::unique_ptr<v1::AiAgentService::Stub> agent_;
  std::unique_ptr<conversation::v1::ConversationService::Stub> conversations_;
  std::unique_ptr<usage::v1::UsageService::Stub> usage_;
};

}  // namespace aichat::agent
