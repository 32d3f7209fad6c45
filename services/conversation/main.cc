// aichat-conversation: chat threads, their messages and context windows.
#include "common/bootstrap.h"
#include "common/log.h"
#include "services/conversation/config.h"
#include "services/conversation/conversation_service.h"
#include "services/conversation/migrations.h"
#include "services/conversation/pg_conversation_store.h"

namespace aichat::conversation {
namespace {

constexpr char kProgram[] = "aichat-conversation";

int Serve(const ConversationConfig& cfg) {
  SetLogService("conversation");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return StartupFailure(kProgram, verifier.status());
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return StartupFailure(kProgram, pool.status());
  Authenticator auth(*std::move(verifier));
  WorkerPool workers(cfg.common.workers);
  PgConversationStore store(pool->get());
  ConversationServiceImpl service(&store, &auth, &workers, cfg.service);

  ServiceServer server(ServerOptionsFrom("conversation", cfg.common));
  (*pool)->ExportMetrics(server.registry());
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return StartupFailure(kProgram, st);
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
  if (auto exit_code = ParseServeCommandLine(config, argc, argv, kProgram)) return *exit_code;
  auto cfg = ReadSettings(config);
  if (!cfg.ok()) return StartupFailure(kProgram, cfg.status());
  return Serve(*cfg);
}
