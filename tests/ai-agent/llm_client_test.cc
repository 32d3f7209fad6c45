// The HTTPS LLM client against the in-process fake provider over real TLS:
// streaming, usage, every error class, retries, timeouts, cancellation,
// pooling, certificate checks and an HTTP CONNECT proxy.
#include "services/ai-agent/llm/llm_client.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fakes/connect_proxy.h"
#include "tests/fakes/fake_llm_server.h"

namespace aichat::agent {
namespace {

using ::aichat::fakes::ConnectProxy;
using ::aichat::fakes::FakeLlmOptions;
using ::aichat::fakes::FakeLlmServer;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] = "sk-test-S3CRET-0123456789";

// Polls `done` until it holds or `timeout` passes.
template <class F>
bool PollUntil(F done, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) {
      return false;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  return true;
}

struct Result {
  LlmOutcome outcome;
  std::vector<std::string> deltas;
};

std::unique_ptr<FakeLlmServer> StartFake(FakeLlmOptions options = {}) {
  if (options.api_key.empty()) {
    options.api_key = kKey;
  }
  auto fake = FakeLlmServer::Start(std::move(options));
  EXPECT_TRUE(fake.ok()) << fake.status();
  return fake.ok() ? *std::move(fake) : nullptr;
}

HttpLlmClientOptions ClientOptions(const std::string& ca_pem) {
  HttpLlmClientOptions o;
  o.ca_pem = ca_pem;
  o.https_proxy = "";
  o.http_proxy = "";
  o.no_proxy = "";
  return o;
}

class LlmClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = StartFake();
    ASSERT_NE(fake_, nullptr);
    client_ = MakeHttpLlmClient(ClientOptions(fake_->ca_pem()));
  }

  CompletionRequest Request(const std::string& user_text) {
    CompletionRequest r;
    r.base_url = fake_->base_url();
    r.api_key = kKey;
    r.model = "gpt-4o-mini";
    r.messages = {{"system", "You are terse."}, {"user", user_text}};
    r.deadline = absl::Now() + absl::Seconds(20);
    r.retry.initial_backoff = absl::Milliseconds(5);
    r.retry.max_backoff = absl::Milliseconds(20);
    return r;
  }

  Result Run(CompletionRequest request, LlmClient* client = nullptr) {
    auto result = std::make_shared<Result>();
    auto done = std::make_shared<absl::Notification>();
    (client != nullptr ? client : client_.get())
        ->Start(
            std::move(request), [result](std::string_view d) { result->deltas.emplace_back(d); },
            [result, done](LlmOutcome o) {
              result->outcome = std::move(o);
              done->Notify();
            });
    EXPECT_TRUE(done->WaitForNotificationWithTimeout(absl::Seconds(30)));
    return *result;
  }

  std::unique_ptr<FakeLlmServer> fake_;
  std::unique_ptr<LlmClient> client_;
};

void ExpectNoKey(const LlmOutcome& o) {
  EXPECT_THAT(std::string(o.status.message()), Not(HasSubstr(kKey)));
  EXPECT_THAT(std::string(o.status.ToString()), Not(HasSubstr("S3CRET")));
}

