#include "services/ai-agent/http/api_error.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/ai-agent/http/absl_view.h"

namespace aichat::agent {
namespace {

std::string_view View(absl::string_view s) { return {s.data(), s.size()}; }

// The field a message of ours opens with ("max_output_tokens must be ...",
// "model: unknown model", "messages[2].content is ..."), as the API names it; ""
// when the message names none we know.
std::string ParamOf(std::string_view message, const ParamNames& names) {
  const std::string_view head = message.substr(0, message.find_first_of(" :"));
  const std::string_view base = head.substr(0, head.find_first_of("[."));
  auto it = names.find(base);
  if (it == names.end() || it->second.empty()) return "";
  return absl::StrCat(it->second, Av(head.substr(base.size())));
}

// Seconds until the time usage names in a refusal ("... allowed at 2025-01-31T10:00:00Z").
std::optional<int64_t> RetryAfter(std::string_view message, absl::Time now) {
  for (std::string_view marker : {"allowed at ", "retry after ", "resets at "}) {
    size_t at = message.find(marker);
    if (at == std::string_view::npos) continue;
    std::string_view stamp = message.substr(at + marker.size(), 20);
    absl::Time t;
    std::string err;
    if (absl::ParseTime("%Y-%m-%dT%H:%M:%SZ", std::string(stamp), &t, &err)) {
      return std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(t - now, absl::Seconds(1))));
    }
  }
  // The user service's login throttle: "try again in 12s".
  if (size_t at = message.find("try again in "); at != std::string_view::npos) {
    std::string_view rest = message.substr(at + 13);
    int64_t s = 0;
    if (absl::SimpleAtoi(Av(rest.substr(0, rest.find('s'))), &s) && s > 0) return s;
  }
  return std::nullopt;
}

ApiError Make(int http_status, std::string type, std::string code, std::string message,
              bool should_retry) {
  ApiError e;
  e.http_status = http_status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  e.should_retry = should_retry;
  return e;
}

}  // namespace

ApiError ApiErrorFromStatus(const absl::Status& status, const ParamNames& names, absl::Time now) {
  const std::string_view msg = View(status.message());
  const bool provider = msg.starts_with("provider:");
  std::string text(msg);
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: {
      if (msg.starts_with("model: unknown model")) {
        ApiError e = Make(404, "invalid_request_error", "model_not_found", text, false);
        e.param = "model";
        return e;
      }
      ApiError e =
          Make(400, "invalid_request_error", provider ? "provider_rejected" : "", text, false);
      if (!provider) e.param = ParamOf(msg, names);
      if (absl::StrContains(Av(msg), "too long for the context window")) {
        e.code = "context_length_exceeded";
      }
      return e;
    }
    case absl::StatusCode::kFailedPrecondition:
      if (provider) return Make(502, "server_error", "provider_error", text, false);
      if (absl::StrContains(Av(msg), "is disabled")) {
        ApiError e = Make(404, "invalid_request_error", "model_not_found", text, false);
        e.param = "model";
        return e;
      }
      return Make(400, "invalid_request_error", "failed_precondition", text, false);
    case absl::StatusCode::kNotFound:
      return Make(404, "invalid_request_error", "not_found", text, false);
    case absl::StatusCode::kAlreadyExists:
      return Make(409, "invalid_request_error", "conflict", text, false);
    case absl::StatusCode::kAborted:
      // An idempotency key whose turn failed or was cancelled: the same key will
      // never succeed (a new key starts a new turn).
      return Make(409, "invalid_request_error", "idempotency_key_used", text, false);
    case absl::StatusCode::kUnauthenticated:
      return Make(401, "invalid_request_error", "invalid_api_key", text, false);
    case absl::StatusCode::kPermissionDenied:
      return Make(403, "permission_error", "permission_denied", text, false);
    case absl::StatusCode::kResourceExhausted: {
      ApiError e;
      if (provider) {
        e = Make(429, "requests", "rate_limit_exceeded", text, true);
        e.retry_after_seconds = 1;
      } else if (absl::StrContains(Av(msg), "budget")) {
        // Waiting seconds does not help a spent budget: no automatic retry.
        e = Make(429, "insufficient_quota", "insufficient_quota", text, false);
        e.retry_after_seconds = RetryAfter(msg, now);
      } else {
        e = Make(429, "requests", "rate_limit_exceeded", text, true);
        e.retry_after_seconds = RetryAfter(msg, now).value_or(60);
      }
      return e;
    }
    case absl::StatusCode::kUnavailable:
      if (provider) {
        const bool overloaded = absl::StrContains(Av(msg), "HTTP 503");
        return Make(overloaded ? 503 : 502, "server_error", "provider_error", text, true);
      }
      return Make(503, "server_error", "service_unavailable", text, true);
    case absl::StatusCode::kDeadlineExceeded:
      return Make(504, "server_error", "timeout", text, true);
    case absl::StatusCode::kCancelled:
      // Nobody reads it (the client left); 499 is what the log line says.
      return Make(499, "server_error", "cancelled", text, false);
    case absl::StatusCode::kOk:
      return Make(500, "server_error", "", "an error without an error", false);
    default:
      // INTERNAL, UNKNOWN, ...: never the internal detail.
      return Make(500, "server_error", "", "internal error", true);
  }
}

ApiError ApiErrorFromRequest(const RequestError& error) {
  ApiError e = Make(400, "invalid_request_error", error.code, error.message, false);
  e.param = error.param;
  return e;
}

ApiError NotFoundError(std::string message, std::string param) {
  ApiError e = Make(404, "invalid_request_error", "not_found", std::move(message), false);
  e.param = std::move(param);
  return e;
}

}  // namespace aichat::agent
