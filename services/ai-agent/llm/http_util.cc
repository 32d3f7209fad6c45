// Transport-independent helpers of the HTTP LLM client; see http_util.h.
#include "services/ai-agent/llm/http_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aichat::agent {
namespace {

std::string EnvOr(const char* upper, const char* lower) {
  // Lower case first: curl's convention, and what most tools do.
  if (const char* v = std::getenv(lower); v != nullptr) {
    return v;
  }
  if (const char* v = std::getenv(upper); v != nullptr) {
    return v;
  }
  return {};
}

bool IsIpLiteral(absl::string_view host) {
  return !host.empty() && (host.find(':') != absl::string_view::npos ||
                           std::all_of(host.begin(), host.end(),
                                       [](char c) { return absl::ascii_isdigit(c) || c == '.'; }));
}

}  // namespace

std::string Url::HostPort() const {
  std::string h = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  return absl::StrCat(h, ":", port);
}

std::string Url::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  if ((tls && port == 443) || (!tls && port == 80)) {
    return h;
  }
  return absl::StrCat(h, ":", port);
}

absl::StatusOr<Url> ParseUrl(std::string_view url_text) {
  absl::string_view url(url_text.data(), url_text.size());
  Url out;
  absl::string_view rest = absl::StripAsciiWhitespace(url);
  if (absl::ConsumePrefix(&rest, "https://")) {
    out.tls = true;
  } else if (absl::ConsumePrefix(&rest, "http://")) {
    out.tls = false;
  } else {
    return absl::InvalidArgumentError("URL must start with http:// or https://");
  }
  size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  absl::string_view path = slash == absl::string_view::npos ? "" : rest.substr(slash);
  if (size_t at = authority.rfind('@'); at != absl::string_view::npos) {
    out.user_info = std::string(authority.substr(0, at));
    authority.remove_prefix(at + 1);
  }
  absl::string_view port_text;
  if (absl::StartsWith(authority, "[")) {
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError("URL has an unterminated IPv6 address");
    }
    out.host = std::string(authority.substr(1, close - 1));
    absl::string_view after = authority.substr(close + 1);
    if (absl::ConsumePrefix(&after, ":")) {
      port_text = after;
    } else if (!after.empty()) {
      return absl::InvalidArgumentError("URL has junk after the IPv6 address");
    }
  } else {
    size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port_text = authority.substr(colon + 1);
    }
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError("URL has no host");
  }
  out.port = out.tls ? 443 : 80;
  if (!port_text.empty()) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(port_text, &port) || port == 0 || port > 65535) {
      return absl::InvalidArgumentError("URL has an invalid port");
    }
    out.port = static_cast<uint16_t>(port);
  }
  if (size_t q = path.find_first_of("?#"); q != absl::string_view::npos) {
    path = path.substr(0, q);
  }
  while (absl::ConsumeSuffix(&path, "/")) {
  }
  out.path = std::string(path);
  return out;
}

ProxyConfig ProxyConfigFromOptions(const HttpLlmClientOptions& options) {
  ProxyConfig c;
  c.https_proxy = options.https_proxy.value_or(EnvOr("HTTPS_PROXY", "https_proxy"));
  c.http_proxy = options.http_proxy.value_or(EnvOr("HTTP_PROXY", "http_proxy"));
  c.no_proxy = options.no_proxy.value_or(EnvOr("NO_PROXY", "no_proxy"));
  return c;
}

std::optional<Url> ProxyFor(const Url& target, const ProxyConfig& config) {
  const std::string& proxy = target.tls ? config.https_proxy : config.http_proxy;
  if (proxy.empty()) {
    return std::nullopt;
  }
  std::string host = absl::AsciiStrToLower(target.host);
  for (absl::string_view entry : absl::StrSplit(config.no_proxy, ',', absl::SkipWhitespace())) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry == "*") {
      return std::nullopt;
    }
    absl::string_view name = entry;
    // Optional port: "host:443" (but not a bare IPv6 address).
    if (size_t colon = entry.rfind(':');
        colon != absl::string_view::npos && entry.find(':') == colon) {
      uint32_t port = 0;
      if (absl::SimpleAtoi(entry.substr(colon + 1), &port) && port != target.port) {
        continue;
      }
      name = entry.substr(0, colon);
    }
    absl::ConsumePrefix(&name, "[");
    absl::ConsumeSuffix(&name, "]");
    absl::ConsumePrefix(&name, "*");
    std::string lowered = absl::AsciiStrToLower(name);
    absl::string_view n = lowered;
    if (IsIpLiteral(host)) {
      if (host == n) {
        return std::nullopt;
      }
      continue;
    }
    absl::ConsumePrefix(&n, ".");
    if (n.empty()) {
      continue;
    }
    if (host == n || absl::EndsWith(host, absl::StrCat(".", n))) {
      return std::nullopt;
    }
  }
  std::string with_scheme =
      proxy.find("://") == std::string::npos ? absl::StrCat("http://", proxy) : proxy;
  absl::StatusOr<Url> parsed = ParseUrl(with_scheme);
  if (!parsed.ok()) {
    return std::nullopt;
  }
  return *parsed;
}

