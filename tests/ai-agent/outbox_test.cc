// OutboxPublisher against a real PostgreSQL and an in-process fake UsageService:
// every event arrives exactly once, through usage outages, duplicates, poison
// entries and two publishers sharing one database.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"
#include "services/ai-agent/migrations.h"
#include "services/ai-agent/outbox_publisher.h"
#include "services/ai-agent/pg_agent_store.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace aichat::agent {
namespace {

namespace usage_v1 = aichat::usage::v1;

constexpr char kPayloadMarker[] = "payload-marker-model";

// RecordUsage only: counts successful deliveries per event_id, answers
// recorded=false for an event it has seen, and can be switched to UNAVAILABLE.
class FakeUsage final : public usage_v1::UsageService::CallbackService {
 public:
  explicit FakeUsage(std::string token) : expected_auth_(absl::StrCat("Bearer ", token)) {}

  grpc::ServerUnaryReactor* RecordUsage(grpc::CallbackServerContext* ctx,
                                        const usage_v1::RecordUsageRequest* req,
                                        usage_v1::RecordUsageResponse* resp) override {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    auto auth = ctx->client_metadata().find("authorization");
    if (auth == ctx->client_metadata().end() ||
        std::string(auth->second.data(), auth->second.size()) != expected_auth_) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bad token"));
      return reactor;
    }
    absl::MutexLock lock(&mu_);
    if (failing_) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "usage is down"));
      return reactor;
    }
    const std::string& id = req->event().event_id();
    ++deliveries_[id];
    resp->set_recorded(recorded_.insert(id).second);
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  void SetFailing(bool failing) {
    absl::MutexLock lock(&mu_);
    failing_ = failing;
  }
  // As if the event had been recorded before (a re-publish after a crash).
  void PreRecord(const std::string& event_id) {
    absl::MutexLock lock(&mu_);
    recorded_.insert(event_id);
  }
  absl::flat_hash_map<std::string, int> deliveries() {
    absl::MutexLock lock(&mu_);
    return deliveries_;
  }

 private:
  const std::string expected_auth_;
  absl::Mutex mu_;
  bool failing_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, int> deliveries_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> recorded_ ABSL_GUARDED_BY(mu_);
};

