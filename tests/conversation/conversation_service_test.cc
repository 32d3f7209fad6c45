// ConversationService over real gRPC (loopback) and a real PostgreSQL database.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/page_token.h"
#include "common/proto_time.h"
#include "tests/conversation/conversation_fixture.h"

namespace aichat::conversation {
namespace {

using grpc::StatusCode;

class ConversationServiceTest : public ConversationFixture {};

TEST(EstimateTokensTest, CountsAsciiByFourAndOtherCharactersByOne) {
  EXPECT_EQ(EstimateTokens(""), 0);
  EXPECT_EQ(EstimateTokens("abcd"), 1 + kEstimateOverheadTokens);
  EXPECT_EQ(EstimateTokens("abcde"), 2 + kEstimateOverheadTokens);
  EXPECT_EQ(EstimateTokens("日本語"), 3 + kEstimateOverheadTokens);
  EXPECT_EQ(EstimateTokens("café"), 1 + 1 + kEstimateOverheadTokens);
}

TEST_F(ConversationServiceTest, CreateGetUpdateDelete) {
  v1::CreateConversationRequest req;
  req.set_title("Trip to Lisbon");
  req.set_model("gpt-4o-mini");
  req.set_system_prompt("You are a travel agent.");
  v1::Conversation created;
  ASSERT_TRUE(stub_->CreateConversation(Ctx(alice_).get(), req, &created).ok());
  EXPECT_GT(created.id(), 0);
  EXPECT_EQ(created.user_id(), kAlice);
  EXPECT_EQ(created.title(), "Trip to Lisbon");
  EXPECT_EQ(created.model(), "gpt-4o-mini");
  EXPECT_EQ(created.system_prompt(), "You are a travel agent.");
  EXPECT_EQ(created.message_count(), 0);
  EXPECT_TRUE(created.has_created_at());
  EXPECT_TRUE(created.has_updated_at());

  v1::GetConversationRequest get;
  get.set_id(created.id());
  v1::Conversation got;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &got).ok());
  EXPECT_EQ(got.SerializeAsString(), created.SerializeAsString());

  // Only the fields that are set change.
  v1::UpdateConversationRequest upd;
  upd.set_id(created.id());
  upd.set_title("Trip to Porto");
  v1::Conversation updated;
  ASSERT_TRUE(stub_->UpdateConversation(Ctx(alice_).get(), upd, &updated).ok());
  EXPECT_EQ(updated.title(), "Trip to Porto");
  EXPECT_EQ(updated.model(), "gpt-4o-mini");
  EXPECT_EQ(updated.system_prompt(), "You are a travel agent.");
  EXPECT_GT(FromProto(updated.updated_at()), FromProto(created.updated_at()));
  EXPECT_EQ(FromProto(updated.created_at()), FromProto(created.created_at()));

  // Empty strings: back to the default model, no system prompt.
  v1::UpdateConversationRequest clear;
  clear.set_id(created.id());
  clear.set_model("");
  clear.set_system_prompt("");
  ASSERT_TRUE(stub_->UpdateConversation(Ctx(alice_).get(), clear, &updated).ok());
  EXPECT_EQ(updated.title(), "Trip to Porto");
  EXPECT_EQ(updated.model(), "");
  EXPECT_EQ(updated.system_prompt(), "");
  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, created.id(), 100, &ctx).ok());
  EXPECT_EQ(ctx.system_prompt_tokens(), 0);

  // Nothing set: nothing changes, not even updated_at.
  v1::UpdateConversationRequest none;
  none.set_id(created.id());
  v1::Conversation same;
  ASSERT_TRUE(stub_->UpdateConversation(Ctx(alice_).get(), none, &same).ok());
  EXPECT_EQ(same.SerializeAsString(), updated.SerializeAsString());

  MustAppend(alice_, created.id(), "hello");
  MustAppend(alice_, created.id(), "again");
  EXPECT_EQ(Count("messages"), 2);

  v1::DeleteConversationRequest del;
  del.set_id(created.id());
  v1::DeleteConversationResponse dresp;
  ASSERT_TRUE(stub_->DeleteConversation(Ctx(alice_).get(), del, &dresp).ok());
  auto st = stub_->GetConversation(Ctx(alice_).get(), get, &got);
  EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(stub_->DeleteConversation(Ctx(alice_).get(), del, &dresp).error_code(),
            StatusCode::NOT_FOUND);
  EXPECT_EQ(Count("messages"), 0);
  EXPECT_EQ(Count("conversations"), 0);
}

