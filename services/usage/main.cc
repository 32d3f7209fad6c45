// aichat-usage: the usage service — the ledger, summaries, budgets and rate limits.
#include "absl/time/clock.h"
#include "common/bootstrap.h"
#include "common/log.h"
#include "services/usage/config.h"
#include "services/usage/migrations.h"
#include "services/usage/pg_usage_store.h"
#include "services/usage/usage_service.h"

namespace aichat::usage {
namespace {

constexpr char kProgram[] = "aichat-usage";

int Serve(const UsageConfig& cfg) {
  SetLogService("usage");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return StartupFailure(kProgram, verifier.status());
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return StartupFailure(kProgram, pool.status());
  Authenticator auth(*std::move(verifier));
  WorkerPool workers(cfg.common.workers);
  PgUsageStore store(pool->get(), cfg.store);

  ServiceServer server(ServerOptionsFrom("usage", cfg.common));
  (*pool)->ExportMetrics(server.registry());
  UsageServiceImpl service(&store, &auth, &workers, server.registry(), [] { return absl::Now(); });
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return StartupFailure(kProgram, st);
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
  if (auto exit_code = ParseServeCommandLine(config, argc, argv, kProgram)) return *exit_code;
  auto cfg = ReadSettings(config);
  if (!cfg.ok()) return StartupFailure(kProgram, cfg.status());
  return Serve(*cfg);
}
