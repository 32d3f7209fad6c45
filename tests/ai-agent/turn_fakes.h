// In-memory stand-ins for everything a Turn talks to, so that every path of the
// turn runs in milliseconds: the conversation and usage peers, the agent's store,
// and a scripted LLM client. Each fake can be told to fail the next calls.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "services/ai-agent/agent_store.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/peers.h"

namespace aichat::agent::fakes {

struct StoredMessage {
  int64_t id = 0;
  MessageRole role = MessageRole::kUser;
  std::string content;
  int32_t token_count = 0;
  int64_t prompt_id = 0;
  bool superseded = false;
};

class FakeConversation final : public ConversationPeer {
 public:
  // A conversation of `user_id`; returns its id.
  int64_t Create(int64_t user_id, std::string model = "", std::string system_prompt = "");

  void ReadContext(const PeerCall& call, int64_t conversation_id, int32_t max_tokens,
                   std::function<void(absl::StatusOr<TurnContext>)> done) override;
  void Append(const PeerCall& call, const NewTurnMessage& message,
              std::function<void(absl::StatusOr<int64_t>)> done) override;
  void Retract(const PeerCall& call, int64_t conversation_id, int64_t prompt_id,
               std::function<void(absl::Status)> done) override;

  // The next `n` calls of that kind fail with `status`.
  void FailReads(int n, absl::Status status);
  void FailAppends(int n, absl::Status status, MessageRole role = MessageRole::kAssistant);
  std::vector<StoredMessage> Messages(int64_t conversation_id);
  int appends() {
    absl::MutexLock lock(&mu_);
    return appends_;
  }

 private:
  struct Conv {
    int64_t user_id = 0;
    std::string model;
    std::string system_prompt;
    std::vector<StoredMessage> messages;
  };
  absl::Mutex mu_;
  std::map<int64_t, Conv> convs_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int fail_reads_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status read_error_ ABSL_GUARDED_BY(mu_);
  int fail_appends_ ABSL_GUARDED_BY(mu_) = 0;
  MessageRole fail_role_ ABSL_GUARDED_BY(mu_) = MessageRole::kAssistant;
  absl::Status append_error_ ABSL_GUARDED_BY(mu_);
  int appends_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakeUsage final : public UsagePeer {
 public:
  void Reserve(const PeerCall& call, const ReserveRequest& request,
               std::function<void(absl::StatusOr<ReserveDecision>)> done) override;
  void Release(const std::string& event_id) override;
  void Record(std::vector<UsageRecord> events, absl::Time deadline,
              std::function<void(absl::StatusOr<std::vector<bool>>)> done) override;

  void SetBudget(int64_t limit_nanos);          // 0 = unlimited
  void SetReserveError(absl::Status status);    // every Reserve fails so
  int64_t reserved();                           // nanos held by active reservations
  std::map<std::string, UsageRecord> ledger();  // by event id
  int releases();
  std::vector<int64_t> reserved_amounts();  // every Reserve's max_cost_nanos

 private:
  absl::Mutex mu_;
  int64_t limit_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status reserve_error_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> active_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, std::deque<absl::Time>> window_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, UsageRecord> ledger_ ABSL_GUARDED_BY(mu_);
  int releases_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> amounts_ ABSL_GUARDED_BY(mu_);
};

class MemoryAgentStore final : public AgentStore {
 public:
  explicit MemoryAgentStore(std::vector<ModelRecord> models) : models_(std::move(models)) {}

  absl::StatusOr<std::vector<ModelRecord>> ListModels() override;
  absl::StatusOr<ModelRecord> UpsertModel(const ModelRecord& model) override;
  absl::Status DeleteModel(const std::string& name) override;
  absl::StatusOr<std::vector<int64_t>> ReservePromptIds(int n) override;
  absl::Status InsertPrompt(const NewPrompt& prompt) override;
  absl::StatusOr<PromptRecord> FindByIdempotencyKey(int64_t user_id,
                                                    const std::string& key) override;
  absl::StatusOr<PromptRecord> GetPrompt(int64_t user_id, int64_t prompt_id) override;
  absl::StatusOr<std::vector<PromptRecord>> ListPrompts(int64_t user_id,
                                                        std::optional<int64_t> conversation_id,
                                                        int64_t before_id, int limit) override;
  absl::Status MarkRefused(int64_t prompt_id, PromptStatus status,
                           const std::string& error) override;
  absl::StatusOr<int64_t> FinishPrompt(int64_t prompt_id, const PromptOutcome& outcome,
                                       const std::optional<std::string>& usage_event,
                                       absl::Duration outbox_lease) override;
  absl::Status Settle(const std::vector<int64_t>& delivered_outbox_ids,
                      const std::vector<SavedAnswer>& saved) override;
  absl::Status MarkAnswerLost(int64_t prompt_id, const std::string& error) override;
  absl::Status RenewLease(const std::string& owner, absl::Duration ttl) override;
  absl::Status DropLease(const std::string& owner) override;
  absl::StatusOr<std::vector<PromptRecord>> AdoptAbandoned(
      const std::string& owner, int limit, absl::Duration unowned_after,
      absl::Duration own_pending_after) override;
  absl::StatusOr<std::vector<OutboxEntry>> ClaimOutbox(int limit, absl::Duration lease) override;
  absl::Status AckOutbox(const std::vector<int64_t>& ids) override;
  absl::Status RetryOutbox(int64_t id, absl::Duration delay, const std::string& error) override;
  absl::StatusOr<OutboxStats> OutboxBacklog() override;

  // The next `n` FinishPrompt calls fail with UNAVAILABLE (a PostgreSQL restart).
  void FailFinishes(int n);
  // The next `n` MarkRefused calls fail so.
  void FailRefusals(int n);
  std::optional<PromptRecord> Prompt(int64_t id);
  std::vector<PromptRecord> Prompts();  // by id
  size_t outbox_size();

 private:
  absl::Mutex mu_;
  std::vector<ModelRecord> models_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, PromptRecord> prompts_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, std::string> outbox_ ABSL_GUARDED_BY(mu_);  // id -> event id
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_outbox_ ABSL_GUARDED_BY(mu_) = 1;
  int fail_finishes_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_refusals_ ABSL_GUARDED_BY(mu_) = 0;
};

// Answers every call from a script: the deltas to stream, then the outcome.
// Calls run on a thread of their own, as the real client's I/O thread would.
struct LlmScript {
  std::vector<std::string> deltas;
  absl::Status status;  // OK, or how the call ends after the deltas
  LlmErrorKind kind = LlmErrorKind::kNone;
  int http_status = 200;
  TokenUsage usage{10, 5, 0, false};
  absl::Duration delta_gap = absl::ZeroDuration();
  bool wait_for_cancel = false;  // after the deltas, hold until cancelled
};

class ScriptedLlm final : public LlmClient {
 public:
  ~ScriptedLlm() override;
  void Push(LlmScript script);  // the next call's script (default: one "ok" answer)
  std::shared_ptr<LlmCall> Start(CompletionRequest request,
                                 std::function<void(std::string_view)> on_delta,
                                 std::function<void(LlmOutcome)> on_done) override;
  std::vector<CompletionRequest> requests();
  // The most calls that were in flight at once, per base_url.
  std::map<std::string, int> max_in_flight();

 private:
  absl::Mutex mu_;
  std::map<std::string, int> in_flight_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> max_in_flight_ ABSL_GUARDED_BY(mu_);
  std::deque<LlmScript> scripts_ ABSL_GUARDED_BY(mu_);
  std::vector<CompletionRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::agent::fakes