TEST_F(ConversationServiceTest, AppendMovesUpdatedAtAndCountsAndNumbersPositions) {
  auto conv = MustCreate(alice_, "c");
  auto m1 = MustAppend(alice_, conv.id(), "hello world!");
  EXPECT_EQ(m1.position(), 1);
  EXPECT_EQ(m1.role(), v1::MESSAGE_ROLE_USER);
  EXPECT_EQ(m1.content(), "hello world!");
  EXPECT_EQ(m1.conversation_id(), conv.id());
  EXPECT_TRUE(m1.token_count_estimated());
  EXPECT_EQ(m1.token_count(), 3 + kEstimateOverheadTokens);
  EXPECT_EQ(m1.prompt_id(), 0);
  EXPECT_FALSE(m1.superseded());

  v1::AppendMessageRequest req;
  req.set_conversation_id(conv.id());
  req.set_role(v1::MESSAGE_ROLE_ASSISTANT);
  req.set_content("hi!");
  req.set_token_count(17);
  req.set_prompt_id(99);
  v1::Message m2;
  ASSERT_TRUE(stub_->AppendMessage(Ctx(service_token_, kAlice).get(), req, &m2).ok());
  EXPECT_EQ(m2.position(), 2);
  EXPECT_EQ(m2.token_count(), 17);
  EXPECT_FALSE(m2.token_count_estimated());
  EXPECT_EQ(m2.prompt_id(), 99);
  EXPECT_GE(FromProto(m2.created_at()), FromProto(m1.created_at()));

  v1::GetConversationRequest get;
  get.set_id(conv.id());
  v1::Conversation after;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &after).ok());
  EXPECT_EQ(after.message_count(), 2);
  EXPECT_EQ(FromProto(after.updated_at()), FromProto(m2.created_at()));
  EXPECT_GT(FromProto(after.updated_at()), FromProto(conv.updated_at()));

  // What the agent reads back is what was stored.
  v1::ListMessagesResponse list;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 0, "", &list).ok());
  ASSERT_EQ(list.messages_size(), 2);
  EXPECT_EQ(list.messages(0).SerializeAsString(), m1.SerializeAsString());
  EXPECT_EQ(list.messages(1).SerializeAsString(), m2.SerializeAsString());
  EXPECT_TRUE(list.next_page_token().empty());
}

TEST_F(ConversationServiceTest, ListConversationsNewestUpdatedFirst) {
  auto a = MustCreate(alice_, "a");
  auto b = MustCreate(alice_, "b");
  auto c = MustCreate(alice_, "c");
  MustCreate(bob_, "bob's");
  MustAppend(alice_, a.id(), "bump");
  v1::ListConversationsRequest req;
  v1::ListConversationsResponse resp;
  ASSERT_TRUE(stub_->ListConversations(Ctx(alice_).get(), req, &resp).ok());
  ASSERT_EQ(resp.conversations_size(), 3);
  EXPECT_EQ(resp.conversations(0).id(), a.id());
  EXPECT_EQ(resp.conversations(1).id(), c.id());
  EXPECT_EQ(resp.conversations(2).id(), b.id());
  EXPECT_EQ(resp.conversations(0).message_count(), 1);
  EXPECT_TRUE(resp.next_page_token().empty());
}

// Keyset pages stay correct while rows are inserted and updated between pages:
// every conversation that existed at the start is seen exactly once, unless it
// was updated during the pass after being shown (then it moved to the front and
// is not shown twice). New ones go to the front, before the cursor.
TEST_F(ConversationServiceTest, ListConversationsPagesWithConcurrentWrites) {
  std::set<int64_t> originals;
  for (int i = 0; i < 23; ++i) originals.insert(MustCreate(alice_, absl::StrCat("c", i)).id());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 20 && !stop; ++i) MustCreate(alice_, absl::StrCat("new", i));
  });
  std::vector<int64_t> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListConversationsRequest req;
    req.set_page_size(5);
    req.set_page_token(token);
    v1::ListConversationsResponse resp;
    ASSERT_TRUE(stub_->ListConversations(Ctx(alice_).get(), req, &resp).ok());
    for (const auto& c : resp.conversations()) seen.push_back(c.id());
    // Touch one already seen: it moves to the front and must not come back.
    if (!resp.conversations().empty()) MustAppend(alice_, resp.conversations(0).id(), "touch");
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 100);
  stop = true;
  writer.join();
  std::set<int64_t> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "a conversation was listed twice";
  for (int64_t id : originals) EXPECT_EQ(unique.count(id), 1u) << "missing " << id;
}

TEST_F(ConversationServiceTest, ListMessagesPagesWithConcurrentAppendsHaveNoGapsOrDuplicates) {
  auto conv = MustCreate(alice_, "c");
  for (int i = 0; i < 60; ++i) MustAppend(alice_, conv.id(), absl::StrCat("m", i));
  std::thread writer([&] {
    for (int i = 0; i < 60; ++i) MustAppend(alice_, conv.id(), absl::StrCat("w", i));
  });
  std::vector<int64_t> positions;
  std::string token;
  do {
    v1::ListMessagesResponse resp;
    ASSERT_TRUE(ListMessages(alice_, conv.id(), 7, token, &resp).ok());
    for (const auto& m : resp.messages()) positions.push_back(m.position());
    MustAppend(alice_, conv.id(), "between pages");
    token = resp.next_page_token();
  } while (!token.empty());
  writer.join();
  ASSERT_GE(positions.size(), 60u);
  for (size_t i = 0; i < positions.size(); ++i) {
    ASSERT_EQ(positions[i], static_cast<int64_t>(i) + 1) << "gap or duplicate at " << i;
  }
  // Every page boundary is exact: a full listing now returns everything once.
  std::vector<int64_t> all;
  token.clear();
  do {
    v1::ListMessagesResponse resp;
    ASSERT_TRUE(ListMessages(alice_, conv.id(), 500, token, &resp).ok());
    for (const auto& m : resp.messages()) all.push_back(m.position());
    token = resp.next_page_token();
  } while (!token.empty());
  EXPECT_EQ(static_cast<int64_t>(all.size()), Count("messages"));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int64_t>(i) + 1);
}

