// The interface the agent uses to call an OpenAI-compatible chat completions
// endpoint, streaming or not. Deliberately free of Boost.Asio/Beast so that
// including it costs nothing; the HTTPS implementation is behind
// MakeHttpLlmClient().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/ai-agent/llm/chat_chunk.h"

namespace aichat::agent {

struct RetryPolicy {
  int max_attempts = 3;  // total attempts, including the first
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // A Retry-After longer than this is not waited for: the call fails with the
  // provider's error and LlmOutcome::retry_after tells the caller how long.
  absl::Duration max_retry_after = absl::Seconds(30);
};

struct CompletionRequest {
  std::string base_url;  // e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1
  std::string api_key;   // sent as Authorization: Bearer; never logged, never in an error
  std::string model;
  std::vector<ChatMessage> messages;
  int max_output_tokens = 0;          // 0: omitted
  bool use_max_tokens_param = false;  // send "max_tokens" (older servers) instead
  std::optional<double> temperature;
  bool stream = true;
  absl::Time deadline = absl::InfiniteFuture();        // caller's deadline and total timeout
  absl::Duration stall_timeout = absl::Seconds(30);    // max silence between reads
  absl::Duration connect_timeout = absl::Seconds(10);  // per connection attempt
  RetryPolicy retry;
};

enum class LlmErrorKind {
  kNone,
  kBadRequest,      // 400 and other 4xx not listed below
  kContextTooLong,  // 400 context_length_exceeded
  kAuth,            // 401, 403: our key or configuration is wrong
  kModelNotFound,   // 404
  kRateLimited,     // 429
  kServerError,     // 5xx
  kConnect,         // DNS, TCP, proxy, or the connection broke before a response
  kTls,             // handshake or certificate verification failed
  kMalformed,       // unparsable JSON or SSE
  kTruncated,       // the stream ended before [DONE]
  kStalled,         // silence longer than stall_timeout
  kTimeout,         // the deadline passed
  kCancelled,       // LlmCall::Cancel()
};

std::string_view LlmErrorKindName(LlmErrorKind kind);

struct LlmOutcome {
  // OK, or UNAVAILABLE (5xx, network, TLS, stall, truncated, malformed, 401/403),
  // RESOURCE_EXHAUSTED (429), INVALID_ARGUMENT (400, context too long),
  // FAILED_PRECONDITION (404 model), DEADLINE_EXCEEDED, CANCELLED.
  absl::Status status;
  LlmErrorKind kind = LlmErrorKind::kNone;
  int http_status = 0;         // of the last attempt; 0 if none arrived
  std::string content;         // the whole answer, or what arrived before a failure
  std::string finish_reason;   // "stop", "length", ... or "" if none arrived
  std::string provider_model;  // "model" the provider reported
  TokenUsage usage;            // provider figures, else an estimate (estimated=true)
  bool delivered_any = false;  // a delta reached on_delta
  int attempts = 0;            // HTTP attempts made (a pooled-connection redo is not one)
  absl::Duration time_to_first_token = absl::ZeroDuration();  // Start to first delta
  absl::Duration duration = absl::ZeroDuration();             // Start to on_done
  std::optional<absl::Duration> retry_after;  // from Retry-After / x-ratelimit-reset-*
  // The provider's error code ("insufficient_quota", "rate_limit_exceeded", ...)
  // from an error body or an in-stream error event; empty if none. A 429 with
  // insufficient_quota (code or type) is not retried: the account is out of
  // credit, and waiting does not help.
  std::string provider_error_code;
};

// A call in flight.
class LlmCall {
 public:
  virtual ~LlmCall() = default;
  // Closes the upstream connection at once (the provider stops generating);
  // on_done then fires with CANCELLED unless it already fired. Thread-safe,
  // idempotent.
  virtual void Cancel() = 0;
};

class LlmClient {
 public:
  virtual ~LlmClient() = default;
  // on_delta: each content piece as soon as its SSE event is complete (once with
  // the whole text for stream=false). on_done: exactly once, after the last
  // on_delta. Both run on the client's I/O thread and must not block.
  // Destroying the client cancels calls still in flight (their on_done runs).
  virtual std::shared_ptr<LlmCall> Start(CompletionRequest request,
                                         std::function<void(std::string_view)> on_delta,
                                         std::function<void(LlmOutcome)> on_done) = 0;
};

struct HttpLlmClientOptions {
  int io_threads = 1;  // each thread owns its connections; calls are spread round-robin
  // Trust anchors. Both empty: OpenSSL's default paths (SSL_CERT_FILE, SSL_CERT_DIR).
  std::string ca_file;
  std::string ca_pem;
  int max_idle_connections_per_host = 16;           // per I/O thread
  absl::Duration idle_timeout = absl::Seconds(50);  // pooled connections older are dropped
  // Proxies; nullopt: read HTTPS_PROXY/https_proxy, HTTP_PROXY/http_proxy,
  // NO_PROXY/no_proxy from the environment. "" disables.
  std::optional<std::string> https_proxy;
  std::optional<std::string> http_proxy;
  std::optional<std::string> no_proxy;
  size_t max_event_bytes = 4 << 20;        // one SSE event
  size_t max_error_body_bytes = 64 << 10;  // kept of a non-200 body (the rest is drained)
  // One response body in total (stream or not); more fails the call as
  // kMalformed, so a runaway or hostile endpoint cannot feed us forever.
  size_t max_response_bytes = 16 << 20;
};

std::unique_ptr<LlmClient> MakeHttpLlmClient(const HttpLlmClientOptions& options);

// ~4 bytes of UTF-8 per token, at least 1 for non-empty text. Used when a
// provider reports no usage; good enough to charge, flagged as an estimate.
int64_t EstimateTokens(std::string_view text);
// Per message: its content plus 4 tokens of framing; plus 3 for the reply.
int64_t EstimatePromptTokens(const std::vector<ChatMessage>& messages);

}  // namespace aichat::agent