TEST_F(LlmClientTest, StreamsDeltasAndReadsUsageFromTheFinalChunk) {
  // "héllo wörld 你好 🙂" -> 4 words; 8 tokens cycle through them.
  Result r = Run(Request("h\xC3\xA9llo w\xC3\xB6rld \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82"));
  const LlmOutcome& o = r.outcome;
  ASSERT_TRUE(o.status.ok()) << o.status;
  EXPECT_EQ(r.deltas.size(), 8u);
  EXPECT_EQ(o.content,
            "h\xC3\xA9llo w\xC3\xB6rld \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82 h\xC3\xA9llo "
            "w\xC3\xB6rld \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82");
  EXPECT_EQ(o.finish_reason, "stop");
  EXPECT_EQ(o.provider_model, "gpt-4o-mini");
  // prompt = 3 + (4 + 3 words) + (4 + 4 words)
  EXPECT_EQ(o.usage.prompt_tokens, 18);
  EXPECT_EQ(o.usage.completion_tokens, 8);
  EXPECT_EQ(o.usage.cached_tokens, 0);
  EXPECT_FALSE(o.usage.estimated);
  EXPECT_TRUE(o.delivered_any);
  EXPECT_EQ(o.attempts, 1);
  EXPECT_EQ(o.http_status, 200);
  EXPECT_GT(o.time_to_first_token, absl::ZeroDuration());

  std::vector<fakes::RecordedRequest> log = fake_->Requests();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].path, "/v1/chat/completions");
  EXPECT_EQ(log[0].authorization, "matched");
  EXPECT_THAT(log[0].body, HasSubstr("\"stream\":true"));
  EXPECT_THAT(log[0].body, HasSubstr("\"stream_options\":{\"include_usage\":true}"));
}

TEST_F(LlmClientTest, CrLfAndByteSizedWrites) {
  Result r = Run(Request("a\xC3\xA9 b [[fake:crlf split=bytes tokens=5]]"));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.content, "a\xC3\xA9 b a\xC3\xA9 b a\xC3\xA9");
  EXPECT_EQ(r.deltas.size(), 5u);
}

TEST_F(LlmClientTest, NonStreaming) {
  CompletionRequest req = Request("one two [[fake:tokens=3]]");
  req.stream = false;
  Result r = Run(std::move(req));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.deltas, std::vector<std::string>{"one two one"});
  EXPECT_EQ(r.outcome.usage.completion_tokens, 3);
  EXPECT_THAT(fake_->Requests()[0].body, Not(HasSubstr("stream_options")));
}

TEST_F(LlmClientTest, MaxTokensAndLengthFinish) {
  CompletionRequest req = Request("x y z");
  req.max_output_tokens = 3;
  req.use_max_tokens_param = true;
  req.temperature = 0.25;
  Result r = Run(std::move(req));
  ASSERT_TRUE(r.outcome.status.ok());
  EXPECT_EQ(r.outcome.finish_reason, "length");
  EXPECT_EQ(r.outcome.usage.completion_tokens, 3);
  std::string body = fake_->Requests()[0].body;
  EXPECT_THAT(body, HasSubstr("\"max_tokens\":3"));
  EXPECT_THAT(body, HasSubstr("\"temperature\":2.5E-1"));
}

TEST_F(LlmClientTest, CachedTokens) {
  Result r = Run(Request("hello [[fake:cached=4]]"));
  ASSERT_TRUE(r.outcome.status.ok());
  EXPECT_EQ(r.outcome.usage.cached_tokens, 4);
}

TEST_F(LlmClientTest, EstimatesWhenNoUsageArrives) {
  CompletionRequest req = Request("abc [[fake:no_usage tokens=2]]");
  std::vector<ChatMessage> messages = req.messages;
  Result r = Run(std::move(req));
  ASSERT_TRUE(r.outcome.status.ok());
  EXPECT_TRUE(r.outcome.usage.estimated);
  EXPECT_EQ(r.outcome.usage.prompt_tokens, EstimatePromptTokens(messages));
  EXPECT_EQ(r.outcome.usage.completion_tokens, EstimateTokens("abc abc"));
}

struct ErrorCase {
  std::string directive;
  absl::StatusCode code;
  LlmErrorKind kind;
  int http_status;
  int attempts;
};

