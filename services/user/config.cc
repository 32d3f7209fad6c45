#include "services/user/config.h"

namespace aichat::user {

void DeclareSettings(Config& config) {
  AddCommonSettings(config, 50051, 9101);
  config.Add("jwt_signing_key", "AICHAT_JWT_SIGNING_KEY", "",
             "base64url Ed25519 seed that signs access tokens (`aichat-user keygen` makes one)",
             /*secret=*/true);
  config.Add("access_token_ttl", "AICHAT_ACCESS_TOKEN_TTL", "15m", "Lifetime of access tokens");
  config.Add("refresh_token_ttl", "AICHAT_REFRESH_TOKEN_TTL", "720h", "Lifetime of refresh tokens");
  config.Add("default_requests_per_minute", "AICHAT_DEFAULT_RPM", "20",
             "Chat turns per minute for new accounts");
  config.Add("argon2_ops_limit", "AICHAT_ARGON2_OPSLIMIT", "2", "Argon2id passes (t)");
  config.Add("argon2_mem_limit_kib", "AICHAT_ARGON2_MEMLIMIT_KIB", "65536",
             "Argon2id memory per hash in KiB (m)");
  config.Add("service_name", "AICHAT_SERVICE_NAME", "aichat-service",
             "mint-service-token: a label kept in the token id");
  config.Add("service_token_ttl", "AICHAT_SERVICE_TOKEN_TTL", "8760h",
             "mint-service-token: lifetime of the token");
}

absl::StatusOr<UserConfig> ReadSettings(const Config& config, bool needs_database) {
  UserConfig c;
  if (needs_database) {
    auto common = ReadCommonSettings(config);
    if (!common.ok()) return common.status();
    c.common = *common;
  }
  c.signing_key = config.Get("jwt_signing_key");
  if (c.signing_key.empty()) {
    return absl::InvalidArgumentError(
        "AICHAT_JWT_SIGNING_KEY (--jwt_signing_key) is required; `aichat-user keygen` makes one");
  }
  auto access = config.GetDuration("access_token_ttl");
  if (!access.ok()) return access.status();
  c.service.access_token_ttl = *access;
  auto refresh = config.GetDuration("refresh_token_ttl");
  if (!refresh.ok()) return refresh.status();
  c.service.refresh_token_ttl = *refresh;
  auto rpm = config.GetInt("default_requests_per_minute", 1, 100000);
  if (!rpm.ok()) return rpm.status();
  c.service.default_requests_per_minute = static_cast<int32_t>(*rpm);
  auto ops = config.GetInt("argon2_ops_limit", 1, 100);
  if (!ops.ok()) return ops.status();
  c.password.ops_limit = static_cast<unsigned long long>(*ops);
  auto mem = config.GetInt("argon2_mem_limit_kib", 8, 4 * 1024 * 1024);
  if (!mem.ok()) return mem.status();
  c.password.mem_limit_bytes = static_cast<size_t>(*mem) * 1024;
  c.service_name = config.Get("service_name");
  auto ttl = config.GetDuration("service_token_ttl");
  if (!ttl.ok()) return ttl.status();
  c.service_token_ttl = *ttl;
  return c;
}

}  // namespace aichat::user
