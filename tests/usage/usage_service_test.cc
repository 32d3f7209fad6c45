// UsageService over real gRPC (loopback, in-process server) and a real PostgreSQL
// database, with a hand-driven clock: ledger idempotency, exact summaries,
// budgets, reservations and the rate limit under concurrency.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/usage/usage_fixture.h"

namespace aichat::usage {
namespace {

using aichat::testing::Authorize;

struct Totals {
  int64_t requests = 0, prompt = 0, completion = 0, cached = 0, cost = 0;
  void Add(const v1::UsageEvent& e) {
    ++requests;
    prompt += e.prompt_tokens();
    completion += e.completion_tokens();
    cached += e.cached_tokens();
    cost += e.cost_nanos();
  }
  bool operator==(const Totals&) const = default;
};

Totals FromRow(const v1::SummaryRow& r) {
  return {r.requests(), r.prompt_tokens(), r.completion_tokens(), r.cached_tokens(),
          r.cost_nanos()};
}

std::map<std::string, Totals> Rows(const v1::GetUsageSummaryResponse& s) {
  std::map<std::string, Totals> out;
  for (const auto& r : s.rows()) out[r.key()] = FromRow(r);
  return out;
}

TEST_F(UsageTest, DuplicateRecordUsageIsCountedOnce) {
  bool recorded = false;
  auto e = Event("turn-1", 7, 1000, 500, 200);
  ASSERT_TRUE(Record(e, &recorded).ok());
  EXPECT_TRUE(recorded);
  ASSERT_TRUE(Record(e, &recorded).ok());
  EXPECT_FALSE(recorded);
  // A "duplicate" with different figures changes nothing either: the first one wins.
  auto other = Event("turn-1", 7, 99999, 99999);
  ASSERT_TRUE(Record(other, &recorded).ok());
  EXPECT_FALSE(recorded);
  EXPECT_EQ(Count("usage_logs"), 1);
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(Summary(UserToken(7), v1::GROUP_BY_DAY, Utc(2025, 3, 1), Utc(2025, 4, 1), &s).ok());
  ASSERT_EQ(s.rows_size(), 1);
  EXPECT_EQ(s.totals().requests(), 1);
  EXPECT_EQ(s.totals().cost_nanos(), e.cost_nanos());
}

TEST_F(UsageTest, TwentyConcurrentDuplicatesAreCountedOnce) {
  auto e = Event("turn-concurrent", 7, 1234, 567, 89);
  std::atomic<int> recorded_count{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 20; ++i) {
    threads.emplace_back([&] {
      bool recorded = false;
      if (!Record(e, &recorded).ok()) ++errors;
      if (recorded) ++recorded_count;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(recorded_count.load(), 1);
  EXPECT_EQ(Count("usage_logs"), 1);
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(Summary(UserToken(7), v1::GROUP_BY_MODEL, Utc(2025, 3, 1), Utc(2025, 4, 1), &s).ok());
  EXPECT_EQ(s.totals().requests(), 1);
  EXPECT_EQ(s.totals().prompt_tokens(), 1234);
  EXPECT_EQ(s.totals().cost_nanos(), e.cost_nanos());
}

TEST_F(UsageTest, RecordUsageRejectsBadEventsAndWritesNothing) {
  auto expect_invalid = [&](v1::UsageEvent e, const std::string& field) {
    auto st = Record(e);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(st.error_message().find(field), std::string::npos) << st.error_message();
  };
  auto e = Event("bad", 7, 1000, 500, 100);
  auto wrong_cost = e;
  wrong_cost.set_cost_nanos(e.cost_nanos() + 1);
  expect_invalid(wrong_cost, "cost_nanos");
  auto cached = e;
  cached.set_cached_tokens(1001);
  cached.set_cost_nanos(CostNanos(1000, 1001, 500, {150000, 75000, 600000}));
  expect_invalid(cached, "cached_tokens");
  auto negative = e;
  negative.set_completion_tokens(-1);
  expect_invalid(negative, "completion_tokens");
  auto negative_price = e;
  negative_price.set_output_price_micros_per_mtok(-5);
  expect_invalid(negative_price, "output_price_micros_per_mtok");
  auto empty_id = e;
  empty_id.set_event_id("");
  expect_invalid(empty_id, "event_id");
  auto long_id = e;
  long_id.set_event_id(std::string(129, 'x'));
  expect_invalid(long_id, "event_id");
  auto no_user = e;
  no_user.set_user_id(0);
  expect_invalid(no_user, "user_id");
  auto negative_conversation = e;
  negative_conversation.set_conversation_id(-1);
  expect_invalid(negative_conversation, "conversation_id");
  auto no_model = e;
  no_model.set_model("");
  expect_invalid(no_model, "model");
  auto no_outcome = e;
  no_outcome.set_outcome(v1::OUTCOME_UNSPECIFIED);
  expect_invalid(no_outcome, "outcome");
  auto no_time = e;
  no_time.clear_occurred_at();
  expect_invalid(no_time, "occurred_at");
  auto future = e;
  ToProto(clock_.Now() + absl::Hours(1), future.mutable_occurred_at());
  expect_invalid(future, "occurred_at");
  grpc::ClientContext ctx;
  Authorize(ctx, service_token_);
  v1::RecordUsageResponse resp;
  EXPECT_EQ(stub_->RecordUsage(&ctx, v1::RecordUsageRequest(), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Count("usage_logs"), 0);
  EXPECT_EQ(Count("usage_daily"), 0);
  // A 128-byte id is fine.
  auto max_id = e;
  max_id.set_event_id(std::string(128, 'x'));
  EXPECT_TRUE(Record(max_id).ok());
}

TEST_F(UsageTest, StatelessTurnsAreAccountedUnderConversationZero) {
  auto e = Event("stateless-1", 7, 1000, 500, 100);
  e.set_conversation_id(0);
  bool recorded = false;
  ASSERT_TRUE(Record(e, &recorded).ok());
  EXPECT_TRUE(recorded);
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(
      Summary(UserToken(7), v1::GROUP_BY_CONVERSATION, Utc(2025, 3, 1), Utc(2025, 4, 1), &s).ok());
  auto rows = Rows(s);
  ASSERT_EQ(rows.size(), 1u);
  Totals want;
  want.Add(e);
  EXPECT_EQ(rows["0"], want);
}

TEST_F(UsageTest, OnlyServicesRecordReserveAndRelease) {
  for (const std::string& token : {UserToken(7), AdminToken()}) {
    EXPECT_EQ(Record(Event("x", 7, 1, 1), nullptr, &token).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    v1::ReserveBudgetResponse r;
    EXPECT_EQ(Reserve(7, "x", 1, 0, &r, &token).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(Release("x", nullptr, &token).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  grpc::ClientContext ctx;
  v1::RecordUsageRequest req;
  *req.mutable_event() = Event("x", 7, 1, 1);
  v1::RecordUsageResponse resp;
  EXPECT_EQ(stub_->RecordUsage(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Count("usage_logs"), 0);
  EXPECT_EQ(Count("reservations"), 0);
}

// A small ledger whose figures were worked out by hand (prices: 150000 / 75000 /
// 600000 micros per 1M tokens, and 1500 for the rounding case).
TEST_F(UsageTest, TotalsEqualAHandComputedLedgerToTheNano) {
  // (800*150000 + 200*75000 + 500*600000) / 1000 = 435000
  auto a = Event("a", 7, 1000, 500, 200);
  ASSERT_EQ(a.cost_nanos(), 435000);
  // (3*150000 + 1*600000) / 1000 = 1050
  auto b = Event("b", 7, 3, 1, 0, "gpt-4o");
  ASSERT_EQ(b.cost_nanos(), 1050);
  // 1 token at 1500 micros/Mtok = 1.5 nanos, rounded half up to 2.
  auto c = Event("c", 7, 1, 0, 0, "gpt-4o");
  c.set_input_price_micros_per_mtok(1500);
  c.set_cost_nanos(2);
  // (0*150000 + 1000000*75000 + 0) / 1000 = 75000000, all cached
  auto d = Event("d", 7, 1000000, 0, 1000000);
  ASSERT_EQ(d.cost_nanos(), 75000000);
  for (const auto& e : {a, b, c, d}) ASSERT_TRUE(Record(e).ok());
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(
      Summary(UserToken(7), v1::GROUP_BY_MODEL, Utc(2025, 3, 15), Utc(2025, 3, 16), &s).ok());
  ASSERT_EQ(s.rows_size(), 2);
  EXPECT_EQ(s.rows(0).key(), "gpt-4o");
  EXPECT_EQ(s.rows(0).requests(), 2);
  EXPECT_EQ(s.rows(0).cost_nanos(), 1052);
  EXPECT_EQ(s.rows(1).key(), "gpt-4o-mini");
  EXPECT_EQ(s.rows(1).cost_nanos(), 75435000);
  EXPECT_EQ(s.rows(1).prompt_tokens(), 1001000);
  EXPECT_EQ(s.rows(1).cached_tokens(), 1000200);
  EXPECT_EQ(s.totals().requests(), 4);
  EXPECT_EQ(s.totals().prompt_tokens(), 1001004);
  EXPECT_EQ(s.totals().completion_tokens(), 501);
  EXPECT_EQ(s.totals().cost_nanos(), 75436052);
  EXPECT_EQ(GetBudget(7).spent_nanos(), 75436052);
}

// Hundreds of random events; every grouping over whole-day, partial-day and
// within-one-day ranges equals the sums computed here from the events.
TEST_F(UsageTest, DailyModelConversationAndUserSummariesMatchExactly) {
  std::mt19937_64 rng(42);
  const std::vector<std::string> models = {"gpt-4o", "gpt-4o-mini", "o3"};
  std::vector<v1::UsageEvent> events;
  for (int i = 0; i < 300; ++i) {
    int64_t user = 1 + static_cast<int64_t>(rng() % 3);
    int day = 12 + static_cast<int>(rng() % 4);  // March 12..15; the clock is 15th noon
    int hour = static_cast<int>(rng() % (day == 15 ? 12 : 24));
    absl::Time at =
        Utc(2025, 3, day, hour, static_cast<int>(rng() % 60), static_cast<int>(rng() % 60));
    int64_t prompt = static_cast<int64_t>(rng() % 200000);
    int64_t cached = prompt == 0 ? 0 : static_cast<int64_t>(rng() % (prompt + 1));
    auto e = Event(absl::StrCat("ev-", i), user, prompt, static_cast<int64_t>(rng() % 8000), cached,
                   models[rng() % models.size()], 1 + static_cast<int64_t>(rng() % 5), at);
    // Odd prices so that rounding happens on most events.
    Prices p{static_cast<int64_t>(rng() % 3000000), static_cast<int64_t>(rng() % 1000000),
             static_cast<int64_t>(rng() % 12000000)};
    e.set_input_price_micros_per_mtok(p.input_micros_per_mtok);
    e.set_cached_input_price_micros_per_mtok(p.cached_input_micros_per_mtok);
    e.set_output_price_micros_per_mtok(p.output_micros_per_mtok);
    e.set_cost_nanos(CostNanos(e.prompt_tokens(), cached, e.completion_tokens(), p));
    ASSERT_TRUE(Record(e).ok());
    events.push_back(e);
  }
  struct Range {
    absl::Time from, to;
  };
  std::vector<Range> ranges = {{Utc(2025, 3, 1), Utc(2025, 4, 1)},
                               {Utc(2025, 3, 12, 5, 30), Utc(2025, 3, 15, 7, 15)},
                               {Utc(2025, 3, 13, 3), Utc(2025, 3, 13, 20)},
                               {Utc(2025, 3, 13), Utc(2025, 3, 14, 0, 0, 1)},
                               {Utc(2025, 3, 14), Utc(2025, 3, 14)}};
  auto key_of = [](const v1::UsageEvent& e, v1::GroupBy g) -> std::string {
    switch (g) {
      case v1::GROUP_BY_DAY:
        return absl::FormatTime("%Y-%m-%d", FromProto(e.occurred_at()), absl::UTCTimeZone());
      case v1::GROUP_BY_MODEL:
        return e.model();
      case v1::GROUP_BY_CONVERSATION:
        return absl::StrCat(e.conversation_id());
      default:
        return absl::StrCat(e.user_id());
    }
  };
  for (const auto& range : ranges) {
    for (auto group :
         {v1::GROUP_BY_DAY, v1::GROUP_BY_MODEL, v1::GROUP_BY_CONVERSATION, v1::GROUP_BY_USER}) {
      const int64_t user = 2;
      std::map<std::string, Totals> want;
      Totals want_total;
      for (const auto& e : events) {
        absl::Time at = FromProto(e.occurred_at());
        if (at < range.from || at >= range.to) continue;
        if (group != v1::GROUP_BY_USER && e.user_id() != user) continue;
        want[key_of(e, group)].Add(e);
        want_total.Add(e);
      }
      v1::GetUsageSummaryResponse s;
      std::string token = group == v1::GROUP_BY_USER ? AdminToken() : UserToken(user);
      ASSERT_TRUE(Summary(token, group, range.from, range.to, &s).ok());
      SCOPED_TRACE(absl::StrCat("group ", group, " from ", absl::FormatTime(range.from)));
      EXPECT_TRUE(Rows(s) == want);
      EXPECT_TRUE(FromRow(s.totals()) == want_total);
      // Key order by default.
      for (int i = 1; i < s.rows_size(); ++i) {
        EXPECT_LT(s.rows(i - 1).key(), s.rows(i).key());
      }
    }
  }
}

TEST_F(UsageTest, AdminSeesTopUsersByCostAndTokens) {
  // User 1 spends most, user 3 uses the most tokens (cheap model), user 2 least of both.
  ASSERT_TRUE(Record(Event("u1", 1, 100000, 50000, 0, "gpt-4o")).ok());
  auto cheap = Event("u3", 3, 300000, 0, 300000);
  ASSERT_TRUE(Record(cheap).ok());
  ASSERT_TRUE(Record(Event("u2a", 2, 10, 10)).ok());
  ASSERT_TRUE(Record(Event("u2b", 2, 10, 10)).ok());
  v1::GetUsageSummaryResponse s;
  ASSERT_TRUE(Summary(AdminToken(), v1::GROUP_BY_USER, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, {},
                      v1::ORDER_BY_COST_DESC, 2)
                  .ok());
  ASSERT_EQ(s.rows_size(), 2);
  EXPECT_EQ(s.rows(0).key(), "1");
  EXPECT_EQ(s.rows(1).key(), "3");
  // Totals cover the whole selection, including the user the limit cut.
  EXPECT_EQ(s.totals().requests(), 4);
  EXPECT_EQ(s.totals().prompt_tokens(), 400020);
  ASSERT_TRUE(Summary(AdminToken(), v1::GROUP_BY_USER, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, {},
                      v1::ORDER_BY_TOKENS_DESC, 1)
                  .ok());
  ASSERT_EQ(s.rows_size(), 1);
  EXPECT_EQ(s.rows(0).key(), "3");
  ASSERT_TRUE(Summary(AdminToken(), v1::GROUP_BY_USER, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, {},
                      v1::ORDER_BY_REQUESTS_DESC, 1)
                  .ok());
  EXPECT_EQ(s.rows(0).key(), "2");
  EXPECT_EQ(
      Summary(UserToken(1), v1::GROUP_BY_USER, Utc(2025, 3, 1), Utc(2025, 4, 1), &s).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(UsageTest, UsersSeeOnlyTheirOwnUsage) {
  ASSERT_TRUE(Record(Event("mine", 7, 10, 10)).ok());
  ASSERT_TRUE(Record(Event("theirs", 8, 10, 10)).ok());
  v1::GetUsageSummaryResponse s;
  EXPECT_EQ(
      Summary(UserToken(7), v1::GROUP_BY_DAY, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, 8).error_code(),
      grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(
      Summary(UserToken(7), v1::GROUP_BY_DAY, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, 7).ok());
  EXPECT_EQ(s.totals().requests(), 1);
  ASSERT_TRUE(
      Summary(AdminToken(), v1::GROUP_BY_DAY, Utc(2025, 3, 1), Utc(2025, 4, 1), &s, 8).ok());
  EXPECT_EQ(s.totals().requests(), 1);

  grpc::ClientContext lctx;
  Authorize(lctx, UserToken(7));
  v1::ListUsageRequest lreq;
  lreq.set_user_id(8);
  v1::ListUsageResponse lresp;
  EXPECT_EQ(stub_->ListUsage(&lctx, lreq, &lresp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext bctx;
  Authorize(bctx, UserToken(7));
  v1::GetBudgetRequest breq;
  breq.set_user_id(8);
  v1::Budget b;
  EXPECT_EQ(stub_->GetBudget(&bctx, breq, &b).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext sctx;
  Authorize(sctx, UserToken(7));
  v1::SetBudgetRequest sreq;
  sreq.set_user_id(7);
  sreq.set_monthly_limit_nanos(1);
  EXPECT_EQ(stub_->SetBudget(&sctx, sreq, &b).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // A service acting for a user reads that user's own data.
  grpc::ClientContext actx;
  Authorize(actx, service_token_, 7);
  v1::GetBudgetRequest own;
  ASSERT_TRUE(stub_->GetBudget(&actx, own, &b).ok());
  EXPECT_EQ(b.user_id(), 7);
}

TEST_F(UsageTest, SummaryRejectsBadRanges) {
  v1::GetUsageSummaryResponse s;
  auto st = Summary(UserToken(7), v1::GROUP_BY_DAY, Utc(2025, 3, 2), Utc(2025, 3, 1), &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("from"), std::string::npos);
  EXPECT_EQ(Summary(UserToken(7), v1::GROUP_BY_UNSPECIFIED, Utc(2025, 3, 1), Utc(2025, 3, 2), &s)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  st = Summary(UserToken(7), v1::GROUP_BY_DAY, Utc(2025, 3, 1), Utc(2025, 3, 2), &s, {},
               v1::ORDER_BY_UNSPECIFIED, 1001);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("limit"), std::string::npos);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(7));
  v1::GetUsageSummaryRequest req;
  req.set_group_by(v1::GROUP_BY_DAY);
  ToProto(Utc(2025, 3, 1), req.mutable_to());
  st = stub_->GetUsageSummary(&ctx, req, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("from"), std::string::npos);
  grpc::ClientContext ctx_bad_time;
  Authorize(ctx_bad_time, UserToken(7));
  req.mutable_from()->set_seconds(int64_t{1} << 50);
  st = stub_->GetUsageSummary(&ctx_bad_time, req, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("from is not a valid timestamp"), std::string::npos);
  // The widest valid range works.
  v1::GetUsageSummaryResponse wide;
  EXPECT_TRUE(Summary(UserToken(7), v1::GROUP_BY_DAY, absl::FromUnixSeconds(-62135596800),
                      absl::FromUnixSeconds(253402300799), &wide)
                  .ok());
  grpc::ClientContext ctx2;
  Authorize(ctx2, UserToken(7));
  req.clear_to();
  ToProto(Utc(2025, 3, 1), req.mutable_from());
  st = stub_->GetUsageSummary(&ctx2, req, &s);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("to"), std::string::npos);
}

TEST_F(UsageTest, ListUsagePagesNewestFirstWithinRange) {
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(
        Record(Event(absl::StrCat("e", i), 7, 10 + i, 1, 0, "gpt-4o-mini", 1, Utc(2025, 3, 5 + i)))
            .ok());
  }
  ASSERT_TRUE(Record(Event("other", 8, 1, 1)).ok());
  std::vector<int64_t> seen;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(7));
    v1::ListUsageRequest req;
    req.set_page_size(3);
    req.set_page_token(token);
    v1::ListUsageResponse resp;
    ASSERT_TRUE(stub_->ListUsage(&ctx, req, &resp).ok());
    for (const auto& r : resp.records()) {
      seen.push_back(r.event().prompt_tokens());
      EXPECT_EQ(r.event().user_id(), 7);
      EXPECT_TRUE(r.has_recorded_at());
    }
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, (std::vector<int64_t>{16, 15, 14, 13, 12, 11, 10}));
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(7));
  v1::ListUsageRequest req;
  ToProto(Utc(2025, 3, 6), req.mutable_from());
  ToProto(Utc(2025, 3, 8), req.mutable_to());
  v1::ListUsageResponse resp;
  ASSERT_TRUE(stub_->ListUsage(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.records_size(), 2);
  EXPECT_EQ(resp.records(0).event().prompt_tokens(), 12);
  EXPECT_EQ(resp.records(0).event().event_id(), "e2");
  EXPECT_EQ(resp.records(0).event().cost_nanos(), Event("e2", 7, 12, 1).cost_nanos());
  grpc::ClientContext bad;
  Authorize(bad, UserToken(7));
  v1::ListUsageRequest breq;
  breq.set_page_token("garbage");
  EXPECT_EQ(stub_->ListUsage(&bad, breq, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(UsageTest, FiftyConcurrentReservationsFitExactlyTen) {
  constexpr int64_t kCost = 1'000'000;
  ASSERT_TRUE(SetBudget(7, 10 * kCost).ok());
  std::atomic<int> allowed{0}, refused{0}, errors{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 50; ++i) {
    threads.emplace_back([&, i] {
      v1::ReserveBudgetResponse r;
      if (!Reserve(7, absl::StrCat("turn-", i), kCost, 0, &r).ok()) {
        ++errors;
      } else if (r.allowed()) {
        ++allowed;
      } else {
        EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_BUDGET_EXCEEDED);
        EXPECT_TRUE(r.has_retry_at());
        ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(allowed.load(), 10);
  EXPECT_EQ(refused.load(), 40);
  auto b = GetBudget(7);
  EXPECT_EQ(b.reserved_nanos(), 10 * kCost);
  EXPECT_EQ(b.remaining_nanos(), 0);
}

TEST_F(UsageTest, RateLimitRefusesTheSixthAndFreesUpAfterTheWindow) {
  absl::Time t0 = clock_.Now();
  v1::ReserveBudgetResponse r;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(Reserve(7, absl::StrCat("r", i), 0, 5, &r).ok());
    EXPECT_TRUE(r.allowed()) << i;
    clock_.Advance(absl::Seconds(1));
  }
  ASSERT_TRUE(Reserve(7, "r5", 0, 5, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_RATE_LIMITED);
  EXPECT_EQ(FromProto(r.retry_at()), t0 + absl::Minutes(1));
  EXPECT_NE(r.message().find("5 requests per minute"), std::string::npos) << r.message();
  // Refusals do not count against the rate.
  clock_.Set(t0 + absl::Seconds(59));
  ASSERT_TRUE(Reserve(7, "r6", 0, 5, &r).ok());
  EXPECT_FALSE(r.allowed());
  clock_.Set(t0 + absl::Minutes(1));
  ASSERT_TRUE(Reserve(7, "r7", 0, 5, &r).ok());
  EXPECT_TRUE(r.allowed()) << r.message();
  // The window holds r1..r4 and r7 again: full until r1 turns a minute old.
  ASSERT_TRUE(Reserve(7, "r8", 0, 5, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(FromProto(r.retry_at()), t0 + absl::Seconds(61));
  // Another user has a window of their own; 0 means no rate limit.
  ASSERT_TRUE(Reserve(8, "other", 0, 5, &r).ok());
  EXPECT_TRUE(r.allowed());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Reserve(9, absl::StrCat("free", i), 0, 0, &r).ok());
    EXPECT_TRUE(r.allowed());
  }
}

TEST_F(UsageTest, RepeatedReserveReturnsTheOriginalDecision) {
  ASSERT_TRUE(SetBudget(7, 1000).ok());
  v1::ReserveBudgetResponse first, again;
  ASSERT_TRUE(Reserve(7, "t1", 100, 5, &first).ok());
  ASSERT_TRUE(Reserve(7, "t1", 100, 5, &again).ok());
  EXPECT_TRUE(again.allowed());
  EXPECT_EQ(again.remaining_nanos(), 900);
  EXPECT_EQ(first.remaining_nanos(), 900);
  EXPECT_EQ(GetBudget(7).reserved_nanos(), 100);
  ASSERT_TRUE(Reserve(7, "t2", 5000, 5, &first).ok());
  EXPECT_FALSE(first.allowed());
  ASSERT_TRUE(SetBudget(7, 100000).ok());
  ASSERT_TRUE(Reserve(7, "t2", 5000, 5, &again).ok());
  EXPECT_FALSE(again.allowed());
  EXPECT_EQ(again.message(), first.message());
  // Repeats do not use up the rate either: only t1 was admitted.
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(Reserve(7, absl::StrCat("more", i), 1, 5, &again).ok());
    EXPECT_TRUE(again.allowed()) << i;
  }
  // The same event id for another user is a caller bug, not a second reservation.
  EXPECT_EQ(Reserve(8, "t1", 100, 5, &again).error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

// The refusal messages word for word (people read them, and a replay must repeat
// them exactly), with amounts in dollars and times truncated to the second.
TEST_F(UsageTest, RefusalMessagesAreWordedExactly) {
  clock_.Set(Utc(2025, 3, 15, 12) + absl::Milliseconds(750));
  ASSERT_TRUE(SetBudget(7, 1'500'000'000).ok());
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "big", 1'000'000'000, 2, &r).ok());
  ASSERT_TRUE(r.allowed());
  EXPECT_EQ(r.remaining_nanos(), 500'000'000);
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_UNSPECIFIED);
  EXPECT_EQ(r.message(), "");
  EXPECT_FALSE(r.has_retry_at());
  ASSERT_TRUE(Reserve(7, "more", 600'000'123, 2, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_BUDGET_EXCEEDED);
  EXPECT_EQ(r.remaining_nanos(), 500'000'000);
  EXPECT_EQ(FromProto(r.retry_at()), clock_.Now() + kTtl);
  EXPECT_EQ(r.message(),
            "monthly budget of $1.50 reached (spent $0.00, in flight $1.00, this turn needs up "
            "to $0.600000123); turns in flight hold the rest, retry after 2025-03-15T12:10:00Z");
  ASSERT_TRUE(Reserve(7, "small", 7, 2, &r).ok());
  ASSERT_TRUE(r.allowed());
  ASSERT_TRUE(Reserve(7, "third", 7, 2, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_RATE_LIMITED);
  EXPECT_EQ(r.remaining_nanos(), 0);
  EXPECT_EQ(FromProto(r.retry_at()), clock_.Now() + absl::Minutes(1));
  EXPECT_EQ(r.message(),
            "rate limit of 2 requests per minute reached; next request allowed at "
            "2025-03-15T12:01:00Z");
  // Spent alone leaves no room: only the month's end helps. 1000000 prompt tokens
  // at 1500000 micros/Mtok = $1.50 spent.
  auto e = Event("big", 7, 1'000'000, 0);
  e.set_input_price_micros_per_mtok(1'500'000);
  e.set_cost_nanos(1'500'000'000);
  ASSERT_TRUE(Record(e).ok());
  ASSERT_TRUE(Reserve(7, "after", 1, 0, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.remaining_nanos(), -7);
  EXPECT_EQ(FromProto(r.retry_at()), Utc(2025, 4, 1));
  EXPECT_EQ(r.message(),
            "monthly budget of $1.50 reached (spent $1.50, in flight $0.000000007, this turn "
            "needs up to $0.000000001); the budget resets at 2025-04-01T00:00:00Z");
}

TEST_F(UsageTest, ExpiredReservationsStopHoldingBudget) {
  ASSERT_TRUE(SetBudget(7, 1000).ok());
  absl::Time t0 = clock_.Now();
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "a", 1000, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.remaining_nanos(), 0);
  ASSERT_TRUE(Reserve(7, "b", 1, 0, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_BUDGET_EXCEEDED);
  // Only the reservation in flight stands in the way: retry when it expires.
  EXPECT_EQ(FromProto(r.retry_at()), t0 + kTtl);
  clock_.Set(t0 + kTtl - absl::Seconds(1));
  EXPECT_EQ(GetBudget(7).reserved_nanos(), 1000);
  clock_.Set(t0 + kTtl);
  EXPECT_EQ(GetBudget(7).reserved_nanos(), 0);
  ASSERT_TRUE(Reserve(7, "c", 1000, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  bool released = true;
  ASSERT_TRUE(Release("a", &released).ok());
  EXPECT_FALSE(released);  // expired: it held nothing any more
  // The expired turn's usage still arrives and is recorded.
  bool recorded = false;
  ASSERT_TRUE(Record(Event("a", 7, 1000, 100), &recorded).ok());
  EXPECT_TRUE(recorded);
  auto b = GetBudget(7);
  EXPECT_EQ(b.spent_nanos(), Event("a", 7, 1000, 100).cost_nanos());
  EXPECT_EQ(b.reserved_nanos(), 1000);
}

TEST_F(UsageTest, ReleaseFreesTheReservationOnce) {
  ASSERT_TRUE(SetBudget(7, 1000).ok());
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "a", 800, 0, &r).ok());
  bool released = false;
  ASSERT_TRUE(Release("a", &released).ok());
  EXPECT_TRUE(released);
  ASSERT_TRUE(Release("a", &released).ok());
  EXPECT_FALSE(released);
  ASSERT_TRUE(Release("never-reserved", &released).ok());
  EXPECT_FALSE(released);
  EXPECT_EQ(GetBudget(7).reserved_nanos(), 0);
  ASSERT_TRUE(Reserve(7, "b", 1000, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(Release("", &released).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// The agent gave up on a ReserveBudget still queued on the user's lock and released
// it at once: the decision that commits afterwards must not hold the money.
TEST_F(UsageTest, AReleaseThatOvertakesItsReservationLeavesNothingHeld) {
  ASSERT_TRUE(SetBudget(7, 1000).ok());
  bool released = true;
  ASSERT_TRUE(Release("late", &released).ok());
  EXPECT_FALSE(released);  // nothing was held yet
  v1::ReserveBudgetResponse r;
  EXPECT_EQ(Reserve(7, "late", 800, 0, &r).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GetBudget(7).reserved_nanos(), 0);
  ASSERT_TRUE(Reserve(7, "next", 1000, 0, &r).ok());
  EXPECT_TRUE(r.allowed());  // the whole budget is free
}

TEST_F(UsageTest, SettlingAtLowerAndHigherCostThanReserved) {
  ASSERT_TRUE(SetBudget(7, 1'000'000).ok());
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "low", 500'000, 0, &r).ok());
  ASSERT_TRUE(r.allowed());
  auto low = Event("low", 7, 1000, 100);  // 210000 nanos
  ASSERT_EQ(low.cost_nanos(), 210000);
  ASSERT_TRUE(Record(low).ok());
  auto b = GetBudget(7);
  EXPECT_EQ(b.spent_nanos(), 210000);
  EXPECT_EQ(b.reserved_nanos(), 0);
  EXPECT_EQ(b.remaining_nanos(), 790000);
  ASSERT_TRUE(Reserve(7, "high", 100'000, 0, &r).ok());
  ASSERT_TRUE(r.allowed());
  EXPECT_EQ(r.remaining_nanos(), 690000);
  auto high = Event("high", 7, 2000, 1000);  // 900000 nanos: more than reserved
  ASSERT_EQ(high.cost_nanos(), 900000);
  ASSERT_TRUE(Record(high).ok());
  b = GetBudget(7);
  EXPECT_EQ(b.spent_nanos(), 1110000);
  EXPECT_EQ(b.reserved_nanos(), 0);
  EXPECT_EQ(b.remaining_nanos(), -110000);  // an overshoot shows
  ASSERT_TRUE(Reserve(7, "next", 0, 0, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(r.reason(), v1::REFUSAL_REASON_BUDGET_EXCEEDED);
  // Settled reservations are not released again.
  bool released = true;
  ASSERT_TRUE(Release("low", &released).ok());
  EXPECT_FALSE(released);
}

TEST_F(UsageTest, BudgetResetsAtTheMonthBoundary) {
  clock_.Set(Utc(2025, 3, 31, 23, 59));
  auto e = Event("march", 7, 100000, 10000);
  ASSERT_TRUE(Record(e).ok());
  v1::Budget b;
  ASSERT_TRUE(SetBudget(7, e.cost_nanos(), &b).ok());
  EXPECT_EQ(b.spent_nanos(), e.cost_nanos());
  EXPECT_EQ(b.remaining_nanos(), 0);
  EXPECT_FALSE(b.unlimited());
  EXPECT_EQ(FromProto(b.period_start()), Utc(2025, 3, 1));
  EXPECT_EQ(FromProto(b.resets_at()), Utc(2025, 4, 1));
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "late", 1, 0, &r).ok());
  EXPECT_FALSE(r.allowed());
  EXPECT_EQ(FromProto(r.retry_at()), Utc(2025, 4, 1));
  EXPECT_NE(r.message().find("resets at 2025-04-01T00:00:00Z"), std::string::npos) << r.message();
  clock_.Set(Utc(2025, 4, 1, 0, 0, 1));
  ASSERT_TRUE(Reserve(7, "april", 1, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  b = GetBudget(7);
  EXPECT_EQ(b.spent_nanos(), 0);
  EXPECT_EQ(b.reserved_nanos(), 1);
  EXPECT_EQ(FromProto(b.period_start()), Utc(2025, 4, 1));
  EXPECT_EQ(FromProto(b.resets_at()), Utc(2025, 5, 1));
  // A late event that occurred in March counts for March, not April.
  ASSERT_TRUE(
      Record(Event("march-late", 7, 10, 10, 0, "gpt-4o-mini", 1, Utc(2025, 3, 31, 23, 59, 59)))
          .ok());
  EXPECT_EQ(GetBudget(7).spent_nanos(), 0);
}

TEST_F(UsageTest, BudgetAdminOnlyAndUnlimitedByDefault) {
  v1::Budget b = GetBudget(7);
  EXPECT_TRUE(b.unlimited());
  EXPECT_EQ(b.monthly_limit_nanos(), 0);
  EXPECT_EQ(b.remaining_nanos(), 0);
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "x", int64_t{1} << 60, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.remaining_nanos(), 0);
  EXPECT_EQ(SetBudget(7, -1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(SetBudget(0, 1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(SetBudget(7, 5000, &b).ok());
  EXPECT_EQ(b.monthly_limit_nanos(), 5000);
  EXPECT_EQ(b.reserved_nanos(), int64_t{1} << 60);
  // Own budget without user_id.
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(7));
  ASSERT_TRUE(stub_->GetBudget(&ctx, v1::GetBudgetRequest(), &b).ok());
  EXPECT_EQ(b.user_id(), 7);
  EXPECT_EQ(b.monthly_limit_nanos(), 5000);
  v1::ReserveBudgetResponse bad;
  EXPECT_EQ(Reserve(7, "neg", -1, 0, &bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reserve(7, "neg", 1, -1, &bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reserve(0, "neg", 1, 0, &bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Reserve(7, std::string(129, 'e'), 1, 0, &bad).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

double CounterValue(prometheus::Registry& registry, const std::string& name,
                    const std::string& result) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) return m.counter.value;
      }
    }
  }
  return -1;
}

TEST_F(UsageTest, MetricsCountDecisionsAndEvents) {
  ASSERT_TRUE(SetBudget(7, 10).ok());
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "a", 10, 1, &r).ok());
  ASSERT_TRUE(Reserve(7, "a", 10, 1, &r).ok());
  ASSERT_TRUE(Reserve(7, "b", 10, 1, &r).ok());
  ASSERT_TRUE(Reserve(7, "c", 10, 0, &r).ok());
  ASSERT_TRUE(Record(Event("a", 7, 1, 1)).ok());
  ASSERT_TRUE(Record(Event("a", 7, 1, 1)).ok());
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_reservations_total", "allowed"), 1);
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_reservations_total", "replayed"), 1);
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_reservations_total", "rate_limited"), 1);
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_reservations_total", "budget_exceeded"), 1);
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_events_total", "recorded"), 1);
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_events_total", "duplicate"), 1);
}

// Decisions are kept a day past the TTL (for replays), then pruned by the user's
// next reservation; other users' decisions are left alone.
TEST_F(UsageTest, OldDecisionsArePrunedByTheUsersNextReservation) {
  absl::Time t0 = clock_.Now();
  v1::ReserveBudgetResponse r;
  ASSERT_TRUE(Reserve(7, "old", 5, 0, &r).ok());
  ASSERT_TRUE(Reserve(8, "other", 5, 0, &r).ok());
  const absl::Duration keep = kTtl + absl::Hours(24);
  clock_.Set(t0 + keep);
  ASSERT_TRUE(Reserve(7, "kept", 5, 0, &r).ok());
  EXPECT_EQ(Count("reservations"), 3);
  clock_.Set(t0 + keep + absl::Microseconds(1));
  ASSERT_TRUE(Reserve(7, "new", 5, 0, &r).ok());
  EXPECT_EQ(Count("reservations"), 3);
  EXPECT_EQ(pool_->Exec("SELECT count(*) FROM reservations WHERE event_id = 'old'")->Int(0, 0), 0);
  // Once pruned, the id is free again: a fresh decision, not a replay.
  ASSERT_TRUE(Reserve(7, "old", 5, 0, &r).ok());
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(CounterValue(registry_, "aichat_usage_reservations_total", "replayed"), 0);
}

}  // namespace
}  // namespace aichat::usage
