// The HTTP API's routing, authentication and shared answers (see openai_api.h), and
// the models list.
#include "services/ai-agent/http/openai_api.h"

#include <sodium.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/jwt.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/api_internal.h"

namespace aichat::agent {
namespace {

using Handler = void (*)(std::shared_ptr<ApiCall>);

struct PathRoute {
  const char* method;
  const char* pattern;  // "{}" matches one non-empty path segment
  const char* label;    // the metrics label
  Handler handler;
};

constexpr PathRoute kRoutes[] = {
    {"GET", "/v1/models", "/v1/models", &ListModels},
    {"GET", "/v1/models/{}", "/v1/models/{model}", &GetModel},
    {"POST", "/v1/chat/completions", "/v1/chat/completions", &CreateChatCompletion},
    {"POST", "/v1/conversations", "/v1/conversations", &CreateConversation},
    {"GET", "/v1/conversations/{}", "/v1/conversations/{id}", &GetConversation},
    {"DELETE", "/v1/conversations/{}", "/v1/conversations/{id}", &DeleteConversation},
    {"GET", "/v1/conversations/{}/items", "/v1/conversations/{id}/items", &ListConversationItems},
    {"POST", "/v1/responses", "/v1/responses", &CreateResponse},
    {"GET", "/v1/responses/{}", "/v1/responses/{id}", &GetResponse},
};

// The path's segment where the pattern has "{}" (percent-decoded), when it matches.
// Model names may hold '/', so /v1/models/{} takes the rest of the path.
std::optional<std::string> Match(std::string_view pattern, std::string_view path) {
  std::vector<absl::string_view> p = absl::StrSplit(Av(pattern), '/');
  std::vector<absl::string_view> s = absl::StrSplit(Av(path), '/');
  const bool rest = pattern == "/v1/models/{}";
  if (s.size() < p.size() || (!rest && s.size() != p.size())) return std::nullopt;
  std::string id;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == "{}") {
      std::string_view seg = Sv(s[i]);
      if (rest) seg = path.substr(seg.data() - path.data());
      if (seg.empty()) return std::nullopt;
      auto decoded = PercentDecode(seg);
      if (!decoded.has_value()) return std::nullopt;
      id = *std::move(decoded);
      if (rest) return id;
    } else if (p[i] != s[i]) {
      return std::nullopt;
    }
  }
  return id;
}

}  // namespace

// ---- shared answers

int64_t UnixSeconds(absl::Time t) { return absl::ToUnixSeconds(t); }

void ReplyJson(HttpExchange& exchange, int status, std::string body) {
  exchange.Respond(status, {{"content-type", "application/json"}}, std::move(body));
}

void ReplyError(HttpExchange& exchange, const ApiError& error) {
  std::vector<HttpHeader> headers = {{"content-type", "application/json"},
                                     {"x-should-retry", error.should_retry ? "true" : "false"}};
  if (error.retry_after_seconds.has_value()) {
    headers.push_back({"retry-after", absl::StrCat(*error.retry_after_seconds)});
  }
  exchange.SetError(error.code.empty() ? error.type : error.code);
  exchange.Respond(error.http_status, std::move(headers), error.Body());
}

void ReplyStatus(const ApiCall& call, const absl::Status& status, const ParamNames& names) {
  ReplyError(*call.exchange, ApiErrorFromStatus(status, names, absl::Now()));
}

std::vector<HttpHeader> EventStreamHeaders() {
  return {{"content-type", "text/event-stream; charset=utf-8"},
          {"cache-control", "no-cache"},
          {"x-accel-buffering", "no"}};  // proxies (nginx) pass events on at once
}

PeerCall ForUser(const ApiCall& call) {
  return PeerCall{.user_id = call.caller.user_id,
                  .deadline = absl::Now() + call.deps->options.peer_timeout};
}

absl::Time ClientDeadline(const ApiCall& call) {
  int64_t seconds = 0;
  if (absl::SimpleAtoi(Av(call.request.Header("x-stainless-timeout")), &seconds) && seconds > 0) {
    return call.received + absl::Seconds(seconds);
  }
  return absl::InfiniteFuture();
}

// ---- idempotency

std::optional<std::string> RetryKeys::Find(const std::string& fingerprint, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(fingerprint);
  if (it == keys_.end() || it->second.until <= now) return std::nullopt;
  return it->second.key;
}

void RetryKeys::Remember(const std::string& fingerprint, const std::string& key, absl::Time now) {
  constexpr size_t kMaxKeys = 200000;
  absl::MutexLock lock(&mu_);
  if (now >= next_prune_ || keys_.size() >= kMaxKeys) {
    next_prune_ = now + absl::Minutes(1);
    absl::erase_if(keys_, [now](const auto& kv) { return kv.second.until <= now; });
    if (keys_.size() >= kMaxKeys) keys_.clear();  // a flood: forget rather than grow
  }
  keys_[fingerprint] = Entry{key, now + memory_};
}

