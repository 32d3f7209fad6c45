// A fake OpenAI-compatible chat completions provider for tests and offline runs.
//
// Speaks the real wire format over HTTPS (a throwaway CA made at start) or
// plain HTTP: POST /v1/chat/completions (also /chat/completions), streamed
// `chat.completion.chunk` events or a whole `chat.completion`, OpenAI error
// bodies. Streams are written in awkward pieces (inside JSON strings, inside
// UTF-8 characters, between CR and LF) to exercise incremental parsers.
//
// Deterministic answers and token counts, so callers can compute exact costs:
//   answer      n tokens; token i is word[i % W] of the last user message (with
//               [[fake:...]] directives removed; "ok" if it has no words),
//               followed by " " except for the last token. One content chunk
//               per token.
//   n           `tokens=` directive, else FakeLlmOptions::answer_tokens (8);
//               capped by max_completion_tokens / max_tokens, in which case
//               finish_reason is "length" (else "stop").
//   prompt_tokens     = 3 + sum over messages of (4 + whitespace-separated
//                       words in content, directives included as written)
//   completion_tokens = n (the tokens actually sent if the stream is cut)
//   cached_tokens     = min(`cached=` directive, prompt_tokens), default 0
//   model       the requested model, unless `model=` says otherwise.
//
// Per-request behaviour, from a directive in the LAST user message
// (`[[fake:status=429 retry_after=1]]`) or queued with Script():
//   status=N [code=C] [type=T] [message=M] [retry_after=S]  error response (429
//                     also sends x-ratelimit-* headers)
//   status=N html     the error body is an HTML page (text/html), as a CDN sends
//   status=N echo_auth=K  the error body is text: K filler bytes, then the
//                     request's Authorization header (a debugging gateway)
//   error_after=N [error_event] [code=C] [message=M]  after N content chunks,
//                     `data: {"error":{...}}` (with `event: error` if asked)
//                     ends the stream, without [DONE]
//   hangup            close the connection without answering
//   drop_after=N      close the connection after N content chunks
//   stall_after=N     stop writing after N content chunks (until disconnect)
//   hold_last         hold the last content chunk until Release()
//   slow_start_ms=N   wait before the response headers
//   delay_ms=N        wait between chunks
//   no_usage          omit usage even if stream_options.include_usage
//   malformed         send a chunk that is not valid JSON after the first token
//   tokens=N, cached=N, model=NAME
//   crlf              CRLF line endings;  split=none|awkward|bytes
// Control API (no API key needed): POST /_fake/script {"directives":[...]},
// GET /_fake/requests, GET /_fake/stats, POST /_fake/reset, POST /_fake/release.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace aichat::fakes {

struct FakeLlmOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  bool tls = true;
  std::vector<std::string> cert_dns_names = {"localhost"};
  std::vector<std::string> cert_ip_addresses = {"127.0.0.1"};
  std::string api_key;  // non-empty: requests without "Bearer <api_key>" get 401
  // Defaults for every request; directives override them.
  int answer_tokens = 8;
  std::string split = "awkward";  // none | awkward | bytes
  bool crlf = false;
  int first_token_delay_ms = 0;
  int delay_ms = 0;              // between chunks
  double tokens_per_second = 0;  // > 0: sets the delay between chunks
};

struct FakeLlmStats {
  int64_t connections_accepted = 0;
  int64_t disconnects_mid_stream = 0;  // the client went away while we were answering
  int64_t completion_requests = 0;
  int64_t active_responses = 0;
  int64_t held = 0;  // responses waiting for Release()
};

struct RecordedRequest {
  std::string method;
  std::string path;
  std::vector<std::pair<std::string, std::string>> headers;  // without Authorization
  std::string authorization;                                 // "matched", "mismatched" or "absent"
  std::string body;
  int64_t connection = 0;  // which TCP connection carried it (1-based)
};

class FakeLlmServer {
 public:
  static absl::StatusOr<std::unique_ptr<FakeLlmServer>> Start(FakeLlmOptions options);
  ~FakeLlmServer();

  int port() const;
  std::string base_url() const;       // "https://127.0.0.1:PORT/v1"
  const std::string& ca_pem() const;  // empty for plain HTTP

  void Script(std::vector<std::string> directives);  // one per coming request
  std::vector<RecordedRequest> Requests() const;
  FakeLlmStats Stats() const;
  void Reset();    // clears the log, script and counters; releases held responses
  void Release();  // lets held responses finish
  void Stop();     // closes everything; idempotent

  class Impl;

 private:
  explicit FakeLlmServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aichat::fakes