double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::string& result = "") {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) {
      continue;
    }
    for (const auto& m : family.metric) {
      bool match = result.empty();
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) {
          match = true;
        }
      }
      if (!match) {
        continue;
      }
      return family.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
    }
  }
  return -1;
}

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PgPoolOptions opts;
    opts.url = aichat::testing::TestPostgres::Shared().CreateDatabase();
    opts.size = 8;
    pool_ = std::make_unique<PgPool>(opts);
    ASSERT_TRUE(ApplyMigrations(*pool_, Migrations()).ok());
    store_ = std::make_unique<PgAgentStore>(pool_.get());
    token_ = keys_.ServiceToken();
    fake_ = std::make_unique<FakeUsage>(token_);
    server_ = std::make_unique<ServiceServer>(
        ServerOptions{.name = "usage", .listen = "127.0.0.1:0", .metrics_listen = ""});
    server_->AddService(fake_.get());
    ASSERT_TRUE(server_->Start().ok());
    channel_ = aichat::testing::LocalChannel(server_->port());
  }

  void TearDown() override {
    if (server_) {
      server_->Shutdown();
    }
  }

  OutboxPublisherOptions FastOptions() {
    OutboxPublisherOptions o;
    o.backoff_initial = absl::Milliseconds(1);
    o.backoff_max = absl::Milliseconds(20);
    return o;
  }

  std::unique_ptr<OutboxPublisher> Publisher(OutboxPublisherOptions o,
                                             prometheus::Registry* registry = nullptr,
                                             const std::string& token = "") {
    return std::make_unique<OutboxPublisher>(store_.get(), channel_, token.empty() ? token_ : token,
                                             o, registry);
  }

  // Runs `n` turns to completion, each committing one usage event; returns the event ids.
  std::vector<std::string> MakeEvents(int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      NewPrompt p;
      p.user_id = 1;
      p.conversation_id = 10;
      p.event_id = absl::StrCat("event-", ++next_event_);
      p.model = kPayloadMarker;
      p.provider_model = "gpt-4o-mini";
      p.prices = Prices{150000, 75000, 600000};
      p.context_window = 128000;
      p.max_output_tokens = 16384;
      auto prompt = store_->InsertPrompt(p);
      EXPECT_TRUE(prompt.ok()) << prompt.status();
      if (!prompt.ok()) {
        return ids;
      }
      usage_v1::UsageEvent ev;
      ev.set_event_id(p.event_id);
      ev.set_user_id(p.user_id);
      ev.set_conversation_id(p.conversation_id);
      ev.set_prompt_id(prompt->id);
      ev.set_model(p.model);
      ev.set_provider_model(p.provider_model);
      ev.set_prompt_tokens(100);
      ev.set_completion_tokens(20);
      ev.set_cost_nanos(CostNanos(100, 0, 20, p.prices));
      ev.set_outcome(usage_v1::OUTCOME_COMPLETED);
      PromptOutcome o;
      o.prompt_tokens = 100;
      o.completion_tokens = 20;
      o.cost_nanos = ev.cost_nanos();
      EXPECT_TRUE(store_->FinishPrompt(prompt->id, o, ev.SerializeAsString()).ok());
      ids.push_back(p.event_id);
    }
    return ids;
  }

  int64_t Scalar(const std::string& sql) { return pool_->Exec(sql)->Int(0, 0); }
  int64_t Backlog() { return Scalar("SELECT count(*) FROM usage_outbox"); }

  // Each of `ids` delivered exactly once, and nothing else.
  void ExpectEachDeliveredOnce(const std::vector<std::string>& ids) {
    auto got = fake_->deliveries();
    EXPECT_EQ(got.size(), ids.size());
    for (const auto& id : ids) {
      EXPECT_EQ(got[id], 1) << id;
    }
  }

  // Polls `done` until it holds or 20 s pass.
  template <typename F>
  bool Eventually(F done) {
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      if (done()) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(5));  // a poll interval, not synchronisation
    }
    return done();
  }

  aichat::testing::TestKeys keys_;
  std::string token_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgAgentStore> store_;
  std::unique_ptr<FakeUsage> fake_;
  std::unique_ptr<ServiceServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  int next_event_ = 0;
};

TEST_F(OutboxTest, DeliversFiftyEventsExactlyOnce) {
  auto ids = MakeEvents(50);
  prometheus::Registry registry;
  auto publisher = Publisher(FastOptions(), &registry);
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 50);
  EXPECT_EQ(Backlog(), 0);
  EXPECT_EQ(*publisher->PublishOnce(), 0);
  ExpectEachDeliveredOnce(ids);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "delivered"), 50);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "failed"), 0);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_backlog"), 0);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_oldest_age_seconds"), 0);
}

TEST_F(OutboxTest, UsageDownLosesNothingAndRecoveryDeliversOnce) {
  auto ids = MakeEvents(50);
  aichat::testing::LogCapture logs;
  prometheus::Registry registry;
  auto publisher = Publisher(FastOptions(), &registry);
  fake_->SetFailing(true);
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(Backlog(), 50);
  EXPECT_EQ(Scalar("SELECT min(attempts) FROM usage_outbox"), 1);
  EXPECT_EQ(Scalar("SELECT count(*) FROM usage_outbox WHERE last_error LIKE 'UNAVAILABLE%'"), 50);

  // Retries keep failing; the rows stay and their attempts grow.
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(publisher->PublishOnce().ok());
    return Scalar("SELECT min(attempts) FROM usage_outbox") >= 3;
  }));
  EXPECT_EQ(Backlog(), 50);
  EXPECT_TRUE(fake_->deliveries().empty());
  EXPECT_GE(MetricValue(registry, "aichat_outbox_published_total", "failed"), 150);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_backlog"), 50);
  EXPECT_GT(MetricValue(registry, "aichat_outbox_oldest_age_seconds"), 0);

  fake_->SetFailing(false);
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(publisher->PublishOnce().ok());
    return Backlog() == 0;
  }));
  ExpectEachDeliveredOnce(ids);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "delivered"), 50);

  // Failures are logged per entry with the code, never with the payload.
  std::string text = logs.Text();
  EXPECT_NE(text.find("outbox delivery failed"), std::string::npos);
  EXPECT_NE(text.find("UNAVAILABLE"), std::string::npos);
  EXPECT_NE(text.find(ids[0]), std::string::npos);
  EXPECT_EQ(text.find(kPayloadMarker), std::string::npos);
}

