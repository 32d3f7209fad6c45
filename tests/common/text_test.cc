#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/base64.h"
#include "common/page_token.h"
#include "common/validate.h"

namespace aichat {
namespace {

TEST(Base64Test, RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 70; ++i) {
    EXPECT_EQ(*Base64UrlDecode(Base64UrlEncode(data)), data);
    data += char(i * 37);
  }
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
  EXPECT_FALSE(Base64UrlDecode("a").has_value());
  EXPECT_FALSE(Base64UrlDecode("ab=c").has_value());
  EXPECT_FALSE(Base64UrlDecode("ab+/").has_value());
}

TEST(Utf8Test, AcceptsValidRejectsInvalid) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("a\x80"));
}

TEST(CheckTextTest, NamesTheField) {
  auto st = CheckText("title", std::string(5, 'a'), 4, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("title"), std::string::npos);
  EXPECT_NE(CheckText("content", "", 10, true).message().find("content is required"),
            std::string::npos);
  EXPECT_NE(CheckText("content", std::string("a\0b", 3), 10, true).message().find("NUL"),
            std::string::npos);
  EXPECT_NE(CheckText("content", "\xff", 10, true).message().find("UTF-8"), std::string::npos);
  EXPECT_TRUE(CheckText("content", "ok", 10, true).ok());
}

TEST(CheckTextTest, LimitsInCharactersCountCodePoints) {
  EXPECT_EQ(CountCodePoints(""), 0u);
  EXPECT_EQ(CountCodePoints("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"), 9u);
  // Three 2-byte characters fit a 3-character limit although they are 6 bytes.
  EXPECT_TRUE(CheckTextChars("title", "\xc3\xa9\xc3\xa9\xc3\xa9", 3, false).ok());
  auto st = CheckTextChars("title", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 3, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "title must be at most 3 characters");
  EXPECT_EQ(CheckTextChars("title", "\xff", 3, false).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTextChars("title", "", 3, true).message(), "title is required");
}

TEST(CheckTextTest, SpacesAndControlsAreRefusedInNames) {
  EXPECT_TRUE(CheckNoSpaceOrControl("model", "gpt-4o-mini").ok());
  for (const std::string& bad :
       std::vector<std::string>{"gpt 4o", "gpt\t4o", "gpt\x7f", std::string("a\0b", 3), "x\n"}) {
    auto st = CheckNoSpaceOrControl("model", bad);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(st.message(), "model must not contain spaces or control characters");
  }
}

TEST(PageTokenTest, RoundTripAndRejectsForeignTokens) {
  std::string t = EncodePageToken({"123", "2026-01-01"});
  auto parts = DecodePageToken(t, 2);
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ((*parts)[0], "123");
  EXPECT_EQ((*parts)[1], "2026-01-01");
  EXPECT_EQ(DecodePageToken(t, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodePageToken("garbage!", 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*NormalizePageSize(0), 50);
  EXPECT_EQ(*NormalizePageSize(500), 500);
  EXPECT_FALSE(NormalizePageSize(501).ok());
  EXPECT_FALSE(NormalizePageSize(-1).ok());
}

}  // namespace
}  // namespace aichat

#include "common/money.h"

namespace aichat {
namespace {

TEST(MoneyTest, CostFormulaIsExactIntegerHalfUp) {
  // gpt-4o-mini: 0.15 / 0.075 / 0.60 USD per 1M tokens.
  Prices p{150000, 75000, 600000};
  // 1000 prompt (200 cached), 500 completion:
  // (800*150000 + 200*75000 + 500*600000) / 1000 = (120e6 + 15e6 + 300e6) / 1000 = 435000 nanos.
  EXPECT_EQ(CostNanos(1000, 200, 500, p), 435000);
  // One uncached token: 150000 picos / 1000 = 150 nanos.
  EXPECT_EQ(CostNanos(1, 0, 0, p), 150);
  // Half up: 1500 picos -> 1.5 -> 2; 1499 -> 1.
  EXPECT_EQ(CostNanos(1, 0, 0, Prices{1500, 0, 0}), 2);
  EXPECT_EQ(CostNanos(1, 0, 0, Prices{1499, 0, 0}), 1);
  EXPECT_EQ(CostNanos(0, 0, 0, p), 0);
  // Cached beyond prompt is clamped.
  EXPECT_EQ(CostNanos(10, 20, 0, p), CostNanos(10, 10, 0, p));
  // No overflow on absurd inputs.
  EXPECT_EQ(CostNanos(INT64_MAX, 0, INT64_MAX, p), INT64_MAX);
}

}  // namespace
}  // namespace aichat
