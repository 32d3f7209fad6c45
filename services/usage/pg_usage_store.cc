#include "services/usage/pg_usage_store.h"

#include <array>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace aichat::usage {
namespace {

// Decisions are kept this long past the TTL: long enough for any retry of a
// ReserveBudget to find its original answer, short enough to keep the table small.
constexpr absl::Duration kDecisionRetention = absl::Hours(24);
constexpr absl::Duration kRateWindow = absl::Minutes(1);

constexpr char kInsertEvent[] =
    "INSERT INTO usage_logs (event_id, user_id, conversation_id, prompt_id, model, "
    "provider_model, prompt_tokens, completion_tokens, cached_tokens, "
    "input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "
    "output_price_micros_per_mtok, cost_nanos, estimated, outcome, occurred_at, recorded_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
    "ON CONFLICT (event_id) DO NOTHING RETURNING id";
constexpr char kSettle[] =
    "UPDATE reservations SET state = 'settled', closed_at = $3 "
    "WHERE event_id = $1 AND user_id = $2 AND state = 'active'";

constexpr char kListUsage[] =
    "SELECT id, event_id, user_id, conversation_id, prompt_id, model, provider_model, "
    "prompt_tokens, completion_tokens, cached_tokens, input_price_micros_per_mtok, "
    "cached_input_price_micros_per_mtok, output_price_micros_per_mtok, cost_nanos, estimated, "
    "outcome, occurred_at, recorded_at FROM usage_logs "
    "WHERE user_id = $1 AND occurred_at >= COALESCE($2::timestamptz, '-infinity') "
    "AND occurred_at < COALESCE($3::timestamptz, 'infinity') "
    "AND (occurred_at, id) < (COALESCE($4::timestamptz, 'infinity'), $5::bigint) "
    "ORDER BY occurred_at DESC, id DESC LIMIT $6";

// Limit, month's spend (from the daily rollup), money in flight (active,
// unexpired reservations) and the oldest of those. One statement, so one
// snapshot: a RecordUsage that commits concurrently is seen entirely (spent up,
// reservation settled) or not at all — never counted twice or not at all.
constexpr char kBudgetState[] =
    "SELECT COALESCE((SELECT monthly_limit_nanos FROM budgets WHERE user_id = $1), 0), "
    "(SELECT COALESCE(sum(cost_nanos), 0) FROM usage_daily "
    "  WHERE user_id = $1 AND day >= $2::date AND day < $3::date)::bigint, "
    "(SELECT COALESCE(sum(max_cost_nanos), 0) FROM reservations "
    "  WHERE user_id = $1 AND state = 'active' AND created_at > $4)::bigint, "
    "(SELECT min(created_at) FROM reservations "
    "  WHERE user_id = $1 AND state = 'active' AND created_at > $4)";
constexpr char kUpsertBudget[] =
    "INSERT INTO budgets (user_id, monthly_limit_nanos, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (user_id) DO UPDATE SET monthly_limit_nanos = EXCLUDED.monthly_limit_nanos, "
    "updated_at = EXCLUDED.updated_at";

// The per-user lock: every ReserveBudget for a user queues on this row.
constexpr char kEnsureUserRow[] =
    "INSERT INTO budgets (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING";
constexpr char kLockUserRow[] = "SELECT 1 FROM budgets WHERE user_id = $1 FOR UPDATE";
constexpr char kFindDecision[] =
    "SELECT user_id, allowed, reason, message, retry_at, remaining_nanos FROM reservations "
    "WHERE event_id = $1";
constexpr char kPruneDecisions[] =
    "DELETE FROM reservations WHERE user_id = $1 AND created_at < $2";
// The rpm-th newest admission of the last minute: if it exists the window is
// full, and it frees up when that admission turns a minute old.
constexpr char kRateNth[] =
    "SELECT created_at FROM reservations WHERE user_id = $1 AND allowed AND created_at > $2 "
    "ORDER BY created_at DESC OFFSET $3 LIMIT 1";
constexpr char kInsertDecision[] =
    "INSERT INTO reservations (event_id, user_id, max_cost_nanos, allowed, state, reason, "
    "message, retry_at, remaining_nanos, created_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
constexpr char kRelease[] =
    "UPDATE reservations SET state = 'released', closed_at = $3 "
    "WHERE event_id = $1 AND state = 'active' AND created_at > $2 RETURNING 1";

// Summaries: whole UTC days come from a rollup table, the partial days at either
// end of [from, to) from usage_logs; rows are grouped once more over the union.
// Totals are window sums, so they cover every group even when LIMIT cuts rows.
// $1 user, $2..$3 head range, $4..$5 tail range, $6..$7 whole days [d1, d2),
// $8 order, $9 limit.
constexpr char kSummaryTemplate[] =
    "WITH sel AS ("
    " SELECT {RK} AS k, requests, prompt_tokens, completion_tokens, cached_tokens, cost_nanos"
    "  FROM {ROLLUP} WHERE {USER} AND day >= $6::date AND day < $7::date"
    " UNION ALL"
    " SELECT {LK}, 1, prompt_tokens, completion_tokens, cached_tokens, cost_nanos FROM usage_logs"
    "  WHERE {USER} AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz"
    " UNION ALL"
    " SELECT {LK}, 1, prompt_tokens, completion_tokens, cached_tokens, cost_nanos FROM usage_logs"
    "  WHERE {USER} AND occurred_at >= $4::timestamptz AND occurred_at < $5::timestamptz"
    "), g AS ("
    " SELECT k, sum(requests)::bigint AS r, sum(prompt_tokens)::bigint AS p,"
    "  sum(completion_tokens)::bigint AS c, sum(cached_tokens)::bigint AS ca,"
    "  sum(cost_nanos)::bigint AS cost FROM sel GROUP BY k"
    ") SELECT {KT}, r, p, c, ca, cost, (sum(r) OVER ())::bigint, (sum(p) OVER ())::bigint,"
    " (sum(c) OVER ())::bigint, (sum(ca) OVER ())::bigint, (sum(cost) OVER ())::bigint FROM g"
    " ORDER BY CASE WHEN $8::int = 1 THEN cost END DESC NULLS LAST,"
    " CASE WHEN $8::int = 2 THEN p + c END DESC NULLS LAST,"
    " CASE WHEN $8::int = 3 THEN r END DESC NULLS LAST, k LIMIT $9::int";

// Built once from the constant template (never from input), one per grouping.
const std::string& SummarySql(SummaryGroup group) {
  static const auto* const kSql = [] {
    auto make = [](const char* rollup_key, const char* raw_key, const char* rollup,
                   const char* user, const char* key_text) {
      return absl::StrReplaceAll(kSummaryTemplate, {{"{RK}", rollup_key},
                                                    {"{LK}", raw_key},
                                                    {"{ROLLUP}", rollup},
                                                    {"{USER}", user},
                                                    {"{KT}", key_text}});
    };
    constexpr char kOneUser[] = "user_id = $1::bigint";
    return new std::array<std::string, 4>{
        make("day", "(occurred_at AT TIME ZONE 'UTC')::date", "usage_daily", kOneUser,
             "to_char(k, 'YYYY-MM-DD')"),
        make("model", "model", "usage_daily", kOneUser, "k"),
        make("conversation_id", "conversation_id", "usage_daily_conversation", kOneUser, "k::text"),
        // All users: $1 is NULL and unused; the predicate keeps its type known.
        make("user_id", "user_id", "usage_daily", "$1::bigint IS NULL", "k::text"),
    };
  }();
  return (*kSql)[static_cast<size_t>(group)];
}

absl::Time DayStart(absl::Time t) {
  return absl::FromCivil(absl::CivilDay(absl::ToCivilSecond(t, absl::UTCTimeZone())),
                         absl::UTCTimeZone());
}

std::string DateText(absl::Time t) { return absl::FormatTime("%Y-%m-%d", t, absl::UTCTimeZone()); }

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

SummaryTotals ReadTotals(const PgResult& r, int row, int first_col) {
  SummaryTotals t;
  t.requests = r.Int(row, first_col);
  t.prompt_tokens = r.Int(row, first_col + 1);
  t.completion_tokens = r.Int(row, first_col + 2);
  t.cached_tokens = r.Int(row, first_col + 3);
  t.cost_nanos = r.Int(row, first_col + 4);
  return t;
}

StoredUsage ReadUsage(const PgResult& r, int row) {
  StoredUsage u;
  u.id = r.Int(row, 0);
  UsageEventRecord& e = u.event;
  e.event_id = r.String(row, 1);
  e.user_id = r.Int(row, 2);
  e.conversation_id = r.Int(row, 3);
  e.prompt_id = r.Int(row, 4);
  e.model = r.String(row, 5);
  e.provider_model = r.String(row, 6);
  e.prompt_tokens = r.Int(row, 7);
  e.completion_tokens = r.Int(row, 8);
  e.cached_tokens = r.Int(row, 9);
  e.prices.input_micros_per_mtok = r.Int(row, 10);
  e.prices.cached_input_micros_per_mtok = r.Int(row, 11);
  e.prices.output_micros_per_mtok = r.Int(row, 12);
  e.cost_nanos = r.Int(row, 13);
  e.estimated = r.Bool(row, 14);
  e.outcome = static_cast<Outcome>(r.Int(row, 15));
  e.occurred_at = r.Time(row, 16);
  u.recorded_at = r.Time(row, 17);
  return u;
}

absl::StatusOr<BudgetState> ReadBudget(PgConn& conn, int64_t user_id, absl::Time now,
                                       absl::Duration ttl, absl::Time* oldest_active) {
  BudgetState b;
  b.user_id = user_id;
  b.period_start = MonthStart(now);
  b.resets_at = NextMonthStart(now);
  auto r = conn.Exec(kBudgetState,
                     {user_id, DateText(b.period_start), DateText(b.resets_at), now - ttl});
  if (!r.ok()) {
    return r.status();
  }
  b.monthly_limit_nanos = r->Int(0, 0);
  b.spent_nanos = r->Int(0, 1);
  b.reserved_nanos = r->Int(0, 2);
  if (oldest_active != nullptr) {
    *oldest_active = r->IsNull(0, 3) ? absl::InfiniteFuture() : r->Time(0, 3);
  }
  return b;
}

int64_t Clamp(__int128 v) {
  if (v > std::numeric_limits<int64_t>::max()) {
    return std::numeric_limits<int64_t>::max();
  }
  if (v < std::numeric_limits<int64_t>::min()) {
    return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(v);
}

// The decision for a request, given the user's row is locked.
absl::StatusOr<ReserveDecision> Decide(PgConn& conn, const ReserveRequest& req, absl::Time now,
                                       absl::Duration ttl) {
  ReserveDecision d;
  if (req.requests_per_minute > 0) {
    auto nth = conn.Exec(kRateNth, {req.user_id, now - kRateWindow, req.requests_per_minute - 1});
    if (!nth.ok()) {
      return nth.status();
    }
    if (nth->rows() > 0) {
      d.reason = Refusal::kRateLimited;
      d.retry_at = nth->Time(0, 0) + kRateWindow;
      d.message = absl::StrCat("rate limit of ", req.requests_per_minute,
                               " requests per minute reached; next request allowed at ",
                               TimeText(*d.retry_at));
      return d;
    }
  }
  absl::Time oldest_active;
  auto b = ReadBudget(conn, req.user_id, now, ttl, &oldest_active);
  if (!b.ok()) {
    return b.status();
  }
  if (b->monthly_limit_nanos == 0) {
    d.allowed = true;
    return d;
  }
  __int128 limit = b->monthly_limit_nanos;
  __int128 committed = static_cast<__int128>(b->spent_nanos) + b->reserved_nanos;
  if (committed + req.max_cost_nanos <= limit) {
    d.allowed = true;
    d.remaining_nanos = Clamp(limit - committed - req.max_cost_nanos);
    return d;
  }
  d.reason = Refusal::kBudgetExceeded;
  d.remaining_nanos = Clamp(limit - committed);
  std::string head =
      absl::StrCat("monthly budget of ", FormatUsd(b->monthly_limit_nanos), " reached (spent ",
                   FormatUsd(b->spent_nanos), ", in flight ", FormatUsd(b->reserved_nanos),
                   ", this turn needs up to ", FormatUsd(req.max_cost_nanos), ")");
  if (b->spent_nanos + static_cast<__int128>(req.max_cost_nanos) <= limit &&
      oldest_active != absl::InfiniteFuture()) {
    // Only turns in flight stand in the way: they settle, or expire by then.
    d.retry_at = std::min(oldest_active + ttl, b->resets_at);
    d.message =
        absl::StrCat(head, "; turns in flight hold the rest, retry after ", TimeText(*d.retry_at));
  } else {
    d.retry_at = b->resets_at;
    d.message = absl::StrCat(head, "; the budget resets at ", TimeText(b->resets_at));
  }
  return d;
}

}  // namespace

std::string FormatUsd(int64_t nanos) {
  const char* sign = nanos < 0 ? "-" : "";
  uint64_t n = nanos < 0 ? 0 - static_cast<uint64_t>(nanos) : static_cast<uint64_t>(nanos);
  std::string frac = absl::StrFormat("%09d", n % 1000000000);
  while (frac.size() > 2 && frac.back() == '0') {
    frac.pop_back();
  }
  return absl::StrCat(sign, "$", n / 1000000000, ".", frac);
}

absl::StatusOr<bool> PgUsageStore::RecordUsage(const UsageEventRecord& e, absl::Time now) {
  bool recorded = false;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    // The statement trigger on usage_logs updates the daily rollups in this transaction.
    auto ins = conn.Exec(
        kInsertEvent,
        {e.event_id, e.user_id, e.conversation_id, e.prompt_id, e.model, e.provider_model,
         e.prompt_tokens, e.completion_tokens, e.cached_tokens, e.prices.input_micros_per_mtok,
         e.prices.cached_input_micros_per_mtok, e.prices.output_micros_per_mtok, e.cost_nanos,
         e.estimated, static_cast<int>(e.outcome), e.occurred_at, now});
    if (!ins.ok()) {
      return ins.status();
    }
    recorded = ins->rows() == 1;
    if (!recorded) {
      return absl::OkStatus();
    }
    return conn.Exec(kSettle, {e.event_id, e.user_id, now}).status();
  });
  if (!st.ok()) {
    return st;
  }
  return recorded;
}

