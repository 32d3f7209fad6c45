// The Turn alone, driven by in-memory peers, an in-memory store and a scripted LLM
// client: every path of DESIGN.md section 3 in milliseconds. The same paths run
// against the real services and PostgreSQL in agent_turn_test.cc.
#include "services/ai-agent/turn.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "tests/ai-agent/turn_fakes.h"

namespace aichat::agent {
namespace {

using fakes::FakeConversation;
using fakes::FakeUsage;
using fakes::LlmScript;
using fakes::MemoryAgentStore;
using fakes::ScriptedLlm;

// USD 1 / 0.5 / 2 per million tokens: 10 in + 5 out = 20,000 nanos.
constexpr Prices kPrices{1000000, 500000, 2000000};
constexpr int64_t kCost = 20000;

ModelRecord Model(std::string name, int32_t window, int32_t max_output, bool is_default) {
  ModelRecord m;
  m.name = name;
  m.provider_model = name;
  m.prices = kPrices;
  m.context_window = window;
  m.max_output_tokens = max_output;
  m.is_default = is_default;
  return m;
}

// What a client of the turn saw.
class Sink final : public TurnSink {
 public:
  void OnStarted(const v1::Started& started) override {
    absl::MutexLock lock(&mu_);
    started_ = started;
  }
  void OnDelta(std::string_view text) override {
    absl::MutexLock lock(&mu_);
    text_.append(text);
    ++deltas_;
  }
  void OnFinished(const grpc::Status& status, const v1::TurnResult* result) override {
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
      if (result != nullptr) result_ = *result;
    }
    done_.Notify();
  }
  bool Wait() { return done_.WaitForNotificationWithTimeout(absl::Seconds(10)); }
  int deltas() {
    absl::MutexLock lock(&mu_);
    return deltas_;
  }

  absl::Mutex mu_;
  std::optional<v1::Started> started_;
  std::string text_;
  int deltas_ = 0;
  grpc::Status status_;
  std::optional<v1::TurnResult> result_;
  absl::Notification done_;
};

class TurnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // "routed" is served from two places and falls back to "pricey" (three times the
    // price); "capped" sends at most 3 calls at once to its first deployment.
    ModelRecord routed = Model("routed", 1000, 100, false);
    routed.deployments = {{"east", "https://east.test/v1", "", "", 1, 0},
                          {"west", "https://west.test/v1", "", "", 1, 0}};
    routed.fallbacks = {"pricey"};
    ModelRecord pricey = Model("pricey", 1000, 100, false);
    pricey.base_url = "https://pricey.test/v1";
    pricey.prices = {3 * kPrices.input_micros_per_mtok, 3 * kPrices.cached_input_micros_per_mtok,
                     3 * kPrices.output_micros_per_mtok};
    ModelRecord capped = Model("capped", 1000, 100, false);
    capped.deployments = {{"small", "https://small.test/v1", "", "", 1, 3},
                          {"big", "https://big.test/v1", "", "", 1, 0}};
    store_ = std::make_unique<MemoryAgentStore>(std::vector<ModelRecord>{
        Model("m", 1000, 100, true), Model("tiny", 60, 20, false), routed, pricey, capped});
    workers_ = std::make_unique<WorkerPool>(4);
    models_ = std::make_unique<ModelRegistry>(store_.get(), workers_.get(), absl::Hours(1));
    ASSERT_TRUE(models_->Load().ok());
    ids_ = std::make_unique<PromptIds>(store_.get(), workers_.get(), 4);
    deps_.store = store_.get();
    deps_.models = models_.get();
    deps_.llm = &llm_;
    deps_.workers = workers_.get();
    deps_.conversation = &conv_;
    deps_.usage = &usage_;
    deps_.prompt_ids = ids_.get();
    deps_.running = &running_;
    deps_.gate = &gate_;
    deps_.router = &router_;
    deps_.replica = "replica-1";
    // The outbox, delivering at once: usage records it, the entry is deleted.
    deps_.publish = [this](int64_t id, UsageRecord r) {
      usage_.Record({std::move(r)}, absl::InfiniteFuture(),
                    [this, id](absl::StatusOr<std::vector<bool>> ok) {
                      if (ok.ok() && id > 0) (void)store_->Settle({id}, {});
                    });
    };
    deps_.answer_saved = [this](SavedAnswer s) { (void)store_->Settle({}, {s}); };
    deps_.options.answer_within = absl::Milliseconds(300);
    deps_.options.save_for = absl::Seconds(2);
    deps_.options.save_backoff = absl::Milliseconds(5);
  }

  void TearDown() override {
    // Background saves end before the parts they use go.
    absl::Time until = absl::Now() + absl::Seconds(10);
    while (deps_.live.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(2));
    EXPECT_EQ(deps_.live.load(), 0);
    // Queued tasks (a prompt-id refill, a model refresh) use the parts declared after
    // the pool: they run now, while those are alive.
    workers_.reset();
  }

  TurnRequest Request(int64_t conversation, std::string content, std::string key = "",
                      int64_t user = 1) {
    TurnRequest r;
    r.caller.user_id = user;
    r.caller.requests_per_minute = 1000;
    r.conversation_id = conversation;
    r.content = std::move(content);
    r.idempotency_key = std::move(key);
    r.deadline = absl::Now() + absl::Seconds(10);
    return r;
  }

  // Runs a turn to its end (the client's answer; background saves may go on).
  std::unique_ptr<Sink> Run(TurnRequest request) {
    auto sink = std::make_unique<Sink>();
    auto turn = Turn::Start(&deps_, std::move(request), sink.get());
    EXPECT_TRUE(sink->Wait());
    return sink;
  }

  // Waits until every turn's background work is done.
  void Quiesce() {
    absl::Time until = absl::Now() + absl::Seconds(10);
    while (deps_.live.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  }

  PromptRecord PromptOf(const Sink& s) {
    auto p = store_->Prompt(s.started_->prompt_id());
    EXPECT_TRUE(p.has_value());
    return p.value_or(PromptRecord{});
  }

  // The prompt rows written, oldest first.
  std::vector<PromptRecord> Prompts() { return store_->Prompts(); }

  int Count(int64_t conversation, MessageRole role) {
    int n = 0;
    for (const auto& m : conv_.Messages(conversation)) n += m.role == role;
    return n;
  }

  FakeConversation conv_;
  FakeUsage usage_;
  ScriptedLlm llm_;
  RunningTurns running_;
  TurnGate gate_;
  Router router_;
  std::unique_ptr<MemoryAgentStore> store_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<PromptIds> ids_;
  TurnDeps deps_;
};

