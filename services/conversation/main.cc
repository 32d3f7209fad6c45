// aichat-conversation: chat threads, their messages and context windows.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"
#include "services/conversation/config.h"
#include "services/conversation/conversation_service.h"
#include "services/conversation/migrations.h"
#include "services/conversation/pg_conversation_store.h"

namespace aichat::conversation {
namespace {

int Fail(const absl::Status& st) {
  std::cerr << "aichat-conversation: " << st.message() << "\n";
  return 2;
}

int Serve(const ConversationConfig& cfg) {
  SetLogService("conversation");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return Fail(verifier.status());
  PgPoolOptions opts;
  opts.url = cfg.common.database_url;
  opts.size = cfg.common.db_pool_size;
  auto pool = std::make_unique<PgPool>(opts);
  if (auto st = ApplyMigrations(*pool, Migrations()); !st.ok()) {
    return Fail(absl::UnavailableError(absl::StrCat("migrations: ", st.message())));
  }
  Authenticator auth(*std::move(verifier));
  WorkerPool workers(cfg.common.workers);
  PgConversationStore store(pool.get());
  ConversationServiceImpl service(&store, &auth, &workers, cfg.service);

  ServiceServer server({.name = "conversation",
                        .listen = cfg.common.listen,
                        .metrics_listen = cfg.common.metrics_listen,
                        .shutdown_grace = cfg.common.shutdown_grace,
                        .max_message_bytes = cfg.common.max_message_bytes});
  pool->ExportMetrics(server.registry());
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return Fail(st);
  WaitForTerminationSignal();
  server.Shutdown();
  return 0;
}

}  // namespace
}  // namespace aichat::conversation

int main(int argc, char** argv) {
  using namespace aichat;
  using namespace aichat::conversation;
  BlockTerminationSignals();
  Config config(
      "aichat-conversation: chat threads, messages and context windows.\n"
      "Usage: aichat-conversation [--flags]");
  DeclareSettings(config);
  auto parsed = config.Parse(argc, argv);
  if (!parsed.ok()) return Fail(parsed.status());
  if (!*parsed) return 0;
  if (!config.positional().empty()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("unexpected argument ", config.positional()[0], " (see --help)")));
  }
  auto cfg = ReadSettings(config);
  if (!cfg.ok()) return Fail(cfg.status());
  return Serve(*cfg);
}