TEST_F(ConversationServiceTest, IdorMatrixAnswersNotFoundLikeAMissingId) {
  auto conv = MustCreate(alice_, "alice's secret", std::string("be nice"));
  auto msg = MustAppend(alice_, conv.id(), "private");
  const int64_t missing = conv.id() + 1000;

  // The status of each RPC, by a given caller, on a given id.
  auto run_all = [&](const std::string& token, int64_t acting, int64_t id) {
    std::vector<grpc::Status> out;
    v1::GetConversationRequest get;
    get.set_id(id);
    v1::Conversation c;
    out.push_back(stub_->GetConversation(Ctx(token, acting).get(), get, &c));
    v1::UpdateConversationRequest upd;
    upd.set_id(id);
    upd.set_title("pwned");
    out.push_back(stub_->UpdateConversation(Ctx(token, acting).get(), upd, &c));
    v1::UpdateConversationRequest noop;
    noop.set_id(id);
    out.push_back(stub_->UpdateConversation(Ctx(token, acting).get(), noop, &c));
    v1::Message m;
    out.push_back(Append(token, acting, id, v1::MESSAGE_ROLE_USER, "hi", std::nullopt, &m));
    if (acting > 0) {
      out.push_back(Append(token, acting, id, v1::MESSAGE_ROLE_ASSISTANT, "hi", 3, &m, msg.id()));
    }
    v1::ListMessagesRequest lm;
    lm.set_conversation_id(id);
    v1::ListMessagesResponse lmr;
    out.push_back(stub_->ListMessages(Ctx(token, acting).get(), lm, &lmr));
    v1::GetContextRequest gc;
    gc.set_conversation_id(id);
    gc.set_max_tokens(1000);
    v1::GetContextResponse gcr;
    out.push_back(stub_->GetContext(Ctx(token, acting).get(), gc, &gcr));
    if (acting > 0) {
      v1::RetractMessageRequest rm;
      rm.set_conversation_id(id);
      rm.set_prompt_id(1);
      v1::RetractMessageResponse rmr;
      out.push_back(stub_->RetractMessage(Ctx(token, acting).get(), rm, &rmr));
    }
    v1::DeleteConversationRequest del;
    del.set_id(id);
    v1::DeleteConversationResponse dr;
    out.push_back(stub_->DeleteConversation(Ctx(token, acting).get(), del, &dr));
    return out;
  };

  for (int64_t acting : {int64_t{0}, kBob}) {
    const std::string& token = acting == 0 ? bob_ : service_token_;
    auto foreign = run_all(token, acting, conv.id());
    auto absent = run_all(token, acting, missing);
    ASSERT_EQ(foreign.size(), absent.size());
    for (size_t i = 0; i < foreign.size(); ++i) {
      EXPECT_EQ(foreign[i].error_code(), StatusCode::NOT_FOUND) << "rpc " << i;
      EXPECT_EQ(foreign[i].error_message(), absent[i].error_message()) << "rpc " << i;
      EXPECT_EQ(foreign[i].error_details(), absent[i].error_details()) << "rpc " << i;
    }
  }
  v1::ListConversationsResponse bobs;
  ASSERT_TRUE(
      stub_->ListConversations(Ctx(bob_).get(), v1::ListConversationsRequest(), &bobs).ok());
  EXPECT_EQ(bobs.conversations_size(), 0);

  // Bob's own conversation cannot supersede Alice's message either.
  auto own = MustCreate(bob_, "bob's");
  v1::Message m;
  auto st =
      Append(service_token_, kBob, own.id(), v1::MESSAGE_ROLE_ASSISTANT, "x", 1, &m, msg.id());
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);

  // Alice's data is untouched.
  v1::GetConversationRequest get;
  get.set_id(conv.id());
  v1::Conversation after;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &after).ok());
  EXPECT_EQ(after.title(), "alice's secret");
  EXPECT_EQ(after.message_count(), 1);
  EXPECT_EQ(FromProto(after.updated_at()), FromProto(msg.created_at()));
  v1::ListMessagesResponse list;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 0, "", &list).ok());
  ASSERT_EQ(list.messages_size(), 1);
  EXPECT_FALSE(list.messages(0).superseded());
  EXPECT_EQ(Count("messages"), 1);
}

