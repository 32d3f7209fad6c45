#include "services/usage/pg_usage_store.h"

#include <array>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "services/usage/pg_array.h"

namespace aichat::usage {
namespace {

// Decisions are kept this long past the TTL: long enough for any retry of a
// ReserveBudget to find its original answer, short enough to keep the table small.
constexpr absl::Duration kDecisionRetention = absl::Hours(24);
constexpr absl::Duration kRateWindow = absl::Minutes(1);

// Any number of events in one statement (one round trip, one implicit
// transaction): each column arrives as one array parameter. Rows go in sorted by
// event_id, so two overlapping batches take their unique-index locks in the same
// order and queue instead of deadlocking. The statement trigger on usage_logs
// updates the daily rollups from exactly the rows inserted (new_rows), and the
// inserted events settle their reservations in the same statement.
constexpr char kRecordEvents[] =
    "WITH input AS ("
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],"
    "  $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],"
    "  $12::bigint[], $13::bigint[], $14::boolean[], $15::smallint[], $16::timestamptz[])"
    " AS t(event_id, user_id, conversation_id, prompt_id, model, provider_model, prompt_tokens,"
    "  completion_tokens, cached_tokens, input_price, cached_input_price, output_price,"
    "  cost_nanos, estimated, outcome, occurred_at)"
    "), ins AS ("
    " INSERT INTO usage_logs (event_id, user_id, conversation_id, prompt_id, model,"
    "  provider_model, prompt_tokens, completion_tokens, cached_tokens,"
    "  input_price_micros_per_mtok, cached_input_price_micros_per_mtok,"
    "  output_price_micros_per_mtok, cost_nanos, estimated, outcome, occurred_at, recorded_at)"
    " SELECT event_id, user_id, conversation_id, prompt_id, model, provider_model,"
    "  prompt_tokens, completion_tokens, cached_tokens, input_price, cached_input_price,"
    "  output_price, cost_nanos, estimated, outcome, occurred_at, $17::timestamptz"
    " FROM input ORDER BY event_id"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, user_id"
    "), settled AS ("
    " UPDATE reservations AS r SET state = 'settled', closed_at = $17::timestamptz FROM ins"
    " WHERE r.event_id = ins.event_id AND r.user_id = ins.user_id AND r.state = 'active')"
    " SELECT event_id FROM ins";

constexpr char kListUsage[] =
    "SELECT id, event_id, user_id, conversation_id, prompt_id, model, provider_model, "
    "prompt_tokens, completion_tokens, cached_tokens, input_price_micros_per_mtok, "
    "cached_input_price_micros_per_mtok, output_price_micros_per_mtok, cost_nanos, estimated, "
    "outcome, occurred_at, recorded_at FROM usage_logs "
    "WHERE user_id = $1 AND occurred_at >= COALESCE($2::timestamptz, '-infinity') "
    "AND occurred_at < COALESCE($3::timestamptz, 'infinity') "
    "AND (occurred_at, id) < (COALESCE($4::timestamptz, 'infinity'), $5::bigint) "
    "ORDER BY occurred_at DESC, id DESC LIMIT $6";

// Limit, month's spend (from the daily rollup) and money in flight (active,
// unexpired reservations). One statement, so one snapshot: a RecordUsage that commits concurrently
// is seen entirely (spent up, reservation settled) or not at all — never counted twice or not at
// all.
constexpr char kBudgetState[] =
    "SELECT COALESCE((SELECT monthly_limit_nanos FROM budgets WHERE user_id = $1), 0), "
    "(SELECT COALESCE(sum(cost_nanos), 0) FROM usage_daily "
    "  WHERE user_id = $1 AND day >= $2::date AND day < $3::date)::bigint, "
    "(SELECT COALESCE(sum(max_cost_nanos), 0) FROM reservations "
    "  WHERE user_id = $1 AND state = 'active' AND created_at > $4)::bigint";
constexpr char kUpsertBudget[] =
    "INSERT INTO budgets (user_id, monthly_limit_nanos, updated_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (user_id) DO UPDATE SET monthly_limit_nanos = EXCLUDED.monthly_limit_nanos, "
    "updated_at = EXCLUDED.updated_at";

// The whole decision, server-side (migrations/002_usage_reserve.sql): one round trip.
constexpr char kReserve[] =
    "SELECT d_foreign, d_replayed, d_allowed, d_reason, d_message, d_retry_at, d_remaining_nanos "
    "FROM usage_reserve($1::bigint, $2::text, $3::bigint, $4::integer, $5::timestamptz, "
    "$6::interval, $7::interval, $8::interval, $9::timestamptz, $10::timestamptz)";
// Frees an active reservation. A release that overtakes its reservation (the agent
// gave up while ReserveBudget queued on the user's lock) leaves a tombstone of user
// 0, so the late decision finds its event_id taken and holds nothing; tombstones
// older than the TTL are pruned here. True only when an active one was freed.
constexpr char kRelease[] =
    "WITH pruned AS (DELETE FROM reservations WHERE user_id = 0 AND created_at < $2) "
    "INSERT INTO reservations (event_id, user_id, max_cost_nanos, allowed, state, reason, "
    "message, remaining_nanos, created_at, closed_at) "
    "VALUES ($1, 0, 0, false, 'released', 0, 'released before it was decided', 0, $3, $3) "
    "ON CONFLICT (event_id) DO UPDATE SET state = 'released', closed_at = EXCLUDED.closed_at "
    "WHERE reservations.state = 'active' AND reservations.created_at > $2 "
    "RETURNING xmax <> 0";

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
                                       absl::Duration ttl) {
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
  return b;
}

