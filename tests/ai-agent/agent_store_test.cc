// PgAgentStore against a real PostgreSQL: seeded models, default switching,
// idempotency keys under concurrency, prompt lifecycle, and the outbox leases.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "services/ai-agent/migrations.h"
#include "services/ai-agent/pg_agent_store.h"
#include "tests/testing/postgres.h"

namespace aichat::agent {
namespace {

class AgentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PgPoolOptions opts;
    opts.url = aichat::testing::TestPostgres::Shared().CreateDatabase();
    opts.size = 8;
    opts.acquire_timeout = absl::Seconds(30);
    pool_ = std::make_unique<PgPool>(opts);
    ASSERT_TRUE(ApplyMigrations(*pool_, Migrations()).ok());
    store_ = std::make_unique<PgAgentStore>(pool_.get());
  }

  NewPrompt Prompt(int64_t user, int64_t conversation, const std::string& key = "") {
    NewPrompt p;
    auto ids = store_->ReservePromptIds(1);
    EXPECT_TRUE(ids.ok()) << ids.status();
    p.id = ids.ok() ? ids->front() : 0;
    p.user_id = user;
    p.conversation_id = conversation;
    p.idempotency_key = key;
    p.event_id = absl::StrCat("ev-", ++next_event_);
    p.model = "fast";
    p.provider_model = "gpt-4o-mini";
    p.prices = Prices{150000, 75000, 600000};
    p.context_window = 128000;
    p.max_output_tokens = 16384;
    return p;
  }

  PromptRecord Insert(int64_t user, int64_t conversation, const std::string& owner = "") {
    NewPrompt p = Prompt(user, conversation);
    p.owner = owner;
    p.context_tokens = 1000;
    auto st = store_->InsertPrompt(p);
    EXPECT_TRUE(st.ok()) << st;
    auto r = store_->GetPrompt(user, p.id);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : PromptRecord{};
  }

  // Finishes a prompt as a completed turn with an answer pending its save.
  int64_t Complete(const PromptRecord& p) {
    PromptOutcome o;
    o.status = PromptStatus::kCompleted;
    o.response_text = "the answer";
    o.answer_pending = true;
    o.completion_tokens = 3;
    auto id = store_->FinishPrompt(p.id, o, std::string("event"), absl::Seconds(30));
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or(0);
  }

  int64_t Count(const std::string& sql) { return pool_->Exec(sql)->Int(0, 0); }

  void AddOutboxRows(int n) {
    ASSERT_TRUE(pool_
                    ->Exec("INSERT INTO usage_outbox (event_id, payload) "
                           "SELECT 'row-' || g, '' FROM generate_series(1, $1::int) g",
                           {n})
                    .ok());
  }

  ModelRecord Model(const std::string& name, bool is_default) {
    ModelRecord m;
    m.name = name;
    m.provider_model = "gpt-4o-mini";
    m.base_url = "https://llm.example/v1";
    m.api_key_env = "EXAMPLE_KEY";
    m.prices = Prices{1, 2, 3};
    m.context_window = 8000;
    m.max_output_tokens = 1000;
    m.default_temperature = 0.7;
    m.is_default = is_default;
    m.use_max_tokens_param = true;
    return m;
  }

  std::vector<std::string> Defaults() {
    std::vector<std::string> out;
    auto models = store_->ListModels();
    EXPECT_TRUE(models.ok()) << models.status();
    if (!models.ok()) {
      return out;
    }
    for (const auto& m : *models) {
      if (m.is_default) {
        out.push_back(m.name);
      }
    }
    return out;
  }

  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgAgentStore> store_;
  int next_event_ = 0;
};

TEST_F(AgentStoreTest, StatusNamesRoundTrip) {
  for (PromptStatus s : {PromptStatus::kPending, PromptStatus::kStreaming, PromptStatus::kCompleted,
                         PromptStatus::kFailed, PromptStatus::kCancelled,
                         PromptStatus::kRateLimited, PromptStatus::kBudgetExceeded}) {
    EXPECT_EQ(ParsePromptStatus(PromptStatusName(s)), s);
  }
  EXPECT_FALSE(IsTerminal(PromptStatus::kPending));
  EXPECT_FALSE(IsTerminal(PromptStatus::kStreaming));
  EXPECT_TRUE(IsTerminal(PromptStatus::kCompleted));
  EXPECT_TRUE(IsTerminal(PromptStatus::kBudgetExceeded));
}

