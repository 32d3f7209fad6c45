// The user service's settings (environment variables; flags override).
#pragma once

#include "absl/status/statusor.h"
#include "common/config.h"
#include "services/user/login_throttle.h"
#include "services/user/password.h"
#include "services/user/user_service.h"

namespace aichat::user {

struct UserConfig {
  CommonSettings common;
  std::string signing_key;  // base64url Ed25519 seed; secret
  UserServiceOptions service;
  PasswordHasherOptions password;
  int hash_concurrency = 4;  // password hashes in flight (queued or running) at most
  LoginThrottleOptions throttle;
  std::string usage_addr;    // for the default budget
  std::string service_name;  // mint-service-token
  absl::Duration service_token_ttl;
};

void DeclareSettings(Config& config);
// `needs_database` is false for sub-commands that only use keys.
absl::StatusOr<UserConfig> ReadSettings(const Config& config, bool needs_database);

// "5", "0.25", "$12.5" USD as nanos, exactly (integer arithmetic); INVALID_ARGUMENT
// naming `what` for anything else or a negative amount.
absl::StatusOr<int64_t> ParseUsdNanos(absl::string_view text, absl::string_view what);

}  // namespace aichat::user
