// One chat turn end to end (DESIGN.md section 3), as an asynchronous orchestrator:
//
//   Read    the conversation (ownership, settings, context) in one call, and the
//           earlier turn with the same idempotency key, at the same time;
//   Claim   the budget reservation (usage), the prompt row (here) and the user
//           message (conversation), all three at once: one commit's wait;
//   Stream  the provider's answer, relayed delta by delta;
//   Save    the answer (conversation) and the prompt's outcome with its usage event
//           (here), both at once: one commit's wait before `completed`.
//
// No thread ever waits for a peer: peer calls are asynchronous and carry the
// client's deadline and cancellation; the worker pool runs only libpq calls.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aichat/agent/v1/agent.pb.h"
#include "common/worker_pool.h"
#include "services/ai-agent/agent_metrics.h"
#include "services/ai-agent/agent_store.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/model_registry.h"
#include "services/ai-agent/peers.h"
#include "services/ai-agent/prompt_ids.h"
#include "services/ai-agent/request_checks.h"
#include "services/ai-agent/router.h"
#include "services/ai-agent/running_turns.h"
#include "services/ai-agent/turn_end.h"
#include "services/ai-agent/turn_gate.h"

namespace grpc {
class Status;
}  // namespace grpc

namespace aichat::agent {

struct TurnOptions {
  std::string default_base_url = "https://api.openai.com/v1";
  absl::Duration total_timeout = absl::Minutes(5);
  absl::Duration stall_timeout = absl::Seconds(30);
  absl::Duration peer_timeout = absl::Seconds(5);
  RetryPolicy retry;
  // When `usage` cannot be reached, admit turns without a reservation (chat keeps
  // working; the usage events are recorded once it is back) instead of refusing.
  bool budget_fail_open = true;
  // The request rate for callers whose token carries none (services acting for a user).
  int32_t default_requests_per_minute = 20;
  // How long a client waits for a save that PostgreSQL or conversation delays
  // before it hears UNAVAILABLE ("retry with the same idempotency_key"). The save
  // itself is retried for save_for; then the janitor takes it over from the prompt
  // row (or another replica does, if this one stops).
  absl::Duration answer_within = absl::Seconds(10);
  absl::Duration save_for = absl::Minutes(2);
  absl::Duration save_backoff = absl::Milliseconds(100);  // doubles per attempt, to 5 s
  // A new outbox entry belongs to the replica that wrote it for this long.
  absl::Duration outbox_lease = absl::Seconds(30);
  // Where provider keys may go (checked again at each turn, whatever the database says).
  ProviderPolicy provider_policy;
  // Looks up an API key by environment variable name; default: getenv.
  std::function<std::string(const std::string&)> api_key;
};

// Everything a turn needs; owned by the service, outlives every turn.
struct TurnDeps {
  AgentStore* store = nullptr;
  ModelRegistry* models = nullptr;
  LlmClient* llm = nullptr;
  WorkerPool* workers = nullptr;  // libpq calls only
  ConversationPeer* conversation = nullptr;
  UsagePeer* usage = nullptr;
  PromptIds* prompt_ids = nullptr;
  RunningTurns* running = nullptr;
  TurnGate* gate = nullptr;         // may be null: no local memory of limits
  Router* router = nullptr;         // may be null: deployments in order, no health kept
  AgentMetrics* metrics = nullptr;  // may be null
  std::string replica;              // this replica's lease name, the owner of its turns
  // A usage event committed to the outbox (entry id) and due for delivery now.
  std::function<void(int64_t outbox_id, UsageRecord record)> publish;
  // An answer reached the conversation (the prompt is no longer pending).
  std::function<void(SavedAnswer saved)> answer_saved;
  // Turns alive, their background saves included: shutdown waits for zero.
  std::atomic<int> live{0};
  TurnOptions options;
};

// Where a turn reports to: the unary or the streaming reactor (or the HTTP API).
class TurnSink {
 public:
  virtual ~TurnSink() = default;
  virtual void OnStarted(const v1::Started& started) = 0;
  virtual void OnDelta(std::string_view text) = 0;
  // Exactly once; `result` is set when status is OK. The sink may be gone after.
  virtual void OnFinished(const grpc::Status& status, const v1::TurnResult* result) = 0;
};

// Threads: a step runs on whichever thread delivered what it waited for (a gRPC
// callback thread, a worker, the LLM client's I/O thread) and never blocks. The
// calls of one step run concurrently and each writes only its own result member
// (read_, earlier_, reserve_, insert_, user_append_, answer_id_, outcome_saved_)
// before it arrives at join_; the last to arrive runs the next step, which then
// reads them all (join_'s acquire-release count orders the writes before it).
// Everything else is written by one step at a time. mu_ guards what Cancel and
// the answer-window timer touch from other threads.
class Turn : public std::enable_shared_from_this<Turn> {
 public:
  static std::shared_ptr<Turn> Start(TurnDeps* deps, TurnRequest request, TurnSink* sink);
  // The client went away: abort upstream at once; what was consumed is saved and charged.
  void Cancel();

