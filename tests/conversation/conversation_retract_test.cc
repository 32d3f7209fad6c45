// RetractMessage over real gRPC and PostgreSQL: a turn refused after its user
// message was written leaves the conversation as it was.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "tests/conversation/conversation_fixture.h"

namespace aichat::conversation {
namespace {

using grpc::StatusCode;

class RetractTest : public ConversationFixture {
 protected:
  // The agent's append of a turn's user message.
  v1::Message AppendPromptMessage(int64_t conversation_id, int64_t prompt_id,
                                  v1::MessageRole role = v1::MESSAGE_ROLE_USER) {
    v1::AppendMessageRequest req;
    req.set_conversation_id(conversation_id);
    req.set_role(role);
    req.set_content("question");
    req.set_prompt_id(prompt_id);
    v1::Message out;
    auto st = stub_->AppendMessage(Ctx(service_token_, kAlice).get(), req, &out);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return out;
  }

  grpc::Status Retract(const std::string& token, int64_t acting, int64_t conversation_id,
                       int64_t prompt_id, v1::RetractMessageResponse* out) {
    v1::RetractMessageRequest req;
    req.set_conversation_id(conversation_id);
    req.set_prompt_id(prompt_id);
    return stub_->RetractMessage(Ctx(token, acting).get(), req, out);
  }

  std::vector<int64_t> Positions(int64_t conversation_id) {
    v1::ListMessagesResponse r;
    EXPECT_TRUE(ListMessages(alice_, conversation_id, 500, "", &r).ok());
    std::vector<int64_t> out;
    for (const auto& m : r.messages()) out.push_back(m.position());
    return out;
  }

  int64_t MessageCount(int64_t conversation_id) {
    v1::GetConversationRequest get;
    get.set_id(conversation_id);
    v1::Conversation c;
    EXPECT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &c).ok());
    return c.message_count();
  }
};

TEST_F(RetractTest, RemovesThePromptsUserMessageOnceAndLeavesAGap) {
  auto conv = MustCreate(alice_, "c");
  MustAppend(alice_, conv.id(), "before");
  AppendPromptMessage(conv.id(), 77);
  MustAppend(alice_, conv.id(), "after");
  ASSERT_EQ(MessageCount(conv.id()), 3);

  v1::RetractMessageResponse resp;
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 77, &resp).ok());
  EXPECT_TRUE(resp.removed());
  EXPECT_EQ(Positions(conv.id()), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(MessageCount(conv.id()), 2);
  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, conv.id(), 1000, &ctx).ok());
  ASSERT_EQ(ctx.messages_size(), 2);
  EXPECT_EQ(ctx.messages(0).content(), "before");
  EXPECT_EQ(ctx.messages(1).content(), "after");

  // Idempotent: nothing left to remove, nothing changes.
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 77, &resp).ok());
  EXPECT_FALSE(resp.removed());
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 12345, &resp).ok());
  EXPECT_FALSE(resp.removed());
  EXPECT_EQ(MessageCount(conv.id()), 2);
  // The next message takes the next position; the gap stays.
  EXPECT_EQ(MustAppend(alice_, conv.id(), "next").position(), 4);
}

TEST_F(RetractTest, OnlyTheUserMessageOfThatPromptInThatConversation) {
  auto conv = MustCreate(alice_, "c");
  auto other = MustCreate(alice_, "other");
  AppendPromptMessage(conv.id(), 5, v1::MESSAGE_ROLE_USER);
  AppendPromptMessage(conv.id(), 5, v1::MESSAGE_ROLE_ASSISTANT);
  AppendPromptMessage(conv.id(), 6, v1::MESSAGE_ROLE_ASSISTANT);
  AppendPromptMessage(other.id(), 7, v1::MESSAGE_ROLE_USER);

  v1::RetractMessageResponse resp;
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 6, &resp).ok());
  EXPECT_FALSE(resp.removed());  // an answer is not a user message
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 7, &resp).ok());
  EXPECT_FALSE(resp.removed());  // prompt 7 wrote to the other conversation
  ASSERT_TRUE(Retract(service_token_, kAlice, conv.id(), 5, &resp).ok());
  EXPECT_TRUE(resp.removed());

  v1::ListMessagesResponse list;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 50, "", &list).ok());
  ASSERT_EQ(list.messages_size(), 2);
  EXPECT_EQ(list.messages(0).role(), v1::MESSAGE_ROLE_ASSISTANT);
  EXPECT_EQ(list.messages(0).prompt_id(), 5);
  EXPECT_EQ(list.messages(1).prompt_id(), 6);
  EXPECT_EQ(MessageCount(conv.id()), 2);
  EXPECT_EQ(MessageCount(other.id()), 1);
}

