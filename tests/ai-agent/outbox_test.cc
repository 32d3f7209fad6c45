// OutboxPublisher against a real PostgreSQL and an in-memory usage peer: every event
// arrives exactly once — handed over in memory or recovered from the table —
// through usage outages, duplicates, poison entries and two publishers sharing
// one database.
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
#include "common/base64.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "services/ai-agent/migrations.h"
#include "services/ai-agent/outbox_publisher.h"
#include "services/ai-agent/pg_agent_store.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace aichat::agent {
namespace {

constexpr char kPayloadMarker[] = "payload-marker-model";
constexpr char kInvalidModel[] = "invalid-model";

// RecordUsageBatch only: counts deliveries per event_id, answers recorded=false
// for an event it has seen, refuses a batch holding an invalid event as usage
// does (INVALID_ARGUMENT, nothing recorded), and can be switched off.
class FakeUsage final : public UsagePeer {
 public:
  void Reserve(const PeerCall&, const ReserveRequest&,
               std::function<void(absl::StatusOr<ReserveDecision>)> done) override {
    done(absl::UnimplementedError("not used"));
  }
  void Release(const std::string&) override {}
  void Record(std::vector<UsageRecord> events, absl::Time,
              std::function<void(absl::StatusOr<std::vector<bool>>)> done) override {
    absl::StatusOr<std::vector<bool>> out;
    {
      absl::MutexLock lock(&mu_);
      ++calls_;
      if (failing_) {
        out = absl::UnavailableError("usage service unavailable");
      } else if (std::any_of(events.begin(), events.end(),
                             [](const UsageRecord& e) { return e.model == kInvalidModel; })) {
        out = absl::InvalidArgumentError("events[0].model is invalid");
      } else {
        std::vector<bool> recorded;
        for (const auto& e : events) {
          ++deliveries_[e.event_id];
          recorded.push_back(recorded_.insert(e.event_id).second);
        }
        out = std::move(recorded);
      }
    }
    done(std::move(out));
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
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  bool failing_ ABSL_GUARDED_BY(mu_) = false;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
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
    fake_ = std::make_unique<FakeUsage>();
  }

  OutboxPublisherOptions FastOptions() {
    OutboxPublisherOptions o;
    o.backoff_initial = absl::Milliseconds(1);
    o.backoff_max = absl::Milliseconds(20);
    o.linger = absl::Milliseconds(20);
    return o;
  }

  std::unique_ptr<OutboxPublisher> Publisher(OutboxPublisherOptions o,
                                             prometheus::Registry* registry = nullptr) {
    return std::make_unique<OutboxPublisher>(store_.get(), fake_.get(), o, registry);
  }

  // Runs `n` turns to completion, each committing one usage event whose outbox
  // entry is leased to its writer for `lease` (zero: free for recovery at once).
  std::vector<UsageRecord> MakeEvents(int n, absl::Duration lease = absl::ZeroDuration(),
                                      std::vector<int64_t>* outbox_ids = nullptr) {
    std::vector<UsageRecord> events;
    auto ids = store_->ReservePromptIds(n);
    EXPECT_TRUE(ids.ok()) << ids.status();
    for (int i = 0; i < n && ids.ok(); ++i) {
      NewPrompt p;
      p.id = (*ids)[i];
      p.user_id = 1;
      p.conversation_id = 10;
      p.event_id = absl::StrCat("event-", ++next_event_);
      p.model = kPayloadMarker;
      p.provider_model = "gpt-4o-mini";
      p.prices = Prices{150000, 75000, 600000};
      p.context_window = 128000;
      p.max_output_tokens = 16384;
      EXPECT_TRUE(store_->InsertPrompt(p).ok());
      UsageRecord e;
      e.event_id = p.event_id;
      e.user_id = p.user_id;
      e.conversation_id = p.conversation_id;
      e.prompt_id = p.id;
      e.model = p.model;
      e.provider_model = p.provider_model;
      e.prompt_tokens = 100;
      e.completion_tokens = 20;
      e.prices = p.prices;
      e.cost_nanos = CostNanos(100, 0, 20, p.prices);
      PromptOutcome o;
      o.prompt_tokens = 100;
      o.completion_tokens = 20;
      o.cost_nanos = e.cost_nanos;
      auto id = store_->FinishPrompt(p.id, o, EncodeUsageRecord(e), lease);
      EXPECT_TRUE(id.ok()) << id.status();
      if (outbox_ids != nullptr) outbox_ids->push_back(id.value_or(0));
      events.push_back(std::move(e));
    }
    return events;
  }

