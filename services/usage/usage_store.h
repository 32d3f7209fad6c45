// The usage service's storage interface in domain types: the ledger, summaries,
// budgets and reservations. Every method takes `now` from the service's clock so
// that time (rate window, reservation TTL, month) is under the caller's control.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/money.h"

namespace aichat::usage {

// Values match aichat.usage.v1.Outcome.
enum class Outcome : int { kCompleted = 1, kFailed = 2, kCancelled = 3 };

struct UsageEventRecord {
  std::string event_id;
  int64_t user_id = 0;
  int64_t conversation_id = 0;
  int64_t prompt_id = 0;
  std::string model;
  std::string provider_model;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  Prices prices;
  int64_t cost_nanos = 0;
  bool estimated = false;
  Outcome outcome = Outcome::kCompleted;
  absl::Time occurred_at;
};

struct StoredUsage {
  int64_t id = 0;
  UsageEventRecord event;
  absl::Time recorded_at;
};

enum class SummaryGroup { kDay, kModel, kConversation, kUser };
// Values match aichat.usage.v1.OrderBy.
enum class SummaryOrder : int { kKey = 0, kCost = 1, kTokens = 2, kRequests = 3 };

struct SummaryQuery {
  int64_t user_id = 0;  // ignored for kUser (all users)
  absl::Time from;      // inclusive
  absl::Time to;        // exclusive
  SummaryGroup group = SummaryGroup::kDay;
  SummaryOrder order = SummaryOrder::kKey;
  int limit = 1000;
};

struct SummaryTotals {
  std::string key;
  int64_t requests = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int64_t cost_nanos = 0;
};

struct Summary {
  std::vector<SummaryTotals> rows;  // at most `limit`
  SummaryTotals totals;             // over the whole selection, before the limit
};

struct ListQuery {
  int64_t user_id = 0;
  std::optional<absl::Time> from;  // inclusive
  std::optional<absl::Time> to;    // exclusive
  // Keyset cursor: rows strictly older than (occurred_at, id).
  std::optional<absl::Time> before_time;
  int64_t before_id = 0;
  int limit = 50;
};

struct BudgetState {
  int64_t user_id = 0;
  int64_t monthly_limit_nanos = 0;  // 0 = unlimited
  int64_t spent_nanos = 0;
  int64_t reserved_nanos = 0;
  absl::Time period_start;
  absl::Time resets_at;
};

struct ReserveRequest {
  int64_t user_id = 0;
  std::string event_id;
  int64_t max_cost_nanos = 0;
  int32_t requests_per_minute = 0;  // 0 = no rate limit
};

// Values match aichat.usage.v1.RefusalReason.
enum class Refusal : int { kNone = 0, kRateLimited = 1, kBudgetExceeded = 2 };

struct ReserveDecision {
  bool allowed = false;
  Refusal reason = Refusal::kNone;
  std::string message;
  int64_t remaining_nanos = 0;
  std::optional<absl::Time> retry_at;
  bool replayed = false;  // a repeated event_id: the original decision, nothing new reserved
};

class UsageStore {
 public:
  virtual ~UsageStore() = default;

  // Inserts the events whose event_id is not known yet and, in the same transaction,
  // settles the reservations with those event_ids. Answers, in the events' order,
  // which were inserted (false: already recorded, nothing changed). event_ids must
  // be distinct.
  virtual absl::StatusOr<std::vector<bool>> RecordUsage(const std::vector<UsageEventRecord>& events,
                                                        absl::Time now) = 0;
  virtual absl::StatusOr<Summary> Summarize(const SummaryQuery& query) = 0;
  // Newest first.
  virtual absl::StatusOr<std::vector<StoredUsage>> ListUsage(const ListQuery& query) = 0;
  virtual absl::StatusOr<BudgetState> SetBudget(int64_t user_id, int64_t monthly_limit_nanos,
                                                absl::Time now) = 0;
  virtual absl::StatusOr<BudgetState> GetBudget(int64_t user_id, absl::Time now) = 0;
  // One serial decision per user. ALREADY_EXISTS if event_id belongs to another user.
  virtual absl::StatusOr<ReserveDecision> Reserve(const ReserveRequest& request,
                                                  absl::Time now) = 0;
  // False when there was no active, unexpired reservation with this id.
  virtual absl::StatusOr<bool> Release(const std::string& event_id, absl::Time now) = 0;
};

// The budget period: the calendar month (UTC) that contains `t`, and the next one.
inline absl::Time MonthStart(absl::Time t) {
  return absl::FromCivil(absl::CivilMonth(absl::ToCivilSecond(t, absl::UTCTimeZone())),
                         absl::UTCTimeZone());
}
inline absl::Time NextMonthStart(absl::Time t) {
  return absl::FromCivil(absl::CivilMonth(absl::ToCivilSecond(t, absl::UTCTimeZone())) + 1,
                         absl::UTCTimeZone());
}

}  // namespace aichat::usage
