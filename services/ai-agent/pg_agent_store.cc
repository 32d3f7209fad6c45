#include "services/ai-agent/pg_agent_store.h"

#include <algorithm>
#include <boost/json.hpp>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base64.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;

// --- models ---

#define AICHAT_MODEL_COLS                                                               \
  "name, provider_model, base_url, api_key_env, input_price_micros_per_mtok, "          \
  "cached_input_price_micros_per_mtok, output_price_micros_per_mtok, context_window, "  \
  "max_output_tokens, default_temperature, enabled, is_default, use_max_tokens_param, " \
  "updated_at, deployments::text, fallbacks::text"

constexpr char kListModels[] = "SELECT " AICHAT_MODEL_COLS " FROM ai_model_configs ORDER BY name";
// Serialises default switches: two concurrent "make X the default" upserts would
// otherwise each clear the old default and then collide on the partial unique index.
constexpr char kLockDefault[] =
    "SELECT pg_advisory_xact_lock(hashtext('ai_model_configs.is_default'))";
constexpr char kClearDefault[] =
    "UPDATE ai_model_configs SET is_default = false, updated_at = now() "
    "WHERE is_default AND name <> $1";
constexpr char kUpsertModel[] =
    "INSERT INTO ai_model_configs (name, provider_model, base_url, api_key_env, "
    "input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "
    "output_price_micros_per_mtok, context_window, max_output_tokens, default_temperature, "
    "enabled, is_default, use_max_tokens_param, deployments, fallbacks) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::double precision, $11, $12, $13, "
    "$14::jsonb, $15::jsonb) "
    "ON CONFLICT (name) DO UPDATE SET provider_model = EXCLUDED.provider_model, "
    "base_url = EXCLUDED.base_url, api_key_env = EXCLUDED.api_key_env, "
    "input_price_micros_per_mtok = EXCLUDED.input_price_micros_per_mtok, "
    "cached_input_price_micros_per_mtok = EXCLUDED.cached_input_price_micros_per_mtok, "
    "output_price_micros_per_mtok = EXCLUDED.output_price_micros_per_mtok, "
    "context_window = EXCLUDED.context_window, max_output_tokens = EXCLUDED.max_output_tokens, "
    "default_temperature = EXCLUDED.default_temperature, enabled = EXCLUDED.enabled, "
    "is_default = EXCLUDED.is_default, use_max_tokens_param = EXCLUDED.use_max_tokens_param, "
    "deployments = EXCLUDED.deployments, fallbacks = EXCLUDED.fallbacks, updated_at = now() "
    "RETURNING " AICHAT_MODEL_COLS;
constexpr char kDeleteModel[] = "DELETE FROM ai_model_configs WHERE name = $1 RETURNING name";

// --- prompts ---

#define AICHAT_PROMPT_COLS                                                                  \
  "id, user_id, conversation_id, status, COALESCE(idempotency_key, ''), event_id, model, "  \
  "provider_model, input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "       \
  "output_price_micros_per_mtok, context_window, max_output_tokens, user_message_id, "      \
  "response_message_id, replaces_message_id, prompt_tokens, completion_tokens, "            \
  "cached_tokens, estimated, cost_nanos, finish_reason, error, response_text, latency_ms, " \
  "ttft_ms, created_at, completed_at, request_hash, COALESCE(owner, ''), context_tokens, "  \
  "answer_pending, deployment"
// The same columns of `p`, with the owner as just adopted (`a`).
#define AICHAT_PROMPT_COLS_ADOPTED                                                              \
  "p.id, p.user_id, p.conversation_id, p.status, COALESCE(p.idempotency_key, ''), p.event_id, " \
  "p.model, p.provider_model, p.input_price_micros_per_mtok, "                                  \
  "p.cached_input_price_micros_per_mtok, p.output_price_micros_per_mtok, p.context_window, "    \
  "p.max_output_tokens, p.user_message_id, p.response_message_id, p.replaces_message_id, "      \
  "p.prompt_tokens, p.completion_tokens, p.cached_tokens, p.estimated, p.cost_nanos, "          \
  "p.finish_reason, p.error, p.response_text, p.latency_ms, p.ttft_ms, p.created_at, "          \
  "p.completed_at, p.request_hash, COALESCE(a.owner, ''), p.context_tokens, p.answer_pending, " \
  "p.deployment"

