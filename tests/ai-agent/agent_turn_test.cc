// A chat turn end to end: real conversation and usage services, real databases,
// the fake provider over TLS. Costs are checked to the nano against the fake's
// deterministic token counts (tests/fakes/fake_llm_server.h).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/money.h"
#include "tests/ai-agent/agent_suite.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;
using testing::Authorize;

// gpt-4o-mini, the seeded default: USD 0.15 / 0.075 / 0.60 per 1M tokens.
constexpr Prices kMini{150000, 75000, 600000};

// The fake's answer: `n` tokens cycling through the words of the last user message.
std::string FakeAnswer(const std::vector<std::string>& words, int n = 8) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&out, words[i % words.size()], i + 1 < n ? " " : "");
  }
  return out;
}

class AgentTurnTest : public AgentSuite {
 protected:
  grpc::Status Send(int64_t user, int64_t conversation, const std::string& content,
                    v1::TurnResult* result, const std::string& key = "",
                    absl::Duration deadline = absl::Seconds(20)) {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(user));
    testing::SetDeadline(ctx, deadline);
    v1::SendMessageRequest req;
    req.set_conversation_id(conversation);
    req.set_content(content);
    req.set_idempotency_key(key);
    return agent_->SendMessage(&ctx, req, result);
  }

  v1::Prompt GetPrompt(int64_t user, int64_t id) {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(user));
    v1::GetPromptRequest req;
    req.set_prompt_id(id);
    v1::Prompt p;
    EXPECT_TRUE(agent_->GetPrompt(&ctx, req, &p).ok());
    return p;
  }

  std::vector<conversation::v1::Message> Messages(int64_t user, int64_t conversation) {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(user));
    conversation::v1::ListMessagesRequest req;
    req.set_conversation_id(conversation);
    req.set_page_size(500);
    conversation::v1::ListMessagesResponse resp;
    EXPECT_TRUE(conversations_->ListMessages(&ctx, req, &resp).ok());
    return {resp.messages().begin(), resp.messages().end()};
  }

  // Delivers the outbox; returns the ledger's total cost for the user.
  int64_t Ledger(int64_t user) {
    while (true) {
      auto n = outbox_->PublishOnce();
      EXPECT_TRUE(n.ok());
      if (!n.ok() || *n == 0) break;
    }
    return Count(*usage_pool_,
                 "SELECT COALESCE(sum(cost_nanos), 0) FROM usage_logs WHERE user_id = $1", {user});
  }

  // The latest prompt row of the conversation.
  PromptRecord LastPrompt(int64_t user, int64_t conversation) {
    auto list = agent_store_->ListPrompts(user, conversation, 0, 1);
    EXPECT_TRUE(list.ok() && !list->empty());
    return list->front();
  }
};

TEST_F(AgentTurnTest, UnaryTurnSavesEverythingAndChargesExactly) {
  int64_t conv = NewConversation(1);
  v1::TurnResult r;
  auto st = Send(1, conv, "hello world", &r);
  ASSERT_TRUE(st.ok()) << st.error_message();

  EXPECT_EQ(r.text(), FakeAnswer({"hello", "world"}));
  EXPECT_EQ(r.model(), "gpt-4o-mini");
  EXPECT_EQ(r.finish_reason(), "stop");
  // prompt_tokens = 3 + (4 + 2 words); completion = 8 chunks.
  EXPECT_EQ(r.usage().prompt_tokens(), 9);
  EXPECT_EQ(r.usage().completion_tokens(), 8);
  EXPECT_FALSE(r.usage().estimated());
  const int64_t cost = CostNanos(9, 0, 8, kMini);
  EXPECT_EQ(cost, 6150);
  EXPECT_EQ(r.cost_nanos(), cost);

  // The exact request the provider received.
  auto bodies = ProviderBodies();
  ASSERT_EQ(bodies.size(), 1u);
  json::object body = json::parse(bodies[0]).as_object();
  EXPECT_EQ(body["model"].as_string(), "gpt-4o-mini");
  EXPECT_TRUE(body["stream"].as_bool());
  EXPECT_TRUE(body["stream_options"].as_object()["include_usage"].as_bool());
  EXPECT_EQ(body["max_completion_tokens"].to_number<int64_t>(), 16384);
  auto& msgs = body["messages"].as_array();
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].as_object()["role"].as_string(), "user");
  EXPECT_EQ(msgs[0].as_object()["content"].as_string(), "hello world");
  EXPECT_EQ(fake_->Requests()[0].authorization, "matched");

  // The conversation holds both messages, tied to the prompt.
  auto messages = Messages(1, conv);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].id(), r.user_message_id());
  EXPECT_EQ(messages[0].content(), "hello world");
  EXPECT_EQ(messages[0].prompt_id(), r.prompt_id());
  EXPECT_EQ(messages[1].id(), r.response_message_id());
  EXPECT_EQ(messages[1].role(), conversation::v1::MESSAGE_ROLE_ASSISTANT);
  EXPECT_EQ(messages[1].content(), r.text());
  EXPECT_EQ(messages[1].token_count(), 8);

  // The usage event is in the outbox (same transaction as the prompt's outcome),
  // then in the ledger exactly once.
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM usage_outbox"), 1);
  EXPECT_EQ(Ledger(1), cost);

  // The prompt row, with the price snapshot (the answer's message id is recorded
  // with the after-turn bookkeeping that Ledger flushed).
  v1::Prompt p = GetPrompt(1, r.prompt_id());
  EXPECT_EQ(p.status(), v1::PROMPT_STATUS_COMPLETED);
  EXPECT_EQ(p.cost_nanos(), cost);
  EXPECT_EQ(p.input_price_micros_per_mtok(), 150000);
  EXPECT_EQ(p.output_price_micros_per_mtok(), 600000);
  EXPECT_EQ(p.user_message_id(), r.user_message_id());
  EXPECT_EQ(p.response_message_id(), r.response_message_id());
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM usage_outbox"), 0);
  EXPECT_EQ(
      Count(*usage_pool_, "SELECT count(*) FROM usage_logs WHERE prompt_id = $1", {r.prompt_id()}),
      1);
  // The reservation was settled by the event.
  grpc::ClientContext bctx;
  Authorize(bctx, UserToken(1));
  usage::v1::Budget budget;
  ASSERT_TRUE(usage_->GetBudget(&bctx, usage::v1::GetBudgetRequest(), &budget).ok());
  EXPECT_EQ(budget.reserved_nanos(), 0);
  EXPECT_EQ(budget.spent_nanos(), cost);
}

