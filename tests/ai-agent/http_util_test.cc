// URL and proxy selection, Retry-After parsing, backoff and error mapping.
#include "services/ai-agent/llm/http_util.h"

#include "gtest/gtest.h"

namespace aichat::agent {
namespace {

TEST(HttpUtilTest, ParseUrl) {
  auto u = ParseUrl("https://api.openai.com/v1/");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.openai.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->HostHeader(), "api.openai.com");
  auto l = ParseUrl("http://127.0.0.1:8080");
  ASSERT_TRUE(l.ok());
  EXPECT_FALSE(l->tls);
  EXPECT_EQ(l->port, 8080);
  EXPECT_EQ(l->path, "");
  EXPECT_EQ(l->HostHeader(), "127.0.0.1:8080");
  auto v6 = ParseUrl("https://[::1]:8443/v1");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->HostPort(), "[::1]:8443");
  auto p = ParseUrl("http://user:pw@proxy:3128");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->user_info, "user:pw");
  EXPECT_FALSE(ParseUrl("ftp://x").ok());
  EXPECT_FALSE(ParseUrl("https://").ok());
  EXPECT_FALSE(ParseUrl("https://h:99999").ok());
}

TEST(HttpUtilTest, ProxySelection) {
  ProxyConfig c{"http://proxy:3128", "", "localhost,.internal.example, 10.0.0.1,api.x.com:8443"};
  auto proxied = [&](const char* url) { return ProxyFor(*ParseUrl(url), c).has_value(); };
  EXPECT_TRUE(proxied("https://api.openai.com/v1"));
  EXPECT_FALSE(proxied("https://localhost:1/v1"));
  EXPECT_FALSE(proxied("https://a.internal.example/v1"));
  EXPECT_FALSE(proxied("https://internal.example/v1"));
  EXPECT_TRUE(proxied("https://notinternal.example/v1"));
  EXPECT_FALSE(proxied("https://10.0.0.1/v1"));
  EXPECT_TRUE(proxied("https://10.0.0.2/v1"));
  EXPECT_FALSE(proxied("https://api.x.com:8443/v1"));
  EXPECT_TRUE(proxied("https://api.x.com/v1"));
  EXPECT_FALSE(proxied("http://plain.example/v1"));  // no HTTP_PROXY set
  ProxyConfig all{"proxy:3128", "", "*"};
  EXPECT_FALSE(ProxyFor(*ParseUrl("https://a.b/v1"), all).has_value());
  ProxyConfig bare{"proxy:3128", "", ""};
  auto p = ProxyFor(*ParseUrl("https://a.b/v1"), bare);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->HostPort(), "proxy:3128");
}

TEST(HttpUtilTest, RetryAfter) {
  absl::Time now = absl::FromUnixSeconds(1700000000);
  EXPECT_EQ(ParseRetryAfter("2", now), absl::Seconds(2));
  EXPECT_EQ(ParseRetryAfter(" 0.5 ", now), absl::Milliseconds(500));
  EXPECT_EQ(ParseRetryAfter("-1", now), std::nullopt);
  EXPECT_EQ(ParseRetryAfter("soon", now), std::nullopt);
  // 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT.
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:13:30 GMT", now), absl::Seconds(10));
  EXPECT_EQ(ParseRetryAfter("Tue, 14 Nov 2023 22:13:00 GMT", now), absl::ZeroDuration());
  EXPECT_EQ(ParseResetDuration("6m0s"), absl::Minutes(6));
  EXPECT_EQ(ParseResetDuration("20ms"), absl::Milliseconds(20));
  EXPECT_EQ(ParseResetDuration("1.5s"), absl::Milliseconds(1500));
  EXPECT_EQ(ParseResetDuration("x"), std::nullopt);
}

TEST(HttpUtilTest, BackoffIsCappedFullJitter) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(100);
  p.max_backoff = absl::Milliseconds(350);
  EXPECT_EQ(BackoffDelay(p, 1, 0.999999), absl::Milliseconds(100) * 0.999999);
  EXPECT_EQ(BackoffDelay(p, 2, 0.5), absl::Milliseconds(100));
  EXPECT_EQ(BackoffDelay(p, 3, 1.0), absl::Milliseconds(350));
  EXPECT_EQ(BackoffDelay(p, 30, 1.0), absl::Milliseconds(350));
  EXPECT_EQ(BackoffDelay(p, 3, 0.0), absl::ZeroDuration());
}