absl::StatusOr<Summary> PgUsageStore::Summarize(const SummaryQuery& q) {
  // Whole days [d1, d2) from the rollup; [from, d1) and [d2, to) from the ledger.
  absl::Time d1 = DayStart(q.from);
  if (d1 < q.from) {
    d1 += absl::Hours(24);
  }
  absl::Time d2 = DayStart(q.to);
  absl::Time head_end = q.to;
  absl::Time tail_start = q.to;
  if (d1 < d2) {
    head_end = d1;
    tail_start = d2;
  } else {
    d2 = d1;  // no whole day: the rollup range is empty
  }
  PgArg user = q.group == SummaryGroup::kUser ? PgArg(std::nullopt) : PgArg(q.user_id);
  auto r = pool_->Exec(SummarySql(q.group), {user, q.from, head_end, tail_start, q.to, DateText(d1),
                                             DateText(d2), static_cast<int>(q.order), q.limit});
  if (!r.ok()) {
    return r.status();
  }
  Summary s;
  s.rows.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    SummaryTotals row = ReadTotals(*r, i, 1);
    row.key = r->String(i, 0);
    s.rows.push_back(std::move(row));
  }
  if (r->rows() > 0) {
    s.totals = ReadTotals(*r, 0, 6);
  }
  return s;
}