TEST_F(ConversationServiceTest, OnlyServicesActingForTheOwnerAppendAssistantOrSystem) {
  auto conv = MustCreate(alice_, "c");
  v1::Message m;
  for (auto role : {v1::MESSAGE_ROLE_ASSISTANT, v1::MESSAGE_ROLE_SYSTEM}) {
    EXPECT_EQ(Append(alice_, 0, conv.id(), role, "fake answer", 5, &m).error_code(),
              StatusCode::PERMISSION_DENIED);
    // Admins are users here too.
    EXPECT_EQ(
        Append(keys_.Token(kAlice, Role::kAdmin), 0, conv.id(), role, "x", 5, &m).error_code(),
        StatusCode::PERMISSION_DENIED);
  }
  // A user token naming an acting user (even itself) is refused outright.
  EXPECT_EQ(Append(alice_, kAlice, conv.id(), v1::MESSAGE_ROLE_USER, "x", 1, &m).error_code(),
            StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Append(bob_, kAlice, conv.id(), v1::MESSAGE_ROLE_ASSISTANT, "x", 1, &m).error_code(),
            StatusCode::PERMISSION_DENIED);
  // A service token that names no user may not touch data.
  EXPECT_EQ(
      Append(service_token_, 0, conv.id(), v1::MESSAGE_ROLE_ASSISTANT, "x", 1, &m).error_code(),
      StatusCode::PERMISSION_DENIED);
  v1::Conversation c;
  EXPECT_EQ(
      stub_->CreateConversation(Ctx(service_token_).get(), v1::CreateConversationRequest(), &c)
          .error_code(),
      StatusCode::PERMISSION_DENIED);
  v1::ListConversationsResponse lc;
  EXPECT_EQ(stub_->ListConversations(Ctx(service_token_).get(), v1::ListConversationsRequest(), &lc)
                .error_code(),
            StatusCode::PERMISSION_DENIED);
  // No token at all.
  EXPECT_EQ(Append("", 0, conv.id(), v1::MESSAGE_ROLE_USER, "x", 1, &m).error_code(),
            StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Count("messages"), 0);

  // The agent's path: service acting for the owner appends all three roles.
  for (auto role : {v1::MESSAGE_ROLE_USER, v1::MESSAGE_ROLE_ASSISTANT, v1::MESSAGE_ROLE_SYSTEM}) {
    ASSERT_TRUE(Append(service_token_, kAlice, conv.id(), role, "ok", 2, &m).ok());
    EXPECT_EQ(m.role(), role);
  }
  v1::GetConversationRequest get;
  get.set_id(conv.id());
  ASSERT_TRUE(stub_->GetConversation(Ctx(service_token_, kAlice).get(), get, &c).ok());
  EXPECT_EQ(c.user_id(), kAlice);
  EXPECT_EQ(c.message_count(), 3);
  // Conversations a service creates for a user belong to that user.
  ASSERT_TRUE(
      stub_
          ->CreateConversation(Ctx(service_token_, kBob).get(), v1::CreateConversationRequest(), &c)
          .ok());
  EXPECT_EQ(c.user_id(), kBob);
}

TEST_F(ConversationServiceTest, GetContextAtExactTokenBoundaries) {
  const std::string prompt = "You are terse.";  // 14 ASCII bytes
  const int32_t s = EstimateTokens(prompt);
  ASSERT_EQ(s, 4 + kEstimateOverheadTokens);
  auto conv = MustCreate(alice_, "c", prompt);
  auto m1 = MustAppend(alice_, conv.id(), "one", 10);
  auto m2 = MustAppendAssistant(kAlice, conv.id(), "two", 20);
  auto m3 = MustAppend(alice_, conv.id(), "three", 30);

  struct Case {
    int32_t max_tokens;
    std::vector<int64_t> ids;
    bool truncated;
  };
  const std::vector<Case> cases = {
      {s + 60, {m1.id(), m2.id(), m3.id()}, false},  // everything, exactly
      {s + 61, {m1.id(), m2.id(), m3.id()}, false},
      {s + 59, {m2.id(), m3.id()}, true},  // one token short of everything
      {s + 50, {m2.id(), m3.id()}, true},  // the newest two, exactly
      {s + 49, {m3.id()}, true},           // one over for the newest two
      {s + 30, {m3.id()}, true},
      {s + 29, {}, true},  // not even the newest fits
      {s, {}, true},       // the system prompt exactly
  };
  for (const auto& c : cases) {
    v1::GetContextResponse resp;
    ASSERT_TRUE(Context(alice_, conv.id(), c.max_tokens, &resp).ok());
    std::vector<int64_t> ids;
    int32_t sum = s;
    for (const auto& m : resp.messages()) {
      ids.push_back(m.id());
      sum += m.token_count();
    }
    EXPECT_EQ(ids, c.ids) << "max_tokens " << c.max_tokens;
    EXPECT_EQ(resp.truncated(), c.truncated) << "max_tokens " << c.max_tokens;
    EXPECT_EQ(resp.token_count(), sum) << "max_tokens " << c.max_tokens;
    EXPECT_LE(resp.token_count(), c.max_tokens);
    EXPECT_EQ(resp.system_prompt(), prompt);
    EXPECT_EQ(resp.system_prompt_tokens(), s);
  }
  // Oldest first, with full contents.
  v1::GetContextResponse all;
  ASSERT_TRUE(Context(service_token_, conv.id(), 1000, &all, kAlice).ok());
  ASSERT_EQ(all.messages_size(), 3);
  EXPECT_EQ(all.messages(0).content(), "one");
  EXPECT_EQ(all.messages(1).content(), "two");
  EXPECT_EQ(all.messages(1).role(), v1::MESSAGE_ROLE_ASSISTANT);
  EXPECT_EQ(all.messages(2).content(), "three");
}

