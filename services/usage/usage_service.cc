#include "services/usage/usage_service.h"

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/page_token.h"
#include "common/proto_time.h"
#include "common/unary.h"
#include "services/usage/usage_proto.h"

namespace aichat::usage {
namespace {

constexpr int kMaxSummaryRows = 1000;

prometheus::Family<prometheus::Counter>& Family(prometheus::Registry& r, const char* name,
                                                const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

// The calls only peers make (the agent's reservations and usage events).
absl::Status AuthenticateService(const Authenticator& auth, const grpc::ServerContextBase& ctx) {
  auto caller = auth.Authenticate(ctx);
  if (!caller.ok()) {
    return caller.status();
  }
  return RequireService(*caller);
}

// Own data, or anyone's for admins. PERMISSION_DENIED (not NOT_FOUND, and not a
// silent fallback to the caller's own data) because usage is keyed by a user id
// the caller chose: there is no object whose existence could leak, and answering
// with different data than asked for would mislead the caller.
absl::StatusOr<int64_t> SubjectUser(const Caller& caller, bool has_user_id, int64_t user_id) {
  if (!has_user_id) {
    return caller.user_id;
  }
  if (user_id <= 0) {
    return absl::InvalidArgumentError("user_id must be positive");
  }
  if (user_id != caller.user_id && !caller.is_admin()) {
    return absl::PermissionDeniedError("only admins may read another user's usage");
  }
  return user_id;
}

absl::StatusOr<SummaryGroup> GroupFromProto(v1::GroupBy g) {
  switch (g) {
    case v1::GROUP_BY_DAY:
      return SummaryGroup::kDay;
    case v1::GROUP_BY_MODEL:
      return SummaryGroup::kModel;
    case v1::GROUP_BY_CONVERSATION:
      return SummaryGroup::kConversation;
    case v1::GROUP_BY_USER:
      return SummaryGroup::kUser;
    default:
      break;
  }
  return absl::InvalidArgumentError(
      "group_by must be GROUP_BY_DAY, GROUP_BY_MODEL, GROUP_BY_CONVERSATION or GROUP_BY_USER");
}

absl::StatusOr<SummaryOrder> OrderFromProto(v1::OrderBy o) {
  switch (o) {
    case v1::ORDER_BY_UNSPECIFIED:
      return SummaryOrder::kKey;
    case v1::ORDER_BY_COST_DESC:
      return SummaryOrder::kCost;
    case v1::ORDER_BY_TOKENS_DESC:
      return SummaryOrder::kTokens;
    case v1::ORDER_BY_REQUESTS_DESC:
      return SummaryOrder::kRequests;
    default:
      break;
  }
  return absl::InvalidArgumentError("order_by is not a known OrderBy value");
}

}  // namespace

UsageServiceImpl::Metrics::Metrics(prometheus::Registry& registry)
    : reservations(Family(registry, "aichat_usage_reservations_total",
                          "ReserveBudget decisions by result (replayed = repeated event_id)")),
      events(Family(registry, "aichat_usage_events_total",
                    "Usage events received by RecordUsage and RecordUsageBatch, by result "
                    "(duplicate = event_id already recorded)")),
      releases(Family(registry, "aichat_usage_releases_total", "ReleaseBudget calls by result")),
      reserve_allowed(reservations.Add({{"result", "allowed"}})),
      reserve_rate_limited(reservations.Add({{"result", "rate_limited"}})),
      reserve_budget_exceeded(reservations.Add({{"result", "budget_exceeded"}})),
      reserve_replayed(reservations.Add({{"result", "replayed"}})),
      events_recorded(events.Add({{"result", "recorded"}})),
      events_duplicate(events.Add({{"result", "duplicate"}})),
      cost_nanos(Family(registry, "aichat_usage_recorded_cost_nanos_total",
                        "Cost of recorded usage events, in billionths of a USD")
                     .Add({})),
      released(releases.Add({{"result", "released"}})),
      release_noop(releases.Add({{"result", "nothing"}})) {}

UsageServiceImpl::UsageServiceImpl(UsageStore* store, const Authenticator* auth, WorkerPool* pool,
                                   prometheus::Registry& registry, Clock clock)
    : store_(store), auth_(auth), pool_(pool), metrics_(registry), clock_(std::move(clock)) {}

absl::StatusOr<std::vector<bool>> UsageServiceImpl::Record(
    const std::vector<UsageEventRecord>& events, absl::Time now) {
  auto recorded = store_->RecordUsage(events, now);
  if (!recorded.ok()) {
    return recorded.status();
  }
  int64_t fresh = 0;
  double cost = 0;  // the counter is a double; an int64 sum of 500 events could overflow
  for (size_t i = 0; i < events.size(); ++i) {
    if ((*recorded)[i]) {
      ++fresh;
      cost += static_cast<double>(events[i].cost_nanos);
    }
  }
  metrics_.events_recorded.Increment(static_cast<double>(fresh));
  metrics_.events_duplicate.Increment(static_cast<double>(events.size() - fresh));
  metrics_.cost_nanos.Increment(cost);
  return recorded;
}

grpc::ServerUnaryReactor* UsageServiceImpl::RecordUsage(grpc::CallbackServerContext* ctx,
                                                        const v1::RecordUsageRequest* req,
                                                        v1::RecordUsageResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    if (auto st = AuthenticateService(*auth_, *ctx); !st.ok()) {
      return st;
    }
    if (!req->has_event()) {
      return absl::InvalidArgumentError("event is required");
    }
    absl::Time now = clock_();
    auto event = EventFromProto(req->event(), now);
    if (!event.ok()) {
      return event.status();
    }
    auto recorded = Record({*std::move(event)}, now);
    if (!recorded.ok()) {
      return recorded.status();
    }
    resp->set_recorded(recorded->front());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::RecordUsageBatch(grpc::CallbackServerContext* ctx,
                                                             const v1::RecordUsageBatchRequest* req,
                                                             v1::RecordUsageBatchResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    if (auto st = AuthenticateService(*auth_, *ctx); !st.ok()) {
      return st;
    }
    absl::Time now = clock_();
    auto events = BatchFromProto(req->events(), now);
    if (!events.ok()) {
      return events.status();
    }
    auto recorded = Record(*events, now);
    if (!recorded.ok()) {
      return recorded.status();
    }
    resp->mutable_recorded()->Reserve(static_cast<int>(recorded->size()));
    for (bool r : *recorded) {
      resp->add_recorded(r);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::GetUsageSummary(grpc::CallbackServerContext* ctx,
                                                            const v1::GetUsageSummaryRequest* req,
                                                            v1::GetUsageSummaryResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) {
      return caller.status();
    }
    auto group = GroupFromProto(req->group_by());
    if (!group.ok()) {
      return group.status();
    }
    SummaryQuery q;
    q.group = *group;
    if (q.group == SummaryGroup::kUser) {
      if (auto st = RequireAdmin(*caller); !st.ok()) {
        return st;
      }
    } else {
      auto subject = SubjectUser(*caller, req->has_user_id(), req->user_id());
      if (!subject.ok()) {
        return subject.status();
      }
      q.user_id = *subject;
    }
    auto order = OrderFromProto(req->order_by());
    if (!order.ok()) {
      return order.status();
    }
    q.order = *order;
    if (!req->has_from()) {
      return absl::InvalidArgumentError("from is required");
    }
    if (!req->has_to()) {
      return absl::InvalidArgumentError("to is required");
    }
    auto from = TimeFromProto(req->from(), "from");
    if (!from.ok()) {
      return from.status();
    }
    auto to = TimeFromProto(req->to(), "to");
    if (!to.ok()) {
      return to.status();
    }
    q.from = *from;
    q.to = *to;
    if (q.from > q.to) {
      return absl::InvalidArgumentError("from must not be after to");
    }
    if (req->limit() < 0 || req->limit() > kMaxSummaryRows) {
      return absl::InvalidArgumentError("limit must be between 0 and 1000");
    }
    q.limit = req->limit() == 0 ? kMaxSummaryRows : req->limit();
    auto summary = store_->Summarize(q);
    if (!summary.ok()) {
      return summary.status();
    }
    for (const auto& row : summary->rows) {
      RowToProto(row, resp->add_rows());
    }
    RowToProto(summary->totals, resp->mutable_totals());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::ListUsage(grpc::CallbackServerContext* ctx,
                                                      const v1::ListUsageRequest* req,
                                                      v1::ListUsageResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) {
      return caller.status();
    }
    auto subject = SubjectUser(*caller, req->has_user_id(), req->user_id());
    if (!subject.ok()) {
      return subject.status();
    }
    ListQuery q;
    q.user_id = *subject;
    if (req->has_from()) {
      auto from = TimeFromProto(req->from(), "from");
      if (!from.ok()) {
        return from.status();
      }
      q.from = *from;
    }
    if (req->has_to()) {
      auto to = TimeFromProto(req->to(), "to");
      if (!to.ok()) {
        return to.status();
      }
      q.to = *to;
    }
    if (q.from && q.to && *q.from > *q.to) {
      return absl::InvalidArgumentError("from must not be after to");
    }
    auto size = NormalizePageSize(req->page_size());
    if (!size.ok()) {
      return size.status();
    }
    q.limit = *size + 1;
    if (!req->page_token().empty()) {
      auto parts = DecodePageToken(req->page_token(), 2);
      if (!parts.ok()) {
        return parts.status();
      }
      int64_t micros = 0;
      if (!absl::SimpleAtoi((*parts)[0], &micros) || !absl::SimpleAtoi((*parts)[1], &q.before_id)) {
        return absl::InvalidArgumentError("page_token is invalid");
      }
      q.before_time = absl::FromUnixMicros(micros);
    }
    auto rows = store_->ListUsage(q);
    if (!rows.ok()) {
      return rows.status();
    }
    bool more = static_cast<int>(rows->size()) > *size;
    if (more) {
      rows->pop_back();
    }
    for (const auto& u : *rows) {
      auto* rec = resp->add_records();
      rec->set_id(u.id);
      EventToProto(u.event, rec->mutable_event());
      ToProto(u.recorded_at, rec->mutable_recorded_at());
    }
    if (more && !rows->empty()) {
      resp->set_next_page_token(
          EncodePageToken({absl::StrCat(absl::ToUnixMicros(rows->back().event.occurred_at)),
                           absl::StrCat(rows->back().id)}));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::SetBudget(grpc::CallbackServerContext* ctx,
                                                      const v1::SetBudgetRequest* req,
                                                      v1::Budget* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) {
      return caller.status();
    }
    if (auto st = RequireAdmin(*caller); !st.ok()) {
      return st;
    }
    if (req->user_id() <= 0) {
      return absl::InvalidArgumentError("user_id must be positive");
    }
    if (req->monthly_limit_nanos() < 0) {
      return absl::InvalidArgumentError("monthly_limit_nanos must not be negative");
    }
    auto b = store_->SetBudget(req->user_id(), req->monthly_limit_nanos(), clock_());
    if (!b.ok()) {
      return b.status();
    }
    BudgetToProto(*b, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::GetBudget(grpc::CallbackServerContext* ctx,
                                                      const v1::GetBudgetRequest* req,
                                                      v1::Budget* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) {
      return caller.status();
    }
    auto subject = SubjectUser(*caller, req->has_user_id(), req->user_id());
    if (!subject.ok()) {
      return subject.status();
    }
    if (*subject <= 0) {
      return absl::InvalidArgumentError("user_id is required for a caller without a user");
    }
    auto b = store_->GetBudget(*subject, clock_());
    if (!b.ok()) {
      return b.status();
    }
    BudgetToProto(*b, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::ReserveBudget(grpc::CallbackServerContext* ctx,
                                                          const v1::ReserveBudgetRequest* req,
                                                          v1::ReserveBudgetResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    if (auto st = AuthenticateService(*auth_, *ctx); !st.ok()) {
      return st;
    }
    if (req->user_id() <= 0) {
      return absl::InvalidArgumentError("user_id must be positive");
    }
    if (auto st = CheckEventId(req->event_id(), "event_id"); !st.ok()) {
      return st;
    }
    if (req->max_cost_nanos() < 0) {
      return absl::InvalidArgumentError("max_cost_nanos must not be negative");
    }
    if (req->requests_per_minute() < 0) {
      return absl::InvalidArgumentError("requests_per_minute must not be negative");
    }
    ReserveRequest r{.user_id = req->user_id(),
                     .event_id = req->event_id(),
                     .max_cost_nanos = req->max_cost_nanos(),
                     .requests_per_minute = req->requests_per_minute()};
    auto d = store_->Reserve(r, clock_());
    if (!d.ok()) {
      return d.status();
    }
    if (d->replayed) {
      metrics_.reserve_replayed.Increment();
    } else if (d->allowed) {
      metrics_.reserve_allowed.Increment();
    } else if (d->reason == Refusal::kRateLimited) {
      metrics_.reserve_rate_limited.Increment();
    } else {
      metrics_.reserve_budget_exceeded.Increment();
    }
    resp->set_allowed(d->allowed);
    resp->set_reason(static_cast<v1::RefusalReason>(d->reason));
    resp->set_message(d->message);
    resp->set_remaining_nanos(d->remaining_nanos);
    if (d->retry_at) {
      ToProto(*d->retry_at, resp->mutable_retry_at());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UsageServiceImpl::ReleaseBudget(grpc::CallbackServerContext* ctx,
                                                          const v1::ReleaseBudgetRequest* req,
                                                          v1::ReleaseBudgetResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    if (auto st = AuthenticateService(*auth_, *ctx); !st.ok()) {
      return st;
    }
    if (auto st = CheckEventId(req->event_id(), "event_id"); !st.ok()) {
      return st;
    }
    auto released = store_->Release(req->event_id(), clock_());
    if (!released.ok()) {
      return released.status();
    }
    (*released ? metrics_.released : metrics_.release_noop).Increment();
    resp->set_released(*released);
    return absl::OkStatus();
  });
}

}  // namespace aichat::usage
