// UsageStore on PostgreSQL: all of the usage service's SQL.
#pragma once

#include "absl/time/time.h"
#include "common/pg.h"
#include "services/usage/usage_store.h"

namespace aichat::usage {

struct PgUsageStoreOptions {
  // An unsettled reservation stops holding budget this long after it was made.
  absl::Duration reservation_ttl = absl::Minutes(10);
};

class PgUsageStore : public UsageStore {
 public:
  PgUsageStore(PgPool* pool, PgUsageStoreOptions options) : pool_(pool), options_(options) {}

  absl::StatusOr<std::vector<bool>> RecordUsage(const std::vector<UsageEventRecord>& events,
                                                absl::Time now) override;
  absl::StatusOr<Summary> Summarize(const SummaryQuery& query) override;
  absl::StatusOr<std::vector<StoredUsage>> ListUsage(const ListQuery& query) override;
  absl::StatusOr<BudgetState> SetBudget(int64_t user_id, int64_t monthly_limit_nanos,
                                        absl::Time now) override;
  absl::StatusOr<BudgetState> GetBudget(int64_t user_id, absl::Time now) override;
  absl::StatusOr<ReserveDecision> Reserve(const ReserveRequest& request, absl::Time now) override;
  absl::StatusOr<bool> Release(const std::string& event_id, absl::Time now) override;

 private:
  PgPool* pool_;
  PgUsageStoreOptions options_;
};

}  // namespace aichat::usage
