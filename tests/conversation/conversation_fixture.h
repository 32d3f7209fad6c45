// An in-process ConversationService on a loopback port over a fresh PostgreSQL
// database, with call helpers. Shared by the conversation test binaries.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"
#include "services/conversation/conversation_service.h"
#include "services/conversation/migrations.h"
#include "services/conversation/pg_conversation_store.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace aichat::conversation {

class ConversationFixture : public ::testing::Test {
 protected:
  static constexpr int64_t kAlice = 101;
  static constexpr int64_t kBob = 202;

  // The defaults, but no append rate: tests append faster than users may.
  // Tests of the rate set their own.
  virtual ConversationServiceOptions Options() const {
    ConversationServiceOptions o;
    o.append_rate_per_minute = 0;
    return o;
  }

  void SetUp() override {
    PgPoolOptions opts;
    opts.url = aichat::testing::TestPostgres::Shared().CreateDatabase();
    opts.size = 8;
    pool_ = std::make_unique<PgPool>(opts);
    ASSERT_TRUE(ApplyMigrations(*pool_, Migrations()).ok());
    store_ = std::make_unique<PgConversationStore>(pool_.get());
    auth_ = std::make_unique<Authenticator>(keys_.MakeAuthenticator());
    workers_ = std::make_unique<WorkerPool>(8);
    service_ = std::make_unique<ConversationServiceImpl>(store_.get(), auth_.get(), workers_.get(),
                                                         Options());
    server_ = std::make_unique<ServiceServer>(
        ServerOptions{.name = "conversation", .listen = "127.0.0.1:0", .metrics_listen = ""});
    server_->AddService(service_.get());
    ASSERT_TRUE(server_->Start().ok());
    stub_ = v1::ConversationService::NewStub(aichat::testing::LocalChannel(server_->port()));
    alice_ = keys_.Token(kAlice);
    bob_ = keys_.Token(kBob);
    service_token_ = keys_.ServiceToken();
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // A client context carrying `token` (and x-aichat-user-id when acting > 0).
  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token, int64_t acting = 0) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) aichat::testing::Authorize(*ctx, token, acting);
    aichat::testing::SetDeadline(*ctx, absl::Seconds(30));
    return ctx;
  }

  v1::Conversation MustCreate(const std::string& token, const std::string& title,
                              std::optional<std::string> system_prompt = std::nullopt) {
    v1::CreateConversationRequest req;
    req.set_title(title);
    if (system_prompt) req.set_system_prompt(*system_prompt);
    v1::Conversation out;
    auto st = stub_->CreateConversation(Ctx(token).get(), req, &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  grpc::Status Append(const std::string& token, int64_t acting, int64_t conversation_id,
                      v1::MessageRole role, const std::string& content,
                      std::optional<int32_t> tokens, v1::Message* out,
                      std::optional<int64_t> replaces = std::nullopt) {
    v1::AppendMessageRequest req;
    req.set_conversation_id(conversation_id);
    req.set_role(role);
    req.set_content(content);
    if (tokens) req.set_token_count(*tokens);
    if (replaces) req.set_replaces_message_id(*replaces);
    return stub_->AppendMessage(Ctx(token, acting).get(), req, out);
  }

  // A USER message from the owner's own token; with a token count it comes from
  // the service token acting for the owner (only services may set counts).
  v1::Message MustAppend(const std::string& token, int64_t conversation_id,
                         const std::string& content, std::optional<int32_t> tokens = std::nullopt) {
    v1::Message out;
    const bool counted = tokens.has_value();
    const int64_t acting = counted ? (token == bob_ ? kBob : kAlice) : 0;
    auto st = Append(counted ? service_token_ : token, acting, conversation_id,
                     v1::MESSAGE_ROLE_USER, content, tokens, &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  // An ASSISTANT message from the ai-agent's service token acting for `user`.
  v1::Message MustAppendAssistant(int64_t user, int64_t conversation_id, const std::string& content,
                                  std::optional<int32_t> tokens,
                                  std::optional<int64_t> replaces = std::nullopt) {
    v1::Message out;
    auto st = Append(service_token_, user, conversation_id, v1::MESSAGE_ROLE_ASSISTANT, content,
                     tokens, &out, replaces);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  grpc::Status Context(const std::string& token, int64_t conversation_id, int32_t max_tokens,
                       v1::GetContextResponse* out, int64_t acting = 0) {
    v1::GetContextRequest req;
    req.set_conversation_id(conversation_id);
    req.set_max_tokens(max_tokens);
    return stub_->GetContext(Ctx(token, acting).get(), req, out);
  }

  grpc::Status ListMessages(const std::string& token, int64_t conversation_id, int32_t page_size,
                            const std::string& page_token, v1::ListMessagesResponse* out) {
    v1::ListMessagesRequest req;
    req.set_conversation_id(conversation_id);
    req.set_page_size(page_size);
    req.set_page_token(page_token);
    return stub_->ListMessages(Ctx(token).get(), req, out);
  }

  int64_t Count(const std::string& table) {
    return pool_->Exec("SELECT count(*) FROM " + table)->Int(0, 0);
  }

  aichat::testing::TestKeys keys_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgConversationStore> store_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<ConversationServiceImpl> service_;
  std::unique_ptr<ServiceServer> server_;
  std::unique_ptr<v1::ConversationService::Stub> stub_;
  std::string alice_;
  std::string bob_;
  std::string service_token_;
};

}  // namespace aichat::conversation
