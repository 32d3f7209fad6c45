#include "common/migrations.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/pg.h"

namespace aichat {
namespace {

// Any constant works as long as every aichat service uses the same one per database.
constexpr int64_t kMigrationLockKey = 0x61696368617400;  // "aichat\0"

constexpr std::string_view kCreateTable = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
))sql";

}  // namespace

absl::Status ApplyMigrations(PgPool& pool, const std::vector<Migration>& migrations, int* applied) {
  std::vector<Migration> sorted = migrations;
  std::sort(sorted.begin(), sorted.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  int count = 0;
  absl::Status st = pool.Transaction([&](PgConn& conn) -> absl::Status {
    count = 0;
    // The lock comes first: even CREATE TABLE IF NOT EXISTS races without it.
    auto lock = conn.Exec("SELECT pg_advisory_xact_lock($1)", {kMigrationLockKey});
    if (!lock.ok()) return lock.status();
    if (auto s = conn.ExecScript(kCreateTable); !s.ok()) return s;
    auto done = conn.Exec("SELECT version FROM schema_migrations");
    if (!done.ok()) return done.status();
    absl::flat_hash_set<int64_t> have;
    for (int r = 0; r < done->rows(); ++r) have.insert(done->Int(r, 0));
    for (const auto& m : sorted) {
      if (have.contains(m.version)) continue;
      if (auto s = conn.ExecScript(m.sql); !s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("migration ", std::string(m.name), ": ", s.message()));
      }
      auto ins = conn.Exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                           {m.version, m.name});
      if (!ins.ok()) return ins.status();
      ++count;
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  if (count > 0) {
    LogInfo("migrations applied", {{"count", count}});
  }
  if (applied != nullptr) *applied = count;
  return absl::OkStatus();
}

}  // namespace aichat
