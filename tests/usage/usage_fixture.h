// The usage service in-process: a fresh PostgreSQL database, the real store and
// service behind a loopback gRPC server, and a clock the test moves by hand.
#pragma once

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/migrations.h"
#include "common/money.h"
#include "common/pg.h"
#include "common/proto_time.h"
#include "common/server.h"
#include "services/usage/migrations.h"
#include "services/usage/pg_usage_store.h"
#include "services/usage/usage_service.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace aichat::usage {

class FakeClock {
 public:
  explicit FakeClock(absl::Time start) : now_(start) {}
  absl::Time Now() const {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  void Set(absl::Time t) {
    absl::MutexLock lock(&mu_);
    now_ = t;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

inline absl::Time Utc(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

class UsageTest : public ::testing::Test {
 protected:
  static constexpr absl::Duration kTtl = absl::Minutes(10);

  void SetUp() override {
    PgPoolOptions opts;
    opts.url = aichat::testing::TestPostgres::Shared().CreateDatabase();
    opts.size = 8;
    pool_ = std::make_unique<PgPool>(opts);
    ASSERT_TRUE(ApplyMigrations(*pool_, Migrations()).ok());
    store_ = std::make_unique<PgUsageStore>(pool_.get(), PgUsageStoreOptions{kTtl});
    auth_ = std::make_unique<Authenticator>(keys_.MakeAuthenticator());
    workers_ = std::make_unique<WorkerPool>(8);
    service_ = std::make_unique<UsageServiceImpl>(store_.get(), auth_.get(), workers_.get(),
                                                  registry_, [this] { return clock_.Now(); });
    server_ = std::make_unique<ServiceServer>(
        ServerOptions{.name = "usage", .listen = "127.0.0.1:0", .metrics_listen = ""});
    server_->AddService(service_.get());
    ASSERT_TRUE(server_->Start().ok());
    channel_ = aichat::testing::LocalChannel(server_->port());
    stub_ = v1::UsageService::NewStub(channel_);
    service_token_ = keys_.ServiceToken();
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::string UserToken(int64_t user_id) const { return keys_.Token(user_id, Role::kUser); }
  std::string AdminToken(int64_t user_id = 9000) const {
    return keys_.Token(user_id, Role::kAdmin);
  }

  // A valid event: cost_nanos computed with the one formula.
  v1::UsageEvent Event(const std::string& id, int64_t user, int64_t prompt, int64_t completion,
                       int64_t cached = 0, const std::string& model = "gpt-4o-mini",
                       int64_t conversation = 1, absl::Time at = absl::InfinitePast()) const {
    v1::UsageEvent e;
    e.set_event_id(id);
    e.set_user_id(user);
    e.set_conversation_id(conversation);
    e.set_prompt_id(1);
    e.set_model(model);
    e.set_provider_model(model + "-2024-07-18");
    e.set_prompt_tokens(prompt);
    e.set_completion_tokens(completion);
    e.set_cached_tokens(cached);
    e.set_input_price_micros_per_mtok(150000);
    e.set_cached_input_price_micros_per_mtok(75000);
    e.set_output_price_micros_per_mtok(600000);
    e.set_cost_nanos(CostNanos(prompt, cached, completion, {150000, 75000, 600000}));
    e.set_outcome(v1::OUTCOME_COMPLETED);
    ToProto(at == absl::InfinitePast() ? clock_.Now() : at, e.mutable_occurred_at());
    return e;
  }

  grpc::Status Record(const v1::UsageEvent& e, bool* recorded = nullptr,
                      const std::string* token = nullptr) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, token ? *token : service_token_);
    aichat::testing::SetDeadline(ctx);
    v1::RecordUsageRequest req;
    *req.mutable_event() = e;
    v1::RecordUsageResponse resp;
    auto st = stub_->RecordUsage(&ctx, req, &resp);
    if (recorded != nullptr) *recorded = resp.recorded();
    return st;
  }

  grpc::Status RecordBatch(const std::vector<v1::UsageEvent>& events,
                           std::vector<bool>* recorded = nullptr,
                           const std::string* token = nullptr) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, token ? *token : service_token_);
    aichat::testing::SetDeadline(ctx, absl::Seconds(30));
    v1::RecordUsageBatchRequest req;
    for (const auto& e : events) *req.add_events() = e;
    v1::RecordUsageBatchResponse resp;
    auto st = stub_->RecordUsageBatch(&ctx, req, &resp);
    if (recorded != nullptr) recorded->assign(resp.recorded().begin(), resp.recorded().end());
    return st;
  }

  grpc::Status Reserve(int64_t user, const std::string& event_id, int64_t max_cost, int32_t rpm,
                       v1::ReserveBudgetResponse* out, const std::string* token = nullptr) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, token ? *token : service_token_);
    aichat::testing::SetDeadline(ctx);
    v1::ReserveBudgetRequest req;
    req.set_user_id(user);
    req.set_event_id(event_id);
    req.set_max_cost_nanos(max_cost);
    req.set_requests_per_minute(rpm);
    return stub_->ReserveBudget(&ctx, req, out);
  }

  grpc::Status Release(const std::string& event_id, bool* released,
                       const std::string* token = nullptr) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, token ? *token : service_token_);
    aichat::testing::SetDeadline(ctx);
    v1::ReleaseBudgetRequest req;
    req.set_event_id(event_id);
    v1::ReleaseBudgetResponse resp;
    auto st = stub_->ReleaseBudget(&ctx, req, &resp);
    if (released != nullptr) *released = resp.released();
    return st;
  }

  grpc::Status SetBudget(int64_t user, int64_t limit, v1::Budget* out = nullptr) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, AdminToken());
    v1::SetBudgetRequest req;
    req.set_user_id(user);
    req.set_monthly_limit_nanos(limit);
    v1::Budget b;
    auto st = stub_->SetBudget(&ctx, req, &b);
    if (out != nullptr) *out = b;
    return st;
  }

  v1::Budget GetBudget(int64_t user) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, AdminToken());
    v1::GetBudgetRequest req;
    req.set_user_id(user);
    v1::Budget b;
    EXPECT_TRUE(stub_->GetBudget(&ctx, req, &b).ok());
    return b;
  }

  grpc::Status Summary(const std::string& token, v1::GroupBy group, absl::Time from, absl::Time to,
                       v1::GetUsageSummaryResponse* out, std::optional<int64_t> user = {},
                       v1::OrderBy order = v1::ORDER_BY_UNSPECIFIED, int limit = 0) {
    grpc::ClientContext ctx;
    aichat::testing::Authorize(ctx, token);
    aichat::testing::SetDeadline(ctx, absl::Seconds(30));
    v1::GetUsageSummaryRequest req;
    if (user) req.set_user_id(*user);
    ToProto(from, req.mutable_from());
    ToProto(to, req.mutable_to());
    req.set_group_by(group);
    req.set_order_by(order);
    req.set_limit(limit);
    return stub_->GetUsageSummary(&ctx, req, out);
  }

  int64_t Count(const std::string& table) {
    return pool_->Exec("SELECT count(*) FROM " + table)->Int(0, 0);
  }

  aichat::testing::LogCapture logs_;  // one JSON line per call; kept out of the test output
  FakeClock clock_{Utc(2025, 3, 15, 12)};
  aichat::testing::TestKeys keys_;
  prometheus::Registry registry_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgUsageStore> store_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<UsageServiceImpl> service_;
  std::unique_ptr<ServiceServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::UsageService::Stub> stub_;
  std::string service_token_;
};

}  // namespace aichat::usage