TEST_F(AgentTurnTest, HistoryIsSentAsContext) {
  int64_t conv = NewConversation(1, "be brief");
  v1::TurnResult first, second;
  ASSERT_TRUE(Send(1, conv, "one two", &first).ok());
  ASSERT_TRUE(Send(1, conv, "three", &second).ok());
  auto bodies = ProviderBodies();
  ASSERT_EQ(bodies.size(), 2u);
  json::value body = json::parse(bodies[1]);
  auto& msgs = body.as_object()["messages"].as_array();
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[0].as_object()["role"].as_string(), "system");
  EXPECT_EQ(msgs[0].as_object()["content"].as_string(), "be brief");
  EXPECT_EQ(msgs[1].as_object()["content"].as_string(), "one two");
  EXPECT_EQ(msgs[2].as_object()["role"].as_string(), "assistant");
  EXPECT_EQ(msgs[2].as_object()["content"].as_string(), first.text());
  EXPECT_EQ(msgs[3].as_object()["content"].as_string(), "three");
  // 3 + (4+2) + (4+2) + (4+8) + (4+1) = 32 prompt tokens.
  EXPECT_EQ(second.usage().prompt_tokens(), 32);
  EXPECT_EQ(second.cost_nanos(), CostNanos(32, 0, 8, kMini));
}

