#include "services/user/config.h"

#include <limits>

#include "absl/strings/str_cat.h"

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
  config.Add("registration", "AICHAT_REGISTRATION", "open",
             "open: anyone may Register; closed: only an admin's Register call creates accounts");
  config.Add("default_monthly_budget", "AICHAT_DEFAULT_MONTHLY_BUDGET", "0",
             "Monthly budget in USD (e.g. 5 or 2.50) set in the usage service for each new "
             "account before it is created; 0 = unlimited");
  config.Add("usage_addr", "AICHAT_USAGE_ADDR", "127.0.0.1:50054",
             "usage service address (used when AICHAT_DEFAULT_MONTHLY_BUDGET > 0)");
  config.Add("password_hash_concurrency", "AICHAT_PASSWORD_HASH_CONCURRENCY", "4",
             "Argon2id hashes in flight at most (each takes AICHAT_ARGON2_MEMLIMIT_KIB); more "
             "Login/Register calls get RESOURCE_EXHAUSTED at once");
  config.Add("login_free_failures", "AICHAT_LOGIN_FREE_FAILURES", "5",
             "Failed logins per account before backoff starts; 0 disables the account throttle");
  config.Add("login_free_failures_per_address", "AICHAT_LOGIN_FREE_FAILURES_PER_ADDRESS", "20",
             "Failed logins per client address (IPv6: per /64; loopback peers are exempt) "
             "before backoff starts; 0 disables it (e.g. when every client arrives through one "
             "gateway address)");
  config.Add("login_backoff", "AICHAT_LOGIN_BACKOFF", "1s",
             "First block after the free failures; doubles with each further failure");
  config.Add("login_backoff_max", "AICHAT_LOGIN_BACKOFF_MAX", "15m", "Longest login block");
  config.Add("login_failure_window", "AICHAT_LOGIN_FAILURE_WINDOW", "1h",
             "A key with no failed login for this long starts over");
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
  std::string registration = config.Get("registration");
  if (registration != "open" && registration != "closed") {
    return absl::InvalidArgumentError(
        "AICHAT_REGISTRATION (--registration) must be open or closed");
  }
  c.service.registration_open = registration == "open";
  auto budget = ParseUsdNanos(config.Get("default_monthly_budget"),
                              "AICHAT_DEFAULT_MONTHLY_BUDGET (--default_monthly_budget)");
  if (!budget.ok()) return budget.status();
  c.service.default_monthly_budget_nanos = *budget;
  c.usage_addr = config.Get("usage_addr");
  if (*budget > 0 && c.usage_addr.empty()) {
    return absl::InvalidArgumentError(
        "AICHAT_USAGE_ADDR (--usage_addr) is required with AICHAT_DEFAULT_MONTHLY_BUDGET");
  }
  auto hashes = config.GetInt("password_hash_concurrency", 1, 1000);
  if (!hashes.ok()) return hashes.status();
  c.hash_concurrency = static_cast<int>(*hashes);
  auto free_account = config.GetInt("login_free_failures", 0, 1000000);
  if (!free_account.ok()) return free_account.status();
  c.throttle.free_failures_per_account = static_cast<int>(*free_account);
  auto free_address = config.GetInt("login_free_failures_per_address", 0, 1000000);
  if (!free_address.ok()) return free_address.status();
  c.throttle.free_failures_per_address = static_cast<int>(*free_address);
  auto backoff = config.GetDuration("login_backoff");
  if (!backoff.ok()) return backoff.status();
  c.throttle.base_delay = *backoff;
  auto backoff_max = config.GetDuration("login_backoff_max");
  if (!backoff_max.ok()) return backoff_max.status();
  c.throttle.max_delay = *backoff_max;
  auto window = config.GetDuration("login_failure_window");
  if (!window.ok()) return window.status();
  c.throttle.forget_after = *window;
  c.service_name = config.Get("service_name");
  auto ttl = config.GetDuration("service_token_ttl");
  if (!ttl.ok()) return ttl.status();
  c.service_token_ttl = *ttl;
  return c;
}

absl::StatusOr<int64_t> ParseUsdNanos(absl::string_view text, absl::string_view what) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be an amount of USD such as 5 or 2.50"));
  };
  absl::string_view s = text;
  if (!s.empty() && s.front() == '$') s.remove_prefix(1);
  size_t dot = s.find('.');
  absl::string_view whole = s.substr(0, dot);
  absl::string_view frac = dot == absl::string_view::npos ? "" : s.substr(dot + 1);
  if (whole.empty() || frac.size() > 9 || (dot != absl::string_view::npos && frac.empty())) {
    return bad();
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t v = 0;
  auto push = [&](char ch) {
    if (ch < '0' || ch > '9' || v > (kMax - (ch - '0')) / 10) return false;
    v = v * 10 + (ch - '0');
    return true;
  };
  for (char ch : whole) {
    if (!push(ch)) return bad();
  }
  for (size_t i = 0; i < 9; ++i) {
    if (!push(i < frac.size() ? frac[i] : '0')) return bad();
  }
  return v;
}

}  // namespace aichat::user
