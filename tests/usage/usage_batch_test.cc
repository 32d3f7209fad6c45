// RecordUsageBatch over real gRPC and a real PostgreSQL database: idempotency per
// event inside a batch, rollups equal to the ledger to the nano, reservations
// settled, overlapping concurrent batches, and all-or-nothing validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/usage/usage_fixture.h"

namespace aichat::usage {
namespace {

using aichat::testing::Authorize;

// Rows of the rollups that disagree with sums computed straight from the ledger
// (missing on either side included).
constexpr char kRollupMismatches[] =
    "SELECT (SELECT count(*) FROM ("
    "  SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, model, count(*) AS n,"
    "   sum(prompt_tokens)::bigint AS p, sum(completion_tokens)::bigint AS c,"
    "   sum(cached_tokens)::bigint AS ca, sum(cost_nanos)::bigint AS cost"
    "  FROM usage_logs GROUP BY 1, 2, 3) AS l"
    " FULL JOIN usage_daily AS d USING (user_id, day, model)"
    " WHERE l.n IS DISTINCT FROM d.requests OR l.p IS DISTINCT FROM d.prompt_tokens"
    "  OR l.c IS DISTINCT FROM d.completion_tokens OR l.ca IS DISTINCT FROM d.cached_tokens"
    "  OR l.cost IS DISTINCT FROM d.cost_nanos)"
    " + (SELECT count(*) FROM ("
    "  SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, conversation_id,"
    "   count(*) AS n, sum(prompt_tokens)::bigint AS p, sum(completion_tokens)::bigint AS c,"
    "   sum(cached_tokens)::bigint AS ca, sum(cost_nanos)::bigint AS cost"
    "  FROM usage_logs GROUP BY 1, 2, 3) AS l"
    " FULL JOIN usage_daily_conversation AS d USING (user_id, day, conversation_id)"
    " WHERE l.n IS DISTINCT FROM d.requests OR l.p IS DISTINCT FROM d.prompt_tokens"
    "  OR l.c IS DISTINCT FROM d.completion_tokens OR l.ca IS DISTINCT FROM d.cached_tokens"
    "  OR l.cost IS DISTINCT FROM d.cost_nanos)";

class UsageBatchTest : public UsageTest {
 protected:
  // Event i of a family: varied users, models, conversations, days and figures.
  v1::UsageEvent Nth(const std::string& prefix, int i, int64_t extra_tokens = 0) const {
    static const char* const kModels[] = {"gpt-4o", "gpt-4o-mini", "o3"};
    return Event(absl::StrCat(prefix, i), 1 + i % 4, 100 + i * 37 + extra_tokens, 10 + i * 11,
                 (i * 13) % 100, kModels[i % 3], 1 + i % 5,
                 Utc(2025, 3, 13 + i % 3, i % 12, i % 60, i % 60));
  }