TEST_F(TurnTest, CompletesSavesBothMessagesAndChargesExactly) {
  int64_t conv = conv_.Create(1, "", "be brief");
  llm_.Push({.deltas = {"hel", "lo"}});
  auto s = Run(Request(conv, "hi there"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  ASSERT_TRUE(s->started_.has_value());
  EXPECT_EQ(s->text_, "hello");
  ASSERT_TRUE(s->result_.has_value());
  EXPECT_EQ(s->result_->text(), "hello");
  EXPECT_EQ(s->result_->cost_nanos(), kCost);
  EXPECT_EQ(s->result_->usage().prompt_tokens(), 10);
  Quiesce();

  auto msgs = conv_.Messages(conv);
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[0].content, "hi there");
  EXPECT_EQ(msgs[0].id, s->started_->user_message_id());
  EXPECT_EQ(msgs[1].content, "hello");
  EXPECT_EQ(msgs[1].id, s->result_->response_message_id());
  EXPECT_EQ(msgs[1].prompt_id, s->started_->prompt_id());

  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.status, PromptStatus::kCompleted);
  EXPECT_FALSE(p.answer_pending);
  EXPECT_EQ(p.response_message_id, msgs[1].id);
  EXPECT_EQ(p.cost_nanos, kCost);
  EXPECT_EQ(p.owner, "replica-1");

  auto ledger = usage_.ledger();
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger.begin()->second.cost_nanos, kCost);
  EXPECT_EQ(usage_.reserved(), 0);
  EXPECT_EQ(store_->outbox_size(), 0u);

  // What went upstream: the system prompt, then the user message.
  auto reqs = llm_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  ASSERT_EQ(reqs[0].messages.size(), 2u);
  EXPECT_EQ(reqs[0].messages[0].role, "system");
  EXPECT_EQ(reqs[0].messages[1].content, "hi there");
  EXPECT_EQ(reqs[0].max_output_tokens, 100);
}

TEST_F(TurnTest, TheContextIsCutToTheModelsWindowNewestFirst) {
  int64_t conv = conv_.Create(1, "tiny");  // window 60, answer 20: 40 tokens of context
  for (int i = 0; i < 4; ++i) {
    llm_.Push({.deltas = {"answer number"}});
    ASSERT_TRUE(Run(Request(conv, "question number one two"))->status_.ok());
  }
  auto reqs = llm_.requests();
  ASSERT_EQ(reqs.size(), 4u);
  // The last request: the newest messages that fit, oldest of them first, then the new one.
  const auto& last = reqs.back().messages;
  ASSERT_GE(last.size(), 2u);
  EXPECT_LT(last.size(), 7u);  // the oldest were left out
  EXPECT_EQ(last.back().content, "question number one two");
  EXPECT_EQ(last[last.size() - 2].role, "assistant");
  EXPECT_EQ(reqs.back().model, "tiny");
  EXPECT_EQ(reqs.back().max_output_tokens, 20);
}