TEST_F(LlmClientTest, ErrorClasses) {
  const std::vector<ErrorCase> cases = {
      {"[[fake:status=400 code=context_length_exceeded]]", absl::StatusCode::kInvalidArgument,
       LlmErrorKind::kContextTooLong, 400, 1},
      {"[[fake:status=400]]", absl::StatusCode::kInvalidArgument, LlmErrorKind::kBadRequest, 400,
       1},
      {"[[fake:status=403]]", absl::StatusCode::kUnavailable, LlmErrorKind::kAuth, 403, 1},
      {"[[fake:status=404]]", absl::StatusCode::kFailedPrecondition, LlmErrorKind::kModelNotFound,
       404, 1},
      {"[[fake:status=429]]", absl::StatusCode::kResourceExhausted, LlmErrorKind::kRateLimited, 429,
       3},
      // Out of credit is not transient: no retry (by code, or by type alone).
      {"[[fake:status=429 code=insufficient_quota type=insufficient_quota]]",
       absl::StatusCode::kResourceExhausted, LlmErrorKind::kRateLimited, 429, 1},
      {"[[fake:status=429 type=insufficient_quota]]", absl::StatusCode::kResourceExhausted,
       LlmErrorKind::kRateLimited, 429, 1},
      {"[[fake:status=500]]", absl::StatusCode::kUnavailable, LlmErrorKind::kServerError, 500, 3},
      {"[[fake:status=503]]", absl::StatusCode::kUnavailable, LlmErrorKind::kServerError, 503, 3},
      {"[[fake:malformed]]", absl::StatusCode::kUnavailable, LlmErrorKind::kMalformed, 200, 1},
      {"[[fake:drop_after=3]]", absl::StatusCode::kUnavailable, LlmErrorKind::kTruncated, 200, 1},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.directive);
    fake_->Reset();
    Result r = Run(Request(absl::StrCat("w1 w2 w3 w4 ", c.directive)));
    EXPECT_EQ(r.outcome.status.code(), c.code) << r.outcome.status;
    EXPECT_EQ(r.outcome.kind, c.kind) << LlmErrorKindName(r.outcome.kind);
    EXPECT_EQ(r.outcome.http_status, c.http_status);
    EXPECT_EQ(r.outcome.attempts, c.attempts);
    EXPECT_EQ(static_cast<int>(fake_->Requests().size()), c.attempts);
    ExpectNoKey(r.outcome);
  }
}

TEST_F(LlmClientTest, InsufficientQuotaSaysSo) {
  Result r = Run(Request("hi [[fake:status=429 code=insufficient_quota]]"));
  EXPECT_EQ(r.outcome.attempts, 1);
  EXPECT_EQ(r.outcome.provider_error_code, "insufficient_quota");
  EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("insufficient_quota"));
}

TEST_F(LlmClientTest, HtmlErrorPageIsSummarisedNotRelayed) {
  Result r = Run(Request("hi [[fake:status=502 html]]"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kServerError);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.outcome.status.message(), "HTTP 502 from the provider (HTML error page)");
  EXPECT_EQ(r.outcome.attempts, 3);  // a 5xx all the same
}

TEST_F(LlmClientTest, ErrorEventMidStreamPassesTheProvidersMessageOn) {
  Result r = Run(Request("a b c d [[fake:error_after=2 message=Upstream_model_overloaded]]"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kServerError) << r.outcome.status;
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("Upstream_model_overloaded"));
  EXPECT_EQ(r.outcome.content, "a b ");
  EXPECT_EQ(r.outcome.attempts, 1);  // deltas went out: never retried

  // As a named SSE `error` event before any delta: retried, then reported.
  fake_->Reset();
  r = Run(Request("a b [[fake:error_after=0 error_event code=server_busy message=Busy_now]]"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kServerError) << r.outcome.status;
  EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("Busy_now"));
  EXPECT_EQ(r.outcome.provider_error_code, "server_busy");
  EXPECT_FALSE(r.outcome.delivered_any);
  EXPECT_EQ(r.outcome.attempts, 3);
}

