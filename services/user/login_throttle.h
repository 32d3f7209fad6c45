// Throttling of failed logins, per account and per client address, with
// exponential backoff: after `free_failures` failures in a row a key is blocked
// for base_delay, then twice as long after each further failure, up to
// max_delay. While blocked every attempt is refused before any password is
// checked (so the password is not guessed meanwhile and no Argon2id runs). A key
// with no failure for `forget_after` starts over; a successful login clears its
// account (never its address: one good account must not wash an address clean).
//
// State lives in this process: with N replicas behind round-robin an attacker
// gets up to N times the free failures, still under the same exponential backoff.
// Unknown emails are throttled exactly like known ones (no account enumeration).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aichat::user {

struct LoginThrottleOptions {
  int free_failures_per_account = 5;   // 0: accounts are not throttled
  int free_failures_per_address = 20;  // 0: addresses are not throttled
  absl::Duration base_delay = absl::Seconds(1);
  absl::Duration max_delay = absl::Minutes(15);
  absl::Duration forget_after = absl::Hours(1);
  size_t max_tracked_keys = 100000;  // memory bound; the stalest keys go first
  // A loopback (or unix socket) peer is a local proxy, sidecar or test run that
  // carries many clients: counting them as one address would lock them all out.
  bool exempt_loopback = true;
};

class LoginThrottle {
 public:
  explicit LoginThrottle(
      LoginThrottleOptions options, std::function<absl::Time()> clock = [] { return absl::Now(); });

  // How long an attempt for `account` from `address` must still wait; zero when
  // it may go ahead. An empty account or address is not looked up.
  absl::Duration Wait(absl::string_view account, absl::string_view address);
  void RecordFailure(absl::string_view account, absl::string_view address);
  void RecordSuccess(absl::string_view account);

 private:
  struct Entry {
    int failures = 0;
    absl::Time last_failure;
    absl::Time blocked_until;
  };
  void Fail(const std::string& key, int free_failures, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Trim(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LoginThrottleOptions options_;
  const std::function<absl::Time()> clock_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

// The client address of a gRPC peer string without its port: "ipv4:10.1.2.3:5000"
// -> "10.1.2.3"; IPv6 addresses are cut to their /64 (one host usually holds a
// whole /64, so single addresses would be free to rotate) except ::1;
// "unix:..." -> "unix".
std::string ClientAddress(absl::string_view peer);
// 127.0.0.0/8, ::1 or a unix socket, as ClientAddress() spells them.
bool IsLoopbackAddress(absl::string_view address);

}  // namespace aichat::user
