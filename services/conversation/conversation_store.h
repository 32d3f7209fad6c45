// Storage for the conversation service, in domain types. pg_conversation_store.cc
// holds the SQL. Every call takes the owner's user id: a conversation of another
// user answers NOT_FOUND with the same message as a missing one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/conversation/conversation_checks.h"

namespace aichat::conversation {

enum class MessageRole { kUser, kAssistant, kSystem };

struct ConversationRecord {
  int64_t id = 0;
  int64_t user_id = 0;
  std::string title;
  std::string model;
  std::string system_prompt;
  int32_t system_prompt_tokens = 0;
  int64_t message_count = 0;
  absl::Time created_at;
  absl::Time updated_at;
};

struct MessageRecord {
  int64_t id = 0;
  int64_t conversation_id = 0;
  MessageRole role = MessageRole::kUser;
  std::string content;
  int32_t token_count = 0;
  bool token_count_estimated = false;
  int64_t prompt_id = 0;  // 0 for none
  int64_t position = 0;
  bool superseded = false;
  absl::Time created_at;
};

struct NewConversation {
  std::string title;
  std::string model;
  std::string system_prompt;
  int32_t system_prompt_tokens = 0;
};

// Fields that are set change; the others stay.
struct ConversationPatch {
  std::optional<std::string> title;
  std::optional<std::string> model;
  std::optional<std::string> system_prompt;
  std::optional<int32_t> system_prompt_tokens;  // set together with system_prompt
  bool empty() const { return !title && !model && !system_prompt; }
};

struct NewMessage {
  MessageRole role = MessageRole::kUser;
  std::string content;
  int32_t token_count = 0;
  bool token_count_estimated = false;
  std::optional<int64_t> prompt_id;
  std::optional<int64_t> replaces_message_id;
};

// The sort key of the last conversation of a ListConversations page.
struct ConversationCursor {
  absl::Time updated_at;
  int64_t id = 0;
};

// A page of ListMessages.
struct MessagePage {
  std::vector<MessageRecord> messages;  // oldest first
  bool more = false;                    // later messages exist
};

struct ContextWindow {
  ConversationRecord conversation;      // system prompt and its tokens included
  std::vector<MessageRecord> messages;  // oldest first
  int64_t token_count = 0;              // system prompt + messages
  bool truncated = false;               // older live messages were left out
};

class ConversationStore {
 public:
  virtual ~ConversationStore() = default;

  virtual absl::StatusOr<ConversationRecord> CreateConversation(int64_t user_id,
                                                                const NewConversation& c) = 0;
  virtual absl::StatusOr<ConversationRecord> GetConversation(int64_t user_id, int64_t id) = 0;
  // Newest updated first, after `after` (exclusive) when given.
  virtual absl::StatusOr<std::vector<ConversationRecord>> ListConversations(
      int64_t user_id, const std::optional<ConversationCursor>& after, int limit) = 0;
  virtual absl::StatusOr<ConversationRecord> UpdateConversation(int64_t user_id, int64_t id,
                                                                const ConversationPatch& patch) = 0;
  // Deletes the conversation and its messages.
  virtual absl::Status DeleteConversation(int64_t user_id, int64_t id) = 0;

  // Appends at the next position; moves updated_at and message_count in the same
  // transaction. With replaces_message_id: INVALID_ARGUMENT unless it names a
  // message of this conversation, FAILED_PRECONDITION when that one is already
  // superseded. The returned record's content is left empty (the caller has it).
  virtual absl::StatusOr<MessageRecord> AppendMessage(int64_t user_id, int64_t conversation_id,
                                                      const NewMessage& m) = 0;
  // Up to `limit` messages with position > after_position, oldest first, whose
  // contents plus kMessageFramingBytes each add up to at most max_bytes; the
  // first one comes back even when it alone is larger. Contents past the page
  // are never read.
  virtual absl::StatusOr<MessagePage> ListMessages(int64_t user_id, int64_t conversation_id,
                                                   int64_t after_position, int limit,
                                                   size_t max_bytes) = 0;
  // The conversation and the newest live (not superseded) messages whose tokens
  // fit in max_tokens (with the system prompt's) and whose contents fit in
  // max_bytes (with the system prompt twice, as the response carries it, and
  // kMessageFramingBytes each), oldest first. The window is contiguous: it stops
  // at the first message (going back) that does not fit, and `truncated` says
  // older live messages exist. When the system prompt alone exceeds max_tokens,
  // the prompt comes back with no messages and token_count = its tokens
  // (> max_tokens): the caller decides what to do.
  virtual absl::StatusOr<ContextWindow> GetContext(int64_t user_id, int64_t conversation_id,
                                                   int64_t max_tokens, size_t max_bytes) = 0;
  // Deletes the USER message of `prompt_id` and takes it off message_count; the
  // other messages keep their positions. False when there is none; NOT_FOUND for
  // a conversation that is not the user's.
  virtual absl::StatusOr<bool> RetractMessage(int64_t user_id, int64_t conversation_id,
                                              int64_t prompt_id) = 0;
};

}  // namespace aichat::conversation
