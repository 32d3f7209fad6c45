// The conversation service's resource limits over real gRPC and PostgreSQL: reads
// bounded by bytes in SQL, the context token cap, the users' append rate, the
// content limits.
#include <gtest/gtest.h>

#include <climits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/conversation/append_rate_limiter.h"
#include "tests/conversation/conversation_fixture.h"

namespace aichat::conversation {
namespace {

class LargeMessagesTest : public ConversationFixture {};

// A security review found ListMessages loading page_size + 1 full rows (up to
// 501 x 256 KiB) and GetContext the whole token window before either was cut to
// the response budget.
TEST_F(LargeMessagesTest, ConversationsOfLargeMessagesReadBackInBoundedPages) {
  const ConversationServiceOptions o = Options();
  constexpr int kMessages = 40;
  auto conv = MustCreate(alice_, "large");
  for (int i = 1; i <= kMessages; ++i) {
    // Each names its position in its first four bytes.
    MustAppend(alice_, conv.id(),
               absl::StrFormat("%04d", i) + std::string(o.max_content_bytes - 4, 'z'), 1000);
  }
  const size_t cost = o.max_content_bytes + kMessageFramingBytes;
  const size_t per_page = o.max_response_bytes / cost;
  ASSERT_GE(per_page, 2u);
  ASSERT_LT(per_page, static_cast<size_t>(kMessages));

  // Every message once, in order, in pages under the budget.
  std::vector<int64_t> positions;
  std::string token;
  int pages = 0;
  do {
    v1::ListMessagesResponse r;
    ASSERT_TRUE(ListMessages(alice_, conv.id(), 500, token, &r).ok());
    ASSERT_GE(r.messages_size(), 1);
    size_t bytes = 0;
    for (const auto& m : r.messages()) {
      bytes += m.content().size() + kMessageFramingBytes;
      EXPECT_EQ(m.content().substr(0, 4), absl::StrFormat("%04d", m.position()));
      positions.push_back(m.position());
    }
    EXPECT_LE(bytes, o.max_response_bytes) << "page " << pages;
    token = r.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 100);
  std::vector<int64_t> expected;
  for (int i = 1; i <= kMessages; ++i) expected.push_back(i);
  EXPECT_EQ(positions, expected);
  EXPECT_EQ(pages, static_cast<int>((kMessages + per_page - 1) / per_page));

  // The store itself hands over no row past the budget: SQL ended the page.
  auto page = store_->ListMessages(kAlice, conv.id(), 0, 500, o.max_response_bytes);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->messages.size(), per_page);
  EXPECT_TRUE(page->more);

  // The largest context a caller can ask for is the newest messages that fit the
  // response budget.
  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(alice_, conv.id(), INT32_MAX, &ctx).ok());
  ASSERT_EQ(static_cast<size_t>(ctx.messages_size()), per_page);
  EXPECT_EQ(ctx.messages(0).position(), kMessages + 1 - static_cast<int64_t>(per_page));
  EXPECT_EQ(ctx.messages(ctx.messages_size() - 1).position(), kMessages);
  EXPECT_TRUE(ctx.truncated());
  EXPECT_EQ(ctx.token_count(), 1000 * static_cast<int32_t>(per_page));
}

// The conversation service does not know the models: a max_tokens above the
// largest context window configured is served as that window.
class ContextCapTest : public ConversationFixture {
 protected:
  ConversationServiceOptions Options() const override {
    ConversationServiceOptions o = ConversationFixture::Options();
    o.max_context_tokens = 50;
    return o;
  }
};

TEST_F(ContextCapTest, LargerMaxTokensAreClampedToTheLargestWindow) {
  auto conv = MustCreate(alice_, "capped");
  for (int i = 0; i < 5; ++i) MustAppend(alice_, conv.id(), absl::StrCat("m", i), 20);
  for (int32_t max_tokens : {50, 51, 1000, INT32_MAX}) {
    v1::GetContextResponse resp;
    ASSERT_TRUE(Context(alice_, conv.id(), max_tokens, &resp).ok());
    ASSERT_EQ(resp.messages_size(), 2) << max_tokens;
    EXPECT_EQ(resp.messages(0).position(), 4);
    EXPECT_EQ(resp.token_count(), 40);
    EXPECT_TRUE(resp.truncated());
  }
  // Below the cap the request decides.
  v1::GetContextResponse resp;
  ASSERT_TRUE(Context(alice_, conv.id(), 39, &resp).ok());
  EXPECT_EQ(resp.messages_size(), 1);
}

TEST(AppendRateLimiterTest, RefusesTheAppendAfterTheBurstUntilTheRateAllowsOne) {
  absl::Time now = absl::FromUnixSeconds(1'000'000);
  AppendRateLimiter limiter(60, 3, [&now] { return now; });  // one a second, three at once
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit(7).ok()) << i;
  absl::Status refused = limiter.Admit(7);
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_NE(refused.message().find("retry in 1 s"), std::string::npos) << refused;
  // Other users have their own buckets.
  EXPECT_TRUE(limiter.Admit(8).ok());
  now += absl::Milliseconds(999);
  EXPECT_TRUE(absl::IsResourceExhausted(limiter.Admit(7)));
  now += absl::Milliseconds(1);
  EXPECT_TRUE(limiter.Admit(7).ok());  // one more after 1/60 of a minute
  EXPECT_TRUE(absl::IsResourceExhausted(limiter.Admit(7)));
  // Idle long enough, the whole burst is back (after the idle users were swept).
  now += absl::Minutes(5);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.Admit(7).ok()) << i;
  EXPECT_TRUE(absl::IsResourceExhausted(limiter.Admit(7)));
}

