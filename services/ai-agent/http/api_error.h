// File: how an aichat status becomes an error of the OpenAI-compatible API — the
// HTTP status the OpenAI SDKs map to their error classes (400 BadRequestError, 401
// AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 409
// ConflictError, 429 RateLimitError, 5xx InternalServerError / APIError), OpenAI's
// error type and code, the parameter at fault, and whether a client may retry.
// Pure functions: tested alone (tests/ai-agent/openai_wire_test.cc).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/ai-agent/http/openai_wire.h"

namespace aichat::agent {

struct ApiError {
  int http_status = 500;
  std::string type;   // invalid_request_error, authentication_error, requests, ...
  std::string code;   // "" = null
  std::string param;  // "" = null
  std::string message;
  std::optional<int64_t> retry_after_seconds;  // Retry-After
  // x-should-retry, which the Stainless-made OpenAI SDKs obey: false where a retry
  // could be charged again without the client knowing, or cannot succeed.
  bool should_retry = false;

  std::string Body() const { return ErrorJson(message, type, param, code); }
};

// Our field names as the API calls them (e.g. max_output_tokens -> max_tokens).
using ParamNames = std::map<std::string, std::string, std::less<>>;

// The error for a status from a turn, a peer or the store. `now` places the retry
// times that usage's refusals name ("next request allowed at 2025-01-01T00:00:00Z").
ApiError ApiErrorFromStatus(const absl::Status& status, const ParamNames& names, absl::Time now);

// 400 for a request the decoder refused.
ApiError ApiErrorFromRequest(const RequestError& error);

ApiError NotFoundError(std::string message, std::string param = "");

}  // namespace aichat::agent