TEST_F(AgentTurnTest, StreamRelaysDeltasBeforeTheProviderFinishes) {
  int64_t conv = NewConversation(1);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  testing::SetDeadline(ctx, absl::Seconds(20));
  v1::SendMessageRequest req;
  req.set_conversation_id(conv);
  req.set_content("alpha beta [[fake:hold_last]]");
  auto reader = agent_->StreamMessage(&ctx, req);
  v1::TurnEvent e;
  ASSERT_TRUE(reader->Read(&e));
  ASSERT_TRUE(e.has_started());
  EXPECT_GT(e.started().prompt_id(), 0);
  EXPECT_GT(e.started().user_message_id(), 0);
  std::string text;
  // The provider holds its last chunk: these deltas can only be ours if relayed at once.
  while (text.size() < std::string("alpha beta alpha beta alpha beta alpha").size()) {
    ASSERT_TRUE(reader->Read(&e));
    ASSERT_TRUE(e.has_delta()) << e.DebugString();
    text += e.delta().text();
  }
  EXPECT_EQ(fake_->Stats().held, 1);
  fake_->Release();
  v1::TurnResult result;
  while (reader->Read(&e)) {
    if (e.has_delta()) text += e.delta().text();
    if (e.has_completed()) result = e.completed();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(text, FakeAnswer({"alpha", "beta"}));
  EXPECT_EQ(result.text(), text);
  EXPECT_EQ(result.usage().completion_tokens(), 8);
}

TEST_F(AgentTurnTest, IdempotencyKeyGivesOneCallOneChargeSameAnswer) {
  int64_t conv = NewConversation(1);
  v1::TurnResult a, b;
  ASSERT_TRUE(Send(1, conv, "same please", &a, "key-1").ok());
  ASSERT_TRUE(Send(1, conv, "same please", &b, "key-1").ok());
  EXPECT_EQ(a.prompt_id(), b.prompt_id());
  EXPECT_EQ(a.text(), b.text());
  EXPECT_EQ(a.cost_nanos(), b.cost_nanos());
  EXPECT_EQ(ProviderBodies().size(), 1u);

  // Concurrently: both callers wait for the one turn.
  fake_->Reset();
  constexpr int kCallers = 4;
  std::vector<v1::TurnResult> results(kCallers);
  std::vector<grpc::Status> statuses(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] {
      statuses[i] = Send(1, conv, "slow one [[fake:delay_ms=20]]", &results[i], "key-2");
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCallers; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    EXPECT_EQ(results[i].prompt_id(), results[0].prompt_id());
    EXPECT_EQ(results[i].text(), results[0].text());
  }
  EXPECT_EQ(ProviderBodies().size(), 1u);
  EXPECT_EQ(Ledger(1), a.cost_nanos() + results[0].cost_nanos());
  // One user message per turn, not per call.
  EXPECT_EQ(Messages(1, conv).size(), 4u);
}

TEST_F(AgentTurnTest, AnotherUsersConversationIsNotFound) {
  int64_t conv = NewConversation(1);
  v1::TurnResult r;
  auto st = Send(2, conv, "let me in", &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(ProviderBodies().empty());
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM ai_prompts"), 0);
}

TEST_F(AgentTurnTest, BadInputIsRejectedBeforeAnythingIsWritten) {
  int64_t conv = NewConversation(1);
  struct Case {
    std::string content, model;
    int max_output;
    std::string field;
  } cases[] = {
      {"", "", 0, "content"},
      {std::string("a\0b", 3), "", 0, "content"},
      {"hi", "no-such-model", 0, "model"},
      {"hi", "", 1000000, "max_output_tokens"},
      {std::string(300 * 1024, 'x'), "", 0, "content"},
  };
  for (const auto& c : cases) {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    v1::SendMessageRequest req;
    req.set_conversation_id(conv);
    req.set_content(c.content);
    if (!c.model.empty()) req.set_model(c.model);
    if (c.max_output > 0) req.set_max_output_tokens(c.max_output);
    v1::TurnResult r;
    auto st = agent_->SendMessage(&ctx, req, &r);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(st.error_message().find(c.field), std::string::npos) << st.error_message();
  }
  // Invalid UTF-8 never reaches a handler (protobuf refuses to parse it); unary and
  // streaming callers alike read INVALID_ARGUMENT naming the field.
  v1::SendMessageRequest bad;
  bad.set_conversation_id(conv);
  bad.set_content("caf\xc3");  // a multi-byte character cut short
  {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    v1::TurnResult r;
    auto st = agent_->SendMessage(&ctx, bad, &r);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message().rfind("content must be valid UTF-8", 0), 0u) << st.error_message();
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    auto reader = agent_->StreamMessage(&ctx, bad);
    v1::TurnEvent ev;
    EXPECT_FALSE(reader->Read(&ev));
    auto st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(st.error_message().rfind("content must be valid UTF-8", 0), 0u) << st.error_message();
  }
  EXPECT_TRUE(ProviderBodies().empty());
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM ai_prompts"), 0);
  EXPECT_TRUE(Messages(1, conv).empty());
}

TEST_F(AgentTurnTest, BudgetExhaustedRefusesWithoutCallingTheProvider) {
  int64_t conv = NewConversation(1);
  {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    usage::v1::SetBudgetRequest req;
    req.set_user_id(1);
    req.set_monthly_limit_nanos(1000);  // far below one turn's worst case
    usage::v1::Budget b;
    ASSERT_TRUE(usage_->SetBudget(&ctx, req, &b).ok());
  }
  v1::TurnResult r;
  auto st = Send(1, conv, "expensive", &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("budget"), std::string::npos) << st.error_message();
  EXPECT_TRUE(ProviderBodies().empty());
  PromptRecord p = LastPrompt(1, conv);
  EXPECT_EQ(p.status, PromptStatus::kBudgetExceeded);
  EXPECT_TRUE(Messages(1, conv).empty());
}

TEST_F(AgentTurnTest, RateLimitRefusesTheThirdTurn) {
  int64_t conv = NewConversation(1);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1, /*rpm=*/2));
    v1::SendMessageRequest req;
    req.set_conversation_id(conv);
    req.set_content("ping");
    v1::TurnResult r;
    auto st = agent_->SendMessage(&ctx, req, &r);
    if (i < 2) {
      EXPECT_TRUE(st.ok()) << st.error_message();
    } else {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      EXPECT_EQ(LastPrompt(1, conv).status, PromptStatus::kRateLimited);
    }
  }
  EXPECT_EQ(ProviderBodies().size(), 2u);
}

