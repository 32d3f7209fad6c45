// aichat-usage: the usage service — the ledger, summaries, budgets and rate limits.
#include <iostream>

#include "absl/time/clock.h"
#include "common/log.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"
#include "services/usage/config.h"
#include "services/usage/migrations.h"
#include "services/usage/pg_usage_store.h"
#include "services/usage/usage_service.h"

namespace aichat::usage {
namespace {

int Fail(const absl::Status& st) {
  std::cerr << "aichat-usage: " << st.message() << "\n";
  return 2;
}

int Serve(const UsageConfig& cfg) {
  SetLogService("usage");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) {
    return Fail(verifier.status());
  }
  PgPoolOptions opts;
  opts.url = cfg.common.database_url;
  opts.size = cfg.common.db_pool_size;
  PgPool pool(opts);
  if (auto st = ApplyMigrations(pool, Migrations()); !st.ok()) {
    return Fail(absl::UnavailableError(absl::StrCat("migrations: ", st.message())));
  }
  Authenticator auth(*std::move(verifier));
  WorkerPool workers(cfg.common.workers);
  PgUsageStore store(&pool, cfg.store);

  ServiceServer server({.name = "usage",
                        .listen = cfg.common.listen,
                        .metrics_listen = cfg.common.metrics_listen,
                        .shutdown_grace = cfg.common.shutdown_grace,
                        .max_message_bytes = cfg.common.max_message_bytes});
  pool.ExportMetrics(server.registry());
  UsageServiceImpl service(&store, &auth, &workers, server.registry(), [] { return absl::Now(); });
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) {
    return Fail(st);
  }
  WaitForTerminationSignal();
  server.Shutdown();
  return 0;
}

}  // namespace
}  // namespace aichat::usage

int main(int argc, char** argv) {
  using namespace aichat;
  using namespace aichat::usage;
  BlockTerminationSignals();
  Config config(
      "aichat-usage: exact token and cost ledger, usage summaries, budgets and rate limits.\n"
      "Usage: aichat-usage [--flags]");
  DeclareSettings(config);
  auto parsed = config.Parse(argc, argv);
  if (!parsed.ok()) {
    return Fail(parsed.status());
  }
  if (!*parsed) {
    return 0;
  }
  if (!config.positional().empty() && config.positional()[0] != "serve") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("unknown command ", config.positional()[0], " (see --help)")));
  }
  auto cfg = ReadSettings(config);
  if (!cfg.ok()) {
    return Fail(cfg.status());
  }
  return Serve(*cfg);
}
