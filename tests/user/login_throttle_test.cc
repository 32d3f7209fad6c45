// The login throttle's backoff and the client address taken from gRPC's peer
// string, with a fake clock (no waiting).
#include "services/user/login_throttle.h"

#include <gtest/gtest.h>

namespace aichat::user {
namespace {

struct FakeClock {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  std::function<absl::Time()> fn() {
    return [this] { return now; };
  }
};

TEST(LoginThrottleTest, AccountBackoffDoublesUpToTheCap) {
  FakeClock clock;
  LoginThrottle t({.free_failures_per_account = 2,
                   .free_failures_per_address = 0,
                   .base_delay = absl::Seconds(1),
                   .max_delay = absl::Seconds(5)},
                  clock.fn());
  t.RecordFailure("a@x.io", "10.0.0.1");
  t.RecordFailure("a@x.io", "10.0.0.1");
  EXPECT_EQ(t.Wait("a@x.io", "10.0.0.1"), absl::ZeroDuration());  // the free ones
  t.RecordFailure("a@x.io", "10.0.0.1");
  EXPECT_EQ(t.Wait("a@x.io", "10.0.0.1"), absl::Seconds(1));
  EXPECT_EQ(t.Wait("b@x.io", "10.0.0.1"), absl::ZeroDuration());  // per account
  clock.now += absl::Seconds(1);
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::ZeroDuration());
  t.RecordFailure("a@x.io", "");
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::Seconds(2));
  clock.now += absl::Seconds(2);
  t.RecordFailure("a@x.io", "");
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::Seconds(4));
  clock.now += absl::Seconds(4);
  t.RecordFailure("a@x.io", "");
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::Seconds(5));  // capped
  t.RecordSuccess("a@x.io");
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::ZeroDuration());
}

TEST(LoginThrottleTest, AddressCountsFailuresOnEveryAccountAndSurvivesSuccess) {
  FakeClock clock;
  LoginThrottle t({.free_failures_per_account = 0,
                   .free_failures_per_address = 3,
                   .base_delay = absl::Seconds(10)},
                  clock.fn());
  for (const char* account : {"a@x.io", "b@x.io", "c@x.io"}) {
    t.RecordFailure(account, "10.0.0.1");
  }
  EXPECT_EQ(t.Wait("d@x.io", "10.0.0.1"), absl::ZeroDuration());
  t.RecordFailure("d@x.io", "10.0.0.1");
  t.RecordSuccess("d@x.io");  // one good account does not clear the address
  EXPECT_EQ(t.Wait("e@x.io", "10.0.0.1"), absl::Seconds(10));
  EXPECT_EQ(t.Wait("e@x.io", "10.0.0.2"), absl::ZeroDuration());
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::ZeroDuration());  // accounts not throttled
}

TEST(LoginThrottleTest, OldFailuresAreForgotten) {
  FakeClock clock;
  LoginThrottle t({.free_failures_per_account = 1,
                   .base_delay = absl::Seconds(1),
                   .forget_after = absl::Minutes(10)},
                  clock.fn());
  t.RecordFailure("a@x.io", "");
  clock.now += absl::Minutes(10);
  t.RecordFailure("a@x.io", "");  // counts as the first again
  EXPECT_EQ(t.Wait("a@x.io", ""), absl::ZeroDuration());
}

TEST(LoginThrottleTest, MemoryIsBoundedAndTheFreshestKeysStay) {
  FakeClock clock;
  LoginThrottle t({.free_failures_per_account = 0,
                   .free_failures_per_address = 1,
                   .base_delay = absl::Hours(1),
                   .max_tracked_keys = 100},
                  clock.fn());
  for (int i = 0; i < 1000; ++i) {
    clock.now += absl::Milliseconds(1);
    t.RecordFailure("", "10.1.0." + std::to_string(i));
  }
  // The newest attacker is still tracked.
  t.RecordFailure("", "10.1.0.999");
  EXPECT_GT(t.Wait("", "10.1.0.999"), absl::ZeroDuration());
}

TEST(LoginThrottleTest, LoopbackPeersAreNotOneAddress) {
  FakeClock clock;
  LoginThrottle t({.free_failures_per_account = 0, .free_failures_per_address = 1}, clock.fn());
  for (const char* local : {"127.0.0.1", "::1", "unix"}) {
    t.RecordFailure("", local);
    t.RecordFailure("", local);
    EXPECT_EQ(t.Wait("", local), absl::ZeroDuration()) << local;
  }
  LoginThrottle strict(
      {.free_failures_per_account = 0, .free_failures_per_address = 1, .exempt_loopback = false},
      clock.fn());
  strict.RecordFailure("", "127.0.0.1");
  strict.RecordFailure("", "127.0.0.1");
  EXPECT_GT(strict.Wait("", "127.0.0.1"), absl::ZeroDuration());
}

TEST(ClientAddressTest, PortIsStrippedAndIpv6IsGroupedBySlash64) {
  EXPECT_EQ(ClientAddress("ipv4:10.1.2.3:5000"), "10.1.2.3");
  EXPECT_EQ(ClientAddress("ipv6:[::1]:5000"), "::1");
  EXPECT_EQ(ClientAddress("ipv6:%5B2001:db8:1:2:aaaa::1%5D:443"), "2001:db8:1:2::/64");
  EXPECT_EQ(ClientAddress("ipv6:[2001:db8:1:2:bbbb::9]:80"), "2001:db8:1:2::/64");
  EXPECT_EQ(ClientAddress("ipv6:[::ffff:192.0.2.7]:80"), "192.0.2.7");
  EXPECT_EQ(ClientAddress("unix:/tmp/sock"), "unix");
}

}  // namespace
}  // namespace aichat::user