constexpr char kReserveIds[] =
    "SELECT nextval(pg_get_serial_sequence('ai_prompts', 'id')) FROM generate_series(1, $1)";
// The prompt and its place among the unsettled turns, in one statement.
constexpr char kInsertPrompt[] =
    "WITH p AS (INSERT INTO ai_prompts (id, user_id, conversation_id, idempotency_key, event_id, "
    "model, provider_model, input_price_micros_per_mtok, cached_input_price_micros_per_mtok, "
    "output_price_micros_per_mtok, context_window, max_output_tokens, user_message_id, "
    "replaces_message_id, request_hash, owner, context_tokens) "
    "VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, $7, $8, $9, $10, $11, $12, "
    "NULLIF($13::bigint, 0), NULLIF($14::bigint, 0), $15, NULLIF($16, ''), $17) "
    "RETURNING id, owner) "
    "INSERT INTO ai_prompts_unsettled (prompt_id, owner) SELECT id, owner FROM p";
constexpr char kPromptByKey[] =
    "SELECT " AICHAT_PROMPT_COLS " FROM ai_prompts WHERE user_id = $1 AND idempotency_key = $2";
constexpr char kPromptById[] =
    "SELECT " AICHAT_PROMPT_COLS " FROM ai_prompts WHERE id = $1 AND user_id = $2";
constexpr char kListPrompts[] =
    "SELECT " AICHAT_PROMPT_COLS
    " FROM ai_prompts "
    "WHERE user_id = $1 AND ($2::bigint <= 0 OR id < $2) ORDER BY id DESC LIMIT $3";
constexpr char kListConversationPrompts[] =
    "SELECT " AICHAT_PROMPT_COLS
    " FROM ai_prompts "
    "WHERE user_id = $1 AND conversation_id = $4 AND ($2::bigint <= 0 OR id < $2) "
    "ORDER BY id DESC LIMIT $3";
constexpr char kPromptExists[] = "SELECT 1 FROM ai_prompts WHERE id = $1";
constexpr char kMarkRefused[] =
    "WITH p AS (UPDATE ai_prompts SET status = $2, error = $3, completed_at = now(), "
    "idempotency_key = NULL WHERE id = $1 AND status IN ('PENDING', 'STREAMING') RETURNING id), "
    "u AS (DELETE FROM ai_prompts_unsettled WHERE prompt_id IN (SELECT id FROM p)) "
    "SELECT id FROM p";
// The prompt's outcome and its usage event in one statement (one round trip, one
// transaction). The new outbox row is leased to its writer, which delivers it now.
// The turn stays unsettled only while its answer is pending.
constexpr char kFinishPrompt[] =
    "WITH p AS (UPDATE ai_prompts SET status = $2, response_message_id = NULLIF($3::bigint, 0), "
    "response_text = $4, reported_model = $5, prompt_tokens = $6, completion_tokens = $7, "
    "cached_tokens = $8, estimated = $9, cost_nanos = $10, finish_reason = $11, error = $12, "
    "latency_ms = $13, ttft_ms = $14, completed_at = now(), "
    "user_message_id = COALESCE(NULLIF($15::bigint, 0), user_message_id), answer_pending = $16, "
    "model = COALESCE(NULLIF($19, ''), model), "
    "provider_model = COALESCE(NULLIF($20, ''), provider_model), "
    "input_price_micros_per_mtok = CASE WHEN $19 = '' THEN input_price_micros_per_mtok "
    "  ELSE $21 END, "
    "cached_input_price_micros_per_mtok = CASE WHEN $19 = '' "
    "  THEN cached_input_price_micros_per_mtok ELSE $22 END, "
    "output_price_micros_per_mtok = CASE WHEN $19 = '' THEN output_price_micros_per_mtok "
    "  ELSE $23 END, deployment = $24 "
    "WHERE id = $1 AND status IN ('PENDING', 'STREAMING') RETURNING id, event_id), "
    "o AS (INSERT INTO usage_outbox (event_id, payload, locked_until) "
    "SELECT event_id, $17, now() + $18::double precision * interval '1 microsecond' FROM p "
    "WHERE $17::text IS NOT NULL RETURNING id), "
    "u AS (DELETE FROM ai_prompts_unsettled WHERE prompt_id IN (SELECT id FROM p) "
    "AND NOT $16::boolean) "
    "SELECT (SELECT count(*) FROM p), COALESCE((SELECT id FROM o), 0)";