// The agent's turn reads ownership, settings and context in one call.
TEST_F(ConversationServiceTest, GetContextReturnsTheConversation) {
  auto conv = MustCreate(alice_, "settings", std::string("Be brief."));
  v1::UpdateConversationRequest upd;
  upd.set_id(conv.id());
  upd.set_model("gpt-4o-mini");
  v1::Conversation updated;
  ASSERT_TRUE(stub_->UpdateConversation(Ctx(alice_).get(), upd, &updated).ok());
  MustAppend(alice_, conv.id(), "one", 3);
  MustAppendAssistant(kAlice, conv.id(), "two", 4);

  v1::GetConversationRequest get;
  get.set_id(conv.id());
  v1::Conversation stored;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &stored).ok());
  ASSERT_EQ(stored.message_count(), 2);
  for (int32_t max_tokens : {1, 1000}) {  // with and without a window
    v1::GetContextResponse resp;
    ASSERT_TRUE(Context(service_token_, conv.id(), max_tokens, &resp, kAlice).ok());
    EXPECT_EQ(resp.conversation().SerializeAsString(), stored.SerializeAsString());
    EXPECT_EQ(resp.conversation().model(), "gpt-4o-mini");
    EXPECT_EQ(resp.system_prompt(), "Be brief.");
  }
}

TEST_F(ConversationServiceTest, GetContextStopsAtTheFirstMessageThatDoesNotFit) {
  // The window is the newest contiguous run: an older small message is never
  // pulled in past a larger one that did not fit.
  auto conv = MustCreate(alice_, "c");
  MustAppend(alice_, conv.id(), "small old", 1);
  MustAppend(alice_, conv.id(), "big", 100);
  auto newest = MustAppend(alice_, conv.id(), "small new", 1);
  v1::GetContextResponse resp;
  ASSERT_TRUE(Context(alice_, conv.id(), 3, &resp).ok());
  ASSERT_EQ(resp.messages_size(), 1);
  EXPECT_EQ(resp.messages(0).id(), newest.id());
  EXPECT_TRUE(resp.truncated());
  EXPECT_EQ(resp.token_count(), 1);
}

TEST_F(ConversationServiceTest, GetContextEmptyConversationAndOversizedSystemPrompt) {
  auto empty = MustCreate(alice_, "empty");
  v1::GetContextResponse resp;
  ASSERT_TRUE(Context(alice_, empty.id(), 1, &resp).ok());
  EXPECT_EQ(resp.messages_size(), 0);
  EXPECT_FALSE(resp.truncated());
  EXPECT_EQ(resp.token_count(), 0);
  EXPECT_EQ(resp.system_prompt(), "");

  const std::string prompt(400, 'p');  // 100 + 4 tokens
  const int32_t s = EstimateTokens(prompt);
  auto conv = MustCreate(alice_, "big prompt", prompt);
  // No messages: nothing was left out, the agent sees token_count > max_tokens.
  ASSERT_TRUE(Context(alice_, conv.id(), s - 1, &resp).ok());
  EXPECT_EQ(resp.system_prompt(), prompt);
  EXPECT_EQ(resp.messages_size(), 0);
  EXPECT_FALSE(resp.truncated());
  EXPECT_EQ(resp.token_count(), s);
  EXPECT_EQ(resp.system_prompt_tokens(), s);

  MustAppend(alice_, conv.id(), "hi", 1);
  ASSERT_TRUE(Context(alice_, conv.id(), s - 1, &resp).ok());
  EXPECT_EQ(resp.system_prompt(), prompt);
  EXPECT_EQ(resp.messages_size(), 0);
  EXPECT_TRUE(resp.truncated());
  EXPECT_EQ(resp.token_count(), s);

  v1::GetContextRequest bad;
  bad.set_conversation_id(conv.id());
  bad.set_max_tokens(0);
  auto st = stub_->GetContext(Ctx(alice_).get(), bad, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("max_tokens"), std::string::npos);
}

