// ConversationStore on PostgreSQL.
//
// GetContext never reads a conversation's whole history: it walks
// messages_context_idx backwards (position and token count only, in growing
// batches) until the budget is spent, then fetches the contents of just the
// messages that fit. All reads run in one REPEATABLE READ READ ONLY transaction,
// so the walk and the fetch see the same snapshot.
#pragma once

#include "common/pg.h"
#include "services/conversation/conversation_store.h"

namespace aichat::conversation {

// The statement GetContext runs per batch ($1 conversation id, $2 exclusive upper
// position bound, $3 batch size); exposed so a test can EXPLAIN it.
extern const char kContextScanSql[];

class PgConversationStore : public ConversationStore {
 public:
  explicit PgConversationStore(PgPool* pool) : pool_(pool) {}

  absl::StatusOr<ConversationRecord> CreateConversation(int64_t user_id,
                                                        const NewConversation& c) override;
  absl::StatusOr<ConversationRecord> GetConversation(int64_t user_id, int64_t id) override;
  absl::StatusOr<std::vector<ConversationRecord>> ListConversations(
      int64_t user_id, const std::optional<ConversationCursor>& after, int limit) override;
  absl::StatusOr<ConversationRecord> UpdateConversation(int64_t user_id, int64_t id,
                                                        const ConversationPatch& patch) override;
  absl::Status DeleteConversation(int64_t user_id, int64_t id) override;
  absl::StatusOr<MessageRecord> AppendMessage(int64_t user_id, int64_t conversation_id,
                                              const NewMessage& m) override;
  absl::StatusOr<std::vector<MessageRecord>> ListMessages(int64_t user_id, int64_t conversation_id,
                                                          int64_t after_position,
                                                          int limit) override;
  absl::StatusOr<ContextWindow> GetContext(int64_t user_id, int64_t conversation_id,
                                           int64_t max_tokens, size_t max_bytes) override;

 private:
  absl::StatusOr<MessageRecord> AppendOnce(int64_t user_id, int64_t conversation_id,
                                           const NewMessage& m);

  PgPool* pool_;
};

}  // namespace aichat::conversation
