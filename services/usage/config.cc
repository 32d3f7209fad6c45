#include "services/usage/config.h"

namespace aichat::usage {

void DeclareSettings(Config& config) {
  AddCommonSettings(config, 50054, 9104);
  config.Add("reservation_ttl", "AICHAT_RESERVATION_TTL", "10m",
             "How long an unsettled ReserveBudget reservation holds budget before it expires");
}

absl::StatusOr<UsageConfig> ReadSettings(const Config& config) {
  UsageConfig c;
  auto common = ReadCommonSettings(config);
  if (!common.ok()) {
    return common.status();
  }
  c.common = *common;
  auto ttl = config.GetDuration("reservation_ttl");
  if (!ttl.ok()) {
    return ttl.status();
  }
  if (*ttl < absl::Seconds(1) || *ttl > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        "AICHAT_RESERVATION_TTL (--reservation_ttl) must be between 1s and 24h");
  }
  c.store.reservation_ttl = *ttl;
  return c;
}

}  // namespace aichat::usage