constexpr char kSettle[] =
    "WITH acked AS (DELETE FROM usage_outbox WHERE id = ANY($1::bigint[])), "
    "done AS (DELETE FROM ai_prompts_unsettled WHERE prompt_id = ANY($2::bigint[])) "
    "UPDATE ai_prompts p SET answer_pending = false, response_message_id = s.mid "
    "FROM unnest($2::bigint[], $3::bigint[]) AS s(pid, mid) WHERE p.id = s.pid";
constexpr char kAnswerLost[] =
    "WITH p AS (UPDATE ai_prompts SET answer_pending = false, status = 'FAILED', error = $2 "
    "WHERE id = $1 AND answer_pending RETURNING id) "
    "DELETE FROM ai_prompts_unsettled WHERE prompt_id IN (SELECT id FROM p)";
constexpr char kRenewLease[] =
    "INSERT INTO ai_agent_leases (owner, lease_until) "
    "VALUES ($1, now() + $2::double precision * interval '1 microsecond') "
    "ON CONFLICT (owner) DO UPDATE SET lease_until = EXCLUDED.lease_until";
constexpr char kDropLease[] = "DELETE FROM ai_agent_leases WHERE owner = $1";
// Unsettled turns (running, or an answer not yet in the conversation) whose owner
// holds no live lease, taken over by $1 so that one replica finishes each; plus
// $1's own whose in-process save gave up: answers pending for $4 after the turn
// ended, turns unfinished $3 after they started (longer than any turn can run).
constexpr char kAdoptAbandoned[] =
    "WITH a AS (UPDATE ai_prompts_unsettled SET owner = $1 WHERE prompt_id IN ("
    " SELECT u.prompt_id FROM ai_prompts_unsettled u JOIN ai_prompts p ON p.id = u.prompt_id "
    " LEFT JOIN ai_agent_leases l ON l.owner = u.owner "
    " WHERE (CASE WHEN u.owner = $1 THEN (p.answer_pending "
    "     AND p.completed_at < now() - $4::double precision * interval '1 microsecond') "
    "     OR (p.status IN ('PENDING', 'STREAMING') "
    "     AND p.created_at < now() - $3::double precision * interval '1 microsecond') "
    "   WHEN u.owner IS NULL "
    "     THEN p.created_at < now() - $3::double precision * interval '1 microsecond' "
    "   ELSE l.lease_until IS NULL OR l.lease_until < now() END) "
    " ORDER BY u.prompt_id LIMIT $2 FOR UPDATE OF u SKIP LOCKED) "
    " RETURNING prompt_id, owner) "
    "SELECT " AICHAT_PROMPT_COLS_ADOPTED
    " FROM ai_prompts p JOIN a ON a.prompt_id = p.id "
    "ORDER BY p.id";

#undef AICHAT_PROMPT_COLS
#undef AICHAT_PROMPT_COLS_ADOPTED
#undef AICHAT_MODEL_COLS

// --- outbox ---

// Leases instead of row locks held across RPCs: the claim commits at once, the
// publisher calls usage outside any transaction, and a crashed publisher's rows
// come back when the lease runs out (RecordUsage is idempotent on event_id).
constexpr char kClaimOutbox[] =
    "UPDATE usage_outbox SET locked_until = now() + $2::double precision * interval '1 "
    "microsecond', attempts = attempts + 1 "
    "WHERE id IN (SELECT id FROM usage_outbox WHERE next_attempt_at <= now() "
    "AND (locked_until IS NULL OR locked_until < now()) ORDER BY id LIMIT $1 "
    "FOR UPDATE SKIP LOCKED) "
    "RETURNING id, event_id, payload, attempts, created_at";