TEST_F(LlmClientTest, KeyIsRedactedBeforeTheErrorBodyIsCut) {
  // The body shows the key at bytes 187..211; the message keeps the first 200
  // bytes of a body that is not JSON, so cutting first would keep a fragment.
  Result r = Run(Request("hi [[fake:status=400 echo_auth=165]]"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kBadRequest);
  EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("[redacted]"));
  EXPECT_THAT(std::string(r.outcome.status.message()), Not(HasSubstr("S3CR")));
  ExpectNoKey(r.outcome);
}

TEST_F(LlmClientTest, ResponseLargerThanTheCapFails) {
  HttpLlmClientOptions options = ClientOptions(fake_->ca_pem());
  options.max_response_bytes = 2048;
  auto client = MakeHttpLlmClient(options);
  for (bool stream : {true, false}) {
    SCOPED_TRACE(stream);
    CompletionRequest req = Request("word [[fake:tokens=600 split=none]]");
    req.stream = stream;
    Result r = Run(std::move(req), client.get());
    EXPECT_EQ(r.outcome.kind, LlmErrorKind::kMalformed) << r.outcome.status;
    EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("2048 bytes"));
    EXPECT_EQ(r.outcome.attempts, 1);
  }
  // Under the cap: fine.
  EXPECT_TRUE(Run(Request("word [[fake:tokens=2]]"), client.get()).outcome.status.ok());
}

TEST_F(LlmClientTest, TruncatedStreamKeepsPartialTextAndIsNotRetried) {
  Result r = Run(Request("a b c d e [[fake:drop_after=3 no_usage]]"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kTruncated);
  EXPECT_EQ(r.outcome.content, "a b c ");
  EXPECT_TRUE(r.outcome.delivered_any);
  EXPECT_TRUE(r.outcome.usage.estimated);
  EXPECT_EQ(r.outcome.usage.completion_tokens, EstimateTokens("a b c "));
  EXPECT_EQ(fake_->Requests().size(), 1u);
}

TEST_F(LlmClientTest, WrongApiKeyIsAuthAndNeverLeaksTheKey) {
  CompletionRequest req = Request("hi");
  req.api_key = "sk-wrong-S3CRET-key";
  Result r = Run(std::move(req));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kAuth);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.outcome.http_status, 401);
  EXPECT_EQ(r.outcome.attempts, 1);
  // The fake quotes the key it got, as OpenAI does; none of that text goes on.
  EXPECT_THAT(std::string(r.outcome.status.message()),
              HasSubstr("(invalid_api_key): the provider refused the deployment's API key"));
  EXPECT_THAT(std::string(r.outcome.status.message()), Not(HasSubstr("S3CRET")));
  EXPECT_THAT(std::string(r.outcome.status.message()), Not(HasSubstr("Incorrect API key")));
  EXPECT_EQ(fake_->Requests()[0].authorization, "mismatched");
}

TEST_F(LlmClientTest, RetriesBeforeTheFirstDeltaThenSucceeds) {
  fake_->Script({"status=503", "status=429"});
  Result r = Run(Request("ok then"));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.attempts, 3);
  EXPECT_EQ(fake_->Requests().size(), 3u);
  EXPECT_EQ(r.outcome.content, "ok then ok then ok then ok then");
}

TEST_F(LlmClientTest, RetryAfterIsHonoured) {
  fake_->Script({"status=429 retry_after=0.3"});
  absl::Time start = absl::Now();
  Result r = Run(Request("hi"));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.attempts, 2);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));  // waited at least Retry-After
}

TEST_F(LlmClientTest, LongRetryAfterIsReportedNotWaited) {
  fake_->Script({"status=429 retry_after=120"});
  Result r = Run(Request("hi"));
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.outcome.attempts, 1);
  ASSERT_TRUE(r.outcome.retry_after.has_value());
  EXPECT_EQ(*r.outcome.retry_after, absl::Seconds(120));
}