TurnKey KeyFor(const ApiCall& call) {
  TurnKey k;
  if (std::string_view given = call.request.Header("idempotency-key"); !given.empty()) {
    k.key = std::string(given);  // checked by the turn (idempotency_key)
    return k;
  }
  std::string_view attempt = call.request.Header("x-stainless-retry-count");
  if (attempt.empty()) return k;
  // (user, route, conversation, body): what a retry repeats byte for byte.
  unsigned char digest[32];
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, sizeof(digest));
  const std::string head =
      absl::StrCat(call.caller.user_id, "\n", call.request.method, " ", call.request.path, "\n",
                   Av(call.request.Header("x-aichat-conversation-id")), "\n");
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(head.data()), head.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(call.request.body.data()),
                            call.request.body.size());
  crypto_generichash_final(&st, digest, sizeof(digest));
  k.fingerprint = std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
  k.automatic = true;
  const absl::Time now = absl::Now();
  if (attempt != "0") {
    if (auto earlier = call.retry_keys->Find(k.fingerprint, now)) {
      k.key = *std::move(earlier);
      return k;
    }
  }
  k.key = absl::StrCat("sdk-", RandomToken(12));
  call.retry_keys->Remember(k.fingerprint, k.key, now);
  return k;
}

// ---- models

void ListModels(std::shared_ptr<ApiCall> call) {
  auto models = call->deps->models->List();
  if (!models.ok()) return ReplyStatus(*call, models.status());
  std::vector<ModelFacts> out;
  for (const auto& m : *models) {
    if (m.enabled) out.push_back({m.name, UnixSeconds(m.updated_at)});
  }
  ReplyJson(*call->exchange, 200, ModelListJson(out));
}

void GetModel(std::shared_ptr<ApiCall> call) {
  auto models = call->deps->models->List();
  if (!models.ok()) return ReplyStatus(*call, models.status());
  for (const auto& m : *models) {
    if (m.enabled && m.name == call->id) {
      return ReplyJson(*call->exchange, 200, ModelJson({m.name, UnixSeconds(m.updated_at)}));
    }
  }
  ApiError e = NotFoundError(
      absl::StrCat("The model '", call->id, "' does not exist or is not enabled"), "model");
  e.code = "model_not_found";
  ReplyError(*call->exchange, e);
}

// ---- routing

OpenAiApi::OpenAiApi(TurnDeps* deps, HttpAuthenticator* auth, OpenAiApiOptions options)
    : deps_(deps),
      auth_(auth),
      options_(options),
      retry_keys_(std::make_unique<RetryKeys>(options.retry_memory)) {}

OpenAiApi::~OpenAiApi() = default;

void OpenAiApi::Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
  // Probes, without authentication: /healthz while the listener answers (liveness),
  // /readyz until SIGTERM (readiness: the pod leaves the endpoints while it drains).
  if ((request.path == "/healthz" || request.path == "/readyz") &&
      (request.method == "GET" || request.method == "HEAD")) {
    exchange->SetRoute(request.path);
    const bool up = request.path == "/healthz" || serving_.load();
    return ReplyJson(*exchange, up ? 200 : 503,
                     up ? R"({"status":"SERVING"})" : R"({"status":"NOT_SERVING"})");
  }
  const PathRoute* found = nullptr;
  std::string id;
  std::vector<std::string> allowed;
  for (const PathRoute& r : kRoutes) {
    auto m = Match(r.pattern, request.path);
    if (!m.has_value()) continue;
    if (request.method != r.method) {
      allowed.emplace_back(r.method);
      continue;
    }
    found = &r;
    id = *std::move(m);
    break;
  }
  if (found == nullptr) {
    exchange->SetRoute(allowed.empty() ? "unmatched" : "method_not_allowed");
    ApiError e;
    e.type = "invalid_request_error";
    if (allowed.empty()) {
      e.http_status = 404;
      e.code = "unknown_url";
      e.message = absl::StrCat("Unknown request URL: ", request.method, " ", request.path,
                               ". aichat serves /v1/models, /v1/chat/completions, "
                               "/v1/conversations and /v1/responses.");
    } else {
      e.http_status = 405;
      e.code = "method_not_allowed";
      e.message = absl::StrCat("Method ", request.method, " is not allowed on ", request.path,
                               "; use ", absl::StrJoin(allowed, " or "));
    }
    return ReplyError(*exchange, e);
  }
  exchange->SetRoute(found->label);
  auto call = std::make_shared<ApiCall>();
  call->request = std::move(request);
  call->exchange = std::move(exchange);
  call->id = std::move(id);
  call->deps = deps_;
  call->options = &options_;
  call->retry_keys = retry_keys_.get();
  call->received = absl::Now();
  const std::string authorization(call->request.Header("authorization"));
  const std::string acting(call->request.Header(kActingUserHeader));
  auth_->Authenticate(authorization, acting,
                      [call, handler = found->handler](absl::StatusOr<Caller> caller) {
                        if (!caller.ok()) return ReplyStatus(*call, caller.status());
                        call->caller = *caller;
                        call->exchange->SetUser(caller->user_id);
                        handler(call);
                      });
}

}  // namespace aichat::agent