constexpr char kRetryOutbox[] =
    "UPDATE usage_outbox SET locked_until = NULL, "
    "next_attempt_at = now() + $2::double precision * interval '1 microsecond', "
    "last_error = $3 WHERE id = $1 RETURNING id";
constexpr char kOutboxBacklog[] =
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 "
    "FROM usage_outbox";

constexpr size_t kMaxErrorChars = 2000;

double ParseDouble(const PgResult& r, int row, int col) {
  double v = 0;
  (void)absl::SimpleAtod(r.String(row, col), &v);
  return v;
}

// deployments and fallbacks are jsonb: a list of objects, a list of names. What
// does not decode reads as empty (the model then runs on its own settings).
std::vector<DeploymentRecord> DecodeDeployments(std::string_view text) {
  std::vector<DeploymentRecord> out;
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_array()) return out;
  for (const json::value& e : v.as_array()) {
    if (!e.is_object()) continue;
    const json::object& o = e.as_object();
    auto str = [&](const char* k) {
      const json::value* f = o.if_contains(k);
      return f != nullptr && f->is_string() ? std::string(f->as_string()) : std::string();
    };
    auto num = [&](const char* k, int32_t def) {
      const json::value* f = o.if_contains(k);
      return f != nullptr && f->is_int64() ? static_cast<int32_t>(f->as_int64()) : def;
    };
    out.push_back({str("name"), str("base_url"), str("api_key_env"), str("provider_model"),
                   num("weight", 1), num("max_concurrency", 0)});
  }
  return out;
}

std::vector<std::string> DecodeNames(std::string_view text) {
  std::vector<std::string> out;
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !v.is_array()) return out;
  for (const json::value& e : v.as_array()) {
    if (e.is_string()) out.emplace_back(e.as_string());
  }
  return out;
}

std::string EncodeDeployments(const std::vector<DeploymentRecord>& ds) {
  json::array a;
  for (const auto& d : ds) {
    a.push_back(json::object{{"name", d.name},
                             {"base_url", d.base_url},
                             {"api_key_env", d.api_key_env},
                             {"provider_model", d.provider_model},
                             {"weight", d.weight},
                             {"max_concurrency", d.max_concurrency}});
  }
  return json::serialize(a);
}

std::string EncodeNames(const std::vector<std::string>& names) {
  json::array a;
  for (const auto& n : names) a.push_back(json::string(n));
  return json::serialize(a);
}

ModelRecord ReadModel(const PgResult& r, int row) {
  ModelRecord m;
  m.name = r.String(row, 0);
  m.provider_model = r.String(row, 1);
  m.base_url = r.String(row, 2);
  m.api_key_env = r.String(row, 3);
  m.prices.input_micros_per_mtok = r.Int(row, 4);
  m.prices.cached_input_micros_per_mtok = r.Int(row, 5);
  m.prices.output_micros_per_mtok = r.Int(row, 6);
  m.context_window = static_cast<int32_t>(r.Int(row, 7));
  m.max_output_tokens = static_cast<int32_t>(r.Int(row, 8));
  m.default_temperature = ParseDouble(r, row, 9);
  m.enabled = r.Bool(row, 10);
  m.is_default = r.Bool(row, 11);
  m.use_max_tokens_param = r.Bool(row, 12);
  m.updated_at = r.Time(row, 13);
  m.deployments = DecodeDeployments(r.Text(row, 14));
  m.fallbacks = DecodeNames(r.Text(row, 15));
  return m;
}

