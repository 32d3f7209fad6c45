#include "common/pg.h"

#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "common/log.h"

namespace aichat {
namespace {

// Statements are prepared under short names; the map key is the SQL text.
std::string StatementName(size_t n) { return absl::StrCat("s", n); }

bool IsConnectionClass(const std::string& sqlstate) {
  return sqlstate.rfind("08", 0) == 0 || sqlstate == "57P01" || sqlstate == "57P02" ||
         sqlstate == "57P03";
}

int ParseDigits(std::string_view s, size_t pos, size_t n) {
  int v = 0;
  for (size_t i = pos; i < pos + n && i < s.size(); ++i) {
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

}  // namespace

PgArg::PgArg(absl::Time v) {
  value_ = absl::FormatTime("%Y-%m-%d %H:%M:%E6S+00", v, absl::UTCTimeZone());
}

int64_t PgResult::affected() const {
  int64_t n = 0;
  (void)absl::SimpleAtoi(PQcmdTuples(res_.get()), &n);
  return n;
}

std::string_view PgResult::Text(int row, int col) const {
  return {PQgetvalue(res_.get(), row, col), static_cast<size_t>(PQgetlength(res_.get(), row, col))};
}

int64_t PgResult::Int(int row, int col) const {
  if (IsNull(row, col)) return 0;
  int64_t v = 0;
  std::string_view t = Text(row, col);
  (void)absl::SimpleAtoi(absl::string_view(t.data(), t.size()), &v);
  return v;
}

bool PgResult::Bool(int row, int col) const { return !IsNull(row, col) && Text(row, col) == "t"; }

absl::Time PgResult::Time(int row, int col) const {
  if (IsNull(row, col)) return absl::InfinitePast();
  // "YYYY-MM-DD HH:MM:SS[.ffffff]+00" (TimeZone=UTC, DateStyle=ISO).
  std::string_view s = Text(row, col);
  if (s == "infinity") return absl::InfiniteFuture();
  if (s == "-infinity") return absl::InfinitePast();
  if (s.size() < 19) return absl::InfinitePast();
  absl::CivilSecond cs(ParseDigits(s, 0, 4), ParseDigits(s, 5, 2), ParseDigits(s, 8, 2),
                       ParseDigits(s, 11, 2), ParseDigits(s, 14, 2), ParseDigits(s, 17, 2));
  absl::Time t = absl::FromCivil(cs, absl::UTCTimeZone());
  if (s.size() > 19 && s[19] == '.') {
    size_t i = 20;
    int64_t micros = 0;
    int digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (digits < 6) {
        micros = micros * 10 + (s[i] - '0');
        ++digits;
      }
      ++i;
    }
    for (; digits < 6; ++digits) micros *= 10;
    t += absl::Microseconds(micros);
  }
  return t;
}

absl::Status PgConn::ErrorFrom(PGresult* res, std::string_view what_sv) {
  std::string what(what_sv);
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res != nullptr ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string sqlstate = state != nullptr ? state : "";
  std::string msg = primary != nullptr ? primary : PQerrorMessage(conn_.get());
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  if (PQstatus(conn_.get()) != CONNECTION_OK || IsConnectionClass(sqlstate)) {
    broken_ = true;
    return absl::UnavailableError("database unavailable");
  }
  if (sqlstate == "23505") {
    return absl::AlreadyExistsError(absl::StrCat(what, ": ", msg));
  }
  if (sqlstate == "40001" || sqlstate == "40P01") {
    return absl::AbortedError(absl::StrCat(what, ": ", msg));
  }
  if (sqlstate == "57014") {
    return absl::DeadlineExceededError("database statement timed out");
  }
  if (sqlstate == "23503") {
    return absl::FailedPreconditionError(absl::StrCat(what, ": ", msg));
  }
  return absl::InternalError(absl::StrCat(what, " failed (", sqlstate, "): ", msg));
}

absl::StatusOr<PgResult> PgConn::Exec(std::string_view sql, const std::vector<PgArg>& args) {
  if (broken_) {
    return absl::UnavailableError("database unavailable");
  }
  std::string key(sql);
  auto it = prepared_.find(key);
  if (it == prepared_.end()) {
    std::string name = StatementName(prepared_.size());
    PGresult* prep = PQprepare(conn_.get(), name.c_str(), key.c_str(), 0, nullptr);
    if (prep == nullptr || PQresultStatus(prep) != PGRES_COMMAND_OK) {
      absl::Status err = ErrorFrom(prep, "prepare");
      if (prep != nullptr) PQclear(prep);
      return err;
    }
    PQclear(prep);
    it = prepared_.emplace(std::move(key), std::move(name)).first;
  }
  std::vector<const char*> values;
  values.reserve(args.size());
  for (const auto& a : args) {
    values.push_back(a.value().has_value() ? a.value()->c_str() : nullptr);
  }
  PGresult* res = PQexecPrepared(conn_.get(), it->second.c_str(), int(values.size()), values.data(),
                                 nullptr, nullptr, 0);
  ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    return PgResult(res);
  }
  absl::Status err = ErrorFrom(res, "query");
  if (res != nullptr) PQclear(res);
  return err;
}

absl::Status PgConn::ExecScript(std::string_view sql) {
  if (broken_) {
    return absl::UnavailableError("database unavailable");
  }
  std::string text(sql);
  PGresult* res = PQexec(conn_.get(), text.c_str());
  ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
    PQclear(res);
    return absl::OkStatus();
  }
  absl::Status err = ErrorFrom(res, "script");
  if (res != nullptr) PQclear(res);
  return err;
}

