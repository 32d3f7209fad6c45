#include "common/bootstrap.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace aichat {

int StartupFailure(std::string_view program, const absl::Status& status) {
  std::cerr << program << ": " << status.message() << "\n";
  return 2;
}

std::optional<int> ParseServeCommandLine(Config& config, int argc, char** argv,
                                         std::string_view program) {
  // Debian's absl is built without NDEBUG, so every Mutex (ours and gRPC's) would
  // keep a global lock-order graph: ~3 % of the agent's CPU while relaying streams
  // (perf: GraphCycles::GetId). Our lock orders are checked by the thread-safety
  // annotations at compile time instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto parsed = config.Parse(argc, argv);
  if (!parsed.ok()) return StartupFailure(program, parsed.status());
  if (!*parsed) return 0;  // --help
  const auto& args = config.positional();
  if (args.size() > 1 || (args.size() == 1 && args[0] != "serve")) {
    return StartupFailure(program, absl::InvalidArgumentError(absl::StrCat(
                                       "unexpected argument ", args.back(), " (see --help)")));
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<PgPool>> OpenDatabase(const CommonSettings& settings,
                                                     const std::vector<Migration>& migrations) {
  PgPoolOptions options;
  options.url = settings.database_url;
  options.size = settings.db_pool_size;
  auto pool = std::make_unique<PgPool>(options);
  if (auto st = ApplyMigrations(*pool, migrations); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("migrations: ", st.message()));
  }
  return pool;
}

ServerOptions ServerOptionsFrom(std::string name, const CommonSettings& settings) {
  return {.name = std::move(name),
          .listen = settings.listen,
          .metrics_listen = settings.metrics_listen,
          .shutdown_grace = settings.shutdown_grace,
          .max_message_bytes = settings.max_message_bytes,
          .tls = settings.tls,
          .health_listen = settings.health_listen,
          .max_connection_age = settings.max_connection_age,
          .max_connection_age_grace = settings.max_connection_age_grace};
}

}  // namespace aichat