// One statement in its own (implicit) transaction: one round trip. Retried like
// PgPool::Transaction on serialization failures and deadlocks (ABORTED), which
// roll the whole statement back.
absl::StatusOr<PgResult> ExecRetrying(PgPool& pool, std::string_view sql,
                                      const std::vector<PgArg>& args) {
  constexpr int kAttempts = 4;
  absl::StatusOr<PgResult> r = absl::AbortedError("not run");
  for (int attempt = 0; attempt < kAttempts && absl::IsAborted(r.status()); ++attempt) {
    r = pool.Exec(sql, args);
  }
  return r;
}

// An interval parameter, exact to the microsecond (no floating point on the way).
std::string IntervalText(absl::Duration d) {
  return absl::StrCat(absl::ToInt64Microseconds(d), " microseconds");
}

constexpr char kForeignEventId[] = "event_id is already used by another user's turn";

// The row of kReserve, its columns named in one place.
absl::StatusOr<ReserveDecision> ReadDecision(const PgResult& r) {
  enum Col { kForeign, kReplayed, kAllowed, kReason, kMessage, kRetryAt, kRemaining };
  if (r.rows() != 1) {
    return absl::InternalError("usage_reserve returned no decision");
  }
  if (r.Bool(0, kForeign)) {
    return absl::AlreadyExistsError(kForeignEventId);
  }
  ReserveDecision d;
  d.replayed = r.Bool(0, kReplayed);
  d.allowed = r.Bool(0, kAllowed);
  d.reason = static_cast<Refusal>(r.Int(0, kReason));
  d.message = r.String(0, kMessage);
  if (!r.IsNull(0, kRetryAt)) {
    d.retry_at = r.Time(0, kRetryAt);
  }
  d.remaining_nanos = r.Int(0, kRemaining);
  return d;
}

}  // namespace

absl::StatusOr<std::vector<bool>> PgUsageStore::RecordUsage(
    const std::vector<UsageEventRecord>& events, absl::Time now) {
  // One array per column of kRecordEvents, in its order.
  enum Col {
    kEventId,
    kUserId,
    kConversationId,
    kPromptId,
    kModel,
    kProviderModel,
    kPromptTokens,
    kCompletionTokens,
    kCachedTokens,
    kInputPrice,
    kCachedInputPrice,
    kOutputPrice,
    kCost,
    kEstimated,
    kOutcome,
    kOccurredAt,
    kColumns
  };
  std::array<PgArrayBuilder, kColumns> cols;
  for (const UsageEventRecord& e : events) {
    cols[kEventId].Add(e.event_id);
    cols[kUserId].Add(e.user_id);
    cols[kConversationId].Add(e.conversation_id);
    cols[kPromptId].Add(e.prompt_id);
    cols[kModel].Add(e.model);
    cols[kProviderModel].Add(e.provider_model);
    cols[kPromptTokens].Add(e.prompt_tokens);
    cols[kCompletionTokens].Add(e.completion_tokens);
    cols[kCachedTokens].Add(e.cached_tokens);
    cols[kInputPrice].Add(e.prices.input_micros_per_mtok);
    cols[kCachedInputPrice].Add(e.prices.cached_input_micros_per_mtok);
    cols[kOutputPrice].Add(e.prices.output_micros_per_mtok);
    cols[kCost].Add(e.cost_nanos);
    cols[kEstimated].Add(e.estimated);
    cols[kOutcome].Add(static_cast<int>(e.outcome));
    cols[kOccurredAt].Add(e.occurred_at);
  }
  std::vector<PgArg> args;
  args.reserve(kColumns + 1);
  for (const PgArrayBuilder& c : cols) {
    args.push_back(c.Build());
  }
  args.emplace_back(now);
  auto r = ExecRetrying(*pool_, kRecordEvents, args);
  if (!r.ok()) {
    return r.status();
  }
  absl::flat_hash_set<std::string_view> inserted;
  inserted.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    inserted.insert(r->Text(i, 0));
  }
  std::vector<bool> out;
  out.reserve(events.size());
  for (const UsageEventRecord& e : events) {
    out.push_back(inserted.contains(e.event_id));
  }
  return out;
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
    out = ReadBudget(conn, user_id, now, options_.reservation_ttl);
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
  return ReadBudget(**lease, user_id, now, options_.reservation_ttl);
}

absl::StatusOr<ReserveDecision> PgUsageStore::Reserve(const ReserveRequest& req, absl::Time now) {
  absl::Duration keep = std::max(options_.reservation_ttl, kRateWindow) + kDecisionRetention;
  auto r = ExecRetrying(*pool_, kReserve,
                        {req.user_id, req.event_id, req.max_cost_nanos, req.requests_per_minute,
                         now, IntervalText(options_.reservation_ttl), IntervalText(kRateWindow),
                         IntervalText(keep), MonthStart(now), NextMonthStart(now)});
  if (absl::IsAlreadyExists(r.status())) {
    // Another user's decision with this event_id committed while ours was made.
    return absl::AlreadyExistsError(kForeignEventId);
  }
  if (!r.ok()) {
    return r.status();
  }
  return ReadDecision(*r);
}

absl::StatusOr<bool> PgUsageStore::Release(const std::string& event_id, absl::Time now) {
  auto r = pool_->Exec(kRelease, {event_id, now - options_.reservation_ttl, now});
  if (!r.ok()) {
    return r.status();
  }
  return r->rows() > 0 && r->Bool(0, 0);
}

}  // namespace aichat::usage
