// The arithmetic at the end of a chat turn, with no I/O: from what the provider
// did, what the prompt records, what is charged, what the conversation keeps and
// what the client hears. turn.cc runs it; turn_end_test.cc tests it alone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "aichat/agent/v1/agent.pb.h"
#include "common/money.h"
#include "services/ai-agent/agent_store.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/peers.h"

namespace aichat::agent {

// What the turn knew before the provider answered.
struct TurnFacts {
  int64_t user_id = 0;
  int64_t conversation_id = 0;
  int64_t prompt_id = 0;
  int64_t user_message_id = 0;
  int64_t replaces_message_id = 0;  // a regeneration replaces this answer
  std::string event_id;
  std::string model;           // as asked for (maybe an alias)
  std::string provider_model;  // what went upstream
  Prices prices;               // of the real model, snapshotted at the start
  absl::Time started_at;
};

struct TurnEnd {
  PromptOutcome outcome;                 // what the prompt row records
  std::optional<UsageRecord> usage;      // the charge, when the provider consumed tokens
  std::optional<NewTurnMessage> answer;  // the text the conversation keeps, if any arrived
  absl::Status status;                   // what the client hears (before the saves)
  bool release_reservation = false;      // nothing was consumed
};

// `ended_at` is when the provider call ended.
TurnEnd ConcludeTurn(const TurnFacts& facts, const LlmOutcome& llm, absl::Time ended_at);

// The client's result once the answer is saved as `response_message_id`.
void FillTurnResult(const TurnFacts& facts, const PromptOutcome& outcome,
                    int64_t response_message_id, v1::TurnResult* result);

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

// The tokens an answer takes in a context: the provider's count, else an estimate.
int32_t AnswerTokens(int64_t completion_tokens, std::string_view text);

// A stored turn whose answer has not reached the conversation yet (a retry with its
// key, or the janitor, writes it): the message to append, idempotent on the prompt.
// A partial answer (a FAILED or CANCELLED turn) replaces nothing.
NewTurnMessage StoredAnswer(const PromptRecord& p);

// The client's result of a stored, completed turn, its answer saved as `message_id`.
void FillStoredResult(const PromptRecord& p, int64_t message_id, v1::TurnResult* result);

// The charge for a turn whose replica died before it finished: the prompt it sent
// (its estimated input tokens) at the snapshotted price, flagged estimated.
UsageRecord AbandonedCharge(const PromptRecord& prompt, absl::Time now);

}  // namespace aichat::agent
