// Storage for the ai-agent service, in domain types: model configurations, the
// lifecycle of each turn (ai_prompts) and the usage outbox. pg_agent_store.cc
// holds the SQL.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/money.h"

namespace aichat::agent {

// One place a model is served (see agent.proto Deployment). Empty fields fall back to
// the model's own.
struct DeploymentRecord {
  std::string name;  // "d1"… when not given
  std::string base_url;
  std::string api_key_env;
  std::string provider_model;
  int32_t weight = 1;
  int32_t max_concurrency = 0;  // 0: no cap
};

struct ModelRecord {
  std::string name;
  std::string provider_model;
  std::string base_url;     // "" = the configured default provider (OPENAI_BASE_URL)
  std::string api_key_env;  // name of the environment variable with the key
  Prices prices;
  int32_t context_window = 0;
  int32_t max_output_tokens = 0;
  double default_temperature = 1.0;
  bool enabled = true;
  bool is_default = false;
  bool use_max_tokens_param = false;
  absl::Time updated_at;
  std::vector<DeploymentRecord> deployments;  // empty: base_url/api_key_env/provider_model
  std::vector<std::string> fallbacks;         // model names, in order
};

enum class PromptStatus {
  kPending,
  kStreaming,
  kCompleted,
  kFailed,
  kCancelled,
  kRateLimited,
  kBudgetExceeded,
};
const char* PromptStatusName(PromptStatus s);  // "PENDING", ...
PromptStatus ParsePromptStatus(std::string_view s);
bool IsTerminal(PromptStatus s);

// A new turn, as inserted (status PENDING).
struct NewPrompt {
  int64_t id = 0;  // from ReservePromptIds
  int64_t user_id = 0;
  int64_t conversation_id = 0;
  std::string idempotency_key;  // "" = none
  std::string request_hash;     // what a retry with the same key must match
  std::string event_id;         // the usage event / reservation id
  std::string owner;            // the replica running the turn (its lease keeps it alive)
  std::string model;            // as configured (maybe an alias)
  std::string provider_model;   // what goes upstream
  Prices prices;                // snapshot
  int32_t context_window = 0;
  int32_t max_output_tokens = 0;
  int64_t context_tokens = 0;       // estimated tokens of what goes upstream
  int64_t user_message_id = 0;      // set at insert for regenerations
  int64_t replaces_message_id = 0;  // the answer a regeneration replaces
};

struct PromptRecord {
  int64_t id = 0;
  int64_t user_id = 0;
  int64_t conversation_id = 0;
  PromptStatus status = PromptStatus::kPending;
  std::string idempotency_key;
  std::string request_hash;
  std::string event_id;
  std::string owner;
  std::string model;
  std::string provider_model;
  Prices prices;
  int32_t context_window = 0;
  int32_t max_output_tokens = 0;
  int64_t context_tokens = 0;
  int64_t user_message_id = 0;
  int64_t response_message_id = 0;
  int64_t replaces_message_id = 0;
  // The text is in response_text but not yet (known to be) in the conversation.
  bool answer_pending = false;
  std::string deployment;  // the deployment that answered ("" before, or a single one)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  bool estimated = false;
  int64_t cost_nanos = 0;
  std::string finish_reason;
  std::string error;
  std::string response_text;
  int64_t latency_ms = 0;
  int64_t ttft_ms = 0;
  absl::Time created_at;
  std::optional<absl::Time> completed_at;
};

// How a turn that reached the provider ended.
struct PromptOutcome {
  PromptStatus status = PromptStatus::kCompleted;  // COMPLETED, FAILED or CANCELLED
  int64_t user_message_id = 0;                     // kept if 0
  int64_t response_message_id = 0;                 // 0 when not (yet) saved
  bool answer_pending = false;  // response_text still has to reach the conversation
  std::string response_text;
  std::string reported_model;  // the model the provider said it ran
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  bool estimated = false;
  int64_t cost_nanos = 0;
  std::string finish_reason;
  std::string error;
  int64_t latency_ms = 0;
  int64_t ttft_ms = 0;
  // Who answered: a fallback model's name, real model and price snapshot replace the
  // prompt's; empty `model` keeps them. `deployment` is recorded as given.
  std::string model;
  std::string provider_model;
  Prices prices;
  std::string deployment;
};

// An answer that reached the conversation as message `message_id`.
struct SavedAnswer {
  int64_t prompt_id = 0;
  int64_t message_id = 0;
};

struct OutboxEntry {
  int64_t id = 0;
  std::string event_id;
  std::string payload;  // a serialized aichat.usage.v1.UsageEvent
  int32_t attempts = 0;
  absl::Time created_at;
};

class AgentStore {
 public:
  virtual ~AgentStore() = default;