PromptRecord ReadPrompt(const PgResult& r, int row) {
  PromptRecord p;
  p.id = r.Int(row, 0);
  p.user_id = r.Int(row, 1);
  p.conversation_id = r.Int(row, 2);
  p.status = ParsePromptStatus(r.Text(row, 3));
  p.idempotency_key = r.String(row, 4);
  p.event_id = r.String(row, 5);
  p.model = r.String(row, 6);
  p.provider_model = r.String(row, 7);
  p.prices.input_micros_per_mtok = r.Int(row, 8);
  p.prices.cached_input_micros_per_mtok = r.Int(row, 9);
  p.prices.output_micros_per_mtok = r.Int(row, 10);
  p.context_window = static_cast<int32_t>(r.Int(row, 11));
  p.max_output_tokens = static_cast<int32_t>(r.Int(row, 12));
  p.user_message_id = r.Int(row, 13);
  p.response_message_id = r.Int(row, 14);
  p.replaces_message_id = r.Int(row, 15);
  p.prompt_tokens = r.Int(row, 16);
  p.completion_tokens = r.Int(row, 17);
  p.cached_tokens = r.Int(row, 18);
  p.estimated = r.Bool(row, 19);
  p.cost_nanos = r.Int(row, 20);
  p.finish_reason = r.String(row, 21);
  p.error = r.String(row, 22);
  p.response_text = r.String(row, 23);
  p.latency_ms = r.Int(row, 24);
  p.ttft_ms = r.Int(row, 25);
  p.created_at = r.Time(row, 26);
  if (!r.IsNull(row, 27)) {
    p.completed_at = r.Time(row, 27);
  }
  p.request_hash = r.String(row, 28);
  p.owner = r.String(row, 29);
  p.context_tokens = r.Int(row, 30);
  p.answer_pending = r.Bool(row, 31);
  p.deployment = r.String(row, 32);
  return p;
}

absl::StatusOr<PromptRecord> OnePrompt(absl::StatusOr<PgResult> r) {
  if (!r.ok()) {
    return r.status();
  }
  if (r->rows() == 0) {
    return absl::NotFoundError("prompt not found");
  }
  return ReadPrompt(*r, 0);
}

std::string Micros(absl::Duration d) {
  return absl::StrCat(absl::ToInt64Microseconds(std::max(d, absl::ZeroDuration())));
}

// Provider error texts can be long; cut on a UTF-8 boundary so PostgreSQL accepts it.
std::string Truncated(const std::string& s) {
  if (s.size() <= kMaxErrorChars) {
    return s;
  }
  size_t n = kMaxErrorChars;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) {
    --n;
  }
  return s.substr(0, n);
}

// NOT_FOUND when no prompt has this id, else `otherwise`.
absl::Status MissingOr(PgConn& conn, int64_t prompt_id, absl::Status otherwise) {
  auto r = conn.Exec(kPromptExists, {prompt_id});
  if (!r.ok()) {
    return r.status();
  }
  if (r->rows() == 0) {
    return absl::NotFoundError("prompt not found");
  }
  return otherwise;
}

}  // namespace

absl::StatusOr<std::vector<ModelRecord>> PgAgentStore::ListModels() {
  auto r = pool_->Exec(kListModels);
  if (!r.ok()) {
    return r.status();
  }
  std::vector<ModelRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(ReadModel(*r, i));
  }
  return out;
}

absl::StatusOr<ModelRecord> PgAgentStore::UpsertModel(const ModelRecord& m) {
  ModelRecord saved;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    if (m.is_default) {
      if (auto r = conn.Exec(kLockDefault); !r.ok()) {
        return r.status();
      }
      if (auto r = conn.Exec(kClearDefault, {m.name}); !r.ok()) {
        return r.status();
      }
    }
    auto r = conn.Exec(
        kUpsertModel,
        {m.name, m.provider_model, m.base_url, m.api_key_env, m.prices.input_micros_per_mtok,
         m.prices.cached_input_micros_per_mtok, m.prices.output_micros_per_mtok, m.context_window,
         m.max_output_tokens, absl::StrFormat("%.17g", m.default_temperature), m.enabled,
         m.is_default, m.use_max_tokens_param, EncodeDeployments(m.deployments),
         EncodeNames(m.fallbacks)});
    if (!r.ok()) {
      return r.status();
    }
    saved = ReadModel(*r, 0);
    return absl::OkStatus();
  });
  if (!st.ok()) {
    return st;
  }
  return saved;
}