bool PgConn::CheckIdleAlive() {
  if (broken_ || PQstatus(conn_.get()) != CONNECTION_OK) {
    return false;
  }
  // An idle connection has nothing to say: we use no LISTEN/NOTIFY. Anything
  // readable is the server's FATAL goodbye (shutdown, restart, admin
  // termination) or the close itself, so the connection is done. This costs a
  // poll() instead of a round trip.
  pollfd p{PQsocket(conn_.get()), POLLIN, 0};
  if (p.fd < 0 || poll(&p, 1, 0) != 0) {
    broken_ = true;
    return false;
  }
  return true;
}

PgLease::~PgLease() {
  if (pool_ != nullptr && conn_ != nullptr) {
    pool_->Release(std::move(conn_));
  }
}

PgPool::PgPool(PgPoolOptions options) : options_(std::move(options)) {}

PgPool::~PgPool() = default;

absl::StatusOr<std::unique_ptr<PgConn>> PgPool::Connect() {
  std::string timeout =
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Seconds(options_.connect_timeout)));
  std::string opts = absl::StrCat("-c TimeZone=UTC -c DateStyle=ISO -c statement_timeout=",
                                  absl::ToInt64Milliseconds(options_.statement_timeout));
  // TCP keepalives and a user timeout: a path cut without a reset (failover,
  // partition) fails within ~30 s instead of the kernel's ~15 minutes.
  const char* keys[] = {"dbname",         "connect_timeout",     "options",
                        "application_name", "keepalives",        "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                        nullptr};
  const char* vals[] = {options_.url.c_str(), timeout.c_str(), opts.c_str(), "aichat", "1", "10",
                        "5", "3", "30000", nullptr};
  PGconn* raw = PQconnectdbParams(keys, vals, /*expand_dbname=*/1);
  if (raw != nullptr) {
    // Server notices (e.g. "relation already exists, skipping") are not our log format.
    PQsetNoticeProcessor(
        raw, [](void*, const char*) {}, nullptr);
  }
  auto conn = std::make_unique<PgConn>(raw);
  if (raw == nullptr || PQstatus(raw) != CONNECTION_OK) {
    if (connect_errors_ != nullptr) connect_errors_->Increment();
    // libpq's message may name host and user but never the password.
    LogWarn("database connect failed", {{"pool", options_.pool_name}});
    return absl::UnavailableError("database unavailable");
  }
  return conn;
}