TEST_F(TurnTest, BudgetRefusalLeavesTheConversationAsItWas) {
  int64_t conv = conv_.Create(1);
  usage_.SetBudget(1);
  auto s = Run(Request(conv, "expensive", "key-1"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(s->status_.error_message().find("budget"), std::string::npos);
  EXPECT_FALSE(s->started_.has_value());
  Quiesce();
  EXPECT_TRUE(conv_.Messages(conv).empty());  // the user message was taken back out
  EXPECT_TRUE(llm_.requests().empty());
  auto prompts = Prompts();
  ASSERT_EQ(prompts.size(), 1u);
  EXPECT_EQ(prompts[0].status, PromptStatus::kBudgetExceeded);
  EXPECT_TRUE(prompts[0].idempotency_key.empty());  // a retry with the key runs afresh
  usage_.SetBudget(0);  // an admin raised it: the next turn sees it at once
  llm_.Push({.deltas = {"fine"}});
  auto again = Run(Request(conv, "expensive", "key-1"));
  ASSERT_TRUE(again->status_.ok()) << again->status_.error_message();
  EXPECT_EQ(Count(conv, MessageRole::kUser), 1);
}

TEST_F(TurnTest, RateLimitRefusesWithoutCallingTheProvider) {
  int64_t conv = conv_.Create(1);
  auto req = Request(conv, "one");
  req.caller.requests_per_minute = 1;
  ASSERT_TRUE(Run(req)->status_.ok());
  auto s = Run(req);
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  Quiesce();
  EXPECT_EQ(llm_.requests().size(), 1u);
  EXPECT_EQ(Count(conv, MessageRole::kUser), 1);
  ASSERT_EQ(Prompts().size(), 2u);
  EXPECT_EQ(Prompts()[1].status, PromptStatus::kRateLimited);
}

TEST_F(TurnTest, ARefusedUsersNextTurnsCostNothingUntilTheLimitFrees) {
  int64_t conv = conv_.Create(1);
  auto req = Request(conv, "one");
  req.caller.requests_per_minute = 1;
  ASSERT_TRUE(Run(req)->status_.ok());
  EXPECT_EQ(Run(req)->status_.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  Quiesce();
  const size_t prompts = Prompts().size();
  const int appends = conv_.appends();
  // Remembered: refused before anything is read or written.
  auto again = Run(req);
  EXPECT_EQ(again->status_.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(again->status_.error_message().find("rate limit"), std::string::npos);
  Quiesce();
  EXPECT_EQ(Prompts().size(), prompts);
  EXPECT_EQ(conv_.appends(), appends);
  // A token with another rate is not bound by the old refusal.
  req.caller.requests_per_minute = 100;
  EXPECT_TRUE(Run(req)->status_.ok());
}

TEST_F(TurnTest, WhileUsageIsUnreachableTheRateStillHoldsPerReplica) {
  int64_t conv = conv_.Create(1);
  absl::Status unreachable = absl::UnavailableError("usage service unavailable");
  unreachable.SetPayload(kPeerUnreachable, absl::Cord());
  usage_.SetReserveError(unreachable);
  auto req = Request(conv, "hi");
  req.caller.requests_per_minute = 2;
  EXPECT_TRUE(Run(req)->status_.ok());
  EXPECT_TRUE(Run(req)->status_.ok());
  auto third = Run(req);
  EXPECT_EQ(third->status_.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(third->status_.error_message().find("unreachable"), std::string::npos);
  Quiesce();
  EXPECT_EQ(Prompts().back().status, PromptStatus::kRateLimited);
  EXPECT_EQ(llm_.requests().size(), 2u);
}

TEST(TurnGateTest, ARateRefusalHoldsUntilTheWindowFrees) {
  TurnGate gate;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  gate.RateLimited(1, 10, "rate", t0 + absl::Seconds(30), t0);
  gate.RateLimited(2, 10, "rate", t0 + absl::Hours(5), t0);  // never past a minute
  // (Time only moves forward.)
  EXPECT_TRUE(gate.Check(3, 10, t0).ok());
  EXPECT_FALSE(gate.Check(1, 10, t0 + absl::Seconds(29)).ok());
  EXPECT_TRUE(gate.Check(1, 20, t0 + absl::Seconds(29)).ok());  // a token with another rate
  EXPECT_TRUE(gate.Check(1, 10, t0 + absl::Seconds(30)).ok());
  EXPECT_FALSE(gate.Check(2, 10, t0 + absl::Seconds(59)).ok());
  EXPECT_TRUE(gate.Check(2, 10, t0 + absl::Seconds(60)).ok());
  // The local limit is a sliding minute.
  const absl::Time t1 = t0 + absl::Seconds(100);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(gate.AdmitWithoutUsage(4, 3, t1 + absl::Seconds(i)).ok());
  EXPECT_FALSE(gate.AdmitWithoutUsage(4, 3, t1 + absl::Seconds(59)).ok());
  EXPECT_TRUE(gate.AdmitWithoutUsage(4, 3, t1 + absl::Seconds(61)).ok());
}

TEST_F(TurnTest, ProviderErrorBeforeAnyTokenChargesNothing) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {},
             .status = absl::UnavailableError("HTTP 503"),
             .kind = LlmErrorKind::kServerError,
             .http_status = 503,
             .usage = {}});
  auto s = Run(Request(conv, "hello"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s->status_.error_message().find("provider"), std::string::npos);
  Quiesce();
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.status, PromptStatus::kFailed);
  EXPECT_EQ(p.cost_nanos, 0);
  EXPECT_TRUE(usage_.ledger().empty());
  EXPECT_EQ(usage_.reserved(), 0);  // released
  EXPECT_EQ(Count(conv, MessageRole::kUser), 1);
  EXPECT_EQ(Count(conv, MessageRole::kAssistant), 0);
}

TEST_F(TurnTest, StreamCutMidAnswerKeepsAndChargesThePart) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"half ", "an answer"},
             .status = absl::UnavailableError("stream ended early"),
             .kind = LlmErrorKind::kTruncated});
  auto s = Run(Request(conv, "hello"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(s->result_.has_value());
  Quiesce();
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.status, PromptStatus::kFailed);
  EXPECT_EQ(p.response_text, "half an answer");
  EXPECT_EQ(p.cost_nanos, kCost);
  ASSERT_EQ(Count(conv, MessageRole::kAssistant), 1);
  EXPECT_EQ(conv_.Messages(conv)[1].content, "half an answer");
  EXPECT_EQ(usage_.ledger().begin()->second.outcome, UsageRecord::Outcome::kFailed);
}