TEST_F(LlmClientTest, NoRetryPastTheDeadline) {
  fake_->Script({"status=503 retry_after=5", "status=503 retry_after=5"});
  CompletionRequest req = Request("hi");
  req.deadline = absl::Now() + absl::Seconds(2);
  Result r = Run(std::move(req));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kServerError);
  EXPECT_EQ(r.outcome.attempts, 1);
}

TEST_F(LlmClientTest, DeadlineWhileWaitingForTheFirstToken) {
  CompletionRequest req = Request("hi [[fake:slow_start_ms=3000]]");
  req.deadline = absl::Now() + absl::Milliseconds(200);
  Result r = Run(std::move(req));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kTimeout);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r.outcome.attempts, 1);
}

TEST_F(LlmClientTest, StalledStreamIsCut) {
  CompletionRequest req = Request("a b c d [[fake:stall_after=2]]");
  req.stall_timeout = absl::Milliseconds(200);
  Result r = Run(std::move(req));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kStalled);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.outcome.content, "a b ");
  EXPECT_EQ(r.outcome.attempts, 1);
  EXPECT_TRUE(PollUntil([&] { return fake_->Stats().disconnects_mid_stream == 1; }));
}

TEST_F(LlmClientTest, CancelMidStreamClosesTheUpstreamConnection) {
  auto done = std::make_shared<absl::Notification>();
  auto result = std::make_shared<Result>();
  auto deltas = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<LlmCall> call = client_->Start(
      Request("a b c d [[fake:hold_last tokens=4]]"),
      [result, deltas](std::string_view d) {
        result->deltas.emplace_back(d);
        ++*deltas;
      },
      [result, done](LlmOutcome o) {
        result->outcome = std::move(o);
        done->Notify();
      });
  // The fake holds the 4th token back; the client has all 3 before it.
  ASSERT_TRUE(PollUntil([&] { return fake_->Stats().held == 1 && deltas->load() == 3; }));
  call->Cancel();
  ASSERT_TRUE(done->WaitForNotificationWithTimeout(absl::Seconds(10)));
  call->Cancel();  // idempotent, after done too
  EXPECT_EQ(result->outcome.kind, LlmErrorKind::kCancelled);
  EXPECT_EQ(result->outcome.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(result->outcome.delivered_any);
  EXPECT_EQ(result->outcome.content, "a b c ");
  EXPECT_TRUE(result->outcome.usage.estimated);
  EXPECT_TRUE(PollUntil([&] { return fake_->Stats().disconnects_mid_stream == 1; }));
  EXPECT_EQ(fake_->Stats().held, 0);
}

TEST_F(LlmClientTest, CancelFromInsideTheDeltaCallbackStopsDeliveries) {
  auto done = std::make_shared<absl::Notification>();
  auto result = std::make_shared<Result>();
  std::shared_ptr<LlmCall> call;
  absl::Mutex mu;
  std::shared_ptr<LlmCall>* call_ptr = &call;
  absl::MutexLock lock(&mu);
  call = client_->Start(
      Request("a b c d e f [[fake:split=none]]"),
      [result, call_ptr, &mu](std::string_view d) {
        result->deltas.emplace_back(d);
        absl::MutexLock l(&mu);
        (*call_ptr)->Cancel();
      },
      [result, done](LlmOutcome o) {
        result->outcome = std::move(o);
        done->Notify();
      });
  mu.Unlock();
  ASSERT_TRUE(done->WaitForNotificationWithTimeout(absl::Seconds(10)));
  mu.Lock();
  EXPECT_EQ(result->deltas.size(), 1u);
  EXPECT_EQ(result->outcome.kind, LlmErrorKind::kCancelled);
}

TEST_F(LlmClientTest, SequentialCallsReuseOneConnection) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Run(Request("hi")).outcome.status.ok());
  }
  // A non-200 answer with a body keeps the connection too.
  EXPECT_EQ(Run(Request("[[fake:status=400]]")).outcome.kind, LlmErrorKind::kBadRequest);
  ASSERT_TRUE(Run(Request("hi")).outcome.status.ok());
  EXPECT_EQ(fake_->Stats().connections_accepted, 1);
  for (const auto& r : fake_->Requests()) {
    EXPECT_EQ(r.connection, 1);
  }
}