TEST_F(ConversationServiceTest, ReplacedMessagesStayInHistoryButLeaveTheContext) {
  auto conv = MustCreate(alice_, "c");
  auto q = MustAppend(alice_, conv.id(), "question", 5);
  auto first = MustAppendAssistant(kAlice, conv.id(), "first answer", 7);
  auto second = MustAppendAssistant(kAlice, conv.id(), "second answer", 9, first.id());
  EXPECT_EQ(second.position(), 3);
  EXPECT_FALSE(second.superseded());

  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, conv.id(), 1000, &ctx).ok());
  ASSERT_EQ(ctx.messages_size(), 2);
  EXPECT_EQ(ctx.messages(0).id(), q.id());
  EXPECT_EQ(ctx.messages(1).id(), second.id());
  EXPECT_EQ(ctx.token_count(), 14);
  EXPECT_FALSE(ctx.truncated());
  // A budget that the superseded answer would have blown still fits both.
  ASSERT_TRUE(Context(alice_, conv.id(), 14, &ctx).ok());
  EXPECT_EQ(ctx.messages_size(), 2);

  v1::ListMessagesResponse list;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 0, "", &list).ok());
  ASSERT_EQ(list.messages_size(), 3);
  EXPECT_FALSE(list.messages(0).superseded());
  EXPECT_TRUE(list.messages(1).superseded());
  EXPECT_EQ(list.messages(1).content(), "first answer");
  EXPECT_FALSE(list.messages(2).superseded());

  // Replacing the same answer again, or a message of another conversation:
  // refused, nothing written.
  v1::Message m;
  auto again = Append(service_token_, kAlice, conv.id(), v1::MESSAGE_ROLE_ASSISTANT, "third", 3, &m,
                      first.id());
  EXPECT_EQ(again.error_code(), StatusCode::FAILED_PRECONDITION);
  auto other = MustCreate(alice_, "other");
  auto elsewhere = Append(service_token_, kAlice, other.id(), v1::MESSAGE_ROLE_ASSISTANT, "x", 3,
                          &m, second.id());
  EXPECT_EQ(elsewhere.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(elsewhere.error_message().find("replaces_message_id"), std::string::npos);
  EXPECT_EQ(Count("messages"), 3);
  v1::GetConversationRequest get;
  get.set_id(other.id());
  v1::Conversation oc;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &oc).ok());
  EXPECT_EQ(oc.message_count(), 0);
  // The next append still gets the next position: the failed ones left no hole.
  EXPECT_EQ(MustAppend(alice_, conv.id(), "next").position(), 4);
}

TEST_F(ConversationServiceTest, FiftyConcurrentAppendsKeepATotalOrder) {
  auto conv = MustCreate(alice_, "c");
  constexpr int kN = 50;
  std::vector<v1::Message> results(kN);
  std::vector<grpc::Status> statuses(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      bool assistant = i % 2 == 1;
      statuses[i] = Append(assistant ? service_token_ : alice_, assistant ? kAlice : 0, conv.id(),
                           assistant ? v1::MESSAGE_ROLE_ASSISTANT : v1::MESSAGE_ROLE_USER,
                           absl::StrCat("message ", i), std::nullopt, &results[i]);
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> positions;
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << statuses[i].error_message();
    positions.insert(results[i].position());
  }
  ASSERT_EQ(positions.size(), static_cast<size_t>(kN));
  EXPECT_EQ(*positions.begin(), 1);
  EXPECT_EQ(*positions.rbegin(), kN);

  v1::ListMessagesResponse list;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 0, "", &list).ok());
  ASSERT_EQ(list.messages_size(), kN);
  for (int i = 1; i < kN; ++i) {
    EXPECT_EQ(list.messages(i).position(), i + 1);
    // Time follows position.
    EXPECT_GE(FromProto(list.messages(i).created_at()),
              FromProto(list.messages(i - 1).created_at()));
  }
  v1::GetConversationRequest get;
  get.set_id(conv.id());
  v1::Conversation after;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &after).ok());
  EXPECT_EQ(after.message_count(), kN);
  EXPECT_EQ(FromProto(after.updated_at()), FromProto(list.messages(kN - 1).created_at()));
}