std::optional<absl::Duration> ParseRetryAfter(std::string_view text, absl::Time now) {
  absl::string_view value(text.data(), text.size());
  value = absl::StripAsciiWhitespace(value);
  double seconds = 0;
  if (absl::SimpleAtod(value, &seconds)) {
    if (!std::isfinite(seconds) || seconds < 0) {
      return std::nullopt;
    }
    return absl::Seconds(std::min(seconds, 86400.0));
  }
  absl::Time when;
  std::string err;
  for (const char* format :
       {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"}) {
    if (absl::ParseTime(format, value, absl::UTCTimeZone(), &when, &err)) {
      return std::max(absl::ZeroDuration(), when - now);
    }
  }
  return std::nullopt;
}

std::optional<absl::Duration> ParseResetDuration(std::string_view text) {
  absl::string_view value(text.data(), text.size());
  absl::Duration d;
  value = absl::StripAsciiWhitespace(value);
  if (!absl::ParseDuration(value, &d) || d < absl::ZeroDuration()) {
    return std::nullopt;
  }
  return d;
}

absl::Duration BackoffDelay(const RetryPolicy& policy, int attempt, double uniform01) {
  absl::Duration cap = policy.initial_backoff;
  for (int i = 1; i < attempt && cap < policy.max_backoff; ++i) {
    cap *= 2;
  }
  cap = std::min(cap, policy.max_backoff);
  return cap * std::clamp(uniform01, 0.0, 1.0);
}

LlmErrorKind KindForHttpStatus(int http_status, std::string_view provider_code,
                               std::string_view provider_message) {
  if (http_status == 401 || http_status == 403) {
    return LlmErrorKind::kAuth;
  }
  if (http_status == 404) {
    return LlmErrorKind::kModelNotFound;
  }
  if (http_status == 429) {
    return LlmErrorKind::kRateLimited;
  }
  if (http_status >= 500) {
    return LlmErrorKind::kServerError;
  }
  if (provider_code == "context_length_exceeded" ||
      absl::StrContains(absl::AsciiStrToLower(std::string(provider_message)),
                        "maximum context length")) {
    return LlmErrorKind::kContextTooLong;
  }
  if (http_status == 408) {
    return LlmErrorKind::kServerError;  // the server's own request timeout: transient
  }
  return LlmErrorKind::kBadRequest;
}

bool IsRetryable(LlmErrorKind kind) {
  return kind == LlmErrorKind::kConnect || kind == LlmErrorKind::kRateLimited ||
         kind == LlmErrorKind::kServerError;
}

absl::StatusCode StatusCodeFor(LlmErrorKind kind) {
  switch (kind) {
    case LlmErrorKind::kNone:
      return absl::StatusCode::kOk;
    case LlmErrorKind::kBadRequest:
    case LlmErrorKind::kContextTooLong:
      return absl::StatusCode::kInvalidArgument;
    case LlmErrorKind::kModelNotFound:
      return absl::StatusCode::kFailedPrecondition;
    case LlmErrorKind::kRateLimited:
      return absl::StatusCode::kResourceExhausted;
    case LlmErrorKind::kTimeout:
      return absl::StatusCode::kDeadlineExceeded;
    case LlmErrorKind::kCancelled:
      return absl::StatusCode::kCancelled;
    case LlmErrorKind::kAuth:
    case LlmErrorKind::kServerError:
    case LlmErrorKind::kConnect:
    case LlmErrorKind::kTls:
    case LlmErrorKind::kMalformed:
    case LlmErrorKind::kTruncated:
    case LlmErrorKind::kStalled:
      return absl::StatusCode::kUnavailable;
  }
  return absl::StatusCode::kUnknown;
}

std::string Redact(std::string text, std::string_view secret) {
  if (secret.empty()) {
    return text;
  }
  for (size_t pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos)) {
    text.replace(pos, secret.size(), "[redacted]");
    pos += 10;
  }
  return text;
}

std::string RedactAndTruncate(std::string_view text, std::string_view secret, size_t max_bytes) {
  std::string out = Redact(std::string(text), secret);
  constexpr size_t kMinFragment = 4;
  if (secret.size() > kMinFragment) {
    for (size_t n = std::min(out.size(), secret.size() - 1); n >= kMinFragment; --n) {
      if (absl::EndsWith(out, absl::string_view(secret.data(), n))) {
        out.replace(out.size() - n, n, "[redacted]");
        break;
      }
    }
  }
  if (out.size() <= max_bytes) {
    return out;
  }
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) {
    --cut;  // not inside a UTF-8 sequence
  }
  out.resize(cut);
  out.append("...");
  return out;
}