TEST(AppendRateLimiterTest, ZeroMeansNoLimit) {
  AppendRateLimiter limiter(0, 1);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(limiter.Admit(7).ok());
}

// One append a minute, three at once: a test cannot outrun the window.
class AppendRateTest : public ConversationFixture {
 protected:
  ConversationServiceOptions Options() const override {
    ConversationServiceOptions o = ConversationFixture::Options();
    o.append_rate_per_minute = 1;
    o.append_burst = 3;
    return o;
  }
};

TEST_F(AppendRateTest, UsersAreRefusedPastTheRateAndServicesAreNot) {
  auto conv = MustCreate(alice_, "chatty");
  v1::Message m;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, "hi", std::nullopt, &m).ok());
  }
  auto st = Append(alice_, 0, conv.id(), v1::MESSAGE_ROLE_USER, "one too many", std::nullopt, &m);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(st.error_message().find("too many messages"), std::string::npos) << st.error_message();
  EXPECT_EQ(Count("messages"), 3);

  // Another user, and the ai-agent acting for Alice, are not held back.
  auto bobs = MustCreate(bob_, "bob's");
  EXPECT_TRUE(Append(bob_, 0, bobs.id(), v1::MESSAGE_ROLE_USER, "hi", std::nullopt, &m).ok());
  for (auto role : {v1::MESSAGE_ROLE_USER, v1::MESSAGE_ROLE_ASSISTANT}) {
    for (int i = 0; i < 5; ++i) {
      EXPECT_TRUE(Append(service_token_, kAlice, conv.id(), role, "turn", 2, &m).ok());
    }
  }
  EXPECT_EQ(Count("messages"), 3 + 1 + 10);
  // A request refused as invalid is not counted against the user.
  EXPECT_EQ(Append(bob_, 0, bobs.id(), v1::MESSAGE_ROLE_USER, "", std::nullopt, &m).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Append(bob_, 0, bobs.id(), v1::MESSAGE_ROLE_USER, "2", std::nullopt, &m).ok());
  EXPECT_TRUE(Append(bob_, 0, bobs.id(), v1::MESSAGE_ROLE_USER, "3", std::nullopt, &m).ok());
  EXPECT_EQ(Append(bob_, 0, bobs.id(), v1::MESSAGE_ROLE_USER, "4", std::nullopt, &m).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

// A complete answer longer than the users' content limit is saved whole.
class ContentLimitTest : public ConversationFixture {
 protected:
  ConversationServiceOptions Options() const override {
    ConversationServiceOptions o = ConversationFixture::Options();
    o.max_content_bytes = 1000;
    o.max_assistant_content_bytes = 5000;
    return o;
  }
};

TEST_F(ContentLimitTest, AssistantMessagesHaveTheirOwnLargerLimit) {
  auto conv = MustCreate(alice_, "c");
  v1::Message m;
  ASSERT_TRUE(Append(service_token_, kAlice, conv.id(), v1::MESSAGE_ROLE_ASSISTANT,
                     std::string(5000, 'a'), 9, &m)
                  .ok());
  EXPECT_EQ(m.content().size(), 5000u);
  struct Refused {
    v1::MessageRole role;
    size_t bytes;
  };
  for (auto [role, bytes] :
       {Refused{v1::MESSAGE_ROLE_ASSISTANT, 5001}, Refused{v1::MESSAGE_ROLE_USER, 1001},
        Refused{v1::MESSAGE_ROLE_SYSTEM, 1001}}) {
    auto st = Append(service_token_, kAlice, conv.id(), role, std::string(bytes, 'a'), 9, &m);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << role;
    EXPECT_NE(st.error_message().find("content"), std::string::npos) << st.error_message();
  }
  EXPECT_EQ(Count("messages"), 1);
}

class DefaultLimitsTest : public ConversationFixture {};

// With the defaults: a 3 MiB answer is saved, listed and in the context.
TEST_F(DefaultLimitsTest, AThreeMebibyteAnswerIsSavedAndReadBackWhole) {
  const ConversationServiceOptions o = Options();
  ASSERT_GT(o.max_assistant_content_bytes, o.max_content_bytes);
  auto conv = MustCreate(alice_, "long answer", std::string(o.max_system_prompt_bytes, 's'));
  MustAppend(alice_, conv.id(), "write me a long story");
  const std::string answer(o.max_assistant_content_bytes, 'w');
  auto saved = MustAppendAssistant(kAlice, conv.id(), answer, 700000);
  ASSERT_EQ(saved.position(), 2);

  std::vector<std::string> contents;
  std::string token;
  do {
    v1::ListMessagesResponse list;
    ASSERT_TRUE(ListMessages(alice_, conv.id(), 500, token, &list).ok());
    for (const auto& m : list.messages()) contents.push_back(m.content());
    token = list.next_page_token();
  } while (!token.empty() && contents.size() < 10);
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[1], answer);

  // The largest answer fits a context even beside the largest system prompt.
  v1::GetContextResponse ctx;
  ASSERT_TRUE(Context(service_token_, conv.id(), 1000000, &ctx, kAlice).ok());
  ASSERT_GE(ctx.messages_size(), 1);
  EXPECT_EQ(ctx.messages(ctx.messages_size() - 1).content(), answer);
}

}  // namespace
}  // namespace aichat::conversation