  static std::vector<std::string> Ids(const std::vector<UsageRecord>& events) {
    std::vector<std::string> ids;
    for (const auto& e : events) ids.push_back(e.event_id);
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

  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgAgentStore> store_;
  std::unique_ptr<FakeUsage> fake_;
  int next_event_ = 0;
};

TEST_F(OutboxTest, DeliversFiftyEventsFromTheTableExactlyOnce) {
  auto ids = Ids(MakeEvents(50));
  prometheus::Registry registry;
  auto publisher = Publisher(FastOptions(), &registry);
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 50);
  EXPECT_EQ(Backlog(), 0);
  EXPECT_EQ(*publisher->PublishOnce(), 0);
  ExpectEachDeliveredOnce(ids);
  EXPECT_EQ(fake_->calls(), 1);  // one batch
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "delivered"), 50);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_published_total", "failed"), 0);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_backlog"), 0);
  EXPECT_EQ(MetricValue(registry, "aichat_outbox_oldest_age_seconds"), 0);
}

TEST_F(OutboxTest, EventsHandedOverInMemoryGoAsOneBatchAndAreDeleted) {
  auto publisher = Publisher(FastOptions());
  publisher->Start();
  std::vector<int64_t> outbox_ids;
  auto events = MakeEvents(40, absl::Minutes(5), &outbox_ids);  // leased: no recovery
  for (size_t i = 0; i < events.size(); ++i) publisher->Publish(outbox_ids[i], events[i]);
  ASSERT_TRUE(Eventually([&] { return Backlog() == 0; }));
  ExpectEachDeliveredOnce(Ids(events));
  EXPECT_LE(fake_->calls(), 3);  // gathered for `linger`, not one call per event
  // An answer mark goes with the same bookkeeping.
  publisher->AnswerSaved({events[0].prompt_id, 555});
  ASSERT_TRUE(Eventually(
      [&] { return store_->GetPrompt(1, events[0].prompt_id)->response_message_id == 555; }));
  publisher->Stop(absl::Seconds(1));
}

TEST_F(OutboxTest, UsageDownLosesNothingAndRecoveryDeliversOnce) {
  auto ids = Ids(MakeEvents(50));
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
  EXPECT_NE(text.find("usage event delivery failed"), std::string::npos);
  EXPECT_NE(text.find("UNAVAILABLE"), std::string::npos);
  EXPECT_NE(text.find(ids[0]), std::string::npos);
  EXPECT_EQ(text.find(kPayloadMarker), std::string::npos);
}

TEST_F(OutboxTest, DuplicateAnswersCountAsDelivered) {
  auto ids = Ids(MakeEvents(20));
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
  auto ids = Ids(MakeEvents(5));
  auto publisher = Publisher(FastOptions());
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5);
  ExpectEachDeliveredOnce(ids);
  EXPECT_EQ(Backlog(), 1);
  EXPECT_EQ(Scalar("SELECT attempts FROM usage_outbox WHERE event_id = 'poison'"), 1);
}

TEST_F(OutboxTest, AnEventUsageRefusesIsSentAloneAndTheBatchGoesThrough) {
  auto events = MakeEvents(6);
  // Make the third one an event usage refuses.
  events[2].model = kInvalidModel;
  ASSERT_TRUE(pool_
                  ->Exec("UPDATE usage_outbox SET payload = $2 WHERE event_id = $1",
                         {events[2].event_id, Base64UrlEncode(EncodeUsageRecord(events[2]))})
                  .ok());
  auto publisher = Publisher(FastOptions());
  auto n = publisher->PublishOnce();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5);
  EXPECT_EQ(Backlog(), 1);
  EXPECT_EQ(fake_->deliveries().size(), 5u);
  EXPECT_EQ(fake_->deliveries().count(events[2].event_id), 0u);
}

TEST_F(OutboxTest, TwoPublishersDeliverEachEventOnce) {
  auto ids = Ids(MakeEvents(200));
  OutboxPublisherOptions o = FastOptions();
  o.batch_size = 10;
  o.idle_poll = absl::Milliseconds(5);
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

TEST_F(OutboxTest, StopDeliversWhatIsHeld) {
  OutboxPublisherOptions o = FastOptions();
  o.idle_poll = absl::Hours(1);
  o.linger = absl::Hours(1);  // only Stop can send them
  auto publisher = Publisher(o);
  publisher->Start();
  std::vector<int64_t> outbox_ids;
  auto events = MakeEvents(5, absl::Minutes(5), &outbox_ids);
  for (size_t i = 0; i < events.size(); ++i) publisher->Publish(outbox_ids[i], events[i]);
  publisher->Stop(absl::Seconds(5));
  EXPECT_EQ(Backlog(), 0);
  ExpectEachDeliveredOnce(Ids(events));
}

}  // namespace
}  // namespace aichat::agent