  int64_t Scalar(const std::string& sql) { return pool_->Exec(sql)->Int(0, 0); }
  int64_t LedgerCost() { return Scalar("SELECT COALESCE(sum(cost_nanos), 0) FROM usage_logs"); }
  int64_t RollupCost() { return Scalar("SELECT COALESCE(sum(cost_nanos), 0) FROM usage_daily"); }
};

TEST_F(UsageBatchTest, HundredEventsThirtyAlreadyRecorded) {
  // Ids that a careless array literal or VALUES list would mangle.
  const std::vector<std::string> odd = {"q\"uote",   "back\\slash", "{brace},comma", "NULL",
                                        " spaced  ", "ünïcødé",     "'single'",      "a\\\"b"};
  std::vector<v1::UsageEvent> batch;
  for (int i = 0; i < 100; ++i) {
    batch.push_back(Nth(i < static_cast<int>(odd.size()) ? odd[i] : "e", i));
  }
  std::vector<bool> pre(100, false);
  int64_t expected_cost = 0;
  v1::ReserveBudgetResponse r;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(Reserve(batch[i].user_id(), batch[i].event_id(), 1000, 0, &r).ok());
    ASSERT_TRUE(r.allowed());
    expected_cost += batch[i].cost_nanos();
  }
  // 30 arrive first, half one by one and half in a batch of their own.
  std::vector<v1::UsageEvent> early;
  for (int i = 0; i < 100; i += 3) {
    if (early.size() + 1 > 30) {
      break;
    }
    pre[i] = true;
    if (early.size() % 2 == 0) {
      ASSERT_TRUE(Record(batch[i]).ok());
    }
    early.push_back(batch[i]);
  }
  ASSERT_EQ(early.size(), 30u);
  std::vector<bool> recorded;
  ASSERT_TRUE(RecordBatch(early, &recorded).ok());
  EXPECT_EQ(std::count(recorded.begin(), recorded.end(), true), 15);
  // Redelivered with other figures: the first delivery wins, nothing changes.
  for (int i = 0; i < 100; ++i) {
    if (!pre[i]) {
      continue;
    }
    v1::UsageEvent changed = Nth("", i, 5000);
    changed.set_event_id(batch[i].event_id());
    batch[i] = changed;
  }
  ASSERT_TRUE(RecordBatch(batch, &recorded).ok());
  ASSERT_EQ(recorded.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(recorded[i], !pre[i]) << i;
  }
  EXPECT_EQ(Count("usage_logs"), 100);
  EXPECT_EQ(LedgerCost(), expected_cost);
  EXPECT_EQ(RollupCost(), expected_cost);
  EXPECT_EQ(Scalar(kRollupMismatches), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM reservations WHERE state = 'settled'"), 100);
  // Odd ids are stored byte for byte, with their own figures.
  for (size_t i = 0; i < odd.size(); ++i) {
    auto row = pool_->Exec("SELECT model, cost_nanos FROM usage_logs WHERE event_id = $1",
                           {odd[i] + std::to_string(i)});
    ASSERT_TRUE(row.ok());
    ASSERT_EQ(row->rows(), 1) << odd[i];
    EXPECT_EQ(row->Int(0, 1), Nth(odd[i], static_cast<int>(i)).cost_nanos());
  }
  for (int64_t user = 1; user <= 4; ++user) {
    auto b = GetBudget(user);
    EXPECT_EQ(b.reserved_nanos(), 0) << user;
  }
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(
      Summary(AdminToken(), v1::GROUP_BY_USER, Utc(2025, 3, 13, 5), Utc(2025, 3, 15, 7), &s).ok());
  EXPECT_EQ(s.totals().cost_nanos(),
            Scalar("SELECT sum(cost_nanos) FROM usage_logs WHERE occurred_at >= "
                   "'2025-03-13 05:00:00+00' AND occurred_at < '2025-03-15 07:00:00+00'"));
}

// Two outbox replicas deliver overlapping batches (in opposite orders) at the
// same time: every event is recorded by exactly one of them, none twice, no
// deadlock surfaces, and the rollups still equal the ledger.
TEST_F(UsageBatchTest, ConcurrentOverlappingBatchesCountEveryEventOnce) {
  int64_t expected_cost = 0;
  int64_t expected_events = 0;
  for (int round = 0; round < 5; ++round) {
    std::string prefix = absl::StrCat("r", round, "-");
    std::vector<v1::UsageEvent> a;
    std::vector<v1::UsageEvent> b;
    for (int i = 0; i < 300; ++i) {
      a.push_back(Nth(prefix, i));
    }
    for (int i = 150; i < 450; ++i) {
      b.push_back(Nth(prefix, i));
    }
    std::reverse(b.begin(), b.end());
    for (int i = 0; i < 450; ++i) {
      expected_cost += Nth(prefix, i).cost_nanos();
    }
    expected_events += 450;
    std::vector<bool> ra;
    std::vector<bool> rb;
    grpc::Status sa;
    grpc::Status sb;
    std::thread ta([&] { sa = RecordBatch(a, &ra); });
    std::thread tb([&] { sb = RecordBatch(b, &rb); });
    ta.join();
    tb.join();
    ASSERT_TRUE(sa.ok()) << sa.error_message();
    ASSERT_TRUE(sb.ok()) << sb.error_message();
    ASSERT_EQ(ra.size(), a.size());
    ASSERT_EQ(rb.size(), b.size());
    std::map<std::string, int> times;
    for (size_t i = 0; i < a.size(); ++i) {
      times[a[i].event_id()] += ra[i] ? 1 : 0;
    }
    for (size_t i = 0; i < b.size(); ++i) {
      times[b[i].event_id()] += rb[i] ? 1 : 0;
    }
    ASSERT_EQ(times.size(), 450u);
    for (const auto& [id, n] : times) {
      EXPECT_EQ(n, 1) << id;
    }
  }
  EXPECT_EQ(Count("usage_logs"), expected_events);
  EXPECT_EQ(LedgerCost(), expected_cost);
  EXPECT_EQ(RollupCost(), expected_cost);
  EXPECT_EQ(Scalar(kRollupMismatches), 0);
}

TEST_F(UsageBatchTest, OneInvalidEventRefusesTheWholeBatch) {
  std::vector<v1::UsageEvent> batch;
  v1::ReserveBudgetResponse r;
  for (int i = 0; i < 10; ++i) {
    batch.push_back(Nth("e", i));
    ASSERT_TRUE(Reserve(batch[i].user_id(), batch[i].event_id(), 1000, 0, &r).ok());
  }
  batch[7].set_cost_nanos(batch[7].cost_nanos() + 1);
  auto st = RecordBatch(batch);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events[7].cost_nanos"), std::string::npos)
      << st.error_message();
  batch[7] = Nth("e", 7);
  batch[2].set_model("");
  st = RecordBatch(batch);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events[2].model"), std::string::npos) << st.error_message();
  EXPECT_EQ(Count("usage_logs"), 0);
  EXPECT_EQ(Count("usage_daily"), 0);
  EXPECT_EQ(Count("usage_daily_conversation"), 0);
  EXPECT_EQ(Scalar("SELECT count(*) FROM reservations WHERE state = 'active'"), 10);
}

TEST_F(UsageBatchTest, BatchSizeIsOneToFiveHundred) {
  auto st = RecordBatch({});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events"), std::string::npos) << st.error_message();
  std::vector<v1::UsageEvent> batch;
  for (int i = 0; i < 501; ++i) {
    batch.push_back(Nth("e", i));
  }
  st = RecordBatch(batch);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events must hold 1 to 500"), std::string::npos)
      << st.error_message();
  EXPECT_EQ(Count("usage_logs"), 0);
  batch.pop_back();
  std::vector<bool> recorded;
  ASSERT_TRUE(RecordBatch(batch, &recorded).ok());
  EXPECT_EQ(std::count(recorded.begin(), recorded.end(), true), 500);
  EXPECT_EQ(Count("usage_logs"), 500);
  EXPECT_EQ(Scalar(kRollupMismatches), 0);
}

TEST_F(UsageBatchTest, RepeatedEventIdInsideABatchIsInvalid) {
  std::vector<v1::UsageEvent> batch;
  for (int i = 0; i < 5; ++i) {
    batch.push_back(Nth("e", i));
  }
  batch[3].set_event_id(batch[1].event_id());
  auto st = RecordBatch(batch);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events[3].event_id"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("events[1]"), std::string::npos) << st.error_message();
  EXPECT_EQ(Count("usage_logs"), 0);
}

TEST_F(UsageBatchTest, OnlyServicesRecordBatches) {
  std::vector<v1::UsageEvent> batch = {Nth("e", 0), Nth("e", 1)};
  for (const std::string& token : {UserToken(1), AdminToken()}) {
    EXPECT_EQ(RecordBatch(batch, nullptr, &token).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext ctx;
  v1::RecordUsageBatchRequest req;
  *req.add_events() = batch[0];
  v1::RecordUsageBatchResponse resp;
  EXPECT_EQ(stub_->RecordUsageBatch(&ctx, req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Count("usage_logs"), 0);
}

double Counter(prometheus::Registry& registry, const std::string& name, const std::string& result) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) {
      continue;
    }
    for (const auto& m : family.metric) {
      if (result.empty() && m.label.empty()) {
        return m.counter.value;
      }
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) {
          return m.counter.value;
        }
      }
    }
  }
  return -1;
}

TEST_F(UsageBatchTest, MetricsCountEventsNotCalls) {
  std::vector<v1::UsageEvent> batch;
  for (int i = 0; i < 6; ++i) {
    batch.push_back(Nth("e", i));
  }
  ASSERT_TRUE(Record(batch[0]).ok());
  ASSERT_TRUE(RecordBatch(batch).ok());
  int64_t cost = 0;
  for (const auto& e : batch) {
    cost += e.cost_nanos();
  }
  EXPECT_EQ(Counter(registry_, "aichat_usage_events_total", "recorded"), 6);
  EXPECT_EQ(Counter(registry_, "aichat_usage_events_total", "duplicate"), 1);
  EXPECT_EQ(Counter(registry_, "aichat_usage_recorded_cost_nanos_total", ""),
            static_cast<double>(cost));
}

}  // namespace
}  // namespace aichat::usage