TEST(HttpUtilTest, ErrorMapping) {
  EXPECT_EQ(KindForHttpStatus(400, "context_length_exceeded", ""), LlmErrorKind::kContextTooLong);
  EXPECT_EQ(KindForHttpStatus(400, "", "This model's maximum context length is 8192 tokens"),
            LlmErrorKind::kContextTooLong);
  EXPECT_EQ(KindForHttpStatus(400, "invalid_value", "bad"), LlmErrorKind::kBadRequest);
  EXPECT_EQ(KindForHttpStatus(401, "", ""), LlmErrorKind::kAuth);
  EXPECT_EQ(KindForHttpStatus(403, "", ""), LlmErrorKind::kAuth);
  EXPECT_EQ(KindForHttpStatus(404, "model_not_found", ""), LlmErrorKind::kModelNotFound);
  EXPECT_EQ(KindForHttpStatus(429, "", ""), LlmErrorKind::kRateLimited);
  EXPECT_EQ(KindForHttpStatus(503, "", ""), LlmErrorKind::kServerError);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kAuth), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kRateLimited), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kContextTooLong), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kModelNotFound), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kTimeout), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusCodeFor(LlmErrorKind::kCancelled), absl::StatusCode::kCancelled);
  EXPECT_TRUE(IsRetryable(LlmErrorKind::kConnect));
  EXPECT_FALSE(IsRetryable(LlmErrorKind::kTruncated));
  EXPECT_FALSE(IsRetryable(LlmErrorKind::kTls));
}

TEST(HttpUtilTest, RedactBeforeTruncating) {
  const std::string key = "sk-live-ABCDEFGH12345";
  // The key straddles the cut: redacted first, nothing of it survives.
  std::string text = std::string(10, 'x') + key + " tail";
  std::string out = RedactAndTruncate(text, key, 15);
  EXPECT_EQ(out, "xxxxxxxxxx[reda...");
  EXPECT_EQ(out.find("sk-l"), std::string::npos);
  // A capped read that ends inside the key: the fragment is redacted too.
  EXPECT_EQ(RedactAndTruncate("Bearer sk-live-ABC", key, 100), "Bearer [redacted]");
  EXPECT_EQ(RedactAndTruncate("short", key, 100), "short");
  // Never a cut inside a UTF-8 character.
  EXPECT_EQ(RedactAndTruncate("ab\xC3\xA9"
                              "cd",
                              "", 3),
            "ab...");
}

TEST(HttpUtilTest, ErrorResponseMessages) {
  const std::string key = "sk-live-ABCDEFGH12345";
  EXPECT_EQ(
      ErrorResponseMessage(502, "text/html", "<html><body>Bad gateway</body></html>", nullptr, key),
      "HTTP 502 from the provider (HTML error page)");
  EXPECT_EQ(ErrorResponseMessage(503, "", "  <!DOCTYPE html><html>...", nullptr, key),
            "HTTP 503 from the provider (HTML error page)");
  ProviderError quota{"You exceeded your current quota", "insufficient_quota",
                      "insufficient_quota"};
  EXPECT_EQ(ErrorResponseMessage(429, "application/json", "{}", &quota, key),
            "provider returned HTTP 429 (insufficient_quota): You exceeded your current quota");
  ProviderError echo{"Incorrect API key provided: " + key, "invalid_request_error", ""};
  EXPECT_EQ(ErrorResponseMessage(401, "application/json", "{}", &echo, key),
            "provider returned HTTP 401: the provider refused the deployment's API key");
  // OpenAI masks the key it quotes: nothing of that text goes on, only the code.
  ProviderError masked{"Incorrect API key provided: sk-live-****2345", "invalid_request_error",
                       "invalid_api_key"};
  EXPECT_EQ(ErrorResponseMessage(401, "application/json", "{}", &masked, key),
            "provider returned HTTP 401 (invalid_api_key): the provider refused the deployment's "
            "API key");
  EXPECT_EQ(ErrorResponseMessage(500, "text/plain", "oops\n", nullptr, key),
            "provider returned HTTP 500: oops\\n");
  EXPECT_EQ(StreamErrorMessage("{}", &quota, key),
            "provider error mid-stream (insufficient_quota): You exceeded your current quota");
  EXPECT_EQ(StreamErrorMessage("overloaded", nullptr, key),
            "provider error mid-stream: overloaded");
  EXPECT_TRUE(IsQuotaExhausted(quota));
  EXPECT_TRUE(IsQuotaExhausted({"", "insufficient_quota", ""}));
  EXPECT_FALSE(IsQuotaExhausted({"Rate limit reached", "requests", "rate_limit_exceeded"}));
}

TEST(HttpUtilTest, RedactAndEstimate) {
  EXPECT_EQ(Redact("key sk-1 and sk-1 again", "sk-1"), "key [redacted] and [redacted] again");
  EXPECT_EQ(Redact("nothing", ""), "nothing");
  EXPECT_EQ(EstimateTokens(""), 0);
  EXPECT_EQ(EstimateTokens("a"), 1);
  EXPECT_EQ(EstimateTokens("abcd"), 1);
  EXPECT_EQ(EstimateTokens("abcde"), 2);
  EXPECT_EQ(EstimatePromptTokens({{"user", "abcdefgh"}}), 3 + 4 + 2);
}

}  // namespace
}  // namespace aichat::agent