TEST_F(AgentStoreTest, SeededModelsHaveExactPricesAndOneDefault) {
  auto models = store_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  struct Want {
    int64_t in, cached, out;
    int32_t context, max_out;
  };
  std::map<std::string, Want> want = {
      {"gpt-4o-mini", {150000, 75000, 600000, 128000, 16384}},
      {"gpt-4o", {2500000, 1250000, 10000000, 128000, 16384}},
      {"gpt-4.1", {2000000, 500000, 8000000, 1047576, 32768}},
      {"gpt-4.1-mini", {400000, 100000, 1600000, 1047576, 32768}},
      {"gpt-4.1-nano", {100000, 25000, 400000, 1047576, 32768}},
      {"o4-mini", {1100000, 275000, 4400000, 200000, 100000}},
  };
  ASSERT_EQ(models->size(), want.size());
  for (const auto& m : *models) {
    SCOPED_TRACE(m.name);
    ASSERT_TRUE(want.count(m.name));
    const Want& w = want[m.name];
    EXPECT_EQ(m.provider_model, m.name);
    EXPECT_EQ(m.base_url, "");
    EXPECT_EQ(m.api_key_env, "OPENAI_API_KEY");
    EXPECT_EQ(m.prices.input_micros_per_mtok, w.in);
    EXPECT_EQ(m.prices.cached_input_micros_per_mtok, w.cached);
    EXPECT_EQ(m.prices.output_micros_per_mtok, w.out);
    EXPECT_EQ(m.context_window, w.context);
    EXPECT_EQ(m.max_output_tokens, w.max_out);
    EXPECT_TRUE(m.enabled);
    EXPECT_GT(m.updated_at, absl::UnixEpoch());
  }
  EXPECT_EQ(Defaults(), std::vector<std::string>{"gpt-4o-mini"});
}

TEST_F(AgentStoreTest, UpsertModelSwitchesTheDefaultAndDeleteModel) {
  auto fast = store_->UpsertModel(Model("fast", /*is_default=*/true));
  ASSERT_TRUE(fast.ok()) << fast.status();
  EXPECT_EQ(fast->name, "fast");
  EXPECT_EQ(fast->base_url, "https://llm.example/v1");
  EXPECT_EQ(fast->api_key_env, "EXAMPLE_KEY");
  EXPECT_EQ(fast->prices.cached_input_micros_per_mtok, 2);
  EXPECT_DOUBLE_EQ(fast->default_temperature, 0.7);
  EXPECT_TRUE(fast->use_max_tokens_param);
  EXPECT_EQ(Defaults(), std::vector<std::string>{"fast"});

  // Updating an existing row in place; a non-default upsert leaves the default alone.
  ModelRecord gpt4o = Model("gpt-4o", false);
  gpt4o.provider_model = "gpt-4o-2024-08-06";
  gpt4o.prices = Prices{2400000, 1200000, 9600000};
  gpt4o.enabled = false;
  auto updated = store_->UpsertModel(gpt4o);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->provider_model, "gpt-4o-2024-08-06");
  EXPECT_EQ(updated->prices.output_micros_per_mtok, 9600000);
  EXPECT_FALSE(updated->enabled);
  EXPECT_EQ(Defaults(), std::vector<std::string>{"fast"});
  EXPECT_EQ(store_->ListModels()->size(), 7u);

  // Back to a seeded model as the default.
  ModelRecord mini = Model("gpt-4o-mini", true);
  ASSERT_TRUE(store_->UpsertModel(mini).ok());
  EXPECT_EQ(Defaults(), std::vector<std::string>{"gpt-4o-mini"});

  EXPECT_TRUE(store_->DeleteModel("fast").ok());
  EXPECT_EQ(store_->DeleteModel("fast").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteModel("no-such-model").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ListModels()->size(), 6u);
}

TEST_F(AgentStoreTest, ConcurrentDefaultSwitchesLeaveExactlyOneDefault) {
  constexpr int kThreads = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      if (!store_->UpsertModel(Model(absl::StrCat("m", i), true)).ok()) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Defaults().size(), 1u);
}