TEST_F(RetractTest, OnlyServicesActingForTheOwner) {
  auto conv = MustCreate(alice_, "c");
  AppendPromptMessage(conv.id(), 9);
  v1::RetractMessageResponse resp;
  // Users, admins included, may not call it, even on their own conversation.
  EXPECT_EQ(Retract(alice_, 0, conv.id(), 9, &resp).error_code(), StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Retract(keys_.Token(kAlice, Role::kAdmin), 0, conv.id(), 9, &resp).error_code(),
            StatusCode::PERMISSION_DENIED);
  // A service must name the user it acts for.
  EXPECT_EQ(Retract(service_token_, 0, conv.id(), 9, &resp).error_code(),
            StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Retract("", 0, conv.id(), 9, &resp).error_code(), StatusCode::UNAUTHENTICATED);
  // Another user's conversation reads exactly like a missing one.
  auto foreign = Retract(service_token_, kBob, conv.id(), 9, &resp);
  auto missing = Retract(service_token_, kBob, conv.id() + 1000, 9, &resp);
  EXPECT_EQ(foreign.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(foreign.error_message(), missing.error_message());
  for (auto [conversation_id, prompt_id, field] :
       {std::tuple<int64_t, int64_t, const char*>{0, 9, "conversation_id"},
        {conv.id(), 0, "prompt_id"},
        {conv.id(), -1, "prompt_id"}}) {
    auto st = Retract(service_token_, kAlice, conversation_id, prompt_id, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(st.error_message().find(field), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Count("messages"), 1);
  EXPECT_EQ(MessageCount(conv.id()), 1);
}

// The agent gave up on an append that the server was still committing and retracts
// it at once: the retract waits for the append's lock and then sees its message.
TEST_F(RetractTest, AnAppendStillCommittingWhenTheRetractArrivesIsRemovedToo) {
  auto conv = MustCreate(alice_, "slow");
  absl::Notification appended, commit;
  std::thread append([&] {
    auto st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
      // What the append statement does, held open before its commit.
      auto r = conn.Exec(
          "WITH c AS (UPDATE conversations SET last_position = last_position + 1, "
          "message_count = message_count + 1 WHERE id = $1 RETURNING id, last_position) "
          "INSERT INTO messages (conversation_id, position, role, content, token_count, "
          "token_count_estimated, prompt_id, created_at) "
          "SELECT id, last_position, 'user', 'late', 1, false, 88, now() FROM c",
          {conv.id()});
      if (!r.ok()) return r.status();
      appended.Notify();
      commit.WaitForNotification();
      return absl::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st;
  });
  appended.WaitForNotification();
  v1::RetractMessageResponse resp;
  grpc::Status retracted;
  std::thread retract([&] { retracted = Retract(service_token_, kAlice, conv.id(), 88, &resp); });
  absl::SleepFor(absl::Milliseconds(200));  // the retract now waits for the append's lock
  commit.Notify();
  append.join();
  retract.join();
  ASSERT_TRUE(retracted.ok()) << retracted.error_message();
  EXPECT_TRUE(resp.removed());
  EXPECT_EQ(Count("messages"), 0);
  EXPECT_EQ(MessageCount(conv.id()), 0);
}

// Retracts racing appends on one conversation: no deadlock, no lost count.
TEST_F(RetractTest, ConcurrentRetractsAndAppendsKeepTheCount) {
  auto conv = MustCreate(alice_, "busy");
  constexpr int kPrompts = 20;
  for (int p = 1; p <= kPrompts; ++p) AppendPromptMessage(conv.id(), p);
  std::vector<grpc::Status> statuses(kPrompts);
  std::vector<v1::RetractMessageResponse> responses(kPrompts);
  std::vector<std::thread> threads;
  for (int p = 1; p <= kPrompts; ++p) {
    threads.emplace_back([&, p] {
      if (p % 2 == 0) {
        statuses[p - 1] = Retract(service_token_, kAlice, conv.id(), p, &responses[p - 1]);
      } else {
        v1::Message m;
        statuses[p - 1] =
            Append(service_token_, kAlice, conv.id(), v1::MESSAGE_ROLE_ASSISTANT, "answer", 3, &m);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int p = 1; p <= kPrompts; ++p) {
    ASSERT_TRUE(statuses[p - 1].ok()) << p << ": " << statuses[p - 1].error_message();
    if (p % 2 == 0) EXPECT_TRUE(responses[p - 1].removed()) << p;
  }
  EXPECT_EQ(Count("messages"), kPrompts);  // 20 - 10 retracted + 10 answers
  EXPECT_EQ(MessageCount(conv.id()), kPrompts);
}

}  // namespace
}  // namespace aichat::conversation
