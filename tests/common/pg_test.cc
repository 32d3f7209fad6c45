// The pool and migration runner against a real PostgreSQL.
#include "common/pg.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/migrations.h"
#include "tests/testing/postgres.h"

namespace aichat {
namespace {

using testing::TestPostgres;

PgPoolOptions Options(const std::string& url, int size = 4) {
  PgPoolOptions o;
  o.url = url;
  o.size = size;
  o.acquire_timeout = absl::Seconds(2);
  return o;
}

TEST(PgPoolTest, ParameterisedQueriesAndTypes) {
  PgPool pool(Options(TestPostgres::Shared().CreateDatabase()));
  auto r = pool.Exec("SELECT $1::bigint + 1, $2::text, $3::bool, $4::text IS NULL, $5::timestamptz",
                     {int64_t{41}, "it's; DROP TABLE x; --", true, std::nullopt,
                      absl::FromUnixMicros(1700000000123456)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Int(0, 0), 42);
  EXPECT_EQ(r->String(0, 1), "it's; DROP TABLE x; --");
  EXPECT_TRUE(r->Bool(0, 2));
  EXPECT_TRUE(r->Bool(0, 3));
  EXPECT_EQ(r->Time(0, 4), absl::FromUnixMicros(1700000000123456));
}

TEST(PgPoolTest, ErrorsMapToCanonicalCodes) {
  PgPool pool(Options(TestPostgres::Shared().CreateDatabase()));
  ASSERT_TRUE(pool.Exec("CREATE TABLE t (k text PRIMARY KEY)").ok());
  ASSERT_TRUE(pool.Exec("INSERT INTO t VALUES ($1)", {"a"}).ok());
  EXPECT_EQ(pool.Exec("INSERT INTO t VALUES ($1)", {"a"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(pool.Exec("SELEKT 1").status().code(), absl::StatusCode::kInternal);
  // The connection is still usable after errors.
  EXPECT_TRUE(pool.Exec("SELECT 1").ok());
}

TEST(PgPoolTest, TransactionRollsBackOnError) {
  PgPool pool(Options(TestPostgres::Shared().CreateDatabase()));
  ASSERT_TRUE(pool.Exec("CREATE TABLE t (k int)").ok());
  auto st = pool.Transaction([](PgConn& c) -> absl::Status {
    if (auto r = c.Exec("INSERT INTO t VALUES (1)"); !r.ok()) return r.status();
    return absl::InvalidArgumentError("stop");
  });
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.Exec("SELECT count(*) FROM t")->Int(0, 0), 0);
}

TEST(PgPoolTest, PoolIsBounded) {
  auto opts = Options(TestPostgres::Shared().CreateDatabase(), 2);
  opts.acquire_timeout = absl::Milliseconds(300);
  PgPool pool(opts);
  auto a = pool.Acquire();
  auto b = pool.Acquire();
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = pool.Acquire();
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  { auto released = std::move(*a); }
  EXPECT_TRUE(pool.Acquire().ok());
}

TEST(PgPoolTest, UnreachableServerIsUnavailable) {
  auto opts = Options("postgresql://postgres@127.0.0.1:1/none");
  opts.connect_timeout = absl::Seconds(1);
  PgPool pool(opts);
  EXPECT_EQ(pool.Exec("SELECT 1").status().code(), absl::StatusCode::kUnavailable);
}

TEST(PgPoolTest, SurvivesServerRestart) {
  auto pg = TestPostgres::StartPrivate();
  PgPool pool(Options(pg->admin_url(), 3));
  // Warm several connections so that the pool holds idle ones across the restart.
  {
    auto a = pool.Acquire();
    auto b = pool.Acquire();
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE((*a)->Exec("SELECT 1").ok());
  }
  ASSERT_TRUE(pg->Stop().ok());
  // In the gap calls fail UNAVAILABLE; they do not hang or crash.
  EXPECT_EQ(pool.Exec("SELECT 1").status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(pg->Start().ok());
  // Back without recreating the pool.
  auto r = pool.Exec("SELECT 7");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Int(0, 0), 7);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(pool.Exec("SELECT 1").ok());
}

TEST(MigrationsTest, ConcurrentRunnersApplyEachMigrationOnce) {
  std::string url = TestPostgres::Shared().CreateDatabase();
  std::vector<Migration> ms = {
      {1, "001_a.sql", "CREATE TABLE a (id int); INSERT INTO a VALUES (1);"},
      {2, "002_b.sql", "INSERT INTO a VALUES (2);"},
  };
  constexpr int kRunners = 6;
  std::vector<std::thread> threads;
  std::vector<int> applied(kRunners, -1);
  std::vector<absl::Status> results(kRunners);
  for (int i = 0; i < kRunners; ++i) {
    threads.emplace_back([&, i] {
      PgPool pool(Options(url, 1));
      results[i] = ApplyMigrations(pool, ms, &applied[i]);
    });
  }
  for (auto& t : threads) t.join();
  int total = 0;
  for (int i = 0; i < kRunners; ++i) {
    EXPECT_TRUE(results[i].ok()) << results[i];
    total += applied[i];
  }
  EXPECT_EQ(total, 2);
  PgPool pool(Options(url));
  EXPECT_EQ(pool.Exec("SELECT count(*) FROM a")->Int(0, 0), 2);
  EXPECT_EQ(pool.Exec("SELECT count(*) FROM schema_migrations")->Int(0, 0), 2);
  // A later version is applied by the next start; the old ones are not re-run.
  ms.push_back({3, "003_c.sql", "INSERT INTO a VALUES (3);"});
  int n = 0;
  ASSERT_TRUE(ApplyMigrations(pool, ms, &n).ok());
  EXPECT_EQ(n, 1);
  EXPECT_EQ(pool.Exec("SELECT count(*) FROM a")->Int(0, 0), 3);
}

TEST(MigrationsTest, FailingMigrationLeavesNothingBehind) {
  PgPool pool(Options(TestPostgres::Shared().CreateDatabase()));
  std::vector<Migration> ms = {{1, "001_ok.sql", "CREATE TABLE ok (id int);"},
                               {2, "002_bad.sql", "CREATE TABLE broken (;"}};
  auto st = ApplyMigrations(pool, ms);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("002_bad.sql"), std::string::npos);
  EXPECT_EQ(pool.Exec("SELECT to_regclass('ok') IS NULL")->Bool(0, 0), true);
}

}  // namespace
}  // namespace aichat
