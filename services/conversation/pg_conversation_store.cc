#include "services/conversation/pg_conversation_store.h"

namespace aichat::conversation {

// One round trip: ownership, the conversation and the window (migration 003).
const char kContextSql[] = "SELECT * FROM conversation_context($1, $2, $3, $4, $5)";

namespace {

constexpr char kNotFound[] = "conversation not found";

constexpr char kInsertConversation[] =
    "INSERT INTO conversations (user_id, title, model, system_prompt, system_prompt_tokens) "
    "VALUES ($1, $2, $3, $4, $5) RETURNING id, user_id, title, model, system_prompt, "
    "system_prompt_tokens, message_count, created_at, updated_at";
constexpr char kGetConversation[] =
    "SELECT id, user_id, title, model, system_prompt, system_prompt_tokens, message_count, "
    "created_at, updated_at FROM conversations WHERE id = $1 AND user_id = $2";
constexpr char kListConversationsFirst[] =
    "SELECT id, user_id, title, model, system_prompt, system_prompt_tokens, message_count, "
    "created_at, updated_at FROM conversations WHERE user_id = $1 "
    "ORDER BY updated_at DESC, id DESC LIMIT $2";
constexpr char kListConversationsAfter[] =
    "SELECT id, user_id, title, model, system_prompt, system_prompt_tokens, message_count, "
    "created_at, updated_at FROM conversations "
    "WHERE user_id = $1 AND (updated_at, id) < ($2::timestamptz, $3::bigint) "
    "ORDER BY updated_at DESC, id DESC LIMIT $4";
// GREATEST keeps updated_at monotonic even when a transaction that started earlier
// commits later; clock_timestamp() is taken after the row lock is held.
constexpr char kUpdateConversation[] =
    "UPDATE conversations SET title = COALESCE($3::text, title), "
    "model = COALESCE($4::text, model), system_prompt = COALESCE($5::text, system_prompt), "
    "system_prompt_tokens = COALESCE($6::integer, system_prompt_tokens), "
    "updated_at = GREATEST(updated_at, clock_timestamp()) "
    "WHERE id = $1 AND user_id = $2 RETURNING id, user_id, title, model, system_prompt, "
    "system_prompt_tokens, message_count, created_at, updated_at";
constexpr char kDeleteConversation[] = "DELETE FROM conversations WHERE id = $1 AND user_id = $2";

// One statement: the UPDATE takes the conversation's row lock (and proves
// ownership), hands out the next position, and the INSERT uses it. The lock is
// held until commit, so positions commit in order: a reader never sees n+1
// without n.
constexpr char kAppendMessage[] =
    "WITH c AS ("
    "  UPDATE conversations SET last_position = last_position + 1, "
    "    message_count = message_count + 1, "
    "    updated_at = GREATEST(updated_at, clock_timestamp()) "
    "  WHERE id = $1 AND user_id = $2 RETURNING id, last_position, updated_at) "
    "INSERT INTO messages (conversation_id, position, role, content, token_count, "
    "  token_count_estimated, prompt_id, replaces_message_id, created_at) "
    "SELECT c.id, c.last_position, $3::text, $4::text, $5::integer, $6::boolean, $7::bigint, "
    "  $8::bigint, c.updated_at FROM c "
    "RETURNING id, conversation_id, role, '', token_count, token_count_estimated, prompt_id, "
    "position, superseded, created_at";
// The message an earlier attempt of the same append wrote (see migration 002).
constexpr char kMessageOfPrompt[] =
    "SELECT m.id, m.conversation_id, m.role, '', m.token_count, m.token_count_estimated, "
    "m.prompt_id, m.position, m.superseded, m.created_at FROM messages m "
    "JOIN conversations c ON c.id = m.conversation_id "
    "WHERE m.conversation_id = $1 AND c.user_id = $2 AND m.prompt_id = $3 AND m.role = $4";
constexpr char kSupersede[] =
    "UPDATE messages SET superseded = true "
    "WHERE id = $1 AND conversation_id = $2 AND position < $3 AND NOT superseded";
constexpr char kMessageSuperseded[] =
    "SELECT superseded FROM messages WHERE id = $1 AND conversation_id = $2";

// Two statements in one transaction. The first proves ownership and locks the
// conversation row (the order an append takes its locks in, so a retract and an
// append of the same conversation cannot deadlock). The second deletes with a
// snapshot taken after the lock was granted: an append of this prompt that held
// the lock meanwhile has committed and is seen (one statement would look with the
// snapshot it started with, and miss it). `u` keeps message_count in step. At most
// one USER message per prompt (migration 002).
constexpr char kLockOwnConversation[] =
    "SELECT id FROM conversations WHERE id = $1 AND user_id = $2 FOR UPDATE";
constexpr char kRetractMessage[] =
    "WITH d AS (DELETE FROM messages WHERE conversation_id = $1 "
    "  AND prompt_id = $2 AND role = 'user' RETURNING id), "
    "u AS (UPDATE conversations SET message_count = message_count - 1 "
    "  WHERE id = $1 AND EXISTS (SELECT 1 FROM d) RETURNING id) "
    "SELECT EXISTS (SELECT 1 FROM u)";

// The page is decided before any content is read: `page` walks at most
// limit + 1 rows of positions and sizes (no contents) with a running sum;
// `bounds` keeps the prefix that fits $5 bytes ($6 framing bytes per message;
// the first row always) and says whether rows follow it; then only that range's
// contents are read. The conversation row decides NOT_FOUND; the lateral page
// may be empty.
constexpr char kListMessages[] =
    "WITH page AS ("
    "  SELECT position, row_number() OVER w AS n, sum(content_bytes + $6) OVER w AS bytes "
    "  FROM messages WHERE conversation_id = $1 AND position > $3 "
    "  WINDOW w AS (ORDER BY position ROWS UNBOUNDED PRECEDING) "
    "  ORDER BY position LIMIT $4::integer + 1), "
    "bounds AS ("
    "  SELECT max(position) FILTER (WHERE n <= $4 AND (n = 1 OR bytes <= $5)) AS last, "
    "    COALESCE(bool_or(n > $4 OR (n > 1 AND bytes > $5)), false) AS more FROM page) "
    "SELECT b.more, m.id, m.conversation_id, m.role, m.content, m.token_count, "
    "  m.token_count_estimated, m.prompt_id, m.position, m.superseded, m.created_at "
    "FROM conversations c CROSS JOIN bounds b LEFT JOIN LATERAL ("
    "  SELECT * FROM messages WHERE conversation_id = c.id AND position > $3 "
    "    AND position <= b.last) m ON true "
    "WHERE c.id = $1 AND c.user_id = $2 ORDER BY m.position";

const char* RoleText(MessageRole r) {
  switch (r) {
    case MessageRole::kAssistant:
      return "assistant";
    case MessageRole::kSystem:
      return "system";
    case MessageRole::kUser:
      break;
  }
  return "user";
}

MessageRole ParseRoleText(std::string_view s) {
  if (s == "assistant") return MessageRole::kAssistant;
  if (s == "system") return MessageRole::kSystem;
  return MessageRole::kUser;
}

// The columns id, user_id, title, model, system_prompt, system_prompt_tokens,
// message_count, created_at, updated_at from column `first` on.
ConversationRecord ReadConversation(const PgResult& r, int row, int first = 0) {
  ConversationRecord c;
  c.id = r.Int(row, first);
  c.user_id = r.Int(row, first + 1);
  c.title = r.String(row, first + 2);
  c.model = r.String(row, first + 3);
  c.system_prompt = r.String(row, first + 4);
  c.system_prompt_tokens = static_cast<int32_t>(r.Int(row, first + 5));
  c.message_count = r.Int(row, first + 6);
  c.created_at = r.Time(row, first + 7);
  c.updated_at = r.Time(row, first + 8);
  return c;
}

// The columns id, conversation_id, role, content, token_count,
// token_count_estimated, prompt_id, position, superseded, created_at from column
// `first` on.
MessageRecord ReadMessage(const PgResult& r, int row, int first = 0) {
  MessageRecord m;
  m.id = r.Int(row, first);
  m.conversation_id = r.Int(row, first + 1);
  m.role = ParseRoleText(r.Text(row, first + 2));
  m.content = r.String(row, first + 3);
  m.token_count = static_cast<int32_t>(r.Int(row, first + 4));
  m.token_count_estimated = r.Bool(row, first + 5);
  m.prompt_id = r.Int(row, first + 6);
  m.position = r.Int(row, first + 7);
  m.superseded = r.Bool(row, first + 8);
  m.created_at = r.Time(row, first + 9);
  return m;
}

// conversation_context's columns: is_message, truncated, the conversation's, the message's.
constexpr int kContextTruncatedCol = 1;
constexpr int kContextConversationCol = 2;
constexpr int kContextMessageCol = 11;

absl::StatusOr<ConversationRecord> OneConversation(absl::StatusOr<PgResult> r) {
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(kNotFound);
  return ReadConversation(*r, 0);
}

}  // namespace

absl::StatusOr<ConversationRecord> PgConversationStore::CreateConversation(
    int64_t user_id, const NewConversation& c) {
  return OneConversation(pool_->Exec(
      kInsertConversation, {user_id, c.title, c.model, c.system_prompt, c.system_prompt_tokens}));
}

absl::StatusOr<ConversationRecord> PgConversationStore::GetConversation(int64_t user_id,
                                                                        int64_t id) {
  return OneConversation(pool_->Exec(kGetConversation, {id, user_id}));
}

absl::StatusOr<std::vector<ConversationRecord>> PgConversationStore::ListConversations(
    int64_t user_id, const std::optional<ConversationCursor>& after, int limit) {
  auto r = after.has_value() ? pool_->Exec(kListConversationsAfter,
                                           {user_id, after->updated_at, after->id, limit})
                             : pool_->Exec(kListConversationsFirst, {user_id, limit});
  if (!r.ok()) return r.status();
  std::vector<ConversationRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) out.push_back(ReadConversation(*r, i));
  return out;
}