absl::StatusOr<PgLease> PgPool::Acquire() {
  absl::Time deadline = absl::Now() + options_.acquire_timeout;
  std::unique_ptr<PgConn> conn;
  bool must_connect = false;
  {
    absl::MutexLock lock(&mu_);
    while (true) {
      while (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
        if (conn->CheckIdleAlive()) {
          break;
        }
        conn.reset();
        --open_;
      }
      if (conn != nullptr) break;
      if (open_ < options_.size) {
        ++open_;
        must_connect = true;
        break;
      }
      auto idle_or_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !idle_.empty() || open_ < options_.size;
      };
      if (!mu_.AwaitWithDeadline(absl::Condition(&idle_or_room), deadline)) {
        return absl::UnavailableError("database pool exhausted");
      }
    }
    ++in_use_;
    if (in_use_gauge_ != nullptr) in_use_gauge_->Set(in_use_);
  }
  if (must_connect) {
    auto fresh = Connect();
    if (!fresh.ok()) {
      absl::MutexLock lock(&mu_);
      --open_;
      --in_use_;
      if (in_use_gauge_ != nullptr) in_use_gauge_->Set(in_use_);
      return fresh.status();
    }
    conn = std::move(*fresh);
    absl::MutexLock lock(&mu_);
    if (open_gauge_ != nullptr) open_gauge_->Set(open_);
  }
  return PgLease(this, std::move(conn));
}

void PgPool::Release(std::unique_ptr<PgConn> conn) {
  absl::MutexLock lock(&mu_);
  --in_use_;
  if (conn->broken()) {
    --open_;
  } else {
    idle_.push_back(std::move(conn));
  }
  if (in_use_gauge_ != nullptr) in_use_gauge_->Set(in_use_);
  if (open_gauge_ != nullptr) open_gauge_->Set(open_);
}

absl::StatusOr<PgResult> PgPool::Exec(std::string_view sql, const std::vector<PgArg>& args) {
  auto lease = Acquire();
  if (!lease.ok()) return lease.status();
  return (*lease)->Exec(sql, args);
}

absl::Status PgPool::Transaction(const std::function<absl::Status(PgConn&)>& fn) {
  constexpr int kAttempts = 4;
  absl::Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto lease = Acquire();
    if (!lease.ok()) return lease.status();
    PgConn& conn = **lease;
    if (auto st = conn.ExecScript("BEGIN"); !st.ok()) return st;
    last = fn(conn);
    if (last.ok()) {
      last = conn.ExecScript("COMMIT");
      if (last.ok()) return last;
    } else if (!conn.broken()) {
      (void)conn.ExecScript("ROLLBACK");
    }
    if (last.code() != absl::StatusCode::kAborted) {
      return last;
    }
  }
  return last;
}

void PgPool::ExportMetrics(prometheus::Registry& registry) {
  auto& gauges = prometheus::BuildGauge()
                     .Name("aichat_db_pool_connections")
                     .Help("PostgreSQL pool connections by state")
                     .Register(registry);
  in_use_gauge_ = &gauges.Add({{"pool", options_.pool_name}, {"state", "in_use"}});
  open_gauge_ = &gauges.Add({{"pool", options_.pool_name}, {"state", "open"}});
  auto& max_gauge = gauges.Add({{"pool", options_.pool_name}, {"state", "max"}});
  max_gauge.Set(options_.size);
  connect_errors_ = &prometheus::BuildCounter()
                         .Name("aichat_db_connect_errors_total")
                         .Help("Failed PostgreSQL connection attempts")
                         .Register(registry)
                         .Add({{"pool", options_.pool_name}});
}

}  // namespace aichat
