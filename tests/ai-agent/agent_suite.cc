#include "tests/ai-agent/agent_suite.h"

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/migrations.h"
#include "services/ai-agent/migrations.h"
#include "services/conversation/migrations.h"
#include "services/usage/migrations.h"
#include "tests/testing/postgres.h"

namespace aichat::agent {
namespace {

std::unique_ptr<PgPool> NewDatabase(const std::vector<Migration>& migrations) {
  PgPoolOptions opts;
  opts.url = testing::TestPostgres::Shared().CreateDatabase();
  opts.size = 8;
  auto pool = std::make_unique<PgPool>(opts);
  EXPECT_TRUE(ApplyMigrations(*pool, migrations).ok());
  return pool;
}

}  // namespace

void AgentSuite::SetUp() {
  auto fake = fakes::FakeLlmServer::Start({.api_key = kApiKey});
  ASSERT_TRUE(fake.ok()) << fake.status();
  fake_ = *std::move(fake);
  workers_ = std::make_unique<WorkerPool>(16);
  auth_ = std::make_unique<Authenticator>(keys_.MakeAuthenticator());

  conv_pool_ = NewDatabase(conversation::Migrations());
  conv_store_ = std::make_unique<conversation::PgConversationStore>(conv_pool_.get());
  conv_service_ = std::make_unique<conversation::ConversationServiceImpl>(
      conv_store_.get(), auth_.get(), workers_.get(), conversation::ConversationServiceOptions{});
  conv_server_ = std::make_unique<ServiceServer>(
      ServerOptions{.name = "conversation", .listen = "127.0.0.1:0", .metrics_listen = ""});
  conv_server_->AddService(conv_service_.get());
  ASSERT_TRUE(conv_server_->Start().ok());
  conv_port_ = conv_server_->port();

  usage_pool_ = NewDatabase(usage::Migrations());
  usage_store_ =
      std::make_unique<usage::PgUsageStore>(usage_pool_.get(), usage::PgUsageStoreOptions{});
  usage_service_ = std::make_unique<usage::UsageServiceImpl>(
      usage_store_.get(), auth_.get(), workers_.get(), registry_, [] { return absl::Now(); });
  StartUsage();

  agent_pool_ = NewDatabase(Migrations());
  agent_store_ = std::make_unique<PgAgentStore>(agent_pool_.get());
  models_ = std::make_unique<ModelRegistry>(agent_store_.get(), workers_.get());
  ASSERT_TRUE(models_->Load().ok());
  HttpLlmClientOptions lopts;
  lopts.ca_pem = fake_->ca_pem();
  lopts.https_proxy = "";
  lopts.http_proxy = "";
  llm_ = MakeHttpLlmClient(lopts);
  GrpcPeerOptions popts{.service_token = keys_.ServiceToken(), .call_timeout = absl::Seconds(2)};
  conv_peer_ = MakeGrpcConversationPeer(testing::LocalChannel(conv_port_), popts);
  auto usage_channel = testing::LocalChannel(usage_port_);
  usage_peer_ = MakeGrpcUsagePeer(usage_channel, popts);
  prompt_ids_ = std::make_unique<PromptIds>(agent_store_.get(), workers_.get());
  metrics_ = std::make_unique<AgentMetrics>(registry_);
  OutboxPublisherOptions oopts;
  oopts.backoff_initial = absl::Milliseconds(1);
  oopts.backoff_max = absl::Milliseconds(5);
  oopts.call_timeout = absl::Seconds(2);
  outbox_ =
      std::make_unique<OutboxPublisher>(agent_store_.get(), usage_peer_.get(), oopts, nullptr);

  deps_.store = agent_store_.get();
  deps_.models = models_.get();
  deps_.llm = llm_.get();
  deps_.workers = workers_.get();
  deps_.conversation = conv_peer_.get();
  deps_.usage = usage_peer_.get();
  deps_.prompt_ids = prompt_ids_.get();
  deps_.running = &running_;
  deps_.router = &router_;
  deps_.metrics = metrics_.get();
  deps_.replica = "test-replica";
  deps_.publish = [this](int64_t id, UsageRecord r) { outbox_->Publish(id, std::move(r)); };
  deps_.answer_saved = [this](SavedAnswer s) { outbox_->AnswerSaved(s); };
  deps_.options.default_base_url = fake_->base_url();
  deps_.options.peer_timeout = absl::Seconds(2);
  deps_.options.stall_timeout = absl::Seconds(2);
  deps_.options.retry.initial_backoff = absl::Milliseconds(10);
  deps_.options.retry.max_backoff = absl::Milliseconds(50);
  deps_.options.api_key = [](const std::string& env) {
    return env == "OPENAI_API_KEY" ? std::string(kApiKey) : std::string();
  };
  janitor_ = std::make_unique<Janitor>(&deps_, JanitorOptions{});
  ASSERT_TRUE(agent_store_->RenewLease(deps_.replica, absl::Minutes(10)).ok());
  agent_service_ = std::make_unique<AgentServiceImpl>(&deps_, auth_.get());
  agent_server_ = std::make_unique<ServiceServer>(
      ServerOptions{.name = "ai-agent", .listen = "127.0.0.1:0", .metrics_listen = ""});
  agent_server_->AddService(agent_service_.get());
  ASSERT_TRUE(agent_server_->Start().ok());

  agent_ = v1::AiAgentService::NewStub(testing::LocalChannel(agent_server_->port()));
  conversations_ =
      conversation::v1::ConversationService::NewStub(testing::LocalChannel(conv_port_));
  usage_ = usage::v1::UsageService::NewStub(usage_channel);
}

void AgentSuite::TearDown() {
  if (agent_server_) agent_server_->Shutdown();
  // Background saves hold the suite's parts: let them end first.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (deps_.live.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  if (outbox_) outbox_->Stop(absl::ZeroDuration());
  if (usage_server_) usage_server_->Shutdown();
  if (conv_server_) conv_server_->Shutdown();
  if (fake_) fake_->Stop();
  // Tasks still queued (a prompt-id refill, a model refresh, a save's timer) use the
  // parts below: they run now, while those are alive, not after them.
  workers_.reset();
}

void AgentSuite::StopUsage() {
  usage_server_->Shutdown();
  usage_server_.reset();
}

void AgentSuite::StartUsage() {
  usage_server_ = std::make_unique<ServiceServer>(ServerOptions{
      .name = "usage", .listen = absl::StrCat("127.0.0.1:", usage_port_), .metrics_listen = ""});
  usage_server_->AddService(usage_service_.get());
  ASSERT_TRUE(usage_server_->Start().ok());
  usage_port_ = usage_server_->port();
}

void AgentSuite::StopConversation() {
  conv_server_->Shutdown();
  conv_server_.reset();
}

int64_t AgentSuite::NewConversation(int64_t user_id, const std::string& system_prompt) {
  grpc::ClientContext ctx;
  testing::Authorize(ctx, UserToken(user_id));
  conversation::v1::CreateConversationRequest req;
  req.set_title("test");
  if (!system_prompt.empty()) req.set_system_prompt(system_prompt);
  conversation::v1::Conversation conv;
  auto st = conversations_->CreateConversation(&ctx, req, &conv);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return conv.id();
}

std::vector<std::string> AgentSuite::ProviderBodies() const {
  std::vector<std::string> out;
  for (const auto& r : fake_->Requests()) {
    if (r.path.find("chat/completions") != std::string::npos) out.push_back(r.body);
  }
  return out;
}

int64_t AgentSuite::Count(PgPool& pool, const std::string& sql, const std::vector<PgArg>& args) {
  auto r = pool.Exec(sql, args);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->Int(0, 0) : -1;
}

}  // namespace aichat::agent