TEST_F(AgentStoreTest, PromptIdsAreReservedAheadAndNeverRepeat) {
  auto a = store_->ReservePromptIds(64);
  auto b = store_->ReservePromptIds(64);
  ASSERT_TRUE(a.ok() && b.ok());
  std::set<int64_t> all(a->begin(), a->end());
  all.insert(b->begin(), b->end());
  EXPECT_EQ(all.size(), 128u);
  EXPECT_TRUE(std::is_sorted(a->begin(), a->end()));
}

TEST_F(AgentStoreTest, InsertPromptStoresTheSnapshotAndRejectsAReusedKey) {
  NewPrompt p = Prompt(7, 70, "key-1");
  p.user_message_id = 11;
  p.replaces_message_id = 12;
  p.request_hash = "hash-1";
  p.owner = "replica-a";
  p.context_tokens = 4321;
  ASSERT_TRUE(store_->InsertPrompt(p).ok());
  auto r = store_->GetPrompt(7, p.id);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->id, p.id);
  EXPECT_EQ(r->user_id, 7);
  EXPECT_EQ(r->conversation_id, 70);
  EXPECT_EQ(r->status, PromptStatus::kPending);
  EXPECT_EQ(r->idempotency_key, "key-1");
  EXPECT_EQ(r->request_hash, "hash-1");
  EXPECT_EQ(r->owner, "replica-a");
  EXPECT_EQ(r->context_tokens, 4321);
  EXPECT_EQ(r->event_id, p.event_id);
  EXPECT_EQ(r->model, "fast");
  EXPECT_EQ(r->provider_model, "gpt-4o-mini");
  EXPECT_EQ(r->prices.input_micros_per_mtok, 150000);
  EXPECT_EQ(r->prices.cached_input_micros_per_mtok, 75000);
  EXPECT_EQ(r->prices.output_micros_per_mtok, 600000);
  EXPECT_EQ(r->context_window, 128000);
  EXPECT_EQ(r->max_output_tokens, 16384);
  EXPECT_EQ(r->user_message_id, 11);
  EXPECT_EQ(r->replaces_message_id, 12);
  EXPECT_EQ(r->response_message_id, 0);
  EXPECT_FALSE(r->answer_pending);
  EXPECT_FALSE(r->completed_at.has_value());
  EXPECT_GT(r->created_at, absl::Now() - absl::Minutes(5));

  EXPECT_EQ(store_->InsertPrompt(Prompt(7, 71, "key-1")).code(), absl::StatusCode::kAlreadyExists);
  // Keys are per user; no key at all never collides.
  EXPECT_TRUE(store_->InsertPrompt(Prompt(8, 80, "key-1")).ok());
  EXPECT_TRUE(store_->InsertPrompt(Prompt(7, 70)).ok());
  EXPECT_TRUE(store_->InsertPrompt(Prompt(7, 70)).ok());
  // A reused event id or prompt id is refused too.
  NewPrompt same_event = Prompt(9, 90);
  same_event.event_id = p.event_id;
  EXPECT_EQ(store_->InsertPrompt(same_event).code(), absl::StatusCode::kAlreadyExists);
  NewPrompt same_id = Prompt(9, 90);
  same_id.id = p.id;
  EXPECT_EQ(store_->InsertPrompt(same_id).code(), absl::StatusCode::kAlreadyExists);

  auto found = store_->FindByIdempotencyKey(7, "key-1");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->id, p.id);
  EXPECT_EQ(store_->FindByIdempotencyKey(7, "key-2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->FindByIdempotencyKey(9, "key-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->FindByIdempotencyKey(7, "").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AgentStoreTest, ConcurrentInsertsWithOneKeyHaveExactlyOneWinner) {
  constexpr int kThreads = 20;
  std::vector<NewPrompt> prompts;
  for (int i = 0; i < kThreads; ++i) {
    prompts.push_back(Prompt(5, 50, "same-key"));
  }
  std::atomic<int> ok{0};
  std::atomic<int> exists{0};
  std::atomic<int> other{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto r = store_->InsertPrompt(prompts[i]);
      if (r.ok()) {
        ++ok;
      } else if (absl::IsAlreadyExists(r)) {
        ++exists;
      } else {
        ++other;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(exists.load(), kThreads - 1);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM ai_prompts"), 1);
}

TEST_F(AgentStoreTest, GetPromptOnlyForItsOwner) {
  PromptRecord p = Insert(1, 10);
  auto mine = store_->GetPrompt(1, p.id);
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->event_id, p.event_id);
  EXPECT_EQ(store_->GetPrompt(2, p.id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetPrompt(1, p.id + 1000).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AgentStoreTest, ListPromptsPagesNewestFirstAndFiltersByConversation) {
  std::vector<int64_t> all;     // user 1, newest last
  std::vector<int64_t> conv_a;  // user 1, conversation 100
  for (int i = 0; i < 7; ++i) {
    int64_t conv = i % 2 == 0 ? 100 : 200;
    PromptRecord p = Insert(1, conv);
    all.push_back(p.id);
    if (conv == 100) {
      conv_a.push_back(p.id);
    }
    Insert(2, conv);  // another user's, interleaved
  }
  std::reverse(all.begin(), all.end());
  std::reverse(conv_a.begin(), conv_a.end());

  std::vector<int64_t> seen;
  int64_t before = 0;
  for (;;) {
    auto page = store_->ListPrompts(1, std::nullopt, before, 3);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& p : *page) {
      EXPECT_EQ(p.user_id, 1);
      seen.push_back(p.id);
    }
    if (page->size() < 3) {
      break;
    }
    before = page->back().id;
  }
  EXPECT_EQ(seen, all);

  auto in_a = store_->ListPrompts(1, 100, 0, 50);
  ASSERT_TRUE(in_a.ok());
  std::vector<int64_t> ids;
  for (const auto& p : *in_a) {
    ids.push_back(p.id);
  }
  EXPECT_EQ(ids, conv_a);

  auto in_a_page2 = store_->ListPrompts(1, 100, conv_a[1], 50);
  ASSERT_TRUE(in_a_page2.ok());
  ASSERT_EQ(in_a_page2->size(), conv_a.size() - 2);
  EXPECT_EQ(in_a_page2->front().id, conv_a[2]);
  EXPECT_TRUE(store_->ListPrompts(3, std::nullopt, 0, 50)->empty());
}

TEST_F(AgentStoreTest, AnswersPendingTheirSaveAreSettledOrLost) {
  PromptRecord a = Insert(1, 10);
  PromptRecord b = Insert(1, 10);
  int64_t outbox_a = Complete(a);
  Complete(b);
  EXPECT_GT(outbox_a, 0);
  EXPECT_TRUE(store_->GetPrompt(1, a.id)->answer_pending);
  // One statement: the delivered event is deleted, the saved answer recorded.
  ASSERT_TRUE(store_->Settle({outbox_a}, {{a.id, 77}}).ok());
  auto got = store_->GetPrompt(1, a.id);
  EXPECT_FALSE(got->answer_pending);
  EXPECT_EQ(got->response_message_id, 77);
  EXPECT_EQ(got->status, PromptStatus::kCompleted);
  EXPECT_EQ(Count("SELECT count(*) FROM usage_outbox"), 1);
  ASSERT_TRUE(store_->Settle({}, {}).ok());
  // The conversation refused b's answer for good.
  ASSERT_TRUE(store_->MarkAnswerLost(b.id, "conversation deleted").ok());
  got = store_->GetPrompt(1, b.id);
  EXPECT_FALSE(got->answer_pending);
  EXPECT_EQ(got->status, PromptStatus::kFailed);
  EXPECT_EQ(got->error, "conversation deleted");
  // Lost only while pending: a saved answer stays saved.
  ASSERT_TRUE(store_->MarkAnswerLost(a.id, "late").ok());
  EXPECT_EQ(store_->GetPrompt(1, a.id)->status, PromptStatus::kCompleted);
}

TEST_F(AgentStoreTest, OnlyTurnsWhoseOwnerStoppedAreAdopted) {
  ASSERT_TRUE(store_->RenewLease("alive", absl::Minutes(1)).ok());
  ASSERT_TRUE(store_->RenewLease("dead", absl::Minutes(1)).ok());
  PromptRecord running_alive = Insert(1, 10, "alive");
  PromptRecord running_dead = Insert(1, 10, "dead");
  PromptRecord pending_dead = Insert(1, 10, "dead");
  Complete(pending_dead);
  PromptRecord done_dead = Insert(1, 10, "dead");
  Complete(done_dead);
  ASSERT_TRUE(store_->Settle({}, {{done_dead.id, 5}}).ok());
  PromptRecord unowned = Insert(1, 10, "");

  // Every lease is live: nothing to adopt (the unowned one is too young).
  auto none = store_->AdoptAbandoned("sweeper", 10, absl::Minutes(6), absl::Minutes(2));
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());

  ASSERT_TRUE(store_->DropLease("dead").ok());
  ASSERT_TRUE(store_->RenewLease("sweeper", absl::Minutes(1)).ok());
  auto adopted = store_->AdoptAbandoned("sweeper", 10, absl::Minutes(6), absl::Minutes(2));
  ASSERT_TRUE(adopted.ok());
  std::set<int64_t> ids;
  for (const auto& p : *adopted) {
    ids.insert(p.id);
    EXPECT_EQ(p.owner, "sweeper");
  }
  EXPECT_EQ(ids, (std::set<int64_t>{running_dead.id, pending_dead.id}));
  // Taken over: a second sweeper finds nothing.
  EXPECT_TRUE(store_->AdoptAbandoned("other", 10, absl::Minutes(6), absl::Minutes(2))->empty());

  // A lease that lapses counts like one given up.
  ASSERT_TRUE(pool_
                  ->Exec("UPDATE ai_agent_leases SET lease_until = now() - interval '1 second' "
                         "WHERE owner = 'alive'")
                  .ok());
  adopted = store_->AdoptAbandoned("other", 10, absl::Minutes(6), absl::Minutes(2));
  ASSERT_EQ(adopted->size(), 1u);
  EXPECT_EQ((*adopted)[0].id, running_alive.id);
  // Rows from before leases (no owner) count once they are older than any turn.
  ASSERT_TRUE(pool_
                  ->Exec("UPDATE ai_prompts SET created_at = now() - interval '10 minutes' "
                         "WHERE id = $1",
                         {unowned.id})
                  .ok());
  adopted = store_->AdoptAbandoned("other", 10, absl::Minutes(6), absl::Minutes(2));
  ASSERT_EQ(adopted->size(), 1u);
  EXPECT_EQ((*adopted)[0].id, unowned.id);
}

TEST_F(AgentStoreTest, MarkRefusedIsTerminal) {
  PromptRecord p = Insert(1, 10);
  ASSERT_TRUE(store_->MarkRefused(p.id, PromptStatus::kRateLimited, "slow down").ok());
  auto got = store_->GetPrompt(1, p.id);
  EXPECT_EQ(got->status, PromptStatus::kRateLimited);
  EXPECT_EQ(got->error, "slow down");
  EXPECT_TRUE(got->completed_at.has_value());
  EXPECT_EQ(store_->MarkRefused(p.id, PromptStatus::kBudgetExceeded, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetPrompt(1, p.id)->status, PromptStatus::kRateLimited);
  PromptRecord q = Insert(1, 10);
  EXPECT_EQ(store_->MarkRefused(q.id, PromptStatus::kStreaming, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->MarkRefused(q.id + 1000, PromptStatus::kFailed, "x").code(),
            absl::StatusCode::kNotFound);
  // A refused turn never produces a usage event.
  EXPECT_EQ(Count("SELECT count(*) FROM usage_outbox"), 0);
}

TEST_F(AgentStoreTest, FinishPromptWritesPromptAndOutboxOnce) {
  PromptRecord p = Insert(1, 10);
  PromptOutcome o;
  o.user_message_id = 5;
  o.status = PromptStatus::kCompleted;
  o.response_message_id = 6;
  o.response_text = "Hello there";
  o.reported_model = "gpt-4o-mini-2024-07-18";
  o.prompt_tokens = 1200;
  o.completion_tokens = 300;
  o.cached_tokens = 1000;
  o.cost_nanos = CostNanos(1200, 1000, 300, p.prices);
  o.finish_reason = "stop";
  o.latency_ms = 850;
  o.ttft_ms = 120;
  std::string payload("binary\0payload\xff", 15);
  auto outbox_id = store_->FinishPrompt(p.id, o, payload, absl::Milliseconds(50));
  ASSERT_TRUE(outbox_id.ok()) << outbox_id.status();
  EXPECT_GT(*outbox_id, 0);

  auto got = store_->GetPrompt(1, p.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status, PromptStatus::kCompleted);
  EXPECT_EQ(got->user_message_id, 5);
  EXPECT_EQ(got->response_message_id, 6);
  EXPECT_EQ(got->response_text, "Hello there");
  EXPECT_EQ(got->prompt_tokens, 1200);
  EXPECT_EQ(got->completion_tokens, 300);
  EXPECT_EQ(got->cached_tokens, 1000);
  EXPECT_FALSE(got->estimated);
  EXPECT_EQ(got->cost_nanos, o.cost_nanos);
  EXPECT_EQ(got->finish_reason, "stop");
  EXPECT_EQ(got->latency_ms, 850);
  EXPECT_EQ(got->ttft_ms, 120);
  EXPECT_TRUE(got->completed_at.has_value());

  // A second finish is refused and writes nothing.
  PromptOutcome again = o;
  again.status = PromptStatus::kFailed;
  again.error = "late";
  EXPECT_EQ(store_->FinishPrompt(p.id, again, payload, absl::Seconds(1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetPrompt(1, p.id)->status, PromptStatus::kCompleted);
  EXPECT_EQ(Count("SELECT count(*) FROM usage_outbox"), 1);
  EXPECT_EQ(store_->FinishPrompt(p.id + 1000, o, payload, absl::Seconds(1)).status().code(),
            absl::StatusCode::kNotFound);

  // The entry is leased to its writer, who delivers it; recovery takes it only once
  // that lease lapses.
  auto claimed = store_->ClaimOutbox(10, absl::Seconds(30));
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  if (claimed->empty()) {
    while (claimed->empty() && absl::Now() < deadline) {
      claimed = store_->ClaimOutbox(10, absl::Seconds(30));
    }
  }
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].id, *outbox_id);
  EXPECT_EQ((*claimed)[0].event_id, p.event_id);
  EXPECT_EQ((*claimed)[0].payload, payload);
  EXPECT_EQ((*claimed)[0].attempts, 1);
}

TEST_F(AgentStoreTest, FinishPromptWithoutTokensWritesNoEvent) {
  PromptRecord p = Insert(1, 10);
  PromptOutcome o;
  o.status = PromptStatus::kFailed;
  o.error = "upstream 503";
  auto none = store_->FinishPrompt(p.id, o, std::nullopt, absl::Seconds(1));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
  auto got = store_->GetPrompt(1, p.id);
  EXPECT_EQ(got->status, PromptStatus::kFailed);
  EXPECT_EQ(got->error, "upstream 503");
  EXPECT_EQ(got->response_message_id, 0);
  EXPECT_EQ(Count("SELECT count(*) FROM usage_outbox"), 0);
  PromptOutcome bad;
  bad.status = PromptStatus::kRateLimited;
  EXPECT_EQ(
      store_->FinishPrompt(Insert(1, 10).id, bad, std::nullopt, absl::Seconds(1)).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(AgentStoreTest, FinishPromptIsAtomic) {
  PromptRecord p = Insert(1, 10);
  // An outbox row already holding this event id makes the outbox insert fail;
  // the prompt update must roll back with it.
  ASSERT_TRUE(
      pool_->Exec("INSERT INTO usage_outbox (event_id, payload) VALUES ($1, '')", {p.event_id})
          .ok());
  PromptOutcome o;
  o.completion_tokens = 3;
  EXPECT_FALSE(store_->FinishPrompt(p.id, o, std::string("x"), absl::Seconds(1)).ok());
  auto got = store_->GetPrompt(1, p.id);
  EXPECT_EQ(got->status, PromptStatus::kPending);
  EXPECT_EQ(got->completion_tokens, 0);
  EXPECT_FALSE(got->completed_at.has_value());
}

TEST_F(AgentStoreTest, ConcurrentClaimersNeverShareARow) {
  constexpr int kRows = 300;
  AddOutboxRows(kRows);
  absl::Mutex mu;
  std::multiset<int64_t> claimed;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (;;) {
        auto batch = store_->ClaimOutbox(7, absl::Minutes(5));
        if (!batch.ok()) {
          ++errors;
          return;
        }
        if (batch->empty()) {
          return;
        }
        absl::MutexLock lock(&mu);
        for (const auto& e : *batch) {
          claimed.insert(e.id);
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(claimed.size(), static_cast<size_t>(kRows));
  EXPECT_EQ(std::set<int64_t>(claimed.begin(), claimed.end()).size(), static_cast<size_t>(kRows));
}

TEST_F(AgentStoreTest, ClaimOutboxLeasesExpire) {
  AddOutboxRows(3);
  auto first = store_->ClaimOutbox(2, absl::Minutes(5));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 2u);
  EXPECT_LT((*first)[0].id, (*first)[1].id);  // oldest first
  auto second = store_->ClaimOutbox(10, absl::Minutes(5));
  ASSERT_EQ(second->size(), 1u);
  EXPECT_TRUE(store_->ClaimOutbox(10, absl::Minutes(5))->empty());

  // A publisher that died: its lease runs out and the rows come back.
  ASSERT_TRUE(pool_
                  ->Exec("UPDATE usage_outbox SET locked_until = now() - interval '1 second' "
                         "WHERE id = $1",
                         {(*first)[0].id})
                  .ok());
  auto again = store_->ClaimOutbox(10, absl::Minutes(5));
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].id, (*first)[0].id);
  EXPECT_EQ((*again)[0].attempts, 2);

  // A short real lease, waited out by polling.
  ASSERT_TRUE(
      pool_->Exec("INSERT INTO usage_outbox (event_id, payload) VALUES ('short', '')").ok());
  auto short_lease = store_->ClaimOutbox(10, absl::Milliseconds(50));
  ASSERT_EQ(short_lease->size(), 1u);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  std::vector<OutboxEntry> back;
  while (back.empty() && absl::Now() < deadline) {
    back = *store_->ClaimOutbox(10, absl::Minutes(5));
  }
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].event_id, "short");
}

TEST_F(AgentStoreTest, AckDeletesAndRetryReschedules) {
  AddOutboxRows(4);
  auto batch = store_->ClaimOutbox(10, absl::Minutes(5));
  ASSERT_EQ(batch->size(), 4u);
  ASSERT_TRUE(store_->AckOutbox({(*batch)[0].id, (*batch)[1].id}).ok());
  ASSERT_TRUE(store_->AckOutbox({}).ok());
  EXPECT_EQ(Count("SELECT count(*) FROM usage_outbox"), 2);

  // Far in the future: not claimable; lease released; error kept.
  ASSERT_TRUE(store_->RetryOutbox((*batch)[2].id, absl::Hours(1), "UNAVAILABLE: down").ok());
  // No delay: claimable again at once.
  ASSERT_TRUE(store_->RetryOutbox((*batch)[3].id, absl::ZeroDuration(), "DEADLINE").ok());
  auto row = pool_->Exec(
      "SELECT locked_until IS NULL, next_attempt_at > now() + interval '50 minutes', last_error "
      "FROM usage_outbox WHERE id = $1",
      {(*batch)[2].id});
  ASSERT_EQ(row->rows(), 1);
  EXPECT_TRUE(row->Bool(0, 0));
  EXPECT_TRUE(row->Bool(0, 1));
  EXPECT_EQ(row->String(0, 2), "UNAVAILABLE: down");
  auto next = store_->ClaimOutbox(10, absl::Minutes(5));
  ASSERT_EQ(next->size(), 1u);
  EXPECT_EQ((*next)[0].id, (*batch)[3].id);
  EXPECT_EQ((*next)[0].attempts, 2);

  EXPECT_EQ(store_->RetryOutbox((*batch)[0].id, absl::Seconds(1), "x").code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AgentStoreTest, OutboxBacklogCountsAndAges) {
  auto empty = store_->OutboxBacklog();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->backlog, 0);
  EXPECT_EQ(empty->oldest_age_seconds, 0);
  AddOutboxRows(5);
  ASSERT_TRUE(pool_
                  ->Exec("UPDATE usage_outbox SET created_at = now() - interval '90 seconds' "
                         "WHERE event_id = 'row-1'")
                  .ok());
  auto stats = store_->OutboxBacklog();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->backlog, 5);
  EXPECT_GE(stats->oldest_age_seconds, 90);
  EXPECT_LT(stats->oldest_age_seconds, 600);
}

}  // namespace
}  // namespace aichat::agent
