// Decoding and encoding of the chat completions JSON wire format.
#include "services/ai-agent/llm/chat_chunk.h"

#include <boost/json.hpp>

#include "gtest/gtest.h"

namespace aichat::agent {
namespace {

TEST(ChatChunkTest, ContentDelta) {
  auto c = DecodeChatChunk(
      R"({"id":"x","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024",)"
      R"("choices":[{"index":0,"delta":{"content":"Hi \u00e9"},"logprobs":null,)"
      R"("finish_reason":null}],"usage":null})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->content, "Hi \xC3\xA9");
  EXPECT_EQ(c->model, "gpt-4o-mini-2024");
  EXPECT_EQ(c->finish_reason, "");
  EXPECT_FALSE(c->usage.has_value());
}

TEST(ChatChunkTest, RoleDeltaAndFinishReason) {
  auto c =
      DecodeChatChunk(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->content, "");
  auto f = DecodeChatChunk(R"({"choices":[{"delta":{},"finish_reason":"length"}]})");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->finish_reason, "length");
}

TEST(ChatChunkTest, UsageChunkWithEmptyChoices) {
  auto c = DecodeChatChunk(
      R"({"model":"m","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":30,)"
      R"("total_tokens":1230,"prompt_tokens_details":{"cached_tokens":1024}}})");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->usage.has_value());
  EXPECT_EQ(c->usage->prompt_tokens, 1200);
  EXPECT_EQ(c->usage->completion_tokens, 30);
  EXPECT_EQ(c->usage->cached_tokens, 1024);
  EXPECT_FALSE(c->usage->estimated);
}

TEST(ChatChunkTest, UsageWithoutDetails) {
  auto c = DecodeChatChunk(R"({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->usage->cached_tokens, 0);
}

TEST(ChatChunkTest, MalformedIsATypedError) {
  for (const char* bad :
       {"", "{", "[]", "null", "{\"choices\":{}}", "{\"choices\":[1]}",
        "{\"choices\":[{\"delta\":[]}]}", "{\"choices\":[{\"delta\":{\"content\":5}}]}",
        "{\"usage\":{\"prompt_tokens\":\"x\",\"completion_tokens\":1}}", "{\"usage\":3}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\ud800\"}}]", "\xff\xfe"}) {
    auto c = DecodeChatChunk(bad);
    EXPECT_FALSE(c.ok()) << bad;
    if (!c.ok()) {
      EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(ChatChunkTest, Completion) {
  auto c = DecodeChatCompletion(
      R"({"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,)"
      R"("message":{"role":"assistant","content":"Hello","refusal":null},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->content, "Hello");
  EXPECT_EQ(c->finish_reason, "stop");
  EXPECT_EQ(c->usage->prompt_tokens, 3);
  EXPECT_FALSE(DecodeChatCompletion(R"({"choices":[]})").ok());
}

TEST(ChatChunkTest, ProviderError) {
  auto e = DecodeProviderError(
      R"({"error":{"message":"This model's maximum context length is 128000 tokens.",)"
      R"("type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}})");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "context_length_exceeded");
  EXPECT_EQ(e->type, "invalid_request_error");
  EXPECT_FALSE(DecodeProviderError("<html>bad gateway</html>").has_value());
  EXPECT_FALSE(DecodeProviderError(R"({"choices":[]})").has_value());
  auto s = DecodeProviderError(R"({"error":"overloaded"})");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->message, "overloaded");
}

TEST(ChatChunkTest, EncodeStreamingRequest) {
  ChatRequestBody r;
  r.model = "gpt-4o-mini";
  r.messages = {{"system", "be brief"}, {"user", "h\xC3\xA9 \"q\""}};
  r.max_output_tokens = 100;
  r.temperature = 0.5;
  boost::json::value v = boost::json::parse(EncodeChatRequest(r));
  EXPECT_EQ(v.at("model").as_string(), "gpt-4o-mini");
  EXPECT_EQ(v.at("messages").as_array().size(), 2u);
  EXPECT_EQ(v.at("messages").at(1).at("content").as_string(), "h\xC3\xA9 \"q\"");
  EXPECT_EQ(v.at("max_completion_tokens").as_int64(), 100);
  EXPECT_FALSE(v.as_object().contains("max_tokens"));
  EXPECT_DOUBLE_EQ(v.at("temperature").as_double(), 0.5);
  EXPECT_TRUE(v.at("stream").as_bool());
  EXPECT_TRUE(v.at("stream_options").at("include_usage").as_bool());
}

TEST(ChatChunkTest, EncodeNonStreamingLegacyRequest) {
  ChatRequestBody r;
  r.model = "local";
  r.messages = {{"user", "x"}};
  r.max_output_tokens = 7;
  r.use_max_tokens_param = true;
  r.stream = false;
  boost::json::value v = boost::json::parse(EncodeChatRequest(r));
  EXPECT_EQ(v.at("max_tokens").as_int64(), 7);
  EXPECT_FALSE(v.as_object().contains("max_completion_tokens"));
  EXPECT_FALSE(v.as_object().contains("temperature"));
  EXPECT_FALSE(v.as_object().contains("stream_options"));
  EXPECT_FALSE(v.at("stream").as_bool());
}

}  // namespace
}  // namespace aichat::agent
