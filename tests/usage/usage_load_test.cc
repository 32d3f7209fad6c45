// Load numbers for the usage service (printed, never asserted as timings):
// RecordUsage, RecordUsageBatch and ReserveBudget throughput over loopback gRPC,
// and summary latency over 1,000,000 ledger rows bulk-loaded with generate_series.
// Skipped unless AICHAT_LONG_TESTS=1 (the bulk load takes tens of seconds).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/usage/usage_fixture.h"

namespace aichat::usage {
namespace {

bool LongTestsEnabled() {
  const char* v = std::getenv("AICHAT_LONG_TESTS");
  return v != nullptr && std::string(v) == "1";
}

constexpr int kClients = 16;
constexpr absl::Duration kRun = absl::Seconds(3);

// Runs `op(client, n)` from kClients threads for kRun; returns successful ops/s.
double Throughput(const char* what, const std::function<bool(int, int)>& op) {
  std::atomic<int64_t> ok{0}, failed{0};
  absl::Time end = absl::Now() + kRun;
  absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      for (int n = 0; absl::Now() < end; ++n) (op(c, n) ? ok : failed)++;
    });
  }
  for (auto& t : threads) t.join();
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  double rate = static_cast<double>(ok.load()) / secs;
  std::printf("[usage-load] %-44s %8.0f ops/s (%lld ok, %lld failed, %d clients, %.1f s)\n", what,
              rate, static_cast<long long>(ok.load()), static_cast<long long>(failed.load()),
              kClients, secs);
  EXPECT_EQ(failed.load(), 0);
  return rate;
}

class UsageLoadTest : public UsageTest {
 protected:
  void SetUp() override {
    if (!LongTestsEnabled()) GTEST_SKIP() << "set AICHAT_LONG_TESTS=1 to run";
    UsageTest::SetUp();
  }
};

// Each measurement runs in a database of its own (the fixture makes one per
// test), so none inherits the rows, rate windows or vacuum debt of another: the
// figures do not depend on how fast the measurements before them were.
TEST_F(UsageLoadTest, RecordThroughput) {
  for (int u = 1; u <= 100; ++u) ASSERT_TRUE(SetBudget(u, int64_t{1} << 50).ok());
  Throughput("RecordUsage (100 users)", [&](int c, int n) {
    return Record(Event(absl::StrCat("rec-", c, "-", n), 1 + (c * 7 + n) % 100, 1200, 300, 100))
        .ok();
  });
  Throughput("RecordUsage duplicates (outbox retries)", [&](int c, int n) {
    return Record(Event(absl::StrCat("rec-", c, "-", n % 50), 1 + (c * 7 + n % 50) % 100, 1200, 300,
                        100))
        .ok();
  });
}

// What the ai-agent's outbox sends: the events that piled up during its last call.
TEST_F(UsageLoadTest, RecordBatchThroughput) {
  constexpr int kBatch = 50;
  double calls = Throughput("RecordUsageBatch (50 events a call, 100 users)", [&](int c, int n) {
    std::vector<v1::UsageEvent> batch;
    batch.reserve(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      batch.push_back(Event(absl::StrCat("bat-", c, "-", n, "-", i), 1 + (c * 7 + n + i) % 100,
                            1200, 300, 100));
    }
    std::vector<bool> recorded;
    return RecordBatch(batch, &recorded).ok() &&
           std::count(recorded.begin(), recorded.end(), true) == kBatch;
  });
  std::printf("[usage-load] %-44s %8.0f events/s\n", "RecordUsageBatch, events", calls * kBatch);
}

TEST_F(UsageLoadTest, ReserveThroughput) {
  for (int u = 1; u <= 100; ++u) ASSERT_TRUE(SetBudget(u, int64_t{1} << 50).ok());
  Throughput("ReserveBudget (100 users, budget + rpm)", [&](int c, int n) {
    v1::ReserveBudgetResponse resp;
    return Reserve(1 + (c * 13 + n) % 100, absl::StrCat("res-", c, "-", n), 1000, 100000, &resp)
               .ok() &&
           resp.allowed();
  });
  Throughput("ReserveBudget (1 user: every call serialised)", [&](int c, int n) {
    v1::ReserveBudgetResponse resp;
    return Reserve(500, absl::StrCat("hot-", c, "-", n), 1000, 0, &resp).ok() && resp.allowed();
  });
}