TEST_F(ConversationServiceTest, InvalidTextIsRejectedNamingTheFieldAndNothingIsWritten) {
  auto conv = MustCreate(alice_, "c", std::string("sp"));
  const size_t max_content = ConversationServiceOptions{}.max_content_bytes;
  struct Bad {
    std::string content;
    std::string field;
  };
  // proto3 strings must be UTF-8: protobuf refuses bad bytes before any handler runs
  // (CheckText repeats the check behind it); the caller still reads INVALID_ARGUMENT
  // naming the field.
  for (const std::string bad : {"bad \xff utf8", "overlong \xc0\xaf", "surrogate \xed\xa0\x80"}) {
    v1::Message m;
    auto st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, bad, std::nullopt, &m);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(st.error_message().rfind("content must be valid UTF-8", 0), 0u) << st.error_message();
    v1::CreateConversationRequest req;
    req.set_title(bad);
    v1::Conversation c;
    st = stub_->CreateConversation(Ctx(alice_).get(), req, &c);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_EQ(st.error_message().rfind("title must be valid UTF-8", 0), 0u) << st.error_message();
  }
  const std::vector<Bad> bad_contents = {
      {std::string("nul \0 byte", 10), "content"},
      {std::string(max_content + 1, 'x'), "content"},
      {"", "content"},
  };
  for (const auto& b : bad_contents) {
    v1::Message m;
    auto st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, b.content, std::nullopt, &m);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << b.content.size();
    EXPECT_NE(st.error_message().find(b.field), std::string::npos) << st.error_message();
  }
  v1::Message m;
  auto st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, "x", -1, &m);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("token_count"), std::string::npos);
  st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_UNSPECIFIED, "x", 1, &m);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("role"), std::string::npos);
  st = Append(alice_, 0, conv.id(), static_cast<v1::MessageRole>(42), "x", 1, &m);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Count("messages"), 0);
  // The largest allowed content is accepted.
  ASSERT_TRUE(Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, std::string(max_content, 'y'),
                     std::nullopt, &m)
                  .ok());
  EXPECT_EQ(m.token_count(), static_cast<int32_t>(max_content / 4) + kEstimateOverheadTokens);
  EXPECT_EQ(Count("messages"), 1);

  // Conversation fields.
  const int64_t conversations = Count("conversations");
  std::string title_200;
  for (int i = 0; i < 200; ++i) title_200 += "é";  // 200 characters, 400 bytes
  auto check_create = [&](v1::CreateConversationRequest req, const std::string& field) {
    v1::Conversation c;
    auto s = stub_->CreateConversation(Ctx(alice_).get(), req, &c);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(s.error_message().find(field), std::string::npos) << s.error_message();
  };
  v1::CreateConversationRequest req;
  req.set_title(title_200 + "x");
  check_create(req, "title");
  req.set_title(std::string("nul\0", 4));
  check_create(req, "title");
  req = {};
  req.set_model(std::string(101, 'm'));
  check_create(req, "model");
  req.set_model("gpt 4o");
  check_create(req, "model");
  req = {};
  req.set_system_prompt(std::string(32 * 1024 + 1, 's'));
  check_create(req, "system_prompt");
  req.set_system_prompt(std::string("a\0b", 3));
  check_create(req, "system_prompt");
  EXPECT_EQ(Count("conversations"), conversations);

  req = {};
  req.set_title(title_200);
  req.set_model(std::string(100, 'm'));
  req.set_system_prompt(std::string(32 * 1024, 's'));
  v1::Conversation ok;
  ASSERT_TRUE(stub_->CreateConversation(Ctx(alice_).get(), req, &ok).ok());
  EXPECT_EQ(ok.title(), title_200);

  // A bad field in an update changes nothing, not even the valid ones.
  v1::UpdateConversationRequest upd;
  upd.set_id(conv.id());
  upd.set_title("fine");
  upd.set_system_prompt(std::string(32 * 1024 + 1, 's'));
  v1::Conversation c;
  st = stub_->UpdateConversation(Ctx(alice_).get(), upd, &c);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("system_prompt"), std::string::npos);
  v1::GetConversationRequest get;
  get.set_id(conv.id());
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &c).ok());
  EXPECT_EQ(c.title(), "c");
  EXPECT_EQ(c.system_prompt(), "sp");

  // Ids.
  get.set_id(0);
  EXPECT_EQ(stub_->GetConversation(Ctx(alice_).get(), get, &c).error_code(),
            StatusCode::INVALID_ARGUMENT);
  st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, "x", 1, &m, int64_t{-5});
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("replaces_message_id"), std::string::npos);
}

TEST_F(ConversationServiceTest, BadPageSizesAndTokensAreInvalidArgument) {
  auto conv = MustCreate(alice_, "c");
  auto other = MustCreate(alice_, "other");
  for (int i = 0; i < 3; ++i) MustAppend(alice_, conv.id(), "m");
  v1::ListMessagesResponse page;
  ASSERT_TRUE(ListMessages(alice_, conv.id(), 1, "", &page).ok());
  ASSERT_FALSE(page.next_page_token().empty());
  const std::string foreign_token = page.next_page_token();

  for (int size : {-1, 501, 100000}) {
    v1::ListMessagesResponse r;
    auto st = ListMessages(alice_, conv.id(), size, "", &r);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << size;
    EXPECT_NE(st.error_message().find("page_size"), std::string::npos);
    v1::ListConversationsRequest lc;
    lc.set_page_size(size);
    v1::ListConversationsResponse lr;
    st = stub_->ListConversations(Ctx(alice_).get(), lc, &lr);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << size;
    EXPECT_NE(st.error_message().find("page_size"), std::string::npos);
  }
  const std::vector<std::string> bad_tokens = {"garbage", "!!!", EncodePageToken({"1"}),
                                               EncodePageToken({"x", "y"}),
                                               EncodePageToken({"1", "2", "3"})};
  for (const auto& t : bad_tokens) {
    v1::ListMessagesResponse r;
    auto st = ListMessages(alice_, conv.id(), 10, t, &r);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << t;
    EXPECT_NE(st.error_message().find("page_token"), std::string::npos);
    v1::ListConversationsRequest lc;
    lc.set_page_token(t);
    v1::ListConversationsResponse lr;
    st = stub_->ListConversations(Ctx(alice_).get(), lc, &lr);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << t;
  }
  // A message page token is bound to its conversation.
  v1::ListMessagesResponse r;
  EXPECT_EQ(ListMessages(alice_, other.id(), 10, foreign_token, &r).error_code(),
            StatusCode::INVALID_ARGUMENT);
  // page_size 0 means 50; 500 is allowed.
  EXPECT_TRUE(ListMessages(alice_, conv.id(), 0, "", &r).ok());
  EXPECT_EQ(r.messages_size(), 3);
  EXPECT_TRUE(ListMessages(alice_, conv.id(), 500, "", &r).ok());
}

