// The abuse guards of UserService over real gRPC and PostgreSQL: bounded password
// hashing, failed-login throttling, closed registration and the default budget
// (set through a stand-in usage service that checks the token as usage does).
#include <gtest/gtest.h>

#include <map>

#include "absl/synchronization/mutex.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/status.h"
#include "services/user/budget_client.h"
#include "services/user/config.h"
#include "tests/user/user_fixture.h"

namespace aichat::user {
namespace {

using testing::Authorize;

// UsageService.SetBudget as the usage service answers it: admin only.
class FakeUsage final : public usage::v1::UsageService::CallbackService {
 public:
  explicit FakeUsage(const Authenticator* auth) : auth_(auth) {}

  grpc::ServerUnaryReactor* SetBudget(grpc::CallbackServerContext* ctx,
                                      const usage::v1::SetBudgetRequest* req,
                                      usage::v1::Budget* resp) override {
    auto caller = auth_->Authenticate(*ctx);
    absl::Status st = caller.ok() ? RequireAdmin(*caller) : caller.status();
    absl::MutexLock lock(&mu_);
    if (st.ok() && down_) st = absl::UnavailableError("usage is down");
    if (st.ok()) {
      budgets_[req->user_id()] = req->monthly_limit_nanos();
      resp->set_user_id(req->user_id());
      resp->set_monthly_limit_nanos(req->monthly_limit_nanos());
    }
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }

  std::map<int64_t, int64_t> budgets() {
    absl::MutexLock lock(&mu_);
    return budgets_;
  }
  void set_down(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }

 private:
  const Authenticator* auth_;
  absl::Mutex mu_;
  std::map<int64_t, int64_t> budgets_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
};

class UserGuardTest : public UserServiceTest {};

TEST_F(UserGuardTest, PasswordHashingIsBoundedAndExcessIsRefusedAtOnce) {
  HashGate gate(1);
  StartService({}, {.hash_gate = &gate});
  v1::User u;
  ASSERT_TRUE(Register("a@example.com", kPassword, &u).ok());
  EXPECT_EQ(gate.in_flight(), 0);  // given back after the hash

  auto held = gate.TryAcquire();  // the only permit: hashing is "busy"
  ASSERT_NE(held, nullptr);
  v1::LoginResponse login;
  absl::Time start = absl::Now();
  EXPECT_EQ(Login("a@example.com", kPassword, &login).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Register("b@example.com", kPassword, &u).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // refused, not queued
  // A bad request is still INVALID_ARGUMENT naming the field, not a refusal.
  auto bad = Register("b@example.com", "short", &u);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("password"), std::string::npos);
  EXPECT_EQ(Count("users"), 1);

  held.reset();
  EXPECT_TRUE(Login("a@example.com", kPassword, &login).ok());
}

TEST_F(UserGuardTest, FailedLoginsPerAccountAreThrottled) {
  LoginThrottle throttle({.free_failures_per_account = 3,
                          .free_failures_per_address = 0,
                          .base_delay = absl::Hours(1)});
  StartService({}, {.throttle = &throttle});
  RegisterAndLogin("victim@example.com");
  RegisterAndLogin("other@example.com");
  v1::LoginResponse login;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Login("victim@example.com", "wrong password", &login).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // The 4th failure starts the backoff ...
  EXPECT_EQ(Login("Victim@Example.com", "wrong password", &login).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // ... during which not even the right password is tried.
  auto st = Login("victim@example.com", kPassword, &login);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("too many failed logins"), std::string::npos);
  EXPECT_TRUE(Login("other@example.com", kPassword, &login).ok());

  // Unknown emails are throttled the same way (no account enumeration).
  for (int i = 0; i < 4; ++i) Login("nobody@example.com", "wrong password", &login);
  EXPECT_EQ(Login("nobody@example.com", kPassword, &login).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(UserGuardTest, FailedLoginsPerClientAddressAreThrottled) {
  LoginThrottle throttle({.free_failures_per_account = 0,
                          .free_failures_per_address = 3,
                          .base_delay = absl::Hours(1),
                          .exempt_loopback = false});  // the test client is on loopback
  StartService({}, {.throttle = &throttle});
  RegisterAndLogin("good@example.com");
  v1::LoginResponse login;
  // Spraying one password over many accounts from one address...
  for (const char* email : {"a@example.com", "b@example.com", "c@example.com", "d@example.com"}) {
    EXPECT_EQ(Login(email, "wrong password", &login).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // ...blocks that address (loopback here), for every account and for API keys.
  EXPECT_EQ(Login("good@example.com", kPassword, &login).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  grpc::ClientContext ctx;
  v1::LoginRequest req;
  req.set_api_key("aik_not-a-real-key");
  EXPECT_EQ(stub_->Login(&ctx, req, &login).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(UserGuardTest, ClosedRegistrationIsForAdminsOnly) {
  StartService({.registration_open = false});
  v1::User u;
  auto st = Register("self@example.com", kPassword, &u);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("registration is closed"), std::string::npos);
  {
    grpc::ClientContext ctx;
    Authorize(ctx, keys_.Token(42, Role::kUser));
    v1::RegisterRequest req;
    req.set_email("self@example.com");
    req.set_password(kPassword);
    EXPECT_EQ(stub_->Register(&ctx, req, &u).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(Count("users"), 0);
  grpc::ClientContext ctx;
  Authorize(ctx, keys_.Token(1, Role::kAdmin));
  v1::RegisterRequest req;
  req.set_email("new@example.com");
  req.set_password(kPassword);
  ASSERT_TRUE(stub_->Register(&ctx, req, &u).ok());
  v1::LoginResponse login;
  EXPECT_TRUE(Login("new@example.com", kPassword, &login).ok());  // login is not closed
}

class DefaultBudgetTest : public UserServiceTest {
 protected:
  void SetUp() override {
    UserServiceTest::SetUp();
    usage_ = std::make_unique<FakeUsage>(auth_.get());
    usage_server_ = std::make_unique<ServiceServer>(
        ServerOptions{.name = "usage", .listen = "127.0.0.1:0", .metrics_listen = ""});
    usage_server_->AddService(usage_.get());
    ASSERT_TRUE(usage_server_->Start().ok());
    signer_ = std::make_unique<TokenSigner>(*TokenSigner::Create(keys_.pair().private_key));
    budgets_ =
        MakeUsageBudgetClient(aichat::testing::LocalChannel(usage_server_->port()), signer_.get());
    auto nanos = ParseUsdNanos("2.50", "budget");
    ASSERT_TRUE(nanos.ok());
    StartService({.default_monthly_budget_nanos = *nanos}, {.budgets = budgets_.get()});
  }
  void TearDown() override {
    UserServiceTest::TearDown();
    usage_server_->Shutdown();
  }

  std::unique_ptr<FakeUsage> usage_;
  std::unique_ptr<ServiceServer> usage_server_;
  std::unique_ptr<TokenSigner> signer_;
  std::unique_ptr<BudgetClient> budgets_;
};

TEST_F(DefaultBudgetTest, NewAccountsGetTheDefaultBudgetFirst) {
  v1::User u;
  ASSERT_TRUE(Register("a@example.com", kPassword, &u).ok());
  EXPECT_EQ(usage_->budgets(), (std::map<int64_t, int64_t>{{u.id(), 2500000000}}));
}

TEST_F(DefaultBudgetTest, NoBudgetNoAccount) {
  usage_->set_down(true);
  v1::User u;
  auto st = Register("a@example.com", kPassword, &u);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Count("users"), 0);  // never an account without its budget
  usage_->set_down(false);
  ASSERT_TRUE(Register("a@example.com", kPassword, &u).ok());
  EXPECT_EQ(usage_->budgets().at(u.id()), 2500000000);
}

TEST(ParseUsdNanosTest, ExactDecimals) {
  EXPECT_EQ(*ParseUsdNanos("0", "x"), 0);
  EXPECT_EQ(*ParseUsdNanos("5", "x"), 5000000000);
  EXPECT_EQ(*ParseUsdNanos("$0.000000001", "x"), 1);
  EXPECT_EQ(*ParseUsdNanos("12.5", "x"), 12500000000);
  for (const char* bad : {"", "-1", "1.", ".5", "1e3", "abc", "0.0000000001", "99999999999"}) {
    auto st = ParseUsdNanos(bad, "AICHAT_DEFAULT_MONTHLY_BUDGET");
    EXPECT_EQ(st.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace aichat::user