  Turn(TurnDeps* deps, TurnRequest request, TurnSink* sink);
  ~Turn();

 private:
  void Read();
  void AfterRead();
  void Claim(int64_t prompt_id);
  void AfterClaim();
  absl::Status Candidates();
  void Stream();
  void NextAttempt();
  void StartProvider(Route route);
  void OnProviderDone(LlmOutcome outcome);
  void Conclude(LlmOutcome outcome);
  void Save();
  void SaveAnswer();
  void SaveOutcome();
  void AfterSave();

  // A claim that did not go through: undo what was written, then answer `status`.
  void Unclaim(absl::Status status, std::optional<PromptStatus> prompt_status,
               bool then_replay = false);
  // Records the refusal (which frees the idempotency key); a transient failure is
  // retried in the background for up to save_for, after the client was answered.
  void RetryRefusal(PromptStatus status, std::string why, int attempt, absl::Time since);
  // The request repeats an earlier turn with the same idempotency key.
  void Replay(PromptRecord earlier);
  void ReplayLater(int attempt);
  void WatchWait(uint64_t waiter);
  void ReplayAnswer(PromptRecord earlier);
  void StartAnswerWindow();
  void Finish(const absl::Status& status, const v1::TurnResult* result);

  void Arrive(void (Turn::*next)());
  PeerCall ClientCall() const;  // the client's deadline and cancellation
  PeerCall SaveCall() const;    // survives the client
  bool cancelled();
  int32_t RequestsPerMinute() const;  // the caller's, or the default for services
  std::string RequestHash() const;
  absl::Status BuildContext(TurnContext context);

  TurnDeps* deps_;
  TurnRequest req_;
  TurnSink* sink_;
  const absl::Time started_at_;
  std::string event_id_;
  std::string request_hash_;  // with an idempotency key
  std::atomic<int> join_{0};

  // Read.
  absl::StatusOr<TurnContext> read_ = absl::UnknownError("unset");
  absl::StatusOr<PromptRecord> earlier_ = absl::NotFoundError("no key");
  // What the read decided.
  ResolvedModel model_;
  int32_t max_output_ = 0;
  // The model and its fallbacks that can take the turn, in order; where the current
  // attempt goes; the deployments of the current candidate already tried.
  struct Candidate {
    ResolvedModel model;
    int32_t max_output = 0;
  };
  std::vector<Candidate> candidates_;
  size_t candidate_ = 0;
  std::vector<int> tried_;
  std::optional<Route> route_;
  bool open_ok_ = false;  // the second pass: open circuits may be called (router.h)
  std::optional<LlmOutcome> last_failure_;
  std::vector<ChatMessage> messages_;  // handed to the provider
  int64_t context_tokens_ = 0;
  TurnFacts facts_;
  // Claim.
  absl::StatusOr<ReserveDecision> reserve_ = absl::UnknownError("unset");
  absl::Status insert_ = absl::UnknownError("unset");
  absl::StatusOr<int64_t> user_append_ = absl::UnknownError("unset");
  bool reserved_ = false;
  bool key_registered_ = false;
  // Save.
  TurnEnd end_;
  absl::Time ended_at_;
  absl::StatusOr<int64_t> answer_id_ = absl::UnknownError("unset");
  absl::Status outcome_saved_ = absl::UnknownError("unset");
  int answer_attempts_ = 0;
  int outcome_attempts_ = 0;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool answer_window_ ABSL_GUARDED_BY(mu_) = false;  // the timer is set
  std::shared_ptr<LlmCall> call_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::agent
