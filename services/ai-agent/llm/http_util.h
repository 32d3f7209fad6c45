// Transport-independent pieces of the HTTP LLM client: URL and proxy
// selection, Retry-After parsing, backoff, and mapping provider failures to
// LlmErrorKind and absl::Status. Kept apart from the Beast code so they are
// cheap to compile and easy to test.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/ai-agent/llm/llm_client.h"

namespace aichat::agent {

struct Url {
  bool tls = false;  // https
  std::string host;  // without brackets for IPv6
  uint16_t port = 0;
  std::string path;       // "/v1" (no trailing slash), may be empty
  std::string user_info;  // "user:pass" (proxies only)

  std::string HostPort() const;    // host:port, IPv6 bracketed
  std::string HostHeader() const;  // port omitted when it is the default
};

absl::StatusOr<Url> ParseUrl(std::string_view url);

struct ProxyConfig {
  std::string https_proxy;
  std::string http_proxy;
  std::string no_proxy;
};

ProxyConfig ProxyConfigFromOptions(const HttpLlmClientOptions& options);

// The proxy to use for `target`, or nullopt for a direct connection.
// NO_PROXY: comma-separated host names, domain suffixes (".example.com" or
// "example.com" both match sub.example.com), IP addresses, optional ":port", "*".
std::optional<Url> ProxyFor(const Url& target, const ProxyConfig& config);

// "120" or an HTTP-date; nullopt if unparsable. Never negative.
std::optional<absl::Duration> ParseRetryAfter(std::string_view value, absl::Time now);
// OpenAI's x-ratelimit-reset-* format: "1s", "6m0s", "20ms", "1h2m3.5s".
std::optional<absl::Duration> ParseResetDuration(std::string_view value);

// Full-jitter exponential backoff for the retry after attempt `attempt`
// (1-based); `uniform01` in [0, 1).
absl::Duration BackoffDelay(const RetryPolicy& policy, int attempt, double uniform01);

// Maps an HTTP error status (and the provider's error code) to a kind.
LlmErrorKind KindForHttpStatus(int http_status, std::string_view provider_code,
                               std::string_view provider_message);
bool IsRetryable(LlmErrorKind kind);
absl::StatusCode StatusCodeFor(LlmErrorKind kind);

// Replaces every occurrence of `secret` in `text` (no-op for an empty secret).
std::string Redact(std::string text, std::string_view secret);

// Redacts `secret` first (also a start of it, 4 bytes or more, that ends `text`,
// as a capped read leaves it), then keeps at most `max_bytes` at a UTF-8
// boundary with "..." after a cut: no fragment of the secret survives the cut.
std::string RedactAndTruncate(std::string_view text, std::string_view secret, size_t max_bytes);

// An HTML document, by Content-Type or by a body that opens with a tag (a CDN's
// or a proxy's error page).
bool IsHtml(std::string_view content_type, std::string_view body);

// "insufficient_quota" as the error's code or type: the account is out of
// credit; unlike a rate limit, waiting does not help.
bool IsQuotaExhausted(const ProviderError& error);

// The message for a non-200 answer, with `secret` redacted: the provider's own
// error message for an OpenAI-style error body, "HTTP 502 from the provider
// (HTML error page)" for a page (never relayed raw), else the start of the body.
std::string ErrorResponseMessage(int http_status, std::string_view content_type,
                                 std::string_view body, const ProviderError* error,
                                 std::string_view secret);

// The message for an error event inside a stream (`data: {"error": ...}`, or an
// `event: error` whose data is not JSON), with `secret` redacted.
std::string StreamErrorMessage(std::string_view data, const ProviderError* error,
                               std::string_view secret);

}  // namespace aichat::agent
