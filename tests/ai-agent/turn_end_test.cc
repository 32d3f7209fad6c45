// The end of a turn as a pure function: outcome, charge, answer and client status
// from what the provider did.
#include "services/ai-agent/turn_end.h"

#include <gtest/gtest.h>

namespace aichat::agent {
namespace {

constexpr Prices kPrices{150000, 75000, 600000};

TurnFacts Facts() {
  TurnFacts f;
  f.user_id = 7;
  f.conversation_id = 3;
  f.prompt_id = 11;
  f.user_message_id = 21;
  f.replaces_message_id = 20;
  f.event_id = "turn-x";
  f.model = "fast";
  f.provider_model = "gpt-4o-mini";
  f.prices = kPrices;
  f.started_at = absl::FromUnixSeconds(1000);
  return f;
}

LlmOutcome Completed() {
  LlmOutcome o;
  o.http_status = 200;
  o.content = "hello there";
  o.finish_reason = "stop";
  o.provider_model = "gpt-4o-mini-2024";
  o.usage = {100, 20, 40, false};
  o.delivered_any = true;
  o.time_to_first_token = absl::Milliseconds(30);
  return o;
}

TEST(ConcludeTurnTest, ACompletedAnswerIsSavedChargedAndReplacesTheOldOne) {
  TurnEnd end = ConcludeTurn(Facts(), Completed(), absl::FromUnixSeconds(1002));
  EXPECT_TRUE(end.status.ok());
  EXPECT_FALSE(end.release_reservation);
  EXPECT_EQ(end.outcome.status, PromptStatus::kCompleted);
  EXPECT_EQ(end.outcome.latency_ms, 2000);
  EXPECT_EQ(end.outcome.ttft_ms, 30);
  EXPECT_TRUE(end.outcome.answer_pending);
  // (60 uncached * 0.15 + 40 cached * 0.075 + 20 * 0.60) USD/M = 24,000 nanos.
  EXPECT_EQ(end.outcome.cost_nanos, 24000);
  ASSERT_TRUE(end.usage.has_value());
  EXPECT_EQ(end.usage->cost_nanos, 24000);
  EXPECT_EQ(end.usage->event_id, "turn-x");
  EXPECT_EQ(end.usage->outcome, UsageRecord::Outcome::kCompleted);
  EXPECT_EQ(end.usage->provider_model, "gpt-4o-mini");  // priced by what we asked for
  ASSERT_TRUE(end.answer.has_value());
  EXPECT_EQ(end.answer->content, "hello there");
  EXPECT_EQ(end.answer->token_count, 20);
  EXPECT_EQ(end.answer->replaces_message_id, 20);
  EXPECT_EQ(end.answer->prompt_id, 11);
}

TEST(ConcludeTurnTest, AnErrorAnswerCostsNothingAndReleasesTheReservation) {
  LlmOutcome o;
  o.status = absl::ResourceExhaustedError("HTTP 429");
  o.kind = LlmErrorKind::kRateLimited;
  o.http_status = 429;
  TurnEnd end = ConcludeTurn(Facts(), o, absl::FromUnixSeconds(1001));
  EXPECT_EQ(end.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(end.status.message(), "provider: HTTP 429");
  EXPECT_TRUE(end.release_reservation);
  EXPECT_EQ(end.outcome.status, PromptStatus::kFailed);
  EXPECT_EQ(end.outcome.cost_nanos, 0);
  EXPECT_FALSE(end.usage.has_value());
  EXPECT_FALSE(end.answer.has_value());
}

TEST(ConcludeTurnTest, AStreamCutAfterItBeganIsChargedAndKeptButReplacesNothing) {
  LlmOutcome o = Completed();
  o.status = absl::UnavailableError("stream ended early");
  o.kind = LlmErrorKind::kTruncated;
  o.content = "hello";
  o.usage = {100, 2, 0, true};
  TurnEnd end = ConcludeTurn(Facts(), o, absl::FromUnixSeconds(1001));
  EXPECT_EQ(end.outcome.status, PromptStatus::kFailed);
  EXPECT_TRUE(end.outcome.estimated);
  ASSERT_TRUE(end.usage.has_value());
  EXPECT_EQ(end.usage->outcome, UsageRecord::Outcome::kFailed);
  EXPECT_TRUE(end.usage->estimated);
  ASSERT_TRUE(end.answer.has_value());
  EXPECT_EQ(end.answer->replaces_message_id, 0);  // a partial answer replaces nothing
}

TEST(ConcludeTurnTest, ACancelledTurnIsCancelledAndChargedForWhatArrived) {
  LlmOutcome o = Completed();
  o.status = absl::CancelledError("cancelled");
  o.kind = LlmErrorKind::kCancelled;
  TurnEnd end = ConcludeTurn(Facts(), o, absl::FromUnixSeconds(1001));
  EXPECT_EQ(end.outcome.status, PromptStatus::kCancelled);
  EXPECT_EQ(end.usage->outcome, UsageRecord::Outcome::kCancelled);
  EXPECT_FALSE(end.release_reservation);
}

TEST(ConcludeTurnTest, AnAcceptedRequestWithNoTextStillCostsItsPrompt) {
  LlmOutcome o;
  o.status = absl::UnavailableError("stream ended early");
  o.kind = LlmErrorKind::kTruncated;
  o.http_status = 200;  // the provider read the prompt
  o.usage = {50, 0, 0, true};
  TurnEnd end = ConcludeTurn(Facts(), o, absl::FromUnixSeconds(1001));
  EXPECT_FALSE(end.release_reservation);
  ASSERT_TRUE(end.usage.has_value());
  EXPECT_EQ(end.usage->cost_nanos, CostNanos(50, 0, 0, kPrices));
  EXPECT_FALSE(end.answer.has_value());
  EXPECT_FALSE(end.outcome.answer_pending);
}

TEST(ConcludeTurnTest, CachedTokensNeverExceedThePrompt) {
  LlmOutcome o = Completed();
  o.usage = {10, 5, 50, false};
  TurnEnd end = ConcludeTurn(Facts(), o, absl::FromUnixSeconds(1001));
  EXPECT_EQ(end.outcome.cached_tokens, 10);
  EXPECT_EQ(end.outcome.cost_nanos, CostNanos(10, 10, 5, kPrices));
}

TEST(ConcludeTurnTest, TheResultCarriesTheSavedMessage) {
  TurnFacts f = Facts();
  TurnEnd end = ConcludeTurn(f, Completed(), absl::FromUnixSeconds(1001));
  v1::TurnResult r;
  FillTurnResult(f, end.outcome, 99, &r);
  EXPECT_EQ(r.prompt_id(), 11);
  EXPECT_EQ(r.user_message_id(), 21);
  EXPECT_EQ(r.response_message_id(), 99);
  EXPECT_EQ(r.text(), "hello there");
  EXPECT_EQ(r.usage().total_tokens(), 120);
  EXPECT_EQ(r.cost_nanos(), 24000);
  EXPECT_EQ(r.model(), "fast");
}

TEST(AbandonedChargeTest, ThePromptThatWasSentIsChargedAsAnEstimate) {
  PromptRecord p;
  p.id = 5;
  p.user_id = 7;
  p.conversation_id = 3;
  p.event_id = "turn-y";
  p.model = "fast";
  p.provider_model = "gpt-4o-mini";
  p.prices = kPrices;
  p.context_tokens = 1000;
  UsageRecord u = AbandonedCharge(p, absl::FromUnixSeconds(5));
  EXPECT_EQ(u.event_id, "turn-y");
  EXPECT_EQ(u.prompt_tokens, 1000);
  EXPECT_EQ(u.completion_tokens, 0);
  EXPECT_EQ(u.cost_nanos, 150000);
  EXPECT_TRUE(u.estimated);
  EXPECT_EQ(u.outcome, UsageRecord::Outcome::kFailed);
}

}  // namespace
}  // namespace aichat::agent
