// File: the OpenAI-compatible HTTP API of the ai-agent (DESIGN.md section 5): the
// same turns, budgets, rate limits, ledger and authentication as the gRPC service,
// in OpenAI's wire format, so that an OpenAI SDK works by changing its base URL.
//
//   GET    /v1/models, /v1/models/{model}       the enabled models
//   POST   /v1/chat/completions                 stateless, or bound to a stored
//                                               conversation (metadata.conversation_id
//                                               or the x-aichat-conversation-id header)
//   POST   /v1/conversations                    Conversations: create, get, delete,
//   GET    /v1/conversations/{id}               and the messages as items
//   DELETE /v1/conversations/{id}
//   GET    /v1/conversations/{id}/items
//   POST   /v1/responses                        Responses in a conversation (given, or
//   GET    /v1/responses/{id}                   by previous_response_id, or a new one)
//   GET    /healthz, /readyz                    probes, no authentication; /readyz
//                                               answers 503 from SIGTERM on
//
// Every handler answers through an HttpExchange and never blocks the listener's
// thread: store reads run on the worker pool, peer calls and turns are asynchronous.
#pragma once

#include <atomic>
#include <memory>

#include "absl/time/time.h"
#include "services/ai-agent/http/http_auth.h"
#include "services/ai-agent/http/http_server.h"
#include "services/ai-agent/turn.h"

namespace aichat::agent {

struct OpenAiApiOptions {
  // A stream's headers wait for the first token (so that a refusal or a provider
  // error before it is a real HTTP status) at most this long.
  absl::Duration stream_hold = absl::Seconds(10);
  // How long an OpenAI SDK's retry (x-stainless-retry-count > 0) of a request that
  // carries no Idempotency-Key is matched to its first attempt.
  absl::Duration retry_memory = absl::Minutes(30);
  // Messages read at most to list a conversation's items.
  int max_listed_messages = 10000;
};

class RetryKeys;

class OpenAiApi {
 public:
  OpenAiApi(TurnDeps* deps, HttpAuthenticator* auth, OpenAiApiOptions options = {});
  ~OpenAiApi();

  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);
  // /readyz answers 503 from now on (SIGTERM).
  void StopServing() { serving_.store(false); }

  struct Call;  // one request being answered (api_internal.h)

 private:
  TurnDeps* deps_;
  HttpAuthenticator* auth_;
  OpenAiApiOptions options_;
  std::unique_ptr<RetryKeys> retry_keys_;
  std::atomic<bool> serving_{true};
};

}  // namespace aichat::agent
