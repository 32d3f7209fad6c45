// The usage service's settings (environment variables; flags override).
#pragma once

#include "absl/status/statusor.h"
#include "common/config.h"
#include "services/usage/pg_usage_store.h"

namespace aichat::usage {

struct UsageConfig {
  CommonSettings common;
  PgUsageStoreOptions store;
};

void DeclareSettings(Config& config);
absl::StatusOr<UsageConfig> ReadSettings(const Config& config);

}  // namespace aichat::usage