absl::StatusOr<std::vector<StoredUsage>> PgUsageStore::ListUsage(const ListQuery& q) {
  int64_t before_id = q.before_time ? q.before_id : std::numeric_limits<int64_t>::max();
  auto r = pool_->Exec(kListUsage, {q.user_id, q.from, q.to, q.before_time, before_id, q.limit});
  if (!r.ok()) {
    return r.status();
  }
  std::vector<StoredUsage> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(ReadUsage(*r, i));
  }
  return out;
}

absl::StatusOr<BudgetState> PgUsageStore::SetBudget(int64_t user_id, int64_t monthly_limit_nanos,
                                                    absl::Time now) {
  absl::StatusOr<BudgetState> out;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    if (auto r = conn.Exec(kUpsertBudget, {user_id, monthly_limit_nanos, now}); !r.ok()) {
      return r.status();
    }
    out = ReadBudget(conn, user_id, now, options_.reservation_ttl, nullptr);
    return out.status();
  });
  if (!st.ok()) {
    return st;
  }
  return out;
}

absl::StatusOr<BudgetState> PgUsageStore::GetBudget(int64_t user_id, absl::Time now) {
  auto lease = pool_->Acquire();
  if (!lease.ok()) {
    return lease.status();
  }
  return ReadBudget(**lease, user_id, now, options_.reservation_ttl, nullptr);
}

