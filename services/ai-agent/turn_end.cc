#include "services/ai-agent/turn_end.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace aichat::agent {

TurnEnd ConcludeTurn(const TurnFacts& f, const LlmOutcome& llm, absl::Time ended_at) {
  TurnEnd end;
  const bool ok = llm.status.ok();
  // Tokens were consumed once the provider accepted the request (HTTP 200: it read
  // the prompt, even if the stream then broke) or reported usage; an error answer
  // or a connection that never got a response costs nothing.
  const bool consumed = ok || llm.http_status == 200 || !llm.content.empty() ||
                        llm.usage.prompt_tokens + llm.usage.completion_tokens > 0;

  PromptOutcome& po = end.outcome;
  po.user_message_id = f.user_message_id;
  po.status = ok                                     ? PromptStatus::kCompleted
              : llm.kind == LlmErrorKind::kCancelled ? PromptStatus::kCancelled
                                                     : PromptStatus::kFailed;
  po.response_text = llm.content;
  po.reported_model = llm.provider_model;
  po.finish_reason = llm.finish_reason;
  if (!ok) po.error = std::string(llm.status.message());
  if (consumed) {
    po.prompt_tokens = llm.usage.prompt_tokens;
    po.completion_tokens = llm.usage.completion_tokens;
    po.cached_tokens = std::min(llm.usage.cached_tokens, llm.usage.prompt_tokens);
    po.estimated = llm.usage.estimated;
    po.cost_nanos = CostNanos(po.prompt_tokens, po.cached_tokens, po.completion_tokens, f.prices);
  }
  po.ttft_ms = llm.delivered_any ? absl::ToInt64Milliseconds(llm.time_to_first_token) : 0;
  po.latency_ms = absl::ToInt64Milliseconds(ended_at - f.started_at);

  end.status =
      ok ? absl::OkStatus()
         : absl::Status(llm.status.code(), absl::StrCat("provider: ", llm.status.message()));
  end.release_reservation = !consumed;

  if (!llm.content.empty()) {
    // Saved while the prompt row is finished; pending until the conversation has it.
    po.answer_pending = true;
    NewTurnMessage m;
    m.conversation_id = f.conversation_id;
    m.role = MessageRole::kAssistant;
    m.content = llm.content;
    m.token_count = AnswerTokens(po.completion_tokens, llm.content);
    m.prompt_id = f.prompt_id;
    // A partial answer never replaces the one a regeneration would have replaced.
    if (ok) m.replaces_message_id = f.replaces_message_id;
    end.answer = std::move(m);
  }

  if (consumed) {
    UsageRecord u;
    u.event_id = f.event_id;
    u.user_id = f.user_id;
    u.conversation_id = f.conversation_id;
    u.prompt_id = f.prompt_id;
    u.model = f.model;
    u.provider_model = f.provider_model;
    u.prompt_tokens = po.prompt_tokens;
    u.completion_tokens = po.completion_tokens;
    u.cached_tokens = po.cached_tokens;
    u.prices = f.prices;
    u.cost_nanos = po.cost_nanos;
    u.estimated = po.estimated;
    u.outcome = po.status == PromptStatus::kCompleted   ? UsageRecord::Outcome::kCompleted
                : po.status == PromptStatus::kCancelled ? UsageRecord::Outcome::kCancelled
                                                        : UsageRecord::Outcome::kFailed;
    u.occurred_at = ended_at;
    end.usage = std::move(u);
  }
  return end;
}

void FillTurnResult(const TurnFacts& f, const PromptOutcome& po, int64_t response_message_id,
                    v1::TurnResult* r) {
  r->set_prompt_id(f.prompt_id);
  r->set_user_message_id(f.user_message_id);
  r->set_response_message_id(response_message_id);
  r->set_text(po.response_text);
  FillUsage(po, r->mutable_usage());
  r->set_cost_nanos(po.cost_nanos);
  r->set_model(f.model);
  r->set_provider_model(f.provider_model);
  r->set_finish_reason(po.finish_reason);
  r->set_latency_ms(po.latency_ms);
}

int32_t AnswerTokens(int64_t completion_tokens, std::string_view text) {
  return static_cast<int32_t>(std::clamp<int64_t>(
      completion_tokens > 0 ? completion_tokens : EstimateTokens(text), 1, INT32_MAX));
}

NewTurnMessage StoredAnswer(const PromptRecord& p) {
  NewTurnMessage m;
  m.conversation_id = p.conversation_id;
  m.role = MessageRole::kAssistant;
  m.content = p.response_text;
  m.token_count = AnswerTokens(p.completion_tokens, p.response_text);
  m.prompt_id = p.id;
  if (p.status == PromptStatus::kCompleted) m.replaces_message_id = p.replaces_message_id;
  return m;
}

void FillStoredResult(const PromptRecord& p, int64_t message_id, v1::TurnResult* r) {
  TurnFacts f;
  f.prompt_id = p.id;
  f.user_message_id = p.user_message_id;
  f.model = p.model;
  f.provider_model = p.provider_model;
  PromptOutcome po;
  po.response_text = p.response_text;
  po.prompt_tokens = p.prompt_tokens;
  po.completion_tokens = p.completion_tokens;
  po.cached_tokens = p.cached_tokens;
  po.estimated = p.estimated;
  po.cost_nanos = p.cost_nanos;
  po.finish_reason = p.finish_reason;
  po.latency_ms = p.latency_ms;
  FillTurnResult(f, po, message_id, r);
}

UsageRecord AbandonedCharge(const PromptRecord& p, absl::Time now) {
  UsageRecord u;
  u.event_id = p.event_id;
  u.user_id = p.user_id;
  u.conversation_id = p.conversation_id;
  u.prompt_id = p.id;
  u.model = p.model;
  u.provider_model = p.provider_model;
  u.prompt_tokens = p.context_tokens;
  u.prices = p.prices;
  u.cost_nanos = CostNanos(u.prompt_tokens, 0, 0, p.prices);
  u.estimated = true;
  u.outcome = UsageRecord::Outcome::kFailed;
  u.occurred_at = now;
  return u;
}

}  // namespace aichat::agent