TEST_F(OutboxTest, DuplicateAnswersCountAsDelivered) {
  auto ids = MakeEvents(20);
  for (int i = 0; i < 10; ++i) {
    fake_->PreRecord(ids[i]);
  }
  prometheus::Registry registry;
  auto publisher = Publisher(FastOptions(), &registry);
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 20);
  EXPECT_EQ(Backlog(), 0);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "delivered"), 10);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "duplicate"), 10);
}

TEST_F(OutboxTest, OneBadEntryDoesNotBlockTheOthers) {
  ASSERT_TRUE(
      pool_->Exec("INSERT INTO usage_outbox (event_id, payload) VALUES ('poison', '!!!')").ok());
  auto ids = MakeEvents(5);
  auto publisher = Publisher(FastOptions());
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5);
  ExpectEachDeliveredOnce(ids);
  EXPECT_EQ(Backlog(), 1);
  EXPECT_EQ(Scalar("SELECT attempts FROM usage_outbox WHERE event_id = 'poison'"), 1);
}

TEST_F(OutboxTest, RejectedTokenKeepsTheRows) {
  auto ids = MakeEvents(3);
  auto wrong = Publisher(FastOptions(), nullptr, "not-a-token");
  EXPECT_EQ(*wrong->PublishOnce(), 0);
  EXPECT_EQ(Backlog(), 3);
  EXPECT_EQ(Scalar("SELECT count(*) FROM usage_outbox WHERE last_error LIKE "
                   "'UNAUTHENTICATED%'"),
            3);
  auto right = Publisher(FastOptions());
  ASSERT_TRUE(Eventually([&] {
    EXPECT_TRUE(right->PublishOnce().ok());
    return Backlog() == 0;
  }));
  ExpectEachDeliveredOnce(ids);
}

TEST_F(OutboxTest, TwoPublishersDeliverEachEventOnce) {
  auto ids = MakeEvents(200);
  OutboxPublisherOptions o = FastOptions();
  o.batch_size = 10;
  o.max_in_flight = 4;
  auto a = Publisher(o);
  auto b = Publisher(o);
  a->Start();
  b->Start();
  a->Notify();
  b->Notify();
  ASSERT_TRUE(Eventually([&] { return Backlog() == 0; }));
  a->Stop(absl::Seconds(1));
  b->Stop(absl::Seconds(1));
  ExpectEachDeliveredOnce(ids);
}

TEST_F(OutboxTest, NotifyWakesAndStopFlushes) {
  OutboxPublisherOptions o = FastOptions();
  o.idle_poll = absl::Hours(1);  // only Notify (or Stop) can make it publish
  auto publisher = Publisher(o);
  publisher->Start();
  auto first = MakeEvents(10);
  publisher->Notify();
  ASSERT_TRUE(Eventually([&] { return fake_->deliveries().size() == 10; }));
  ASSERT_TRUE(Eventually([&] { return Backlog() == 0; }));

  auto second = MakeEvents(5);
  publisher->Stop(absl::Seconds(5));  // the final flush delivers what is due
  EXPECT_EQ(Backlog(), 0);
  first.insert(first.end(), second.begin(), second.end());
  ExpectEachDeliveredOnce(first);
}

}  // namespace
}  // namespace aichat::agent
