// One chat turn end to end (DESIGN.md section 3): ownership, idempotency, model,
// context, reservation, prompt row, user message, the streamed provider call,
// the assistant message, and the prompt outcome + usage event in one transaction.
// Blocking steps run on the worker pool, the provider stream on the LLM client's
// I/O thread; no thread is held for the length of a stream.
#pragma once

#include <grpcpp/support/status.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aichat/agent/v1/agent.pb.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/auth.h"
#include "common/worker_pool.h"
#include "services/ai-agent/agent_metrics.h"
#include "services/ai-agent/agent_store.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/model_registry.h"
#include "services/ai-agent/request_checks.h"

namespace aichat::agent {

struct TurnOptions {
  std::string default_base_url = "https://api.openai.com/v1";
  absl::Duration total_timeout = absl::Minutes(5);
  absl::Duration stall_timeout = absl::Seconds(30);
  absl::Duration peer_timeout = absl::Seconds(5);
  RetryPolicy retry;
  // When `usage` is unreachable, admit turns without a reservation (chat keeps
  // working; the usage events are recorded once it is back) instead of refusing.
  bool budget_fail_open = true;
  // The request rate for callers whose token carries none (services acting for a user).
  int32_t default_requests_per_minute = 20;
  // Looks up an API key by environment variable name; default: getenv.
  std::function<std::string(const std::string&)> api_key;
};

// Everything a turn needs; owned by the service, outlives every turn.
struct TurnDeps {
  AgentStore* store = nullptr;
  ModelRegistry* models = nullptr;
  LlmClient* llm = nullptr;
  WorkerPool* workers = nullptr;
  conversation::v1::ConversationService::Stub* conversation = nullptr;
  usage::v1::UsageService::Stub* usage = nullptr;
  std::string service_token;
  AgentMetrics* metrics = nullptr;
  std::function<void()> on_usage_committed;  // wakes the outbox publisher
  TurnOptions options;
};

// Where a turn reports to: the unary or the streaming reactor.
class TurnSink {
 public:
  virtual ~TurnSink() = default;
  virtual void OnStarted(const v1::Started& started) = 0;
  virtual void OnDelta(std::string_view text) = 0;
  // Exactly once; `result` is set when status is OK. The sink may be gone after.
  virtual void OnFinished(const grpc::Status& status, const v1::TurnResult* result) = 0;
};

// The token figures every result and prompt carries, from a PromptRecord or a
// PromptOutcome (both have the same usage fields).
template <typename Prompt>
void FillUsage(const Prompt& p, v1::Usage* u) {
  u->set_prompt_tokens(p.prompt_tokens);
  u->set_completion_tokens(p.completion_tokens);
  u->set_cached_tokens(p.cached_tokens);
  u->set_total_tokens(p.prompt_tokens + p.completion_tokens);
  u->set_estimated(p.estimated);
}

class Turn : public std::enable_shared_from_this<Turn> {
 public:
  static std::shared_ptr<Turn> Start(TurnDeps* deps, TurnRequest request, TurnSink* sink);
  // The client went away: abort upstream at once; what was consumed is saved and charged.
  void Cancel();

  Turn(TurnDeps* deps, TurnRequest request, TurnSink* sink);

 private:
  void Prepare();           // worker: idempotency lookup, conversation, model, context
  void Claim();             // worker: prompt row and reservation, concurrently
  void AfterClaim();        // worker: the outcomes of both
  void AfterReservation();  // worker: user message, then the provider
  void StartProvider();
  void OnProviderDone(LlmOutcome outcome);  // worker
  void SaveOutcome();                       // worker; retried from a timer
  void ReturnExisting(PromptRecord existing);
  void FailBeforeProvider(const absl::Status& status, std::optional<PromptStatus> prompt_status);
  void Finish(const absl::Status& status, const v1::TurnResult* result);
  void Release();
  void RecordUsageDirectly(const std::string& event);
  void Submit(void (Turn::*step)());
  bool cancelled();
  std::unique_ptr<grpc::ClientContext> PeerContext();

  TurnDeps* deps_;
  TurnRequest req_;
  TurnSink* sink_;
  absl::Time started_at_;
  std::string event_id_;

  // Filled as the turn proceeds.
  std::string system_prompt_;
  std::string conversation_model_;
  ResolvedModel model_;
  int32_t max_output_ = 0;
  std::vector<ChatMessage> messages_;
  int64_t context_tokens_ = 0;
  int64_t prompt_id_ = 0;
  int64_t user_message_id_ = 0;
  int64_t replaces_message_id_ = 0;
  bool reserved_ = false;
  absl::Time provider_started_;

  // The end of the turn, kept while the save is retried.
  PromptOutcome outcome_;
  std::optional<std::string> event_;
  absl::Status client_status_;
  std::unique_ptr<v1::TurnResult> result_;
  absl::Time first_save_;
  int save_attempts_ = 0;

  // The concurrent prompt insert and reservation meet here.
  absl::Mutex join_mu_;
  int pending_ ABSL_GUARDED_BY(join_mu_) = 0;
  absl::StatusOr<PromptRecord> claim_ ABSL_GUARDED_BY(join_mu_) = absl::UnknownError("unset");
  grpc::Status reserve_status_ ABSL_GUARDED_BY(join_mu_);
  // gRPC fills the response before the reservation's callback arrives; it is read
  // only after both halves have arrived (the last arrival holds join_mu_ last).
  usage::v1::ReserveBudgetResponse reserve_resp_;
  std::unique_ptr<grpc::ClientContext> reserve_ctx_;
  usage::v1::ReserveBudgetRequest reserve_req_;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<LlmCall> call_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::agent