TEST_F(TurnTest, ClientCancelMidStreamSavesAndChargesWhatArrived) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"first words"}, .wait_for_cancel = true});
  auto sink = std::make_unique<Sink>();
  auto turn = Turn::Start(&deps_, Request(conv, "talk"), sink.get());
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (sink->deltas() == 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  turn->Cancel();
  ASSERT_TRUE(sink->Wait());
  EXPECT_EQ(sink->status_.error_code(), grpc::StatusCode::CANCELLED);
  turn.reset();
  Quiesce();
  PromptRecord p = PromptOf(*sink);
  EXPECT_EQ(p.status, PromptStatus::kCancelled);
  EXPECT_EQ(p.response_text, "first words");
  EXPECT_TRUE(p.estimated);
  EXPECT_GT(p.cost_nanos, 0);
  EXPECT_EQ(usage_.ledger().begin()->second.cost_nanos, p.cost_nanos);
  EXPECT_EQ(Count(conv, MessageRole::kAssistant), 1);
}

TEST_F(TurnTest, ConversationUnreachableWritesNothing) {
  int64_t conv = conv_.Create(1);
  absl::Status down = absl::UnavailableError("conversation service unavailable");
  conv_.FailReads(1, down);
  auto s = Run(Request(conv, "anyone?"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  Quiesce();
  EXPECT_TRUE(Prompts().empty());
  EXPECT_EQ(usage_.reserved(), 0);
  EXPECT_TRUE(conv_.Messages(conv).empty());
}

TEST_F(TurnTest, AnotherUsersConversationIsNotFound) {
  int64_t conv = conv_.Create(2);
  auto s = Run(Request(conv, "let me in"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::NOT_FOUND);
  Quiesce();
  EXPECT_TRUE(Prompts().empty());
  EXPECT_TRUE(llm_.requests().empty());
}

TEST_F(TurnTest, UserMessageRefusedEndsTheTurnBeforeTheProvider) {
  int64_t conv = conv_.Create(1);
  conv_.FailAppends(1, absl::InvalidArgumentError("content is too long"), MessageRole::kUser);
  auto s = Run(Request(conv, "hello", "k"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Quiesce();
  ASSERT_EQ(Prompts().size(), 1u);
  EXPECT_EQ(Prompts()[0].status, PromptStatus::kFailed);
  EXPECT_TRUE(Prompts()[0].idempotency_key.empty());
  EXPECT_EQ(usage_.reserved(), 0);
  EXPECT_GE(usage_.releases(), 1);
  EXPECT_TRUE(llm_.requests().empty());
}

TEST_F(TurnTest, UsageUnreachableAdmitsTheTurnAndStillCharges) {
  int64_t conv = conv_.Create(1);
  absl::Status unreachable = absl::UnavailableError("usage service unavailable");
  unreachable.SetPayload(kPeerUnreachable, absl::Cord());
  usage_.SetReserveError(unreachable);
  auto s = Run(Request(conv, "hello"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  Quiesce();
  EXPECT_EQ(usage_.ledger().size(), 1u);
}

TEST_F(TurnTest, UsageAnsweringItsDatabaseIsDownRefuses) {
  int64_t conv = conv_.Create(1);
  usage_.SetReserveError(absl::UnavailableError("usage service unavailable"));
  auto s = Run(Request(conv, "hello"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  Quiesce();
  EXPECT_TRUE(llm_.requests().empty());
  EXPECT_TRUE(conv_.Messages(conv).empty());
  ASSERT_EQ(Prompts().size(), 1u);
  EXPECT_EQ(Prompts()[0].status, PromptStatus::kFailed);
  // Its answer never came: a reservation that did commit is given back.
  EXPECT_EQ(usage_.releases(), 1);
}

TEST_F(TurnTest, ARefusalIsRecordedOncePostgresIsBackSoNoSweepChargesIt) {
  int64_t conv = conv_.Create(1);
  usage_.SetReserveError(absl::UnavailableError("usage service unavailable"));
  store_->FailRefusals(3);
  auto s = Run(Request(conv, "hello", "kr"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  Quiesce();  // the refusal is retried after the client was answered
  ASSERT_EQ(Prompts().size(), 1u);
  EXPECT_EQ(Prompts()[0].status, PromptStatus::kFailed);
  EXPECT_TRUE(Prompts()[0].idempotency_key.empty());  // the key is free again
  EXPECT_TRUE(llm_.requests().empty());
}

TEST_F(TurnTest, AnswerSaveIsRetriedThroughAConversationRestart) {
  int64_t conv = conv_.Create(1);
  conv_.FailAppends(3, absl::UnavailableError("conversation service unavailable"));
  llm_.Push({.deltas = {"saved later"}});
  auto s = Run(Request(conv, "hello"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  EXPECT_GT(s->result_->response_message_id(), 0);
  Quiesce();
  EXPECT_EQ(Count(conv, MessageRole::kAssistant), 1);
  EXPECT_FALSE(PromptOf(*s).answer_pending);
}

TEST_F(TurnTest, AnAnswerNotSavedInTimeIsReturnedToARetryWithTheSameKey) {
  int64_t conv = conv_.Create(1);
  deps_.options.save_for = absl::Milliseconds(400);
  conv_.FailAppends(1000000, absl::UnavailableError("conversation service unavailable"));
  llm_.Push({.deltas = {"the whole ", "answer"}});
  auto s = Run(Request(conv, "hello", "key-9"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(s->status_.error_message().find("same idempotency_key"), std::string::npos);
  EXPECT_EQ(s->text_, "the whole answer");  // the client saw it streamed
  Quiesce();
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.status, PromptStatus::kCompleted);  // delivered, charged, pending its save
  EXPECT_TRUE(p.answer_pending);
  EXPECT_EQ(usage_.ledger().size(), 1u);
  EXPECT_EQ(Count(conv, MessageRole::kAssistant), 0);

  conv_.FailAppends(0, absl::OkStatus());  // conversation is back
  auto again = Run(Request(conv, "hello", "key-9"));
  ASSERT_TRUE(again->status_.ok()) << again->status_.error_message();
  EXPECT_EQ(again->text_, "the whole answer");
  EXPECT_EQ(again->result_->prompt_id(), p.id);
  EXPECT_GT(again->result_->response_message_id(), 0);
  Quiesce();
  EXPECT_EQ(Count(conv, MessageRole::kAssistant), 1);
  EXPECT_FALSE(PromptOf(*s).answer_pending);
  EXPECT_EQ(llm_.requests().size(), 1u);  // no second provider call
  EXPECT_EQ(usage_.ledger().size(), 1u);  // no second charge
}

TEST_F(TurnTest, OutcomeSaveIsRetriedThroughAPostgresRestartAndChargedOnce) {
  int64_t conv = conv_.Create(1);
  store_->FailFinishes(3);
  auto s = Run(Request(conv, "hello"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  Quiesce();
  EXPECT_EQ(PromptOf(*s).status, PromptStatus::kCompleted);
  auto ledger = usage_.ledger();
  ASSERT_EQ(ledger.size(), 1u);  // sent directly, then again from the outbox: one record
  EXPECT_EQ(ledger.begin()->second.cost_nanos, kCost);
  EXPECT_EQ(store_->outbox_size(), 0u);
}

TEST_F(TurnTest, ARetryWithTheSameKeyReturnsTheFirstAnswer) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"only once"}});
  auto first = Run(Request(conv, "same", "k1"));
  ASSERT_TRUE(first->status_.ok());
  auto second = Run(Request(conv, "same", "k1"));
  ASSERT_TRUE(second->status_.ok()) << second->status_.error_message();
  EXPECT_EQ(second->text_, "only once");
  EXPECT_EQ(second->result_->prompt_id(), first->result_->prompt_id());
  EXPECT_EQ(second->result_->response_message_id(), first->result_->response_message_id());
  EXPECT_EQ(llm_.requests().size(), 1u);
  auto other = Run(Request(conv, "something else", "k1"));
  EXPECT_EQ(other->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(other->status_.error_message().find("different request"), std::string::npos);
  Quiesce();
  EXPECT_EQ(usage_.ledger().size(), 1u);
  EXPECT_EQ(Count(conv, MessageRole::kUser), 1);
}

TEST_F(TurnTest, ConcurrentRequestsWithOneKeyRunOneTurn) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"a", "b", "c"}, .delta_gap = absl::Milliseconds(30)});
  constexpr int kCallers = 4;
  std::vector<std::unique_ptr<Sink>> sinks;
  std::vector<std::shared_ptr<Turn>> turns;
  for (int i = 0; i < kCallers; ++i) {
    sinks.push_back(std::make_unique<Sink>());
    turns.push_back(Turn::Start(&deps_, Request(conv, "once", "k2"), sinks.back().get()));
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait());
    ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
    EXPECT_EQ(s->result_->text(), "abc");
    EXPECT_EQ(s->result_->prompt_id(), sinks[0]->result_->prompt_id());
  }
  turns.clear();
  Quiesce();
  EXPECT_EQ(llm_.requests().size(), 1u);
  EXPECT_EQ(usage_.ledger().size(), 1u);
  EXPECT_EQ(Count(conv, MessageRole::kUser), 1);  // the losers took theirs back out
  EXPECT_EQ(usage_.reserved(), 0);
}

TEST_F(TurnTest, TooManyWaitersOnOneKeyAreTurnedAwayFast) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"slow"}, .wait_for_cancel = true});
  Sink first;
  auto running = Turn::Start(&deps_, Request(conv, "hold", "k3"), &first);
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (first.deltas() == 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  std::vector<std::unique_ptr<Sink>> waiters;
  std::vector<std::shared_ptr<Turn>> turns;
  for (int i = 0; i < 6; ++i) {
    waiters.push_back(std::make_unique<Sink>());
    turns.push_back(Turn::Start(&deps_, Request(conv, "hold", "k3"), waiters.back().get()));
  }
  int refused = 0;
  for (auto& w : waiters) {
    if (w->done_.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      refused += w->status_.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    }
  }
  EXPECT_EQ(refused, 2);  // four may wait
  running->Cancel();
  ASSERT_TRUE(first.Wait());
  for (auto& w : waiters) ASSERT_TRUE(w->Wait());
}

TEST_F(TurnTest, AWaiterWhoseClientLeftOrTimedOutGivesItsPlaceUp) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"slow"}, .wait_for_cancel = true});
  Sink first;
  auto running = Turn::Start(&deps_, Request(conv, "hold", "k4"), &first);
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (first.deltas() == 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  // Four wait: two whose clients leave, one whose deadline is near, one that stays.
  std::vector<std::unique_ptr<Sink>> sinks;
  std::vector<std::shared_ptr<Turn>> turns;
  for (int i = 0; i < 4; ++i) {
    TurnRequest r = Request(conv, "hold", "k4");
    if (i == 2) r.deadline = absl::Now() + absl::Milliseconds(300);
    sinks.push_back(std::make_unique<Sink>());
    turns.push_back(Turn::Start(&deps_, std::move(r), sinks.back().get()));
  }
  turns[0]->Cancel();
  turns[1]->Cancel();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sinks[i]->Wait());
  EXPECT_EQ(sinks[0]->status_.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(sinks[1]->status_.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(sinks[2]->status_.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_FALSE(sinks[3]->done_.HasBeenNotified());
  // Their places are free: three more wait instead of being turned away.
  for (int i = 0; i < 3; ++i) {
    sinks.push_back(std::make_unique<Sink>());
    turns.push_back(Turn::Start(&deps_, Request(conv, "hold", "k4"), sinks.back().get()));
  }
  for (size_t i = 3; i < sinks.size(); ++i) {
    EXPECT_FALSE(sinks[i]->done_.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  }
  running->Cancel();
  ASSERT_TRUE(first.Wait());
  for (auto& w : sinks) ASSERT_TRUE(w->Wait());
}

TEST_F(TurnTest, RegenerateReplacesTheLastAnswer) {
  int64_t conv = conv_.Create(1);
  llm_.Push({.deltas = {"first"}});
  auto first = Run(Request(conv, "question"));
  ASSERT_TRUE(first->status_.ok());
  llm_.Push({.deltas = {"second"}});
  TurnRequest regen = Request(conv, "");
  regen.regenerate = true;
  auto s = Run(regen);
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  EXPECT_EQ(s->result_->user_message_id(), first->result_->user_message_id());
  Quiesce();
  auto msgs = conv_.Messages(conv);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_TRUE(msgs[1].superseded);
  EXPECT_EQ(msgs[2].content, "second");
  // Asked without the old answer.
  ASSERT_EQ(llm_.requests().back().messages.size(), 1u);
  EXPECT_EQ(llm_.requests().back().messages[0].content, "question");
}

TEST_F(TurnTest, AStatelessTurnSendsTheCallersMessagesAndStoresOnlyThePrompt) {
  TurnRequest req = Request(0, "");
  req.stateless = true;
  req.messages = {
      {"system", "be brief"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "and now?"}};
  req.idempotency_key = "sdk-retry-1";
  llm_.Push({.deltas = {"now ", "this"}});
  auto s = Run(req);
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  EXPECT_EQ(s->result_->text(), "now this");
  EXPECT_EQ(s->result_->cost_nanos(), kCost);
  EXPECT_EQ(s->result_->user_message_id(), 0);
  EXPECT_EQ(s->result_->response_message_id(), 0);
  Quiesce();
  auto reqs = llm_.requests();
  ASSERT_EQ(reqs.size(), 1u);
  ASSERT_EQ(reqs[0].messages.size(), 4u);
  EXPECT_EQ(reqs[0].messages[2].role, "assistant");
  EXPECT_EQ(reqs[0].messages[3].content, "and now?");
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.status, PromptStatus::kCompleted);
  EXPECT_EQ(p.conversation_id, 0);
  EXPECT_FALSE(p.answer_pending);
  EXPECT_EQ(usage_.ledger().size(), 1u);
  EXPECT_EQ(conv_.appends(), 0);
  // An SDK's retry with the same key gets the same answer, charged once.
  auto again = Run(req);
  ASSERT_TRUE(again->status_.ok()) << again->status_.error_message();
  EXPECT_EQ(again->result_->prompt_id(), p.id);
  EXPECT_EQ(again->text_, "now this");
  req.messages.back().second = "something else";
  EXPECT_EQ(Run(req)->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Quiesce();
  EXPECT_EQ(llm_.requests().size(), 1u);
  EXPECT_EQ(usage_.ledger().size(), 1u);
}

TEST_F(TurnTest, StatelessMessagesAreCheckedNamingTheField) {
  TurnRequest req = Request(0, "");
  req.stateless = true;
  EXPECT_EQ(Run(req)->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  req.messages = {{"user", "ok"}, {"tool", "no"}};
  auto s = Run(req);
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s->status_.error_message().find("messages[1].role"), std::string::npos);
  req.messages = {{"user", std::string(4000, 'x')}};
  req.model = "tiny";
  s = Run(req);
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s->status_.error_message().find("messages are too long"), std::string::npos);
  Quiesce();
  EXPECT_TRUE(Prompts().empty());
}

TEST_F(TurnTest, RegenerateWithoutAUserMessageIsRefused) {
  int64_t conv = conv_.Create(1);
  TurnRequest regen = Request(conv, "");
  regen.regenerate = true;
  auto s = Run(regen);
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

LlmScript Unavailable503() {
  return {.deltas = {},
          .status = absl::UnavailableError("HTTP 503"),
          .kind = LlmErrorKind::kServerError,
          .http_status = 503,
          .usage = {}};
}

TEST_F(TurnTest, AFailingDeploymentIsLeftForTheOtherBeforeTheFirstDelta) {
  int64_t conv = conv_.Create(1, "routed");
  llm_.Push(Unavailable503());
  llm_.Push({.deltas = {"from the other one"}});
  auto s = Run(Request(conv, "hello"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  EXPECT_EQ(s->text_, "from the other one");
  EXPECT_EQ(s->result_->model(), "routed");
  EXPECT_EQ(s->result_->cost_nanos(), kCost);
  Quiesce();
  auto reqs = llm_.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_NE(reqs[0].base_url, reqs[1].base_url);
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.deployment, reqs[1].base_url == "https://east.test/v1" ? "east" : "west");
  EXPECT_EQ(usage_.ledger().size(), 1u);
  EXPECT_EQ(usage_.ledger().begin()->second.cost_nanos, kCost);
}

TEST_F(TurnTest, WhenEveryDeploymentFailsTheFallbackAnswersAtItsOwnPrice) {
  int64_t conv = conv_.Create(1, "routed");
  llm_.Push(Unavailable503());
  llm_.Push(Unavailable503());
  llm_.Push({.deltas = {"the fallback speaks"}});
  auto s = Run(Request(conv, "hello"));
  ASSERT_TRUE(s->status_.ok()) << s->status_.error_message();
  EXPECT_EQ(s->result_->model(), "pricey");
  EXPECT_EQ(s->result_->cost_nanos(), 3 * kCost);
  Quiesce();
  auto reqs = llm_.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[2].base_url, "https://pricey.test/v1");
  PromptRecord p = PromptOf(*s);
  EXPECT_EQ(p.model, "pricey");
  EXPECT_EQ(p.prices.output_micros_per_mtok, 3 * kPrices.output_micros_per_mtok);
  EXPECT_EQ(p.cost_nanos, 3 * kCost);
  auto ledger = usage_.ledger();
  ASSERT_EQ(ledger.size(), 1u);
  EXPECT_EQ(ledger.begin()->second.model, "pricey");
  EXPECT_EQ(ledger.begin()->second.cost_nanos, 3 * kCost);
  // The reservation covered the dearest candidate.
  auto amounts = usage_.reserved_amounts();
  ASSERT_EQ(amounts.size(), 1u);
  const Prices pricey{3 * kPrices.input_micros_per_mtok, 3 * kPrices.cached_input_micros_per_mtok,
                      3 * kPrices.output_micros_per_mtok};
  EXPECT_EQ(amounts[0], CostNanos(p.context_tokens, 0, 100, pricey));
  EXPECT_EQ(usage_.reserved(), 0);
}

TEST_F(TurnTest, AStreamThatFailsAfterItsFirstDeltaIsNotTriedElsewhere) {
  int64_t conv = conv_.Create(1, "routed");
  llm_.Push({.deltas = {"half"},
             .status = absl::UnavailableError("stream ended early"),
             .kind = LlmErrorKind::kTruncated});
  auto s = Run(Request(conv, "hello"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::UNAVAILABLE);
  Quiesce();
  EXPECT_EQ(llm_.requests().size(), 1u);
  EXPECT_EQ(PromptOf(*s).status, PromptStatus::kFailed);
}

TEST_F(TurnTest, ARefusedRequestIsNotPassedOn) {
  int64_t conv = conv_.Create(1, "routed");
  llm_.Push({.deltas = {},
             .status = absl::InvalidArgumentError("context_length_exceeded"),
             .kind = LlmErrorKind::kContextTooLong,
             .http_status = 400,
             .usage = {}});
  auto s = Run(Request(conv, "hello"));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  Quiesce();
  EXPECT_EQ(llm_.requests().size(), 1u);
}

TEST_F(TurnTest, AConcurrencyCapHoldsUnderFiftyConcurrentTurns) {
  constexpr int kTurns = 50;
  std::vector<int64_t> convs;
  for (int i = 0; i < kTurns; ++i) {
    convs.push_back(conv_.Create(1, "capped"));
    llm_.Push({.deltas = {"a", "b"}, .delta_gap = absl::Milliseconds(20)});
  }
  std::vector<std::unique_ptr<Sink>> sinks;
  std::vector<std::shared_ptr<Turn>> turns;
  for (int i = 0; i < kTurns; ++i) {
    sinks.push_back(std::make_unique<Sink>());
    turns.push_back(Turn::Start(&deps_, Request(convs[i], "go"), sinks.back().get()));
  }
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait());
    EXPECT_TRUE(s->status_.ok()) << s->status_.error_message();
  }
  turns.clear();
  Quiesce();
  auto peaks = llm_.max_in_flight();
  EXPECT_LE(peaks["https://small.test/v1"], 3);
  EXPECT_GE(peaks["https://small.test/v1"], 1);
  EXPECT_GT(peaks["https://big.test/v1"], 3);
}

TEST_F(TurnTest, AModelNamingAnotherSecretOrHostSendsNothing) {
  // Rows as an old version, or a hand-edited database, could hold them.
  ModelRecord exfil = Model("exfil", 1000, 100, false);
  exfil.api_key_env = "AICHAT_SERVICE_TOKEN";
  ModelRecord plain = Model("plain", 1000, 100, false);
  plain.base_url = "http://attacker.example/v1";
  store_ = std::make_unique<MemoryAgentStore>(std::vector<ModelRecord>{exfil, plain});
  models_ = std::make_unique<ModelRegistry>(store_.get(), workers_.get(), absl::Hours(1));
  ASSERT_TRUE(models_->Load().ok());
  deps_.store = store_.get();
  deps_.models = models_.get();
  bool asked_for_secret = false;
  deps_.options.api_key = [&](const std::string& env) {
    asked_for_secret |= env == "AICHAT_SERVICE_TOKEN";
    return std::string("secret");
  };
  int64_t conv = conv_.Create(1);
  for (const char* model : {"exfil", "plain"}) {
    auto req = Request(conv, "hello");
    req.model = model;
    auto s = Run(req);
    EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << model;
  }
  Quiesce();
  EXPECT_TRUE(llm_.requests().empty());
  EXPECT_FALSE(asked_for_secret);
  EXPECT_TRUE(Prompts().empty());
  EXPECT_TRUE(conv_.Messages(conv).empty());
}

TEST_F(TurnTest, OversizedContentAndAnswerLimitAreInvalidArgument) {
  int64_t conv = conv_.Create(1, "tiny");
  auto s = Run(Request(conv, std::string(400, 'x')));
  EXPECT_EQ(s->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s->status_.error_message().find("content is too long"), std::string::npos);
  auto req = Request(conv, "hi");
  req.max_output_tokens = 21;
  auto t = Run(req);
  EXPECT_EQ(t->status_.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(t->status_.error_message().find("max_output_tokens"), std::string::npos);
  Quiesce();
  EXPECT_TRUE(Prompts().empty());
}

}  // namespace
}  // namespace aichat::agent