// A page ends early rather than outgrow the gRPC message limit.
class SmallResponseTest : public ConversationFixture {
 protected:
  ConversationServiceOptions Options() const override {
    ConversationServiceOptions o;
    o.max_response_bytes = 1000;
    return o;
  }
};

TEST_F(SmallResponseTest, PagesAndContextsStayUnderTheResponseBudget) {
  auto conv = MustCreate(alice_, "c");
  for (int i = 0; i < 5; ++i) MustAppend(alice_, conv.id(), std::string(400, 'a' + i), 1);
  std::vector<int64_t> positions;
  std::string token;
  int pages = 0;
  do {
    v1::ListMessagesResponse r;
    ASSERT_TRUE(ListMessages(alice_, conv.id(), 50, token, &r).ok());
    EXPECT_LE(r.messages_size(), 2);
    EXPECT_GE(r.messages_size(), 1);
    for (const auto& m : r.messages()) positions.push_back(m.position());
    token = r.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(positions, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(pages, 3);

  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, conv.id(), 1000, &ctx).ok());
  ASSERT_EQ(ctx.messages_size(), 2);
  EXPECT_EQ(ctx.messages(0).position(), 4);
  EXPECT_EQ(ctx.messages(1).position(), 5);
  EXPECT_TRUE(ctx.truncated());
  EXPECT_EQ(ctx.token_count(), 2);
}

}  // namespace
}  // namespace aichat::conversation

namespace aichat::conversation {
namespace {

// Reservations are sized from stored counts, so users cannot declare their own.
TEST_F(ConversationServiceTest, OnlyServicesSetTokenCounts) {
  auto conv = MustCreate(alice_, "counts");
  v1::Message out;
  auto st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, "free ride", 0, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("token_count"), std::string::npos);
  EXPECT_TRUE(
      Append(service_token_, kAlice, conv.id(), v1::MESSAGE_ROLE_USER, "counted", 3, &out).ok());
  EXPECT_EQ(out.token_count(), 3);
}

// A user's prompt_id would claim a future turn's message slot (and be removed
// by that turn's retract); a user's replaces_message_id would hide any message
// from the context. Both are the ai-agent's.
TEST_F(ConversationServiceTest, OnlyServicesSetPromptIdOrReplacesMessageId) {
  auto conv = MustCreate(alice_, "ids");
  auto first = MustAppend(alice_, conv.id(), "first");
  v1::AppendMessageRequest req;
  req.set_conversation_id(conv.id());
  req.set_role(v1::MESSAGE_ROLE_USER);
  req.set_content("sneaky");
  req.set_prompt_id(4242);
  v1::Message out;
  auto st = stub_->AppendMessage(Ctx(alice_).get(), req, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("prompt_id"), std::string::npos) << st.error_message();
  req.clear_prompt_id();
  req.set_replaces_message_id(first.id());
  st = stub_->AppendMessage(Ctx(alice_).get(), req, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(st.error_message().find("replaces_message_id"), std::string::npos)
      << st.error_message();
  // Nothing written, nothing superseded.
  EXPECT_EQ(Count("messages"), 1);
  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, conv.id(), 1000, &ctx).ok());
  ASSERT_EQ(ctx.messages_size(), 1);
  EXPECT_EQ(ctx.messages(0).id(), first.id());

  // The agent's turn still sets both.
  req.set_prompt_id(4242);
  ASSERT_TRUE(stub_->AppendMessage(Ctx(service_token_, kAlice).get(), req, &out).ok());
  EXPECT_EQ(out.prompt_id(), 4242);
  ASSERT_TRUE(Context(alice_, conv.id(), 1000, &ctx).ok());
  ASSERT_EQ(ctx.messages_size(), 1);
  EXPECT_EQ(ctx.messages(0).id(), out.id());
}

}  // namespace
}  // namespace aichat::conversation

namespace aichat::conversation {
namespace {

// The agent retries an append whose answer it lost; the retry must not duplicate.
TEST_F(ConversationServiceTest, RetriedAppendOfAPromptsMessageReturnsTheFirst) {
  auto conv = MustCreate(alice_, "retry");
  v1::AppendMessageRequest req;
  req.set_conversation_id(conv.id());
  req.set_role(v1::MESSAGE_ROLE_ASSISTANT);
  req.set_content("the answer");
  req.set_prompt_id(4242);
  v1::Message first, second;
  ASSERT_TRUE(stub_->AppendMessage(Ctx(service_token_, kAlice).get(), req, &first).ok());
  ASSERT_TRUE(stub_->AppendMessage(Ctx(service_token_, kAlice).get(), req, &second).ok());
  EXPECT_EQ(first.id(), second.id());
  EXPECT_EQ(second.position(), first.position());
  v1::GetConversationRequest get;
  get.set_id(conv.id());
  v1::Conversation c;
  ASSERT_TRUE(stub_->GetConversation(Ctx(alice_).get(), get, &c).ok());
  EXPECT_EQ(c.message_count(), 1);
}

}  // namespace
}  // namespace aichat::conversation