TEST_F(UsageLoadTest, TurnCycleThroughput) {
  for (int u = 1; u <= 100; ++u) ASSERT_TRUE(SetBudget(u, int64_t{1} << 50).ok());
  Throughput("turn cycle: ReserveBudget + RecordUsage", [&](int c, int n) {
    std::string id = absl::StrCat("turn-", c, "-", n);
    int64_t user = 1 + (c * 17 + n) % 100;
    v1::ReserveBudgetResponse resp;
    return Reserve(user, id, 100000, 100000, &resp).ok() && resp.allowed() &&
           Record(Event(id, user, 1200, 300, 100)).ok();
  });
}

// Runs `op(n)` `runs` times from one client; prints the median and 90th
// percentile latency. What a turn waits for on its critical path (throughput
// above mostly measures CPU when the machine is busy; this measures round trips).
void Latency(const char* what, int runs, const std::function<bool(int)>& op) {
  std::vector<double> ms;
  ms.reserve(runs);
  int failed = 0;
  for (int n = 0; n < runs; ++n) {
    absl::Time start = absl::Now();
    if (!op(n)) ++failed;
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::sort(ms.begin(), ms.end());
  std::printf("[usage-load] %-44s median %6.3f ms, p90 %6.3f ms (1 client, %d calls)\n", what,
              ms[ms.size() / 2], ms[ms.size() * 9 / 10], runs);
  EXPECT_EQ(failed, 0);
}

TEST_F(UsageLoadTest, OneClientLatency) {
  for (int u = 1; u <= 30; ++u) ASSERT_TRUE(SetBudget(u, int64_t{1} << 50).ok());
  constexpr int kRuns = 400;
  Latency("ReserveBudget (budget + rpm)", kRuns, [&](int n) {
    v1::ReserveBudgetResponse resp;
    return Reserve(1 + n % 10, absl::StrCat("res-", n), 1000, 100000, &resp).ok() && resp.allowed();
  });
  Latency("RecordUsage (settles a reservation)", kRuns, [&](int n) {
    return Record(Event(absl::StrCat("res-", n), 1 + n % 10, 1200, 300, 100)).ok();
  });
  Latency("turn: ReserveBudget then RecordUsage", kRuns, [&](int n) {
    std::string id = absl::StrCat("turn-", n);
    int64_t user = 11 + n % 10;
    v1::ReserveBudgetResponse resp;
    return Reserve(user, id, 100000, 100000, &resp).ok() && resp.allowed() &&
           Record(Event(id, user, 1200, 300, 100)).ok();
  });
  constexpr int kBatch = 50;
  Latency("RecordUsageBatch (50 events)", kRuns / 8, [&](int n) {
    std::vector<v1::UsageEvent> batch;
    for (int i = 0; i < kBatch; ++i) {
      batch.push_back(Event(absl::StrCat("bat-", n, "-", i), 21 + i % 10, 1200, 300, 100));
    }
    return RecordBatch(batch).ok();
  });
  Latency("50 x RecordUsage (the same 50 events)", kRuns / 8, [&](int n) {
    for (int i = 0; i < kBatch; ++i) {
      if (!Record(Event(absl::StrCat("one-", n, "-", i), 21 + i % 10, 1200, 300, 100)).ok()) {
        return false;
      }
    }
    return true;
  });
}

// One user with 1,000,000 rows (per-user summaries) plus 1,000,000 rows over
// 1,000 other users (GROUP_BY_USER): 2,000,000 ledger rows in all.
constexpr char kBulkLoad[] =
    "INSERT INTO usage_logs (event_id, user_id, conversation_id, prompt_id, model, "
    "provider_model, prompt_tokens, completion_tokens, cached_tokens, "
    "input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "
    "output_price_micros_per_mtok, cost_nanos, estimated, outcome, occurred_at, recorded_at) "
    "SELECT $1 || i, CASE WHEN $2::bigint > 0 THEN $2::bigint ELSE 1000 + i % 1000 END, "
    "1 + i % 2000, i, m, m || '-2024', p, o, ca, 150000, 75000, 600000, "
    "((p - ca) * 150000 + ca * 75000 + o * 600000 + 500) / 1000, false, 1, "
    "timestamptz '2025-01-01 00:00:00+00' + i * interval '7776 milliseconds', now() "
    "FROM (SELECT i, (ARRAY['gpt-4o','gpt-4o-mini','o3','o4-mini'])[1 + i % 4] AS m, "
    "100 + i % 5000 AS p, 10 + i % 700 AS o, (i % 5000) / 3 AS ca "
    "FROM generate_series(0, 999999) AS i) AS g";

TEST_F(UsageLoadTest, SummariesOverAMillionRows) {
  absl::Time t = absl::Now();
  ASSERT_TRUE(pool_->Exec(kBulkLoad, {"heavy-", int64_t{42}}).ok());
  std::printf("[usage-load] bulk load 1,000,000 rows for one user (trigger rollups): %.1f s\n",
              absl::ToDoubleSeconds(absl::Now() - t));
  t = absl::Now();
  ASSERT_TRUE(pool_->Exec(kBulkLoad, {"spread-", int64_t{0}}).ok());
  std::printf("[usage-load] bulk load 1,000,000 rows over 1,000 users: %.1f s\n",
              absl::ToDoubleSeconds(absl::Now() - t));
  ASSERT_TRUE(pool_->Exec("ANALYZE").ok());
  std::printf(
      "[usage-load] rows: usage_logs %lld, usage_daily %lld, usage_daily_conversation %lld\n",
      static_cast<long long>(Count("usage_logs")), static_cast<long long>(Count("usage_daily")),
      static_cast<long long>(Count("usage_daily_conversation")));

  // Ragged edges on purpose: partial first and last days come from the ledger.
  absl::Time from = Utc(2025, 1, 1, 5, 17);
  absl::Time to = Utc(2025, 3, 31, 19, 3);
  struct Case {
    const char* name;
    v1::GroupBy group;
    v1::OrderBy order;
    int limit;
  };
  for (const Case& c :
       {Case{"DAY, 1 user, 1M rows", v1::GROUP_BY_DAY, v1::ORDER_BY_UNSPECIFIED, 0},
        Case{"MODEL, 1 user, 1M rows", v1::GROUP_BY_MODEL, v1::ORDER_BY_COST_DESC, 0},
        Case{"CONVERSATION, 1 user, top 100 by cost", v1::GROUP_BY_CONVERSATION,
             v1::ORDER_BY_COST_DESC, 100},
        Case{"USER (admin), 2M rows, top 10 by cost", v1::GROUP_BY_USER, v1::ORDER_BY_COST_DESC,
             10}}) {
    std::vector<double> ms;
    v1::GetUsageSummaryResponse s;
    for (int run = 0; run < 7; ++run) {
      s.Clear();
      absl::Time start = absl::Now();
      auto st = c.group == v1::GROUP_BY_USER
                    ? Summary(AdminToken(), c.group, from, to, &s, {}, c.order, c.limit)
                    : Summary(UserToken(42), c.group, from, to, &s, {}, c.order, c.limit);
      ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
      ASSERT_TRUE(st.ok()) << st.error_message();
    }
    std::sort(ms.begin(), ms.end());
    // The same totals straight from the ledger, and how long that scan takes.
    absl::Time start = absl::Now();
    auto raw = c.group == v1::GROUP_BY_USER
                   ? pool_->Exec(
                         "SELECT count(*), sum(cost_nanos)::bigint FROM usage_logs "
                         "WHERE occurred_at >= $1 AND occurred_at < $2",
                         {from, to})
                   : pool_->Exec(
                         "SELECT count(*), sum(cost_nanos)::bigint FROM usage_logs "
                         "WHERE user_id = 42 AND occurred_at >= $1 AND occurred_at < $2",
                         {from, to});
    double raw_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(s.totals().requests(), raw->Int(0, 0));
    EXPECT_EQ(s.totals().cost_nanos(), raw->Int(0, 1));
    std::printf(
        "[usage-load] GetUsageSummary %-40s median %7.1f ms, min %7.1f ms, max %7.1f ms "
        "(%d rows, %lld requests; raw ledger scan for the totals alone: %.0f ms)\n",
        c.name, ms[ms.size() / 2], ms.front(), ms.back(), s.rows_size(),
        static_cast<long long>(s.totals().requests()), raw_ms);
  }
  // Budget check at this size: the month's spend comes from the rollup.
  clock_.Set(Utc(2025, 3, 31, 20));
  ASSERT_TRUE(SetBudget(42, int64_t{1} << 60).ok());
  std::vector<double> ms;
  for (int i = 0; i < 20; ++i) {
    v1::ReserveBudgetResponse r;
    absl::Time start = absl::Now();
    ASSERT_TRUE(Reserve(42, absl::StrCat("big-", i), 1000, 20, &r).ok());
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  std::sort(ms.begin(), ms.end());
  std::printf("[usage-load] ReserveBudget for the 1M-row user: median %.1f ms, max %.1f ms\n",
              ms[ms.size() / 2], ms.back());
}

}  // namespace
}  // namespace aichat::usage
