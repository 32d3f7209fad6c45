// PostgreSQL access on libpq: RAII results, parameterised statements only, and a
// bounded connection pool that notices when the server went away and reconnects.
// Errors map to absl codes: connection loss -> UNAVAILABLE, unique violation ->
// ALREADY_EXISTS, serialization failure/deadlock -> ABORTED, the rest -> INTERNAL.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Gauge;
class Counter;
}  // namespace prometheus

namespace aichat {

// One query argument in PostgreSQL's text format; nullopt is SQL NULL.
class PgArg {
 public:
  PgArg(std::nullopt_t) {}                               // NOLINT(google-explicit-constructor)
  PgArg(std::string_view v) : value_(std::string(v)) {}  // NOLINT
  PgArg(const std::string& v) : value_(v) {}             // NOLINT
  PgArg(const char* v) : value_(std::string(v)) {}       // NOLINT
  PgArg(int64_t v) : value_(std::to_string(v)) {}        // NOLINT
  PgArg(int v) : value_(std::to_string(v)) {}            // NOLINT
  PgArg(bool v) : value_(v ? "t" : "f") {}               // NOLINT
  PgArg(absl::Time v);                                   // NOLINT
  template <typename T>
  PgArg(const std::optional<T>& v) {  // NOLINT
    if (v.has_value()) {
      value_ = PgArg(*v).value_;
    }
  }
  const std::optional<std::string>& value() const { return value_; }

 private:
  std::optional<std::string> value_;
};

class PgResult {
 public:
  explicit PgResult(PGresult* res) : res_(res, &PQclear) {}
  int rows() const { return PQntuples(res_.get()); }
  int64_t affected() const;
  bool IsNull(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }
  std::string_view Text(int row, int col) const;
  std::string String(int row, int col) const { return std::string(Text(row, col)); }
  int64_t Int(int row, int col) const;  // 0 for NULL
  bool Bool(int row, int col) const;
  // timestamptz columns; connections run with TimeZone=UTC. InfinitePast for NULL.
  absl::Time Time(int row, int col) const;

 private:
  std::unique_ptr<PGresult, decltype(&PQclear)> res_;
};

// One connection. Statements are prepared once per connection and reused.
class PgConn {
 public:
  PgConn(PGconn* conn) : conn_(conn, &PQfinish) {}  // NOLINT
  absl::StatusOr<PgResult> Exec(std::string_view sql, const std::vector<PgArg>& args = {});
  // Runs `sql` without parameters (DDL, several statements).
  absl::Status ExecScript(std::string_view sql);
  bool broken() const { return broken_; }
  // True if the server closed the connection while it sat idle.
  bool CheckIdleAlive();

 private:
  absl::Status ErrorFrom(PGresult* res, std::string_view what);
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
  absl::flat_hash_map<std::string, std::string> prepared_;
  bool broken_ = false;
};

class PgPool;

// A connection borrowed from the pool; returned (or dropped, if broken) on destruction.
class PgLease {
 public:
  PgLease(PgPool* pool, std::unique_ptr<PgConn> conn) : pool_(pool), conn_(std::move(conn)) {}
  PgLease(PgLease&&) = default;
  PgLease& operator=(PgLease&&) = default;
  ~PgLease();
  PgConn* operator->() { return conn_.get(); }
  PgConn& operator*() { return *conn_; }

 private:
  PgPool* pool_;
  std::unique_ptr<PgConn> conn_;
};

struct PgPoolOptions {
  std::string url;
  int size = 8;
  absl::Duration acquire_timeout = absl::Seconds(5);
  absl::Duration connect_timeout = absl::Seconds(3);
  absl::Duration statement_timeout = absl::Seconds(30);
  std::string pool_name = "main";
};

class PgPool {
 public:
  explicit PgPool(PgPoolOptions options);
  ~PgPool();

  // Borrows a connection (connecting if needed). UNAVAILABLE when the server
  // cannot be reached or no connection frees up within acquire_timeout.
  absl::StatusOr<PgLease> Acquire();

  // Runs one statement on a borrowed connection.
  absl::StatusOr<PgResult> Exec(std::string_view sql, const std::vector<PgArg>& args = {});

  // BEGIN; fn; COMMIT — ROLLBACK on error. Retries the whole function on
  // serialization failures and deadlocks (ABORTED) a few times.
  absl::Status Transaction(const std::function<absl::Status(PgConn&)>& fn);

  // Exposes pool gauges (size, in use, idle, wait) on `registry`.
  void ExportMetrics(prometheus::Registry& registry);

 private:
  friend class PgLease;
  void Release(std::unique_ptr<PgConn> conn);
  absl::StatusOr<std::unique_ptr<PgConn>> Connect();

  PgPoolOptions options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<PgConn>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + borrowed + connecting
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
  prometheus::Gauge* in_use_gauge_ = nullptr;
  prometheus::Gauge* open_gauge_ = nullptr;
  prometheus::Counter* connect_errors_ = nullptr;
};

}  // namespace aichat
