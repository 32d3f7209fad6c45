// AgentStore on PostgreSQL: model configurations, the ai_prompts lifecycle and
// the lease-based usage outbox. All of the ai-agent's SQL lives in the .cc.
#pragma once

#include "common/pg.h"
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

class PgAgentStore : public AgentStore {
 public:
  explicit PgAgentStore(PgPool* pool) : pool_(pool) {}

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

 private:
  PgPool* pool_;
};

}  // namespace aichat::agent
