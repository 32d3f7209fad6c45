// ConversationStore on PostgreSQL.
//
// GetContext is one round trip to conversation_context() (migration 003), which
// walks messages_window_idx backwards (position, tokens and bytes only) until a
// budget is spent, then reads the contents of just the messages that fit; it
// never reads a conversation's whole history for a small window. ListMessages
// likewise decides the page from positions and sizes (a running sum) and reads
// the contents of that page alone.
#pragma once

#include "common/pg.h"
#include "services/conversation/conversation_store.h"

namespace aichat::conversation {

// The statement GetContext runs ($1 conversation id, $2 user id, $3 max tokens,
// $4 max bytes, $5 framing bytes per message); exposed so a test can measure it.
extern const char kContextSql[];

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
  absl::StatusOr<MessagePage> ListMessages(int64_t user_id, int64_t conversation_id,
                                           int64_t after_position, int limit,
                                           size_t max_bytes) override;
  absl::StatusOr<ContextWindow> GetContext(int64_t user_id, int64_t conversation_id,
                                           int64_t max_tokens, size_t max_bytes) override;
  absl::StatusOr<bool> RetractMessage(int64_t user_id, int64_t conversation_id,
                                      int64_t prompt_id) override;

 private:
  absl::StatusOr<MessageRecord> AppendOnce(int64_t user_id, int64_t conversation_id,
                                           const NewMessage& m);

  PgPool* pool_;
};

}  // namespace aichat::conversation