  // --- models ---
  virtual absl::StatusOr<std::vector<ModelRecord>> ListModels() = 0;
  virtual absl::StatusOr<ModelRecord> UpsertModel(const ModelRecord& model) = 0;
  // NOT_FOUND when absent.
  virtual absl::Status DeleteModel(const std::string& name) = 0;

  // --- prompts ---
  // `n` fresh prompt ids (handed out ahead, so that a turn's user message can name
  // its prompt while both are written at once).
  virtual absl::StatusOr<std::vector<int64_t>> ReservePromptIds(int n) = 0;
  // ALREADY_EXISTS when (user_id, idempotency_key) was used before.
  virtual absl::Status InsertPrompt(const NewPrompt& prompt) = 0;
  // The caller's prompt with that idempotency key; NOT_FOUND when none.
  virtual absl::StatusOr<PromptRecord> FindByIdempotencyKey(int64_t user_id,
                                                            const std::string& key) = 0;
  // NOT_FOUND unless the prompt exists and belongs to user_id.
  virtual absl::StatusOr<PromptRecord> GetPrompt(int64_t user_id, int64_t prompt_id) = 0;
  // Newest first; id < before_id when before_id > 0.
  virtual absl::StatusOr<std::vector<PromptRecord>> ListPrompts(
      int64_t user_id, std::optional<int64_t> conversation_id, int64_t before_id, int limit) = 0;
  // A refusal or a failure before the provider was called: terminal status +
  // error, no usage event. The idempotency key is freed, so a retry with it runs
  // afresh instead of replaying a refusal forever.
  virtual absl::Status MarkRefused(int64_t prompt_id, PromptStatus status,
                                   const std::string& error) = 0;
  // The end of a turn that reached the provider, in ONE transaction: the prompt
  // row gets its outcome, and when `usage_event` is set (tokens were consumed)
  // the event goes into the outbox, leased for `outbox_lease` to the caller (who
  // delivers it at once). Returns the outbox entry's id (0 without an event).
  // Only a non-terminal prompt is finished; FAILED_PRECONDITION otherwise.
  virtual absl::StatusOr<int64_t> FinishPrompt(int64_t prompt_id, const PromptOutcome& outcome,
                                               const std::optional<std::string>& usage_event,
                                               absl::Duration outbox_lease) = 0;
  // After-turn bookkeeping in one statement: delivered outbox entries are
  // deleted, answers that reached the conversation are no longer pending.
  virtual absl::Status Settle(const std::vector<int64_t>& delivered_outbox_ids,
                              const std::vector<SavedAnswer>& saved) = 0;
  // The conversation refused the answer for good (e.g. it was deleted): the
  // prompt becomes FAILED with `error`, no longer pending.
  virtual absl::Status MarkAnswerLost(int64_t prompt_id, const std::string& error) = 0;

  // --- replicas ---
  // Each replica holds a lease while it runs; turns whose owner's lease has
  // lapsed are abandoned and another replica finishes them.
  virtual absl::Status RenewLease(const std::string& owner, absl::Duration ttl) = 0;
  virtual absl::Status DropLease(const std::string& owner) = 0;
  // Takes over (owner := `owner`) up to `limit` prompts whose owner's lease has
  // lapsed and that are unfinished or still have an answer pending. Prompts of
  // no owner count as abandoned `unowned_after` after they were created; the
  // caller's own come back when their in-process save gave up: answers pending
  // `own_pending_after` after the turn ended, turns unfinished `unowned_after`
  // after they started.
  virtual absl::StatusOr<std::vector<PromptRecord>> AdoptAbandoned(
      const std::string& owner, int limit, absl::Duration unowned_after,
      absl::Duration own_pending_after) = 0;

  // --- outbox ---
  // Leases up to `limit` due entries whose lease has lapsed for `lease` (other
  // replicas skip them): events whose own turn could not deliver them.
  virtual absl::StatusOr<std::vector<OutboxEntry>> ClaimOutbox(int limit, absl::Duration lease) = 0;
  // Removes delivered entries.
  virtual absl::Status AckOutbox(const std::vector<int64_t>& ids) = 0;
  // Releases the lease and schedules the next attempt.
  virtual absl::Status RetryOutbox(int64_t id, absl::Duration delay, const std::string& error) = 0;
  struct OutboxStats {
    int64_t backlog = 0;
    double oldest_age_seconds = 0;
  };
  virtual absl::StatusOr<OutboxStats> OutboxBacklog() = 0;
};

}  // namespace aichat::agent
