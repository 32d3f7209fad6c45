// libFuzzer target for the usage service's request validator
// (services/usage/usage_proto.h EventFromProto, what RecordUsage runs on every
// event): arbitrary bytes parsed as a UsageEvent. Properties: no crash or
// sanitizer report (int64 overflow in the cost check included, via UBSan);
// refusals are INVALID_ARGUMENT; an accepted event has an exact, non-negative
// cost consistent with its own tokens and prices, and survives a round trip.
// The same bytes parsed as a RecordUsageBatchRequest go through BatchFromProto
// (RecordUsageBatch's validator): accepted only with 1 to 500 events, distinct
// event_ids and every event valid on its own; refused with INVALID_ARGUMENT
// naming `events`.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "services/usage/usage_proto.h"

namespace {

void CheckBatch(const uint8_t* data, size_t size, absl::Time now) {
  aichat::usage::v1::RecordUsageBatchRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  auto batch = aichat::usage::BatchFromProto(req.events(), now);
  if (!batch.ok()) {
    if (batch.status().code() != absl::StatusCode::kInvalidArgument ||
        !absl::StartsWith(batch.status().message(), "events")) {
      std::abort();
    }
    return;
  }
  if (req.events_size() < 1 || req.events_size() > aichat::usage::kMaxBatchEvents ||
      static_cast<int>(batch->size()) != req.events_size()) {
    std::abort();
  }
  std::set<std::string> ids;
  for (const auto& e : req.events()) {
    if (!ids.insert(e.event_id()).second || !aichat::usage::EventFromProto(e, now).ok()) {
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  CheckBatch(data, size, now);
  aichat::usage::v1::UsageEvent event;
  if (!event.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto rec = aichat::usage::EventFromProto(event, now);
  if (!rec.ok()) {
    if (rec.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (event.cost_nanos() < 0 || event.cached_tokens() > event.prompt_tokens()) std::abort();
  aichat::usage::v1::UsageEvent back;
  aichat::usage::EventToProto(*rec, &back);
  auto again = aichat::usage::EventFromProto(back, now);
  if (!again.ok() || back.cost_nanos() != event.cost_nanos() ||
      back.event_id() != event.event_id()) {
    std::abort();
  }
  return 0;
}
