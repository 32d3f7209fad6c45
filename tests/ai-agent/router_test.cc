// The router alone: weights, calls in flight, caps, circuits and cooldowns, with the
// clock in the test's hands.
#include "services/ai-agent/router.h"

#include <gtest/gtest.h>

#include <map>

namespace aichat::agent {
namespace {

ModelRecord TwoDeployments(int w1, int w2, int cap1 = 0) {
  ModelRecord m;
  m.name = "m";
  m.provider_model = "gpt";
  m.deployments = {{"east", "https://east.example/v1", "", "", w1, cap1},
                   {"west", "https://west.example/v1", "", "", w2, 0}};
  return m;
}

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

TEST(RouterTest, AModelWithoutDeploymentsRunsOnItsOwnSettings) {
  ModelRecord m;
  m.name = "solo";
  m.provider_model = "gpt-4o";
  m.base_url = "https://api.example/v1";
  m.api_key_env = "OPENAI_API_KEY";
  auto ds = Router::DeploymentsOf(m);
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_EQ(ds[0].name, "d1");
  EXPECT_EQ(ds[0].base_url, "https://api.example/v1");
  EXPECT_EQ(ds[0].provider_model, "gpt-4o");
  Router r;
  auto route = r.Pick(m, {}, kT0);
  ASSERT_TRUE(route.has_value());
  EXPECT_EQ(route->deployment.base_url, "https://api.example/v1");
}

TEST(RouterTest, WeightsAreRespectedOverManyCalls) {
  Router r;
  ModelRecord m = TwoDeployments(3, 1);
  std::map<std::string, int> n;
  for (int i = 0; i < 4000; ++i) {
    auto route = r.Pick(m, {}, kT0);
    ASSERT_TRUE(route.has_value());
    ++n[route->deployment.name];
    r.Report(*route, CallResult::kOk, std::nullopt, kT0);
  }
  EXPECT_NEAR(n["east"] / 4000.0, 0.75, 0.04);
  EXPECT_NEAR(n["west"] / 4000.0, 0.25, 0.04);
}

TEST(RouterTest, FewestCallsInFlightForTheWeightComeFirstAndCapsHold) {
  Router r;
  ModelRecord m = TwoDeployments(1, 1, /*cap1=*/2);
  // Calls that do not end: each pick goes to the less loaded side while east has room.
  std::map<std::string, int> n;
  for (int i = 0; i < 10; ++i) {
    auto route = r.Pick(m, {}, kT0);
    ASSERT_TRUE(route.has_value());
    ++n[route->deployment.name];
  }
  EXPECT_EQ(n["east"], 2);  // its cap
  EXPECT_EQ(n["west"], 8);
  EXPECT_EQ(r.Health("m", "east", kT0).in_flight, 2);
  // Both tried (or full): nothing left.
  EXPECT_FALSE(r.Pick(m, {1}, kT0).has_value());
}

TEST(RouterTest, ACircuitOpensAfterThreeFailuresAndOneProbeDecides) {
  Router r(RouterOptions{.failures_to_open = 3, .open_for = absl::Seconds(30)});
  ModelRecord m = TwoDeployments(1, 0);  // weight 0 reads as 1
  m.deployments.pop_back();
  for (int i = 0; i < 3; ++i) {
    auto route = r.Pick(m, {}, kT0);
    ASSERT_TRUE(route.has_value()) << i;
    r.Report(*route, CallResult::kFailed, std::nullopt, kT0);
  }
  EXPECT_EQ(r.Health("m", "east", kT0).circuit, "open");
  EXPECT_FALSE(r.Pick(m, {}, kT0 + absl::Seconds(29)).has_value());
  // Half-open: exactly one probe goes out.
  const absl::Time later = kT0 + absl::Seconds(30);
  EXPECT_EQ(r.Health("m", "east", later).circuit, "half_open");
  auto probe = r.Pick(m, {}, later);
  ASSERT_TRUE(probe.has_value());
  EXPECT_TRUE(probe->probe);
  EXPECT_FALSE(r.Pick(m, {}, later).has_value());
  // A failed probe opens it again; a good one closes it.
  r.Report(*probe, CallResult::kFailed, std::nullopt, later);
  EXPECT_EQ(r.Health("m", "east", later).circuit, "open");
  const absl::Time again = later + absl::Seconds(30);
  probe = r.Pick(m, {}, again);
  ASSERT_TRUE(probe.has_value());
  r.Report(*probe, CallResult::kOk, std::nullopt, again);
  EXPECT_EQ(r.Health("m", "east", again).circuit, "closed");
  EXPECT_TRUE(r.Pick(m, {}, again).has_value());
}

TEST(RouterTest, OpenOkCallsAnOpenCircuitButNeverACooledDownDeployment) {
  Router r(RouterOptions{.failures_to_open = 1, .open_for = absl::Seconds(30)});
  ModelRecord m = TwoDeployments(1, 1);
  auto east = r.Pick(m, {1}, kT0);
  ASSERT_TRUE(east.has_value());
  r.Report(*east, CallResult::kFailed, std::nullopt, kT0);
  auto west = r.Pick(m, {0}, kT0);
  ASSERT_TRUE(west.has_value());
  r.Report(*west, CallResult::kRateLimited, absl::Seconds(5), kT0);
  EXPECT_FALSE(r.Pick(m, {}, kT0).has_value());
  auto last = r.Pick(m, {}, kT0, /*open_ok=*/true);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->deployment.name, "east");
  EXPECT_FALSE(last->probe);
  EXPECT_FALSE(r.Pick(m, {0}, kT0, /*open_ok=*/true).has_value());  // west cools down
  r.Report(*last, CallResult::kOk, std::nullopt, kT0);
  EXPECT_EQ(r.Health("m", "east", kT0).circuit, "closed");
}

TEST(RouterTest, A429WithRetryAfterIsNotCalledAgainUntilThen) {
  Router r;
  ModelRecord m = TwoDeployments(1, 1);
  // Until east answers 429 with Retry-After: 2.
  std::optional<Route> east;
  while (!east.has_value()) {
    auto route = r.Pick(m, {}, kT0);
    ASSERT_TRUE(route.has_value());
    if (route->deployment.name == "east") {
      east = route;
    } else {
      r.Report(*route, CallResult::kOk, std::nullopt, kT0);
    }
  }
  r.Report(*east, CallResult::kRateLimited, absl::Seconds(2), kT0);
  for (int i = 0; i < 50; ++i) {
    auto route = r.Pick(m, {}, kT0 + absl::Milliseconds(1900));
    ASSERT_TRUE(route.has_value());
    EXPECT_EQ(route->deployment.name, "west");
    r.Report(*route, CallResult::kOk, std::nullopt, kT0);
  }
  bool east_again = false;
  for (int i = 0; i < 50 && !east_again; ++i) {
    auto route = r.Pick(m, {}, kT0 + absl::Seconds(2));
    east_again = route->deployment.name == "east";
    r.Report(*route, CallResult::kOk, std::nullopt, kT0);
  }
  EXPECT_TRUE(east_again);
  // Out of quota: a long cooldown whatever Retry-After says.
  auto route = r.Pick(m, {1}, kT0 + absl::Seconds(3));
  ASSERT_TRUE(route.has_value());
  r.Report(*route, CallResult::kQuotaExhausted, absl::Seconds(1), kT0 + absl::Seconds(3));
  EXPECT_FALSE(r.Pick(m, {1}, kT0 + absl::Minutes(4)).has_value());
}

TEST(RouterTest, NeutralResultsSayNothingOfTheDeployment) {
  Router r(RouterOptions{.failures_to_open = 1});
  ModelRecord m = TwoDeployments(1, 1);
  m.deployments.pop_back();
  auto route = r.Pick(m, {}, kT0);
  r.Report(*route, CallResult::kNeutral, std::nullopt, kT0);  // a 400, a cancel
  EXPECT_EQ(r.Health("m", "east", kT0).circuit, "closed");
  EXPECT_EQ(r.Health("m", "east", kT0).in_flight, 0);
}

}  // namespace
}  // namespace aichat::agent