absl::StatusOr<ConversationRecord> PgConversationStore::UpdateConversation(
    int64_t user_id, int64_t id, const ConversationPatch& patch) {
  if (patch.empty()) return GetConversation(user_id, id);
  return OneConversation(pool_->Exec(
      kUpdateConversation,
      {id, user_id, patch.title, patch.model, patch.system_prompt, patch.system_prompt_tokens}));
}

absl::Status PgConversationStore::DeleteConversation(int64_t user_id, int64_t id) {
  auto r = pool_->Exec(kDeleteConversation, {id, user_id});
  if (!r.ok()) return r.status();
  if (r->affected() == 0) return absl::NotFoundError(kNotFound);
  return absl::OkStatus();
}

absl::StatusOr<MessageRecord> PgConversationStore::AppendMessage(int64_t user_id,
                                                                 int64_t conversation_id,
                                                                 const NewMessage& m) {
  auto appended = AppendOnce(user_id, conversation_id, m);
  if (!absl::IsAlreadyExists(appended.status()) || !m.prompt_id.has_value()) return appended;
  // A retry of an append that already happened: answer with that message.
  auto r =
      pool_->Exec(kMessageOfPrompt, {conversation_id, user_id, *m.prompt_id, RoleText(m.role)});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return appended.status();
  return ReadMessage(*r, 0);
}