bool IsHtml(std::string_view content_type, std::string_view body) {
  absl::string_view type(content_type.data(), content_type.size());
  if (absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(type), "text/html") ||
      absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(type), "application/xhtml")) {
    return true;
  }
  absl::string_view start =
      absl::StripLeadingAsciiWhitespace(absl::string_view(body.data(), body.size()));
  return absl::StartsWithIgnoreCase(start, "<!doctype") ||
         absl::StartsWithIgnoreCase(start, "<html") || absl::StartsWithIgnoreCase(start, "<head") ||
         absl::StartsWithIgnoreCase(start, "<body") || absl::StartsWithIgnoreCase(start, "<?xml");
}

bool IsQuotaExhausted(const ProviderError& error) {
  return error.code == "insufficient_quota" || error.type == "insufficient_quota";
}

std::string ErrorResponseMessage(int http_status, std::string_view content_type,
                                 std::string_view body, const ProviderError* error,
                                 std::string_view secret) {
  constexpr size_t kMaxMessage = 1000;
  constexpr size_t kMaxRawBody = 200;
  if (error == nullptr && IsHtml(content_type, body)) {
    return absl::StrCat("HTTP ", http_status, " from the provider (HTML error page)");
  }
  std::string message = absl::StrCat("provider returned HTTP ", http_status);
  if (http_status == 401 || http_status == 403) {
    // The provider's text quotes the key it got, masked in ways Redact cannot
    // match ("sk-...abcd"): only its code goes on, to logs and clients alike.
    if (error != nullptr && !error->code.empty()) {
      absl::StrAppend(&message, " (", RedactAndTruncate(error->code, secret, 100), ")");
    }
    absl::StrAppend(&message, ": the provider refused the deployment's API key");
    return message;
  }
  if (error != nullptr) {
    if (!error->code.empty()) {
      absl::StrAppend(&message, " (", RedactAndTruncate(error->code, secret, 100), ")");
    }
    if (!error->message.empty()) {
      absl::StrAppend(&message, ": ", RedactAndTruncate(error->message, secret, kMaxMessage));
    }
  } else if (!body.empty()) {
    absl::StrAppend(&message, ": ", absl::CEscape(RedactAndTruncate(body, secret, kMaxRawBody)));
  }
  return message;
}

std::string StreamErrorMessage(std::string_view data, const ProviderError* error,
                               std::string_view secret) {
  constexpr size_t kMaxMessage = 1000;
  std::string message = "provider error mid-stream";
  if (error != nullptr && !error->code.empty()) {
    absl::StrAppend(&message, " (", RedactAndTruncate(error->code, secret, 100), ")");
  }
  if (error != nullptr && !error->message.empty()) {
    absl::StrAppend(&message, ": ", RedactAndTruncate(error->message, secret, kMaxMessage));
  } else if (error == nullptr && !data.empty()) {
    absl::StrAppend(&message, ": ", absl::CEscape(RedactAndTruncate(data, secret, kMaxMessage)));
  }
  return message;
}

std::string_view LlmErrorKindName(LlmErrorKind kind) {
  switch (kind) {
    case LlmErrorKind::kNone:
      return "none";
    case LlmErrorKind::kBadRequest:
      return "bad_request";
    case LlmErrorKind::kContextTooLong:
      return "context_too_long";
    case LlmErrorKind::kAuth:
      return "auth";
    case LlmErrorKind::kModelNotFound:
      return "model_not_found";
    case LlmErrorKind::kRateLimited:
      return "rate_limited";
    case LlmErrorKind::kServerError:
      return "server_error";
    case LlmErrorKind::kConnect:
      return "connect";
    case LlmErrorKind::kTls:
      return "tls";
    case LlmErrorKind::kMalformed:
      return "malformed";
    case LlmErrorKind::kTruncated:
      return "truncated";
    case LlmErrorKind::kStalled:
      return "stalled";
    case LlmErrorKind::kTimeout:
      return "timeout";
    case LlmErrorKind::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

int64_t EstimateTokens(std::string_view text) {
  if (text.empty()) {
    return 0;
  }
  return std::max<int64_t>(1, (static_cast<int64_t>(text.size()) + 3) / 4);
}

int64_t EstimatePromptTokens(const std::vector<ChatMessage>& messages) {
  int64_t total = 3;
  for (const ChatMessage& m : messages) {
    total += 4 + EstimateTokens(m.content);
  }
  return total;
}

}  // namespace aichat::agent