TEST_F(LlmClientTest, BrokenPooledConnectionIsRedoneOnAFreshOneOnce) {
  ASSERT_TRUE(Run(Request("hi")).outcome.status.ok());
  fake_->Script({"hangup"});  // the pooled connection dies as the request lands
  Result r = Run(Request("hi"));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.attempts, 1);  // not a counted retry
  EXPECT_EQ(fake_->Requests().size(), 3u);
  EXPECT_EQ(fake_->Stats().connections_accepted, 2);
}

TEST_F(LlmClientTest, HangupOnAFreshConnectionIsARetriedConnectError) {
  fake_->Script({"hangup", "hangup", "hangup"});
  Result r = Run(Request("hi"));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kConnect);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.outcome.attempts, 3);
}

TEST_F(LlmClientTest, ConnectionRefusedIsRetriedThenUnavailable) {
  int port = fake_->port();
  fake_->Stop();
  CompletionRequest req = Request("hi");
  req.base_url = absl::StrCat("https://127.0.0.1:", port, "/v1");
  Result r = Run(std::move(req));
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kConnect);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.outcome.attempts, 3);
  EXPECT_FALSE(r.outcome.usage.estimated);
  EXPECT_EQ(r.outcome.usage.prompt_tokens, 0);
}

TEST_F(LlmClientTest, HostNameIsVerifiedWithSni) {
  CompletionRequest req = Request("hi");
  req.base_url = absl::StrCat("https://localhost:", fake_->port(), "/v1");
  Result r = Run(std::move(req));
  EXPECT_TRUE(r.outcome.status.ok()) << r.outcome.status;
}

TEST_F(LlmClientTest, UntrustedCertificateFails) {
  auto other = StartFake();
  ASSERT_NE(other, nullptr);
  // Trusts `other`'s CA, not fake_'s.
  auto client = MakeHttpLlmClient(ClientOptions(other->ca_pem()));
  Result r = Run(Request("hi"), client.get());
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kTls);
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.outcome.status.message()), HasSubstr("certificate"));
  EXPECT_EQ(r.outcome.attempts, 1);
  EXPECT_EQ(fake_->Stats().completion_requests, 0);
}

TEST_F(LlmClientTest, CertificateForAnotherHostFails) {
  FakeLlmOptions options;
  options.cert_dns_names = {"api.other.example"};
  options.cert_ip_addresses = {"10.9.9.9"};
  auto other = StartFake(options);
  ASSERT_NE(other, nullptr);
  auto client = MakeHttpLlmClient(ClientOptions(other->ca_pem()));
  CompletionRequest req = Request("hi");
  req.base_url = other->base_url();
  Result r = Run(req, client.get());
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kTls) << r.outcome.status;
  req.base_url = absl::StrCat("https://localhost:", other->port(), "/v1");
  r = Run(req, client.get());
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kTls) << r.outcome.status;
  EXPECT_EQ(other->Stats().completion_requests, 0);
}

TEST_F(LlmClientTest, PlainHttp) {
  FakeLlmOptions options;
  options.tls = false;
  auto plain = StartFake(options);
  ASSERT_NE(plain, nullptr);
  CompletionRequest req = Request("plain [[fake:tokens=2]]");
  req.base_url = plain->base_url();
  Result r = Run(std::move(req));
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.content, "plain plain");
}

TEST_F(LlmClientTest, DestroyingTheClientCancelsCallsInFlight) {
  auto client = MakeHttpLlmClient(ClientOptions(fake_->ca_pem()));
  auto done = std::make_shared<absl::Notification>();
  auto outcome = std::make_shared<LlmOutcome>();
  client->Start(
      Request("a [[fake:stall_after=1]]"), [](std::string_view) {},
      [done, outcome](LlmOutcome o) {
        *outcome = std::move(o);
        done->Notify();
      });
  ASSERT_TRUE(PollUntil([&] { return fake_->Stats().active_responses == 1; }));
  client.reset();
  ASSERT_TRUE(done->HasBeenNotified());
  EXPECT_EQ(outcome->kind, LlmErrorKind::kCancelled);
}

