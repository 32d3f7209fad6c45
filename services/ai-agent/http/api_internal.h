// File: what the HTTP API's handlers share (openai_api.cc, chat_completions.cc,
// conversations_api.cc, responses_api.cc, http_turn.cc). Not for other code.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "services/ai-agent/http/api_error.h"
#include "services/ai-agent/http/openai_api.h"
#include "services/ai-agent/http/openai_wire.h"

namespace aichat::agent {

// One request being answered.
struct OpenAiApi::Call {
  HttpRequest request;
  std::shared_ptr<HttpExchange> exchange;
  Caller caller;
  std::string id;  // the path's {id} or {model}, decoded
  TurnDeps* deps = nullptr;
  const OpenAiApiOptions* options = nullptr;
  RetryKeys* retry_keys = nullptr;
  absl::Time received;
};
using ApiCall = OpenAiApi::Call;

// ---- answers

void ReplyJson(HttpExchange& exchange, int status, std::string body);
void ReplyError(HttpExchange& exchange, const ApiError& error);
void ReplyStatus(const ApiCall& call, const absl::Status& status, const ParamNames& names = {});
std::vector<HttpHeader> EventStreamHeaders();
int64_t UnixSeconds(absl::Time t);
// A turn's tokens and charge.
TokenFigures Figures(const v1::TurnResult& result);

// A conversation call acting for the caller, within the peer timeout.
PeerCall ForUser(const ApiCall& call);
// The client's own deadline when its SDK says it (x-stainless-timeout), else none.
absl::Time ClientDeadline(const ApiCall& call);

// ---- handlers

void ListModels(std::shared_ptr<ApiCall> call);
void GetModel(std::shared_ptr<ApiCall> call);
void CreateChatCompletion(std::shared_ptr<ApiCall> call);
void CreateConversation(std::shared_ptr<ApiCall> call);
void GetConversation(std::shared_ptr<ApiCall> call);
void DeleteConversation(std::shared_ptr<ApiCall> call);
void ListConversationItems(std::shared_ptr<ApiCall> call);
void CreateResponse(std::shared_ptr<ApiCall> call);
void GetResponse(std::shared_ptr<ApiCall> call);

// ---- idempotency

// The OpenAI SDKs send no idempotency key of their own (openai-node sets no
// idempotencyHeader), but they say which attempt a request is: x-stainless-retry-count.
// A first attempt without an Idempotency-Key gets a key made up here, remembered
// under (user, route, body); a retry of the same body finds it, so the SDK's own
// retries replay the first attempt's turn instead of running (and charging) another.
// Per replica: a retry that reaches another replica is a new turn.
class RetryKeys {
 public:
  explicit RetryKeys(absl::Duration memory) : memory_(memory) {}
  std::optional<std::string> Find(const std::string& fingerprint, absl::Time now);
  void Remember(const std::string& fingerprint, const std::string& key, absl::Time now);

 private:
  struct Entry {
    std::string key;
    absl::Time until;
  };
  absl::Duration memory_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> keys_ ABSL_GUARDED_BY(mu_);
  absl::Time next_prune_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// The idempotency key a turn runs under.
struct TurnKey {
  std::string key;          // "" for none
  bool automatic = false;   // made up for an SDK request (see RetryKeys)
  std::string fingerprint;  // (user, route, body), when automatic
};
TurnKey KeyFor(const ApiCall& call);

// ---- one turn answered over HTTP

// Runs a Turn for a request and turns its events into the answer: a whole JSON
// body, or Server-Sent Events. A stream's headers wait for the first token (or
// stream_hold), so that a refusal or a provider failure before it is a real HTTP
// status; after them an error is an event. The client going away cancels the turn
// (its partial answer is saved and charged, as over gRPC).
//
// Threads: the TurnSink calls come in order from the turn's threads; the hold timer
// runs on a worker. mu_ guards the answer's state; turn_mu_ the turn pointer, which
// the client-gone callback (a listener thread) reads.
class HttpTurn : public TurnSink, public std::enable_shared_from_this<HttpTurn> {
 public:
  HttpTurn(std::shared_ptr<ApiCall> call, TurnKey key, bool stream, ParamNames names);
  ~HttpTurn() override = default;
  // Runs `request` (its idempotency key is set here); holds itself until OnFinished.
  void Start(TurnRequest request);

  void OnStarted(const v1::Started& started) final;
  void OnDelta(std::string_view text) final;
  void OnFinished(const grpc::Status& status, const v1::TurnResult* result) final;

 protected:
  // The events that open a stream (Started is known by then).
  virtual std::string StreamBegin(const v1::Started& started) = 0;
  virtual void StreamDelta(std::string_view text, std::string* out) = 0;
  virtual std::string StreamEnd(const v1::TurnResult& result) = 0;
  virtual std::string StreamError(const ApiError& error) = 0;
  virtual std::string WholeBody(const v1::TurnResult& result) = 0;
  // The turn was refused before it began (nothing was written for it).
  virtual void Refused() {}

  const std::shared_ptr<ApiCall> call_;

 private:
  void Run(TurnRequest request);
  void ClientGone();
  void HoldExpired();
  void SendHead() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  TurnKey key_;
  const bool stream_;
  const ParamNames names_;
  std::shared_ptr<HttpTurn> self_;
  std::optional<TurnRequest> retry_copy_;  // an automatic key's request, to run again
  bool restarted_ = false;

  absl::Mutex turn_mu_;
  std::shared_ptr<Turn> turn_ ABSL_GUARDED_BY(turn_mu_);
  bool gone_ ABSL_GUARDED_BY(turn_mu_) = false;

  absl::Mutex mu_;
  std::optional<v1::Started> started_ ABSL_GUARDED_BY(mu_);
  bool head_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool any_delta_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace aichat::agent
