#include "services/usage/usage_proto.h"

#include <string>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/proto_time.h"
#include "common/validate.h"

namespace aichat::usage {
namespace {

// The earliest occurred_at we accept: anything before is a zero or garbage timestamp.
const absl::Time kEpochFloor = absl::FromUnixSeconds(946684800);  // 2000-01-01

absl::Status CheckCount(const char* field, int64_t v, int64_t max) {
  if (v < 0 || v > max) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be between 0 and ", max));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(const char* field, int64_t v) {
  if (v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be positive"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<absl::Time> TimeFromProto(const google::protobuf::Timestamp& ts, const char* field) {
  // google.protobuf.Timestamp's documented range: 0001-01-01 to 9999-12-31.
  constexpr int64_t kMinSeconds = -62135596800;
  constexpr int64_t kMaxSeconds = 253402300799;
  if (ts.seconds() < kMinSeconds || ts.seconds() > kMaxSeconds || ts.nanos() < 0 ||
      ts.nanos() > 999999999) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not a valid timestamp"));
  }
  return FromProto(ts);
}

absl::Status CheckEventId(const std::string& event_id, const char* field) {
  return CheckText(field, event_id, kMaxEventIdBytes, /*required=*/true);
}

namespace {

// Errors name fields relative to the event ("user_id"); EventFromProto adds the path.
absl::StatusOr<UsageEventRecord> CheckEvent(const v1::UsageEvent& p, absl::Time now) {
  UsageEventRecord e;
  if (auto st = CheckEventId(p.event_id(), "event_id"); !st.ok()) {
    return st;
  }
  e.event_id = p.event_id();
  for (auto [field, v] :
       {std::pair{"user_id", p.user_id()}, std::pair{"prompt_id", p.prompt_id()}}) {
    if (auto st = CheckPositive(field, v); !st.ok()) {
      return st;
    }
  }
  // A stateless turn (the HTTP API without a conversation) is accounted under conversation 0.
  if (p.conversation_id() < 0) {
    return absl::InvalidArgumentError("conversation_id must not be negative");
  }
  e.user_id = p.user_id();
  e.conversation_id = p.conversation_id();
  e.prompt_id = p.prompt_id();
  if (auto st = CheckText("model", p.model(), kMaxModelBytes, true); !st.ok()) {
    return st;
  }
  if (auto st = CheckText("provider_model", p.provider_model(), kMaxModelBytes, true); !st.ok()) {
    return st;
  }
  e.model = p.model();
  e.provider_model = p.provider_model();
  for (auto [field, v, max] :
       {std::tuple{"prompt_tokens", p.prompt_tokens(), kMaxTokens},
        std::tuple{"completion_tokens", p.completion_tokens(), kMaxTokens},
        std::tuple{"cached_tokens", p.cached_tokens(), kMaxTokens},
        std::tuple{"input_price_micros_per_mtok", p.input_price_micros_per_mtok(),
                   kMaxPriceMicrosPerMtok},
        std::tuple{"cached_input_price_micros_per_mtok", p.cached_input_price_micros_per_mtok(),
                   kMaxPriceMicrosPerMtok},
        std::tuple{"output_price_micros_per_mtok", p.output_price_micros_per_mtok(),
                   kMaxPriceMicrosPerMtok}}) {
    if (auto st = CheckCount(field, v, max); !st.ok()) {
      return st;
    }
  }
  if (p.cached_tokens() > p.prompt_tokens()) {
    return absl::InvalidArgumentError(
        "cached_tokens must not exceed prompt_tokens (cached tokens are counted "
        "inside prompt_tokens)");
  }
  e.prompt_tokens = p.prompt_tokens();
  e.completion_tokens = p.completion_tokens();
  e.cached_tokens = p.cached_tokens();
  e.prices.input_micros_per_mtok = p.input_price_micros_per_mtok();
  e.prices.cached_input_micros_per_mtok = p.cached_input_price_micros_per_mtok();
  e.prices.output_micros_per_mtok = p.output_price_micros_per_mtok();
  int64_t expected = CostNanos(e.prompt_tokens, e.cached_tokens, e.completion_tokens, e.prices);
  if (p.cost_nanos() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cost_nanos is ", p.cost_nanos(), " but the event's tokens and prices give ", expected));
  }
  e.cost_nanos = p.cost_nanos();
  e.estimated = p.estimated();
  switch (p.outcome()) {
    case v1::OUTCOME_COMPLETED:
      e.outcome = Outcome::kCompleted;
      break;
    case v1::OUTCOME_FAILED:
      e.outcome = Outcome::kFailed;
      break;
    case v1::OUTCOME_CANCELLED:
      e.outcome = Outcome::kCancelled;
      break;
    default:
      return absl::InvalidArgumentError(
          "outcome must be OUTCOME_COMPLETED, OUTCOME_FAILED or OUTCOME_CANCELLED");
  }
  if (!p.has_occurred_at()) {
    return absl::InvalidArgumentError("occurred_at is required");
  }
  auto occurred_at = TimeFromProto(p.occurred_at(), "occurred_at");
  if (!occurred_at.ok()) {
    return occurred_at.status();
  }
  e.occurred_at = *occurred_at;
  if (e.occurred_at < kEpochFloor || e.occurred_at > now + kMaxFutureSkew) {
    return absl::InvalidArgumentError("occurred_at must be after 2000-01-01 and not in the future");
  }
  // The ledger keeps microseconds, as PostgreSQL does.
  e.occurred_at = absl::FromUnixMicros(absl::ToUnixMicros(e.occurred_at));
  return e;
}

}  // namespace

absl::StatusOr<UsageEventRecord> EventFromProto(const v1::UsageEvent& p, absl::Time now,
                                                absl::string_view path) {
  auto e = CheckEvent(p, now);
  if (!e.ok()) {
    return absl::Status(e.status().code(), absl::StrCat(path, ".", e.status().message()));
  }
  return e;
}

absl::StatusOr<std::vector<UsageEventRecord>> BatchFromProto(
    const google::protobuf::RepeatedPtrField<v1::UsageEvent>& events, absl::Time now) {
  if (events.empty() || events.size() > kMaxBatchEvents) {
    return absl::InvalidArgumentError(absl::StrCat("events must hold 1 to ", kMaxBatchEvents,
                                                   " events (got ", events.size(), ")"));
  }
  std::vector<UsageEventRecord> out;
  out.reserve(events.size());
  // Index by event_id: a repeated id within one batch is a caller bug, not a duplicate
  // delivery (whose answer would be ambiguous: which of the two was recorded?).
  std::unordered_map<std::string_view, int> first;
  first.reserve(events.size());
  for (int i = 0; i < events.size(); ++i) {
    auto e = EventFromProto(events[i], now, absl::StrCat("events[", i, "]"));
    if (!e.ok()) {
      return e.status();
    }
    auto [it, fresh] = first.emplace(events[i].event_id(), i);
    if (!fresh) {
      return absl::InvalidArgumentError(absl::StrCat("events[", i, "].event_id repeats events[",
                                                     it->second,
                                                     "].event_id; event_ids in a batch must be "
                                                     "distinct"));
    }
    out.push_back(*std::move(e));
  }
  return out;
}

void EventToProto(const UsageEventRecord& e, v1::UsageEvent* out) {
  out->set_event_id(e.event_id);
  out->set_user_id(e.user_id);
  out->set_conversation_id(e.conversation_id);
  out->set_prompt_id(e.prompt_id);
  out->set_model(e.model);
  out->set_provider_model(e.provider_model);
  out->set_prompt_tokens(e.prompt_tokens);
  out->set_completion_tokens(e.completion_tokens);
  out->set_cached_tokens(e.cached_tokens);
  out->set_input_price_micros_per_mtok(e.prices.input_micros_per_mtok);
  out->set_cached_input_price_micros_per_mtok(e.prices.cached_input_micros_per_mtok);
  out->set_output_price_micros_per_mtok(e.prices.output_micros_per_mtok);
  out->set_cost_nanos(e.cost_nanos);
  out->set_estimated(e.estimated);
  out->set_outcome(static_cast<v1::Outcome>(e.outcome));
  ToProto(e.occurred_at, out->mutable_occurred_at());
}

void BudgetToProto(const BudgetState& b, v1::Budget* out) {
  out->set_user_id(b.user_id);
  out->set_monthly_limit_nanos(b.monthly_limit_nanos);
  out->set_spent_nanos(b.spent_nanos);
  out->set_reserved_nanos(b.reserved_nanos);
  out->set_unlimited(b.monthly_limit_nanos == 0);
  out->set_remaining_nanos(
      b.monthly_limit_nanos == 0 ? 0 : b.monthly_limit_nanos - b.spent_nanos - b.reserved_nanos);
  ToProto(b.period_start, out->mutable_period_start());
  ToProto(b.resets_at, out->mutable_resets_at());
}

void RowToProto(const SummaryTotals& t, v1::SummaryRow* out) {
  out->set_key(t.key);
  out->set_requests(t.requests);
  out->set_prompt_tokens(t.prompt_tokens);
  out->set_completion_tokens(t.completion_tokens);
  out->set_cached_tokens(t.cached_tokens);
  out->set_cost_nanos(t.cost_nanos);
}

}  // namespace aichat::usage