struct FailureCase {
  const char* name;
  const char* directive;
  grpc::StatusCode code;
  PromptStatus status;
  bool charged;
};

class AgentFailureTest : public AgentTurnTest, public ::testing::WithParamInterface<FailureCase> {};

TEST_P(AgentFailureTest, LeavesPromptConversationAndLedgerConsistent) {
  const FailureCase& c = GetParam();
  int64_t conv = NewConversation(1);
  v1::TurnResult r;
  auto st = Send(1, conv, absl::StrCat("some words here ", c.directive), &r);
  EXPECT_EQ(st.error_code(), c.code) << st.error_message();
  PromptRecord p = LastPrompt(1, conv);
  EXPECT_EQ(p.status, c.status) << PromptStatusName(p.status);
  EXPECT_FALSE(p.error.empty());
  auto messages = Messages(1, conv);
  ASSERT_GE(messages.size(), 1u);  // the user message was saved
  int64_t ledger = Ledger(1);
  if (c.charged) {
    // Partial text kept and charged.
    ASSERT_EQ(messages.size(), 2u);
    EXPECT_FALSE(messages[1].content().empty());
    EXPECT_EQ(p.response_text, messages[1].content());
    EXPECT_GT(p.cost_nanos, 0);
    EXPECT_EQ(ledger, p.cost_nanos);
  } else {
    EXPECT_EQ(messages.size(), 1u);
    EXPECT_EQ(p.cost_nanos, 0);
    EXPECT_EQ(ledger, 0);
  }
  // Nothing stays reserved.
  grpc::ClientContext bctx;
  Authorize(bctx, UserToken(1));
  usage::v1::Budget budget;
  ASSERT_TRUE(usage_->GetBudget(&bctx, usage::v1::GetBudgetRequest(), &budget).ok());
  EXPECT_EQ(budget.reserved_nanos(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Paths, AgentFailureTest,
    ::testing::Values(FailureCase{"RateLimited", "[[fake:status=429 retry_after=0]]",
                                  grpc::StatusCode::RESOURCE_EXHAUSTED, PromptStatus::kFailed,
                                  false},
                      FailureCase{"ServerError", "[[fake:status=503]]",
                                  grpc::StatusCode::UNAVAILABLE, PromptStatus::kFailed, false},
                      FailureCase{"ContextTooLong",
                                  "[[fake:status=400 code=context_length_exceeded]]",
                                  grpc::StatusCode::INVALID_ARGUMENT, PromptStatus::kFailed, false},
                      FailureCase{"DroppedMidStream", "[[fake:drop_after=3]]",
                                  grpc::StatusCode::UNAVAILABLE, PromptStatus::kFailed, true},
                      FailureCase{"Stalled", "[[fake:stall_after=2]]",
                                  grpc::StatusCode::UNAVAILABLE, PromptStatus::kFailed, true}),
    [](const ::testing::TestParamInfo<FailureCase>& info) { return info.param.name; });

TEST_F(AgentTurnTest, StreamCutMidAnswerEndsWithAnErrorNotOk) {
  int64_t conv = NewConversation(1);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  testing::SetDeadline(ctx, absl::Seconds(20));
  v1::SendMessageRequest req;
  req.set_conversation_id(conv);
  req.set_content("cut me [[fake:drop_after=3]]");
  auto reader = agent_->StreamMessage(&ctx, req);
  v1::TurnEvent e;
  std::string text;
  bool completed = false;
  while (reader->Read(&e)) {
    if (e.has_delta()) text += e.delta().text();
    completed |= e.has_completed();
  }
  auto st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(completed);
  EXPECT_EQ(text, "cut me cut ");
  EXPECT_EQ(LastPrompt(1, conv).response_text, text);
}

TEST_F(AgentTurnTest, ClientCancelSavesThePartialAnswerAndCharges) {
  int64_t conv = NewConversation(1);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  v1::SendMessageRequest req;
  req.set_conversation_id(conv);
  req.set_content("long answer [[fake:tokens=200 delay_ms=20]]");
  auto reader = agent_->StreamMessage(&ctx, req);
  v1::TurnEvent e;
  ASSERT_TRUE(reader->Read(&e));  // started
  ASSERT_TRUE(reader->Read(&e));  // first delta
  ASSERT_TRUE(e.has_delta());
  ctx.TryCancel();
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The provider sees the disconnect; the turn ends CANCELLED with what arrived.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  PromptRecord p;
  do {
    p = LastPrompt(1, conv);
    if (IsTerminal(p.status)) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  EXPECT_EQ(p.status, PromptStatus::kCancelled);
  EXPECT_FALSE(p.response_text.empty());
  EXPECT_LT(p.completion_tokens, 200);
  EXPECT_GT(p.cost_nanos, 0);
  EXPECT_GE(fake_->Stats().disconnects_mid_stream, 1);
  EXPECT_EQ(Ledger(1), p.cost_nanos);
  auto messages = Messages(1, conv);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[1].content(), p.response_text);
}

TEST_F(AgentTurnTest, DeadlineExceeded) {
  int64_t conv = NewConversation(1);
  v1::TurnResult r;
  auto st = Send(1, conv, "slow [[fake:slow_start_ms=3000]]", &r, "", absl::Milliseconds(800));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  PromptRecord p;
  do {
    p = LastPrompt(1, conv);
    if (IsTerminal(p.status)) break;
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  EXPECT_TRUE(p.status == PromptStatus::kFailed || p.status == PromptStatus::kCancelled)
      << PromptStatusName(p.status);
}

TEST_F(AgentTurnTest, ConversationServiceDownIsUnavailable) {
  int64_t conv = NewConversation(1);
  StopConversation();
  v1::TurnResult r;
  auto st = Send(1, conv, "anyone?", &r);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("conversation"), std::string::npos);
  EXPECT_TRUE(ProviderBodies().empty());
}

TEST_F(AgentTurnTest, UsageDownDuringHundredTurnsLosesNothing) {
  int64_t conv = NewConversation(1);
  StopUsage();
  int64_t expected = 0;
  for (int i = 0; i < 100; ++i) {
    v1::TurnResult r;
    auto st = Send(1, conv, absl::StrCat("turn ", i), &r);
    ASSERT_TRUE(st.ok()) << i << ": " << st.error_message();
    expected += r.cost_nanos();
  }
  // Nothing could be delivered; nothing is lost.
  auto n = outbox_->PublishOnce();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM usage_outbox"), 100);
  StartUsage();
  // Leases of the failed attempts expire quickly in this setup (backoff <= 5 ms).
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Count(*agent_pool_, "SELECT count(*) FROM usage_outbox") > 0 && absl::Now() < deadline) {
    (void)outbox_->PublishOnce();
  }
  EXPECT_EQ(Count(*agent_pool_, "SELECT count(*) FROM usage_outbox"), 0);
  EXPECT_EQ(Count(*usage_pool_, "SELECT count(*) FROM usage_logs WHERE user_id = 1"), 100);
  EXPECT_EQ(Ledger(1), expected);
}

TEST_F(AgentTurnTest, RegenerateReplacesTheAnswerInLaterContext) {
  int64_t conv = NewConversation(1);
  v1::TurnResult first;
  ASSERT_TRUE(Send(1, conv, "red green", &first).ok());
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  testing::SetDeadline(ctx, absl::Seconds(20));
  v1::RegenerateResponseRequest req;
  req.set_conversation_id(conv);
  auto reader = agent_->RegenerateResponse(&ctx, req);
  v1::TurnEvent e;
  v1::TurnResult regen;
  while (reader->Read(&e)) {
    if (e.has_completed()) regen = e.completed();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(regen.user_message_id(), first.user_message_id());
  EXPECT_NE(regen.response_message_id(), first.response_message_id());
  // The regeneration was asked without the old answer.
  auto bodies = ProviderBodies();
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(json::parse(bodies[1]).as_object()["messages"].as_array().size(), 1u);
  // The next turn sees the new answer only.
  v1::TurnResult next;
  ASSERT_TRUE(Send(1, conv, "blue", &next).ok());
  json::value body = json::parse(ProviderBodies()[2]);
  auto& msgs = body.as_object()["messages"].as_array();
  ASSERT_EQ(msgs.size(), 3u);
  auto messages = Messages(1, conv);
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_TRUE(messages[1].superseded());
  EXPECT_EQ(messages[2].id(), regen.response_message_id());
}

TEST_F(AgentTurnTest, ModelsAreAdminManagedAndAliasesArePricedAsTheRealModel) {
  grpc::ClientContext lctx;
  Authorize(lctx, UserToken(1));
  v1::ListModelsResponse list;
  ASSERT_TRUE(agent_->ListModels(&lctx, v1::ListModelsRequest(), &list).ok());
  int defaults = 0;
  for (const auto& m : list.models()) {
    defaults += m.is_default();
    // Where keys go is shown to admins only.
    EXPECT_TRUE(m.api_key_env().empty()) << m.name();
    EXPECT_TRUE(m.base_url().empty()) << m.name();
  }
  EXPECT_EQ(defaults, 1);
  EXPECT_GE(list.models_size(), 5);
  {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::ListModelsResponse admin_list;
    ASSERT_TRUE(agent_->ListModels(&ctx, v1::ListModelsRequest(), &admin_list).ok());
    EXPECT_EQ(admin_list.models(0).api_key_env(), "OPENAI_API_KEY");
  }

  v1::UpsertModelRequest up;
  auto* m = up.mutable_model();
  m->set_name("fast");
  m->set_provider_model("gpt-4o-mini");
  m->set_input_price_micros_per_mtok(1);  // the alias's own prices are not used
  m->set_output_price_micros_per_mtok(1);
  m->set_context_window(128000);
  m->set_max_output_tokens(1000);
  m->set_enabled(true);
  {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    v1::ModelConfig out;
    EXPECT_EQ(agent_->UpsertModel(&ctx, up, &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::ModelConfig out;
    ASSERT_TRUE(agent_->UpsertModel(&ctx, up, &out).ok());
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::UpsertModelRequest bad = up;
    bad.mutable_model()->set_api_key_env("lower case");
    v1::ModelConfig out;
    auto st = agent_->UpsertModel(&ctx, bad, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("api_key_env"), std::string::npos);
  }
  // An admin cannot route another secret of the agent, or a key, to a host of their choosing.
  for (auto [env, url, field] :
       {std::tuple{"AICHAT_SERVICE_TOKEN", "https://attacker.example/v1", "api_key_env"},
        std::tuple{"OPENAI_API_KEY", "http://attacker.example/v1", "base_url"}}) {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::UpsertModelRequest bad = up;
    bad.mutable_model()->set_api_key_env(env);
    bad.mutable_model()->set_base_url(url);
    v1::ModelConfig out;
    auto st = agent_->UpsertModel(&ctx, bad, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << env;
    EXPECT_NE(st.error_message().find(field), std::string::npos) << st.error_message();
  }
  int64_t conv = NewConversation(1);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  v1::SendMessageRequest req;
  req.set_conversation_id(conv);
  req.set_content("hello world");
  req.set_model("fast");
  v1::TurnResult r;
  ASSERT_TRUE(agent_->SendMessage(&ctx, req, &r).ok());
  EXPECT_EQ(r.model(), "fast");
  EXPECT_EQ(r.provider_model(), "gpt-4o-mini");
  EXPECT_EQ(r.cost_nanos(), CostNanos(9, 0, 8, kMini));
  EXPECT_EQ(
      json::parse(ProviderBodies()[0]).as_object()["max_completion_tokens"].to_number<int64_t>(),
      1000);
}

TEST_F(AgentTurnTest, WhenEveryDeploymentIsDownTheFallbackAnswersAndIsChargedItsOwnPrice) {
  auto second = fakes::FakeLlmServer::Start({.tls = false});
  ASSERT_TRUE(second.ok()) << second.status();
  auto upsert = [&](v1::ModelConfig m) {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::UpsertModelRequest req;
    *req.mutable_model() = std::move(m);
    v1::ModelConfig out;
    return agent_->UpsertModel(&ctx, req, &out);
  };
  // "pricey": three times gpt-4o-mini's prices, served by the second provider.
  v1::ModelConfig pricey;
  pricey.set_name("pricey");
  pricey.set_provider_model("pricey-model");
  pricey.set_base_url((*second)->base_url());
  pricey.set_input_price_micros_per_mtok(3 * kMini.input_micros_per_mtok);
  pricey.set_cached_input_price_micros_per_mtok(3 * kMini.cached_input_micros_per_mtok);
  pricey.set_output_price_micros_per_mtok(3 * kMini.output_micros_per_mtok);
  pricey.set_context_window(128000);
  pricey.set_max_output_tokens(1000);
  pricey.set_enabled(true);
  ASSERT_TRUE(upsert(pricey).ok());
  // "duo": gpt-4o-mini on both providers, falling back to "pricey".
  v1::ModelConfig duo = pricey;
  duo.set_name("duo");
  duo.set_provider_model("gpt-4o-mini");
  duo.clear_base_url();
  auto* a = duo.add_deployments();
  a->set_name("tls");
  a->set_base_url(fake_->base_url());
  auto* b = duo.add_deployments();
  b->set_name("plain");
  b->set_base_url((*second)->base_url());
  duo.add_fallbacks("missing");
  auto bad = upsert(duo);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("model.fallbacks[0]"), std::string::npos);
  duo.set_fallbacks(0, "pricey");
  ASSERT_TRUE(upsert(duo).ok());
  // A cycle is refused: pricey -> duo -> pricey.
  pricey.add_fallbacks("duo");
  auto cycle = upsert(pricey);
  EXPECT_EQ(cycle.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(cycle.error_message().find("cycle"), std::string::npos);

  // Both deployments of duo answer 503; the second provider then answers for pricey.
  fake_->Script({"status=503"});
  (*second)->Script({"status=503", ""});
  int64_t conv = NewConversation(1);
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(1));
  v1::SendMessageRequest req;
  req.set_conversation_id(conv);
  req.set_content("hello world");
  req.set_model("duo");
  v1::TurnResult r;
  auto st = agent_->SendMessage(&ctx, req, &r);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(r.model(), "pricey");
  const Prices tripled{3 * kMini.input_micros_per_mtok, 3 * kMini.cached_input_micros_per_mtok,
                       3 * kMini.output_micros_per_mtok};
  EXPECT_EQ(r.cost_nanos(), CostNanos(9, 0, 8, tripled));
  EXPECT_EQ(fake_->Requests().size(), 1u);
  EXPECT_EQ((*second)->Requests().size(), 2u);
  // The ledger charges what answered, to the nano, once.
  EXPECT_EQ(Ledger(1), r.cost_nanos());
  EXPECT_EQ(Count(*usage_pool_,
                  "SELECT count(*) FROM usage_logs WHERE model = 'pricey' AND "
                  "output_price_micros_per_mtok = $1",
                  {int64_t{3 * kMini.output_micros_per_mtok}}),
            1);
  v1::Prompt p = GetPrompt(1, r.prompt_id());
  EXPECT_EQ(p.model(), "pricey");
  EXPECT_EQ(p.output_price_micros_per_mtok(), 3 * kMini.output_micros_per_mtok);
  EXPECT_EQ(p.deployment(), "d1");
  // Admins see each deployment with this replica's view of it.
  grpc::ClientContext lctx;
  Authorize(lctx, AdminToken(99));
  v1::ListModelsResponse list;
  ASSERT_TRUE(agent_->ListModels(&lctx, v1::ListModelsRequest(), &list).ok());
  for (const auto& m : list.models()) {
    if (m.name() != "duo") continue;
    ASSERT_EQ(m.deployments_size(), 2);
    EXPECT_EQ(m.deployments(0).state().circuit(), "closed");
    EXPECT_EQ(m.deployments(0).state().consecutive_failures(), 1);
    EXPECT_EQ(m.fallbacks(0), "pricey");
  }
  (*second)->Stop();
}

TEST_F(AgentTurnTest, AnOpenCircuitWithNowhereElseToGoIsCalledAnyway) {
  // gpt-4o-mini has one deployment and no fallback: failures open its circuit, but
  // refusing every turn for 30 s would outlast the provider's blip.
  int64_t conv = NewConversation(1);
  const size_t before = fake_->Requests().size();
  for (int i = 0; i < 3; ++i) {
    v1::TurnResult r;
    EXPECT_EQ(Send(1, conv, "[[fake:status=503]] down", &r).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  auto circuit = [&] {
    grpc::ClientContext ctx;
    Authorize(ctx, AdminToken(99));
    v1::ListModelsResponse list;
    EXPECT_TRUE(agent_->ListModels(&ctx, v1::ListModelsRequest(), &list).ok());
    for (const auto& m : list.models()) {
      if (m.name() == "gpt-4o-mini" && m.deployments_size() == 1)
        return m.deployments(0).state().circuit();
    }
    return std::string("none");
  };
  EXPECT_EQ(circuit(), "open");
  v1::TurnResult r;
  auto st = Send(1, conv, "back again", &r);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(r.text(), FakeAnswer({"back", "again"}));
  EXPECT_GT(fake_->Requests().size(), before + 3);
  // The call that went through closed the circuit.
  EXPECT_EQ(circuit(), "closed");
}

TEST_F(AgentTurnTest, TheTurnsOfAStoppedReplicaAreFinishedByAnother) {
  int64_t conv = NewConversation(1);
  ASSERT_TRUE(agent_store_->RenewLease("gone", absl::Minutes(1)).ok());
  auto ids = agent_store_->ReservePromptIds(2);
  ASSERT_TRUE(ids.ok());
  auto prompt = [&](int64_t id) {
    NewPrompt p;
    p.id = id;
    p.user_id = 1;
    p.conversation_id = conv;
    p.event_id = absl::StrCat("turn-gone-", id);
    p.owner = "gone";
    p.model = "gpt-4o-mini";
    p.provider_model = "gpt-4o-mini";
    p.prices = kMini;
    p.context_window = 128000;
    p.max_output_tokens = 100;
    p.context_tokens = 1000;
    return p;
  };
  // One was streaming when its replica died; one had its whole answer, not yet saved.
  ASSERT_TRUE(agent_store_->InsertPrompt(prompt((*ids)[0])).ok());
  ASSERT_TRUE(agent_store_->InsertPrompt(prompt((*ids)[1])).ok());
  PromptOutcome done;
  done.response_text = "an answer that was delivered";
  done.answer_pending = true;
  done.prompt_tokens = 1000;
  done.completion_tokens = 5;
  done.cost_nanos = CostNanos(1000, 0, 5, kMini);
  ASSERT_TRUE(agent_store_->FinishPrompt((*ids)[1], done, std::nullopt, absl::Seconds(1)).ok());
  // While its lease holds, nobody touches them.
  auto none = janitor_->SweepOnce();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);
  ASSERT_TRUE(agent_store_->DropLease("gone").ok());
  auto adopted = janitor_->SweepOnce();
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ(*adopted, 2);

  // The running one: FAILED, charged its context as an estimate, once.
  auto failed = agent_store_->GetPrompt(1, (*ids)[0]);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->status, PromptStatus::kFailed);
  EXPECT_TRUE(failed->estimated);
  EXPECT_EQ(failed->cost_nanos, CostNanos(1000, 0, 0, kMini));
  EXPECT_EQ(Ledger(1), CostNanos(1000, 0, 0, kMini));
  // The delivered one: its answer written to the conversation from the prompt row.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline && Messages(1, conv).empty()) absl::SleepFor(absl::Milliseconds(5));
  (void)outbox_->PublishOnce();  // the bookkeeping: the answer is no longer pending
  auto saved = agent_store_->GetPrompt(1, (*ids)[1]);
  ASSERT_TRUE(saved.ok());
  EXPECT_EQ(saved->status, PromptStatus::kCompleted);
  EXPECT_FALSE(saved->answer_pending);
  auto messages = Messages(1, conv);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content(), "an answer that was delivered");
  EXPECT_EQ(messages[0].prompt_id(), (*ids)[1]);
  EXPECT_EQ(saved->response_message_id, messages[0].id());
  // Nothing is left for a second sweep.
  EXPECT_EQ(*janitor_->SweepOnce(), 0);
}

TEST_F(AgentTurnTest, TheApiKeyNeverReachesLogsOrDatabases) {
  testing::LogCapture logs;
  int64_t conv = NewConversation(1);
  v1::TurnResult r;
  ASSERT_TRUE(Send(1, conv, "secret test", &r).ok());
  auto st = Send(1, conv, "fail [[fake:status=401]]", &r);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.error_message().find(kApiKey), std::string::npos);
  Ledger(1);
  EXPECT_FALSE(logs.Contains(kApiKey));
  EXPECT_FALSE(logs.Contains("secret test"));  // message bodies are not logged either
  for (PgPool* pool : {agent_pool_.get(), conv_pool_.get(), usage_pool_.get()}) {
    // Every text column of every table, searched for the key.
    auto tables = pool->Exec(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying')");
    ASSERT_TRUE(tables.ok());
    for (int i = 0; i < tables->rows(); ++i) {
      std::string sql = absl::StrCat("SELECT count(*) FROM ", tables->String(i, 0), " WHERE ",
                                     tables->String(i, 1), " LIKE '%' || $1 || '%'");
      EXPECT_EQ(Count(*pool, sql, {std::string(kApiKey)}), 0)
          << tables->String(i, 0) << "." << tables->String(i, 1);
    }
  }
}

}  // namespace
}  // namespace aichat::agent

namespace aichat::agent {
namespace {

TEST_F(AgentTurnTest, PromptsAreListedNewestFirstAndOnlyForTheirOwner) {
  int64_t a = NewConversation(1);
  int64_t b = NewConversation(1);
  std::vector<int64_t> ids;
  for (int64_t conv : {a, b, a}) {
    v1::TurnResult r;
    ASSERT_TRUE(Send(1, conv, "listing", &r).ok());
    ids.push_back(r.prompt_id());
  }
  std::vector<int64_t> seen;
  std::string token;
  do {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    v1::ListPromptsRequest req;
    req.set_page_size(2);
    req.set_page_token(token);
    v1::ListPromptsResponse resp;
    ASSERT_TRUE(agent_->ListPrompts(&ctx, req, &resp).ok());
    for (const auto& p : resp.prompts()) seen.push_back(p.id());
    token = resp.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(seen, (std::vector<int64_t>{ids[2], ids[1], ids[0]}));
  {
    grpc::ClientContext ctx;
    Authorize(ctx, UserToken(1));
    v1::ListPromptsRequest req;
    req.set_conversation_id(a);
    v1::ListPromptsResponse resp;
    ASSERT_TRUE(agent_->ListPrompts(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.prompts_size(), 2);
  }
  // User 2 sees none of them.
  grpc::ClientContext ctx;
  Authorize(ctx, UserToken(2));
  v1::GetPromptRequest req;
  req.set_prompt_id(ids[0]);
  v1::Prompt p;
  EXPECT_EQ(agent_->GetPrompt(&ctx, req, &p).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext lctx;
  Authorize(lctx, UserToken(2));
  v1::ListPromptsResponse none;
  ASSERT_TRUE(agent_->ListPrompts(&lctx, v1::ListPromptsRequest(), &none).ok());
  EXPECT_EQ(none.prompts_size(), 0);
  // Without a token: UNAUTHENTICATED on every agent RPC.
  grpc::ClientContext anon;
  v1::TurnResult r;
  v1::SendMessageRequest sreq;
  sreq.set_conversation_id(a);
  sreq.set_content("x");
  EXPECT_EQ(agent_->SendMessage(&anon, sreq, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace aichat::agent
