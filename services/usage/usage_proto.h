// Request validation and proto <-> domain mapping for the usage service. Every
// check answers INVALID_ARGUMENT naming the field.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "aichat/usage/v1/usage.pb.h"
#include "services/usage/usage_store.h"

namespace aichat::usage {

inline constexpr size_t kMaxEventIdBytes = 128;
inline constexpr size_t kMaxModelBytes = 200;
// Far above any real turn; keeps every sum of a month's ledger inside int64.
inline constexpr int64_t kMaxTokens = 1'000'000'000;
// How far an event's occurred_at may be ahead of our clock (clock skew between hosts).
inline constexpr absl::Duration kMaxFutureSkew = absl::Minutes(5);

// A RecordUsageBatch carries 1 to this many events.
inline constexpr int kMaxBatchEvents = 500;

// Checks every field (cost_nanos must equal CostNanos over the event's own tokens
// and prices) and converts. Errors name the field under `path` ("event.user_id",
// "events[7].user_id").
absl::StatusOr<UsageEventRecord> EventFromProto(const v1::UsageEvent& p, absl::Time now,
                                                absl::string_view path = "event");
// Every event of a batch, in order: 1 to kMaxBatchEvents of them with distinct
// event_ids, each valid. The first problem found refuses the whole batch.
absl::StatusOr<std::vector<UsageEventRecord>> BatchFromProto(
    const google::protobuf::RepeatedPtrField<v1::UsageEvent>& events, absl::Time now);
// INVALID_ARGUMENT naming `field` unless `ts` is a valid Timestamp (years 1 to 9999).
absl::StatusOr<absl::Time> TimeFromProto(const google::protobuf::Timestamp& ts, const char* field);

void EventToProto(const UsageEventRecord& e, v1::UsageEvent* out);

absl::Status CheckEventId(const std::string& event_id, const char* field);

void BudgetToProto(const BudgetState& b, v1::Budget* out);
void RowToProto(const SummaryTotals& t, v1::SummaryRow* out);

}  // namespace aichat::usage