absl::StatusOr<ReserveDecision> PgUsageStore::Reserve(const ReserveRequest& req, absl::Time now) {
  ReserveDecision out;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    if (auto r = conn.Exec(kEnsureUserRow, {req.user_id}); !r.ok()) {
      return r.status();
    }
    if (auto r = conn.Exec(kLockUserRow, {req.user_id}); !r.ok()) {
      return r.status();
    }
    // Under the lock, a concurrent call with the same event_id has committed (or not started).
    auto prior = conn.Exec(kFindDecision, {req.event_id});
    if (!prior.ok()) {
      return prior.status();
    }
    if (prior->rows() > 0) {
      if (prior->Int(0, 0) != req.user_id) {
        return absl::AlreadyExistsError("event_id is already used by another user's turn");
      }
      out = ReserveDecision{};
      out.allowed = prior->Bool(0, 1);
      out.reason = static_cast<Refusal>(prior->Int(0, 2));
      out.message = prior->String(0, 3);
      if (!prior->IsNull(0, 4)) {
        out.retry_at = prior->Time(0, 4);
      }
      out.remaining_nanos = prior->Int(0, 5);
      out.replayed = true;
      return absl::OkStatus();
    }
    absl::Duration keep = std::max(options_.reservation_ttl, kRateWindow) + kDecisionRetention;
    if (auto r = conn.Exec(kPruneDecisions, {req.user_id, now - keep}); !r.ok()) {
      return r.status();
    }
    auto d = Decide(conn, req, now, options_.reservation_ttl);
    if (!d.ok()) {
      return d.status();
    }
    out = *std::move(d);
    auto ins = conn.Exec(kInsertDecision,
                         {req.event_id, req.user_id, req.max_cost_nanos, out.allowed,
                          out.allowed ? "active" : "refused", static_cast<int>(out.reason),
                          out.message, out.retry_at, out.remaining_nanos, now});
    if (absl::IsAlreadyExists(ins.status())) {
      return absl::AlreadyExistsError("event_id is already used by another user's turn");
    }
    return ins.status();
  });
  if (!st.ok()) {
    return st;
  }
  return out;
}

absl::StatusOr<bool> PgUsageStore::Release(const std::string& event_id, absl::Time now) {
  auto r = pool_->Exec(kRelease, {event_id, now - options_.reservation_ttl, now});
  if (!r.ok()) {
    return r.status();
  }
  return r->rows() > 0;
}

}  // namespace aichat::usage