TEST_F(LlmClientTest, ManyConcurrentStreams) {
  constexpr int kCalls = 50;
  std::atomic<int> ok{0};
  std::atomic<int> finished{0};
  for (int i = 0; i < kCalls; ++i) {
    client_->Start(
        Request("x y [[fake:delay_ms=5 tokens=10]]"), [](std::string_view) {},
        [&](LlmOutcome o) {
          if (o.status.ok() && o.content == "x y x y x y x y x y") ++ok;
          ++finished;
        });
  }
  ASSERT_TRUE(PollUntil([&] { return finished.load() == kCalls; }, absl::Seconds(30)));
  EXPECT_EQ(ok.load(), kCalls);
}

TEST_F(LlmClientTest, HttpsThroughAConnectProxy) {
  ConnectProxy proxy;
  HttpLlmClientOptions options = ClientOptions(fake_->ca_pem());
  options.https_proxy = proxy.url();
  auto client = MakeHttpLlmClient(options);
  Result r = Run(Request("via proxy [[fake:tokens=2]]"), client.get());
  ASSERT_TRUE(r.outcome.status.ok()) << r.outcome.status;
  EXPECT_EQ(r.outcome.content, "via proxy");
  ASSERT_FALSE(proxy.request_lines().empty());
  EXPECT_EQ(proxy.request_lines()[0],
            absl::StrCat("CONNECT 127.0.0.1:", fake_->port(), " HTTP/1.1"));
}

// Bytes a proxy sends after its CONNECT answer come from the proxy, not from the
// provider (TLS has not even started): read as the response, they would let any
// proxy on the path forge answers under TLS.
TEST_F(LlmClientTest, BytesAfterTheConnectAnswerAreRefused) {
  const std::string forged_body =
      "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,"
      "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
      "\"FORGED\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
  ConnectProxy proxy(
      {.after_established = absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                         "Content-Length: ",
                                         forged_body.size(), "\r\n\r\n", forged_body)});
  HttpLlmClientOptions options = ClientOptions(fake_->ca_pem());
  options.https_proxy = absl::StrCat("http://proxyuser:proxy-S3CRET@127.0.0.1:", proxy.port());
  auto client = MakeHttpLlmClient(options);
  Result r = Run(Request("hi"), client.get());
  EXPECT_EQ(r.outcome.kind, LlmErrorKind::kConnect) << r.outcome.status;
  EXPECT_EQ(r.outcome.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(r.outcome.status.message()),
              HasSubstr(absl::StrCat("proxy 127.0.0.1:", proxy.port())));
  EXPECT_THAT(std::string(r.outcome.status.message()), Not(HasSubstr("proxy-S3CRET")));
  EXPECT_THAT(r.outcome.content, Not(HasSubstr("FORGED")));
  EXPECT_TRUE(r.deltas.empty());
  EXPECT_FALSE(r.outcome.delivered_any);
  ExpectNoKey(r.outcome);
  EXPECT_EQ(fake_->Stats().completion_requests, 0);  // nothing went through the tunnel
}

TEST_F(LlmClientTest, NoProxyBypassesTheProxy) {
  HttpLlmClientOptions options = ClientOptions(fake_->ca_pem());
  options.https_proxy = "http://127.0.0.1:1";  // nothing listens there
  options.no_proxy = "127.0.0.1";
  auto client = MakeHttpLlmClient(options);
  EXPECT_TRUE(Run(Request("hi"), client.get()).outcome.status.ok());
}

}  // namespace
}  // namespace aichat::agent
