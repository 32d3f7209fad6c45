// libFuzzer target for the usage service's request validator
// (services/usage/usage_proto.h EventFromProto, what RecordUsage runs on every
// event): arbitrary bytes parsed as a UsageEvent. Properties: no crash or
// sanitizer report (int64 overflow in the cost check included, via UBSan);
// refusals are INVALID_ARGUMENT; an accepted event has an exact, non-negative
// cost consistent with its own tokens and prices, and survives a round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/time/time.h"
#include "services/usage/usage_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  aichat::usage::v1::UsageEvent event;
  if (!event.ParseFromArray(data, static_cast<int>(size))) return 0;
  const absl::Time now = absl::FromUnixSeconds(1700000000);
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
