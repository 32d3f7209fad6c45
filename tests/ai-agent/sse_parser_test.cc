// SseParser: correctness for every split of recorded streams, line-ending
// variants, comments, multi-line data, UTF-8 splits and the size bound.
#include "services/ai-agent/llm/sse_parser.h"

#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aichat::agent {
namespace {

using ::testing::ElementsAre;

// A stream as OpenAI sends it (abridged ids), with multi-byte UTF-8 content.
constexpr char kOpenAiStream[] =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"H\xC3\xA9llo "
    "\xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82\"},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
    "\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":3,\"total_tokens\":12,\"prompt_tokens_details\":"
    "{\"cached_tokens\":0}}}\n\n"
    "data: [DONE]\n\n";

std::vector<std::string> DataOf(std::string_view stream) {
  std::vector<std::string> out;
  std::string_view rest = stream;
  while (!rest.empty()) {
    size_t start = rest.find("data: ");
    if (start == std::string_view::npos) {
      break;
    }
    size_t end = rest.find('\n', start);
    out.emplace_back(rest.substr(start + 6, end - start - 6));
    rest.remove_prefix(end);
  }
  return out;
}

// Feeds `pieces` and returns the data of every event.
std::vector<std::string> Parse(const std::vector<std::string_view>& pieces,
                               size_t limit = SseParser::kDefaultMaxEventBytes) {
  std::vector<std::string> events;
  SseParser parser(
      [&](const SseEvent& e) {
        events.push_back(e.data);
        return true;
      },
      limit);
  for (std::string_view p : pieces) {
    EXPECT_TRUE(parser.Feed(p).ok());
  }
  EXPECT_FALSE(parser.HasPartialEvent());
  return events;
}

TEST(SseParserTest, WholeStream) {
  std::vector<std::string> events = Parse({kOpenAiStream});
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events, DataOf(kOpenAiStream));
  EXPECT_EQ(events.back(), "[DONE]");
}

void CheckEverySplit(const std::string& stream, const std::vector<std::string>& expected) {
  for (size_t i = 0; i <= stream.size(); ++i) {
    std::string_view s = stream;
    ASSERT_EQ(Parse({s.substr(0, i), s.substr(i)}), expected) << "split at " << i;
  }
}

TEST(SseParserTest, EverySplitPointLf) {
  std::string stream = kOpenAiStream;
  CheckEverySplit(stream, DataOf(kOpenAiStream));
}

TEST(SseParserTest, EverySplitPointCrLf) {
  std::string stream = absl::StrReplaceAll(kOpenAiStream, {{"\n", "\r\n"}});
  CheckEverySplit(stream, DataOf(kOpenAiStream));
}

TEST(SseParserTest, EverySplitPointLoneCr) {
  std::string stream = absl::StrReplaceAll(kOpenAiStream, {{"\n", "\r"}});
  CheckEverySplit(stream, DataOf(kOpenAiStream));
}

TEST(SseParserTest, ByteAtATime) {
  std::string stream = absl::StrReplaceAll(kOpenAiStream, {{"\n", "\r\n"}});
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < stream.size(); ++i) {
    pieces.push_back(std::string_view(stream).substr(i, 1));
  }
  EXPECT_EQ(Parse(pieces), DataOf(kOpenAiStream));
}

TEST(SseParserTest, EveryThreeWaySplitOfAShortStream) {
  const std::string stream = "data: {\"a\":\"\xC3\xA9\"}\r\n\r\n: c\r\ndata:x\r\ndata: y\r\n\r\n";
  const std::vector<std::string> expected = {"{\"a\":\"\xC3\xA9\"}", "x\ny"};
  std::string_view s = stream;
  for (size_t i = 0; i <= s.size(); ++i) {
    for (size_t j = i; j <= s.size(); ++j) {
      ASSERT_EQ(Parse({s.substr(0, i), s.substr(i, j - i), s.substr(j)}), expected)
          << "splits at " << i << ", " << j;
    }
  }
}

TEST(SseParserTest, MultiLineDataAndFields) {
  std::vector<SseEvent> events;
  SseParser parser([&](const SseEvent& e) {
    events.push_back(e);
    return true;
  });
  ASSERT_TRUE(parser
                  .Feed("event: error\nid: 7\ndata: line1\ndata:line2\ndata\nretry: 10\n"
                        "unknown: x\n\n")
                  .ok());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].event, "error");
  EXPECT_EQ(events[0].id, "7");
  EXPECT_EQ(events[0].data, "line1\nline2\n");
}

TEST(SseParserTest, CommentsAndFieldOnlyEventsAreNotDispatched) {
  EXPECT_THAT(Parse({": keep-alive\n\n:\n\nevent: ping\n\n\n\ndata: a\n\n"}), ElementsAre("a"));
}

TEST(SseParserTest, DataWithoutSpaceAndExtraSpaceKept) {
  EXPECT_THAT(Parse({"data:a\n\ndata:  b\n\n"}), ElementsAre("a", " b"));
}

TEST(SseParserTest, PartialEventIsHeldNotEmitted) {
  std::vector<std::string> events;
  SseParser parser([&](const SseEvent& e) {
    events.push_back(e.data);
    return true;
  });
  ASSERT_TRUE(parser.Feed("data: {\"content\":\"\xE4\xBD").ok());
  EXPECT_TRUE(events.empty());
  EXPECT_TRUE(parser.HasPartialEvent());
  ASSERT_TRUE(parser.Feed("\xA0\"}\n").ok());
  EXPECT_TRUE(events.empty());
  ASSERT_TRUE(parser.Feed("\n").ok());
  EXPECT_THAT(events, ElementsAre("{\"content\":\"\xE4\xBD\xA0\"}"));
  EXPECT_FALSE(parser.HasPartialEvent());
}

TEST(SseParserTest, CallbackCanStopParsing) {
  std::vector<std::string> events;
  SseParser parser([&](const SseEvent& e) {
    events.push_back(e.data);
    return e.data != "[DONE]";
  });
  ASSERT_TRUE(parser.Feed("data: a\n\ndata: [DONE]\n\ndata: b\n\n").ok());
  ASSERT_TRUE(parser.Feed("data: c\n\n").ok());
  EXPECT_THAT(events, ElementsAre("a", "[DONE]"));
}

TEST(SseParserTest, OversizedEventIsAnError) {
  SseParser parser([](const SseEvent&) { return true; }, 16);
  EXPECT_TRUE(parser.Feed("data: 0123456789\n").ok());
  absl::Status s = parser.Feed("data: 0123456789\n\n");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(parser.Feed("\n").code(), absl::StatusCode::kResourceExhausted);
}

TEST(SseParserTest, OversizedLineWithoutTerminatorIsAnError) {
  SseParser parser([](const SseEvent&) { return true; }, 8);
  EXPECT_TRUE(parser.Feed("data:").ok());
  EXPECT_FALSE(parser.Feed("0123456789").ok());
}

TEST(SseParserTest, CrLfSplitAcrossFeedsDoesNotMakeABlankLine) {
  // "data: a\r" | "\n" | "data: b\r\n\r\n": the LF after CR must not end the event.
  EXPECT_THAT(Parse({"data: a\r", "\n", "data: b\r\n\r\n"}), ElementsAre("a\nb"));
}

}  // namespace
}  // namespace aichat::agent
