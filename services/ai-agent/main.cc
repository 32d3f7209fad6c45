// aichat-agent: the ai-agent service — chat turns end to end, prompts, models,
// and the usage outbox publisher.
#include <grpcpp/create_channel.h>

#include "common/bootstrap.h"
#include "common/log.h"
#include "services/ai-agent/agent_metrics.h"
#include "services/ai-agent/agent_service.h"
#include "services/ai-agent/config.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/migrations.h"
#include "services/ai-agent/model_registry.h"
#include "services/ai-agent/outbox_publisher.h"
#include "services/ai-agent/pg_agent_store.h"

namespace aichat::agent {
namespace {

constexpr char kProgram[] = "aichat-agent";

std::shared_ptr<grpc::Channel> PeerChannel(const std::string& addr) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  // A restarted peer is reachable again within a second, not after gRPC's
  // default reconnect backoff (up to two minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
}

int Serve(const AgentConfig& cfg) {
  SetLogService("ai-agent");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return StartupFailure(kProgram, verifier.status());
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return StartupFailure(kProgram, pool.status());
  Authenticator auth(*std::move(verifier));
  PgAgentStore store(pool->get());
  ModelRegistry models(&store);
  HttpLlmClientOptions lopts;
  lopts.io_threads = cfg.llm_io_threads;
  lopts.ca_file = cfg.llm_ca_file;
  auto llm = MakeHttpLlmClient(lopts);
  auto conversation_channel = PeerChannel(cfg.conversation_addr);
  auto usage_channel = PeerChannel(cfg.usage_addr);
  auto conversation = conversation::v1::ConversationService::NewStub(conversation_channel);
  auto usage = usage::v1::UsageService::NewStub(usage_channel);
  auto workers = std::make_unique<WorkerPool>(cfg.common.workers);

  ServiceServer server(ServerOptionsFrom("ai-agent", cfg.common));
  (*pool)->ExportMetrics(server.registry());
  AgentMetrics metrics(server.registry());
  OutboxPublisherOptions oopts;
  oopts.idle_poll = cfg.outbox_interval;
  OutboxPublisher outbox(&store, usage_channel, cfg.service_token, oopts, &server.registry());

  TurnDeps deps;
  deps.store = &store;
  deps.models = &models;
  deps.llm = llm.get();
  deps.workers = workers.get();
  deps.conversation = conversation.get();
  deps.usage = usage.get();
  deps.service_token = cfg.service_token;
  deps.metrics = &metrics;
  deps.on_usage_committed = [&outbox] { outbox.Notify(); };
  deps.options = cfg.turn;
  AgentServiceImpl service(&deps, &auth);
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return StartupFailure(kProgram, st);
  outbox.Start();
  // Turns of a replica that died mid-answer stay STREAMING; sweep them now and
  // then every few minutes (any replica may do it; the update is idempotent).
  const absl::Duration abandoned_after = cfg.turn.total_timeout + absl::Minutes(1);
  WorkerPool* pool_ptr = workers.get();
  std::function<void()> sweep = [&store, pool_ptr, &sweep, abandoned_after] {
    auto n = store.SweepAbandoned(abandoned_after);
    if (n.ok() && *n > 0) LogWarn("abandoned turns marked FAILED", {{"count", *n}});
    pool_ptr->SubmitAfter(absl::Minutes(5), sweep);  // dropped once the pool stops
  };
  workers->Submit(sweep);
  WaitForTerminationSignal();
  // In-flight turns finish (or are cancelled at the end of the grace period)
  // and commit their usage events; then the outbox gets one last flush.
  server.Shutdown();
  // Cancel any provider call still open, then let the workers finish what is
  // queued (turn outcomes, usage events) while everything they use is alive.
  llm.reset();
  workers.reset();
  outbox.Stop(absl::Seconds(5));
  return 0;
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
