// The user service's settings (environment variables; flags override).
#pragma once

#include "absl/status/statusor.h"
#include "common/config.h"
#include "services/user/password.h"
#include "services/user/user_service.h"

namespace aichat::user {

struct UserConfig {
  CommonSettings common;
  std::string signing_key;  // base64url Ed25519 seed; secret
  UserServiceOptions service;
  PasswordHasherOptions password;
  std::string service_name;  // mint-service-token
  absl::Duration service_token_ttl;
};

void DeclareSettings(Config& config);
// `needs_database` is false for sub-commands that only use keys.
absl::StatusOr<UserConfig> ReadSettings(const Config& config, bool needs_database);

}  // namespace aichat::user
