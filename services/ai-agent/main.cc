// aichat-agent: the ai-agent service — chat turns end to end, prompts, models,
// the usage outbox publisher, and the OpenAI-compatible HTTP API.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/bootstrap.h"
#include "common/grpc_channel.h"
#include "common/jwt.h"
#include "common/log.h"
#include "services/ai-agent/agent_metrics.h"
#include "services/ai-agent/agent_service.h"
#include "services/ai-agent/config.h"
#include "services/ai-agent/grpc_peers.h"
#include "services/ai-agent/http/http_server.h"
#include "services/ai-agent/http/openai_api.h"
#include "services/ai-agent/janitor.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/migrations.h"
#include "services/ai-agent/model_registry.h"
#include "services/ai-agent/outbox_publisher.h"
#include "services/ai-agent/pg_agent_store.h"

namespace aichat::agent {
namespace {

constexpr char kProgram[] = "aichat-agent";

// host-pid-random: unique per process, readable in the leases table.
std::string ReplicaName(const AgentConfig& cfg) {
  if (!cfg.replica_name.empty()) return cfg.replica_name;
  char host[256] = {0};
  (void)gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid(), "-", RandomToken(4));
}

int Serve(const AgentConfig& cfg) {
  SetLogService("ai-agent");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return StartupFailure(kProgram, verifier.status());
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return StartupFailure(kProgram, pool.status());
  Authenticator auth(*std::move(verifier));
  PgAgentStore store(pool->get());
  auto workers = std::make_unique<WorkerPool>(cfg.common.workers);
  ModelRegistry models(&store, workers.get());
  if (auto st = models.Load(); !st.ok()) return StartupFailure(kProgram, st);
  HttpLlmClientOptions lopts;
  lopts.io_threads = cfg.llm_io_threads;
  lopts.ca_file = cfg.llm_ca_file;
  lopts.max_response_bytes = cfg.llm_max_response_bytes;
  auto llm = MakeHttpLlmClient(lopts);
  GrpcPeerOptions popts{.service_token = cfg.service_token, .call_timeout = cfg.turn.peer_timeout};
  auto conversation = MakeGrpcConversationPeer(
      MakePeerChannel(cfg.conversation_addr, WithIdempotentRetries(cfg.common.peer)), popts);
  auto usage = MakeGrpcUsagePeer(
      MakePeerChannel(cfg.usage_addr, WithIdempotentRetries(cfg.common.peer)), popts);
  PromptIds prompt_ids(&store, workers.get());
  RunningTurns running;
  TurnGate gate;

  ServiceServer server(ServerOptionsFrom("ai-agent", cfg.common));
  (*pool)->ExportMetrics(server.registry());
  AgentMetrics metrics(server.registry());
  Router router(RouterOptions{}, &server.registry());
  OutboxPublisherOptions oopts;
  oopts.idle_poll = cfg.outbox_interval;
  oopts.linger = cfg.outbox_linger;
  oopts.call_timeout = cfg.turn.peer_timeout;
  oopts.lease = cfg.turn.outbox_lease;
  OutboxPublisher outbox(&store, usage.get(), oopts, &server.registry());

  TurnDeps deps;
  deps.store = &store;
  deps.models = &models;
  deps.llm = llm.get();
  deps.workers = workers.get();
  deps.conversation = conversation.get();
  deps.usage = usage.get();
  deps.prompt_ids = &prompt_ids;
  deps.running = &running;
  deps.gate = &gate;
  deps.router = &router;
  deps.metrics = &metrics;
  deps.replica = ReplicaName(cfg);
  deps.publish = [&outbox](int64_t id, UsageRecord r) { outbox.Publish(id, std::move(r)); };
  deps.answer_saved = [&outbox](SavedAnswer s) { outbox.AnswerSaved(s); };
  deps.options = cfg.turn;
  Janitor janitor(&deps, JanitorOptions{.unowned_after = cfg.turn.total_timeout +
                                                         cfg.turn.save_for + absl::Minutes(1)});
  if (auto st = janitor.Start(); !st.ok()) return StartupFailure(kProgram, st);
  AgentServiceImpl service(&deps, &auth);
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return StartupFailure(kProgram, st);
  outbox.Start();

  // The OpenAI-compatible HTTP API: the same turns, over HTTP/1.1.
  std::unique_ptr<UserPeer> users;
  std::unique_ptr<HttpAuthenticator> http_auth;
  std::unique_ptr<OpenAiApi> api;
  std::unique_ptr<HttpServer> http;
  if (!cfg.http_listen.empty()) {
    users = MakeGrpcUserPeer(MakePeerChannel(cfg.user_addr, cfg.common.peer));
    http_auth = std::make_unique<HttpAuthenticator>(&auth.verifier(), users.get());
    api = std::make_unique<OpenAiApi>(&deps, http_auth.get(),
                                      OpenAiApiOptions{.stream_hold = cfg.http_stream_hold});
    HttpServerOptions hopts;
    hopts.listen = cfg.http_listen;
    hopts.threads = cfg.http_threads;
    hopts.max_body_bytes = static_cast<size_t>(cfg.http_max_body_bytes);
    hopts.read_timeout = cfg.http_read_timeout;
    hopts.idle_timeout = cfg.http_idle_timeout;
    hopts.write_timeout = cfg.http_write_timeout;
    hopts.max_connections = cfg.http_max_connections;
    auto started = HttpServer::Start(
        hopts,
        [a = api.get()](HttpRequest r, std::shared_ptr<HttpExchange> e) {
          a->Handle(std::move(r), std::move(e));
        },
        &server.registry());
    if (!started.ok()) {
      server.Shutdown();
      janitor.Stop();
      outbox.Stop(absl::ZeroDuration());
      return StartupFailure(kProgram, started.status());
    }
    http = *std::move(started);
    LogInfo("HTTP API listening", {{"listen", cfg.http_listen}, {"port", http->port()}});
  }

  WaitForTerminationSignal();
  // In-flight turns finish (or are cancelled at the end of the grace period).
  const absl::Time drain_until = absl::Now() + cfg.common.shutdown_grace;
  if (api != nullptr) api->StopServing();
  if (http != nullptr) http->BeginShutdown();
  server.Shutdown();
  if (http != nullptr) http->Shutdown(drain_until);
  // Saves still retrying behind answered clients get what is left of the grace.
  while (deps.live.load() > 0 && absl::Now() < drain_until) absl::SleepFor(absl::Milliseconds(20));
  if (int left = deps.live.load(); left > 0) {
    LogWarn("stopping with turns still saving; another replica takes them over",
            {{"turns", int64_t{left}}});
  }
  // Give the lease up: whatever is left is adopted by another replica at once.
  janitor.Stop();
  llm.reset();
  outbox.Stop(absl::Seconds(5));
  // Turns still saving past the grace may have calls in flight whose callbacks
  // reach the workers, the peers and the HTTP server: leave without destroying
  // them. What is durable is committed; the rest another replica takes over.
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace
}  // namespace aichat::agent

int main(int argc, char** argv) {
  using namespace aichat;
  using namespace aichat::agent;
  BlockTerminationSignals();
  Config config(
      "aichat-agent: chat turns against OpenAI-compatible providers.\nUsage: aichat-agent "
      "[--flags]");
  DeclareSettings(config);
  if (auto exit_code = ParseServeCommandLine(config, argc, argv, kProgram)) return *exit_code;
  auto cfg = ReadSettings(config);
  if (!cfg.ok()) return StartupFailure(kProgram, cfg.status());
  return Serve(*cfg);
}