absl::StatusOr<MessageRecord> PgConversationStore::AppendOnce(int64_t user_id,
                                                              int64_t conversation_id,
                                                              const NewMessage& m) {
  const std::vector<PgArg> args = {
      conversation_id,         user_id,     RoleText(m.role),     m.content, m.token_count,
      m.token_count_estimated, m.prompt_id, m.replaces_message_id};
  if (!m.replaces_message_id.has_value()) {
    // The common case is one statement: one round trip, its own transaction.
    auto r = pool_->Exec(kAppendMessage, args);
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError(kNotFound);
    return ReadMessage(*r, 0);
  }
  MessageRecord out;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    auto r = conn.Exec(kAppendMessage, args);
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return absl::NotFoundError(kNotFound);
    out = ReadMessage(*r, 0);
    // The conversation row lock taken above serialises this with every other
    // append (and so every other supersede) of the conversation.
    auto sup = conn.Exec(kSupersede, {*m.replaces_message_id, conversation_id, out.position});
    if (!sup.ok()) return sup.status();
    if (sup->affected() == 1) return absl::OkStatus();
    auto old = conn.Exec(kMessageSuperseded, {*m.replaces_message_id, conversation_id});
    if (!old.ok()) return old.status();
    if (old->rows() == 0) {
      return absl::InvalidArgumentError(
          "replaces_message_id is not a message of this conversation");
    }
    return absl::FailedPreconditionError(
        "replaces_message_id names a message that was already replaced");
  });
  if (!st.ok()) return st;
  return out;
}

absl::StatusOr<MessagePage> PgConversationStore::ListMessages(int64_t user_id,
                                                              int64_t conversation_id,
                                                              int64_t after_position, int limit,
                                                              size_t max_bytes) {
  auto r = pool_->Exec(kListMessages, {conversation_id, user_id, after_position, limit,
                                       static_cast<int64_t>(max_bytes), kMessageFramingBytes});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(kNotFound);
  MessagePage page;
  page.more = r->Bool(0, 0);
  page.messages.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    if (r->IsNull(i, 1)) continue;  // the conversation has no messages on this page
    page.messages.push_back(ReadMessage(*r, i, 1));
  }
  return page;
}

absl::StatusOr<ContextWindow> PgConversationStore::GetContext(int64_t user_id,
                                                              int64_t conversation_id,
                                                              int64_t max_tokens,
                                                              size_t max_bytes) {
  auto r = pool_->Exec(kContextSql, {conversation_id, user_id, max_tokens,
                                     static_cast<int64_t>(max_bytes), kMessageFramingBytes});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(kNotFound);
  ContextWindow out;
  out.conversation = ReadConversation(*r, 0, kContextConversationCol);
  out.truncated = r->Bool(0, kContextTruncatedCol);
  out.token_count = out.conversation.system_prompt_tokens;
  out.messages.reserve(r->rows() - 1);
  for (int i = 1; i < r->rows(); ++i) {
    out.messages.push_back(ReadMessage(*r, i, kContextMessageCol));
    out.token_count += out.messages.back().token_count;
  }
  return out;
}

absl::StatusOr<bool> PgConversationStore::RetractMessage(int64_t user_id, int64_t conversation_id,
                                                         int64_t prompt_id) {
  bool removed = false;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    auto lock = conn.Exec(kLockOwnConversation, {conversation_id, user_id});
    if (!lock.ok()) return lock.status();
    if (lock->rows() == 0) return absl::NotFoundError(kNotFound);
    auto r = conn.Exec(kRetractMessage, {conversation_id, prompt_id});
    if (!r.ok()) return r.status();
    removed = r->Bool(0, 0);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return removed;
}

}  // namespace aichat::conversation