absl::Status PgAgentStore::DeleteModel(const std::string& name) {
  auto r = pool_->Exec(kDeleteModel, {name});
  if (!r.ok()) {
    return r.status();
  }
  if (r->rows() == 0) {
    return absl::NotFoundError("model not found");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> PgAgentStore::ReservePromptIds(int n) {
  auto r = pool_->Exec(kReserveIds, {std::max(1, n)});
  if (!r.ok()) {
    return r.status();
  }
  std::vector<int64_t> ids;
  ids.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    ids.push_back(r->Int(i, 0));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

absl::Status PgAgentStore::InsertPrompt(const NewPrompt& p) {
  auto r = pool_->Exec(
      kInsertPrompt,
      {p.id, p.user_id, p.conversation_id, p.idempotency_key, p.event_id, p.model, p.provider_model,
       p.prices.input_micros_per_mtok, p.prices.cached_input_micros_per_mtok,
       p.prices.output_micros_per_mtok, p.context_window, p.max_output_tokens, p.user_message_id,
       p.replaces_message_id, p.request_hash, p.owner, p.context_tokens});
  if (!r.ok()) {
    if (absl::IsAlreadyExists(r.status())) {
      if (absl::StrContains(r.status().message(), "ai_prompts_idempotency_key")) {
        return absl::AlreadyExistsError("idempotency key already used");
      }
      return absl::AlreadyExistsError("prompt id or event id already used");
    }
    return r.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<PromptRecord> PgAgentStore::FindByIdempotencyKey(int64_t user_id,
                                                                const std::string& key) {
  if (key.empty()) {
    return absl::NotFoundError("prompt not found");
  }
  return OnePrompt(pool_->Exec(kPromptByKey, {user_id, key}));
}

absl::StatusOr<PromptRecord> PgAgentStore::GetPrompt(int64_t user_id, int64_t prompt_id) {
  return OnePrompt(pool_->Exec(kPromptById, {prompt_id, user_id}));
}

absl::StatusOr<std::vector<PromptRecord>> PgAgentStore::ListPrompts(
    int64_t user_id, std::optional<int64_t> conversation_id, int64_t before_id, int limit) {
  auto r = conversation_id.has_value() ? pool_->Exec(kListConversationPrompts,
                                                     {user_id, before_id, limit, *conversation_id})
                                       : pool_->Exec(kListPrompts, {user_id, before_id, limit});
  if (!r.ok()) {
    return r.status();
  }
  std::vector<PromptRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(ReadPrompt(*r, i));
  }
  return out;
}

absl::Status PgAgentStore::MarkRefused(int64_t prompt_id, PromptStatus status,
                                       const std::string& error) {
  if (!IsTerminal(status)) {
    return absl::InvalidArgumentError("MarkRefused needs a terminal status");
  }
  auto lease = pool_->Acquire();
  if (!lease.ok()) {
    return lease.status();
  }
  auto r = (*lease)->Exec(kMarkRefused, {prompt_id, PromptStatusName(status), Truncated(error)});
  if (!r.ok()) {
    return r.status();
  }
  if (r->rows() == 1) {
    return absl::OkStatus();
  }
  return MissingOr(**lease, prompt_id, absl::FailedPreconditionError("prompt already finished"));
}

absl::StatusOr<int64_t> PgAgentStore::FinishPrompt(int64_t prompt_id, const PromptOutcome& o,
                                                   const std::optional<std::string>& usage_event,
                                                   absl::Duration outbox_lease) {
  if (o.status != PromptStatus::kCompleted && o.status != PromptStatus::kFailed &&
      o.status != PromptStatus::kCancelled) {
    return absl::InvalidArgumentError("FinishPrompt needs COMPLETED, FAILED or CANCELLED");
  }
  std::optional<std::string> payload;
  if (usage_event.has_value()) {
    payload = Base64UrlEncode(*usage_event);
  }
  auto lease = pool_->Acquire();
  if (!lease.ok()) {
    return lease.status();
  }
  auto r = (*lease)->Exec(kFinishPrompt, {prompt_id,
                                          PromptStatusName(o.status),
                                          o.response_message_id,
                                          o.response_text,
                                          o.reported_model,
                                          o.prompt_tokens,
                                          o.completion_tokens,
                                          o.cached_tokens,
                                          o.estimated,
                                          o.cost_nanos,
                                          o.finish_reason,
                                          Truncated(o.error),
                                          o.latency_ms,
                                          o.ttft_ms,
                                          o.user_message_id,
                                          o.answer_pending,
                                          payload,
                                          Micros(outbox_lease),
                                          o.model,
                                          o.provider_model,
                                          o.prices.input_micros_per_mtok,
                                          o.prices.cached_input_micros_per_mtok,
                                          o.prices.output_micros_per_mtok,
                                          o.deployment});
  if (!r.ok()) {
    return r.status();
  }
  if (r->Int(0, 0) == 0) {
    return MissingOr(**lease, prompt_id, absl::FailedPreconditionError("prompt already finished"));
  }
  return r->Int(0, 1);
}

namespace {
std::string IdArray(const std::vector<int64_t>& ids) {
  std::string array = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StrAppend(&array, i == 0 ? "" : ",", ids[i]);
  }
  array += "}";
  return array;
}
}  // namespace

absl::Status PgAgentStore::Settle(const std::vector<int64_t>& delivered,
                                  const std::vector<SavedAnswer>& saved) {
  if (delivered.empty() && saved.empty()) {
    return absl::OkStatus();
  }
  std::vector<int64_t> prompts;
  std::vector<int64_t> messages;
  prompts.reserve(saved.size());
  messages.reserve(saved.size());
  for (const auto& s : saved) {
    prompts.push_back(s.prompt_id);
    messages.push_back(s.message_id);
  }
  return pool_->Exec(kSettle, {IdArray(delivered), IdArray(prompts), IdArray(messages)}).status();
}

absl::Status PgAgentStore::MarkAnswerLost(int64_t prompt_id, const std::string& error) {
  return pool_->Exec(kAnswerLost, {prompt_id, Truncated(error)}).status();
}

absl::Status PgAgentStore::RenewLease(const std::string& owner, absl::Duration ttl) {
  return pool_->Exec(kRenewLease, {owner, Micros(ttl)}).status();
}

absl::Status PgAgentStore::DropLease(const std::string& owner) {
  return pool_->Exec(kDropLease, {owner}).status();
}

absl::StatusOr<std::vector<PromptRecord>> PgAgentStore::AdoptAbandoned(
    const std::string& owner, int limit, absl::Duration unowned_after,
    absl::Duration own_pending_after) {
  auto r = pool_->Exec(kAdoptAbandoned,
                       {owner, limit, Micros(unowned_after), Micros(own_pending_after)});
  if (!r.ok()) {
    return r.status();
  }
  std::vector<PromptRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(ReadPrompt(*r, i));
  }
  return out;
}

absl::StatusOr<std::vector<OutboxEntry>> PgAgentStore::ClaimOutbox(int limit,
                                                                   absl::Duration lease) {
  if (limit <= 0) {
    return std::vector<OutboxEntry>{};
  }
  auto r = pool_->Exec(kClaimOutbox, {limit, Micros(lease)});
  if (!r.ok()) {
    return r.status();
  }
  std::vector<OutboxEntry> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    OutboxEntry e;
    e.id = r->Int(i, 0);
    e.event_id = r->String(i, 1);
    // A payload that does not decode stays empty; the publisher then fails it
    // like any undeliverable entry, and it never blocks the others.
    e.payload = Base64UrlDecode(r->Text(i, 2)).value_or("");
    e.attempts = static_cast<int32_t>(r->Int(i, 3));
    e.created_at = r->Time(i, 4);
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(),
            [](const OutboxEntry& a, const OutboxEntry& b) { return a.id < b.id; });
  return out;
}

absl::Status PgAgentStore::AckOutbox(const std::vector<int64_t>& ids) { return Settle(ids, {}); }

absl::Status PgAgentStore::RetryOutbox(int64_t id, absl::Duration delay, const std::string& error) {
  auto r = pool_->Exec(kRetryOutbox, {id, Micros(delay), Truncated(error)});
  if (!r.ok()) {
    return r.status();
  }
  if (r->rows() == 0) {
    return absl::NotFoundError("outbox entry not found");
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentStore::OutboxStats> PgAgentStore::OutboxBacklog() {
  auto r = pool_->Exec(kOutboxBacklog);
  if (!r.ok()) {
    return r.status();
  }
  OutboxStats s;
  s.backlog = r->Int(0, 0);
  s.oldest_age_seconds = ParseDouble(*r, 0, 1);
  return s;
}

}  // namespace aichat::agent
