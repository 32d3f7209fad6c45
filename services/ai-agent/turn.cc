#include "services/ai-agent/turn.h"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/status.h"

namespace aichat::agent {
namespace {

// What a request hears whose deadline passed while the turn with its key ran on.
constexpr char kKeyStillRunning[] =
    "the turn with this idempotency_key is still running; retry later";

// A save that failed this way may succeed later (a restart, a failover).
bool Transient(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s) || absl::IsAborted(s);
}

absl::Duration Backoff(absl::Duration initial, int attempt) {
  return std::min(initial * (1 << std::min(attempt, 6)), absl::Seconds(5));
}

}  // namespace

Turn::Turn(TurnDeps* deps, TurnRequest request, TurnSink* sink)
    : deps_(deps), req_(std::move(request)), sink_(sink), started_at_(absl::Now()) {
  event_id_ = absl::StrCat("turn-", RandomToken(16));
  deps_->live.fetch_add(1, std::memory_order_relaxed);
}

Turn::~Turn() { deps_->live.fetch_sub(1, std::memory_order_relaxed); }

std::shared_ptr<Turn> Turn::Start(TurnDeps* deps, TurnRequest request, TurnSink* sink) {
  auto turn = std::make_shared<Turn>(deps, std::move(request), sink);
  if (deps->metrics != nullptr) deps->metrics->active_streams().Increment();
  if (auto st = ValidateTurnRequest(turn->req_); !st.ok()) {
    turn->Finish(st, nullptr);
    return turn;
  }
  // A user over the rate a moment ago is refused again before anything is read or written.
  if (deps->gate != nullptr) {
    if (auto st =
            deps->gate->Check(turn->req_.caller.user_id, turn->RequestsPerMinute(), absl::Now());
        !st.ok()) {
      if (deps->metrics != nullptr) deps->metrics->Turn("REFUSED_LOCALLY");
      turn->Finish(st, nullptr);
      return turn;
    }
  }
  turn->Read();
  return turn;
}

void Turn::Arrive(void (Turn::*next)()) {
  if (join_.fetch_sub(1, std::memory_order_acq_rel) == 1) (this->*next)();
}

bool Turn::cancelled() {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

void Turn::Cancel() {
  std::shared_ptr<LlmCall> call;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    call = call_;
  }
  if (call != nullptr) call->Cancel();
}

int32_t Turn::RequestsPerMinute() const {
  return req_.caller.requests_per_minute > 0 ? req_.caller.requests_per_minute
                                             : deps_->options.default_requests_per_minute;
}

PeerCall Turn::ClientCall() const {
  return PeerCall{
      .user_id = req_.caller.user_id, .deadline = req_.deadline, .parent = req_.server_context};
}

PeerCall Turn::SaveCall() const {
  return PeerCall{.user_id = req_.caller.user_id,
                  .deadline = absl::Now() + deps_->options.peer_timeout};
}

// What a retry with the same key must repeat: the conversation and every field
// that shapes the answer.
std::string Turn::RequestHash() const {
  std::string material;
  for (const auto& [role, content] : req_.messages) {
    absl::StrAppend(&material, role.size(), ":", role, content.size(), ":", content);
  }
  absl::StrAppend(&material, req_.conversation_id, "\n",
                  req_.stateless ? "stateless" : (req_.regenerate ? "regenerate" : "send"), "\n",
                  req_.model, "\n", req_.max_output_tokens.value_or(0), "\n",
                  req_.temperature.has_value() ? absl::StrCat(*req_.temperature) : "-", "\n",
                  req_.content);
  unsigned char digest[16];
  crypto_generichash(digest, sizeof(digest),
                     reinterpret_cast<const unsigned char*>(material.data()), material.size(),
                     nullptr, 0);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

// ---- Read: the conversation and the earlier turn with this key, at once.

void Turn::Read() {
  const bool keyed = !req_.idempotency_key.empty();
  if (keyed) request_hash_ = RequestHash();   // before the content moves on
  if (req_.stateless) read_ = TurnContext{};  // the request carries the context
  const int calls = (keyed ? 1 : 0) + (req_.stateless ? 0 : 1);
  if (calls == 0) return AfterRead();
  join_.store(calls, std::memory_order_relaxed);
  auto self = shared_from_this();
  if (!req_.stateless) {
    // The model may be the conversation's, known only after this read: ask for the
    // largest context any model takes and cut it down once the model is known.
    int32_t max_tokens = deps_->models->LargestContextBudget();
    deps_->conversation->ReadContext(ClientCall(), req_.conversation_id, max_tokens,
                                     [self](absl::StatusOr<TurnContext> r) {
                                       self->read_ = std::move(r);
                                       self->Arrive(&Turn::AfterRead);
                                     });
  }
  if (keyed) {
    deps_->workers->Submit([self] {
      self->earlier_ = self->deps_->store->FindByIdempotencyKey(self->req_.caller.user_id,
                                                                self->req_.idempotency_key);
      self->Arrive(&Turn::AfterRead);
    });
  }
}

void Turn::AfterRead() {
  if (cancelled()) return Finish(absl::CancelledError("cancelled by the client"), nullptr);
  if (earlier_.ok()) return Replay(*std::move(earlier_));
  if (!absl::IsNotFound(earlier_.status())) return Finish(earlier_.status(), nullptr);
  if (!read_.ok()) return Finish(read_.status(), nullptr);
  if (auto st = BuildContext(*std::move(read_)); !st.ok()) return Finish(st, nullptr);
  if (auto id = deps_->prompt_ids->TryTake(); id.has_value()) return Claim(*id);
  // No id on hand (a refill is under way): wait for one on a worker.
  deps_->workers->Submit([self = shared_from_this()] {
    auto id = self->deps_->prompt_ids->Take();
    if (!id.ok()) return self->Finish(id.status(), nullptr);
    self->Claim(*id);
  });
}

// The model, the answer's size and the messages sent upstream: the newest that fit.
absl::Status Turn::BuildContext(TurnContext ctx) {
  auto model = deps_->models->Resolve(req_.model, ctx.model);
  if (!model.ok()) return model.status();
  model_ = *std::move(model);
  // A row written before the rules, or by hand: the key still goes nowhere else.
  const ModelRecord& mc = model_.config;
  if ((!mc.api_key_env.empty() && !IsProviderKeyVariable(mc.api_key_env)) ||
      (!mc.base_url.empty() &&
       !CheckProviderUrl("base_url", mc.base_url, deps_->options.provider_policy).ok())) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", mc.name,
                     " names a provider this agent may not send keys to; an "
                     "admin must correct its base_url or api_key_env"));
  }
  max_output_ = model_.config.max_output_tokens;
  if (req_.max_output_tokens.has_value()) {
    if (*req_.max_output_tokens > max_output_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_output_tokens must be at most ", max_output_, " for model ", model_.config.name));
    }
    max_output_ = *req_.max_output_tokens;
  }
  const int64_t budget = int64_t{model_.config.context_window} - max_output_;
  if (req_.stateless) {
    // The caller's messages, as given, are the whole context.
    messages_.reserve(req_.messages.size());
    for (auto& [role, content] : req_.messages) {
      messages_.push_back({role, std::move(content)});
    }
    context_tokens_ = EstimatePromptTokens(messages_);
    if (context_tokens_ > budget) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages are too long for the context window of model ", model_.config.name,
                       " (about ", context_tokens_, " tokens; at most ", budget, ")"));
    }
    return Candidates();
  }
  const int64_t own = req_.regenerate ? 0 : EstimateTokens(req_.content) + 4;
  if (own > budget) {
    return absl::InvalidArgumentError(
        absl::StrCat("content is too long for the context window of model ", model_.config.name,
                     " (about ", own, " tokens; at most ", budget, ")"));
  }
  // A regeneration answers the last user message; the answer after it (if any) is
  // the one being replaced, and nothing after it is context.
  int64_t end = static_cast<int64_t>(ctx.messages.size());
  if (req_.regenerate) {
    int64_t last_user = end - 1;
    while (last_user >= 0 && ctx.messages[last_user].role != MessageRole::kUser) --last_user;
    if (last_user < 0) {
      return absl::FailedPreconditionError("the conversation has no user message to answer");
    }
    for (int64_t i = end - 1; i > last_user; --i) {
      if (ctx.messages[i].role == MessageRole::kAssistant) {
        facts_.replaces_message_id = ctx.messages[i].id;
        break;
      }
    }
    facts_.user_message_id = ctx.messages[last_user].id;
    end = last_user + 1;
  }
  // Newest first while the tokens fit (the conversation cut the window for the
  // largest model; this model's may be smaller).
  int64_t used = ctx.system_prompt_tokens + own;
  int64_t first = end;
  while (first > 0 && used + ctx.messages[first - 1].token_count <= budget) {
    used += ctx.messages[--first].token_count;
  }
  if (req_.regenerate && first == end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the last user message is too long for the context window of model ", model_.config.name));
  }
  messages_.reserve(end - first + 2);
  if (!ctx.system_prompt.empty()) messages_.push_back({"system", std::move(ctx.system_prompt)});
  for (int64_t i = first; i < end; ++i) {
    messages_.push_back({RoleName(ctx.messages[i].role), std::move(ctx.messages[i].content)});
  }
  if (!req_.regenerate) messages_.push_back({"user", req_.content});
  context_tokens_ = used;
  return Candidates();
}

// The model and its fallbacks, in order, that can take this context: a fallback whose
// window is too small for it, or whose answer limit is below the one asked, is left
// out (a refused request is not passed to a model that would refuse it too).
absl::Status Turn::Candidates() {
  candidates_.push_back({model_, max_output_});
  for (const std::string& name : model_.config.fallbacks) {
    auto fb = deps_->models->Resolve(name, "");
    if (!fb.ok()) continue;  // removed or disabled since: skipped
    int32_t max_out = fb->config.max_output_tokens;
    if (req_.max_output_tokens.has_value()) {
      if (*req_.max_output_tokens > max_out) continue;
      max_out = *req_.max_output_tokens;
    }
    if (context_tokens_ + max_out > fb->config.context_window) continue;
    const ModelRecord& c = fb->config;
    if ((!c.api_key_env.empty() && !IsProviderKeyVariable(c.api_key_env)) ||
        (!c.base_url.empty() &&
         !CheckProviderUrl("base_url", c.base_url, deps_->options.provider_policy).ok())) {
      continue;
    }
    candidates_.push_back({*std::move(fb), max_out});
  }
  return absl::OkStatus();
}

// ---- Claim: reservation, prompt row and user message, at once.

void Turn::Claim(int64_t prompt_id) {
  facts_.user_id = req_.caller.user_id;
  facts_.conversation_id = req_.conversation_id;
  facts_.prompt_id = prompt_id;
  facts_.event_id = event_id_;
  facts_.model = model_.config.name;
  facts_.provider_model = model_.config.provider_model;
  facts_.prices = model_.prices;
  facts_.started_at = started_at_;

  NewPrompt p;
  p.id = prompt_id;
  p.user_id = req_.caller.user_id;
  p.conversation_id = req_.conversation_id;
  p.idempotency_key = req_.idempotency_key;
  p.request_hash = request_hash_;
  p.event_id = event_id_;
  p.owner = deps_->replica;
  p.model = model_.config.name;
  p.provider_model = model_.config.provider_model;
  p.prices = model_.prices;
  p.context_window = model_.config.context_window;
  p.max_output_tokens = max_output_;
  p.context_tokens = context_tokens_;
  p.user_message_id = facts_.user_message_id;
  p.replaces_message_id = facts_.replaces_message_id;

  const bool appends_user_message = !req_.regenerate && !req_.stateless;
  join_.store(appends_user_message ? 3 : 2, std::memory_order_relaxed);
  auto self = shared_from_this();
  // Worst case: the whole context at the input price plus every allowed answer token.
  ReserveRequest reserve;
  reserve.event_id = event_id_;
  // Sized for the most expensive model that may answer (a fallback may cost more).
  reserve.max_cost_nanos = 0;
  for (const auto& c : candidates_) {
    reserve.max_cost_nanos = std::max(reserve.max_cost_nanos,
                                      CostNanos(context_tokens_, 0, c.max_output, c.model.prices));
  }
  // A service acting for a user carries no per-user rate in its token: the default.
  reserve.requests_per_minute = RequestsPerMinute();
  deps_->usage->Reserve(ClientCall(), reserve, [self](absl::StatusOr<ReserveDecision> d) {
    self->reserve_ = std::move(d);
    self->Arrive(&Turn::AfterClaim);
  });
  deps_->workers->Submit([self, p = std::move(p)] {
    self->insert_ = self->deps_->store->InsertPrompt(p);
    self->Arrive(&Turn::AfterClaim);
  });
  if (appends_user_message) {
    NewTurnMessage m;
    m.conversation_id = req_.conversation_id;
    m.role = MessageRole::kUser;
    m.content = std::move(req_.content);  // the provider's copy is in messages_
    m.prompt_id = prompt_id;
    deps_->conversation->Append(ClientCall(), m, [self](absl::StatusOr<int64_t> id) {
      self->user_append_ = std::move(id);
      self->Arrive(&Turn::AfterClaim);
    });
  }
}

void Turn::AfterClaim() {
  if (req_.regenerate || req_.stateless) {
    user_append_ = facts_.user_message_id;
  } else if (user_append_.ok()) {
    facts_.user_message_id = *user_append_;
  }
  reserved_ = reserve_.ok() && reserve_->allowed;
  if (!insert_.ok()) {
    // Nothing of this turn is on record. ALREADY_EXISTS on the key: a concurrent
    // request with the same key won the claim; this one waits for its answer.
    const bool lost_key_race = absl::IsAlreadyExists(insert_) && !req_.idempotency_key.empty() &&
                               absl::StrContains(insert_.message(), "idempotency");
    // A transient failure may hide a commit: the refusal is recorded then too (for a
    // row that is not there it is a no-op), so that no sweep charges it later.
    return Unclaim(insert_,
                   Transient(insert_) ? std::optional(PromptStatus::kFailed) : std::nullopt,
                   lost_key_race);
  }
  if (!req_.idempotency_key.empty()) {
    deps_->running->Add(req_.caller.user_id, req_.idempotency_key);
    key_registered_ = true;
  }
  if (cancelled()) {
    return Unclaim(absl::CancelledError("cancelled by the client"), PromptStatus::kCancelled);
  }
  if (!user_append_.ok()) return Unclaim(user_append_.status(), PromptStatus::kFailed);
  if (!reserve_.ok()) {
    // Only "usage cannot be reached" admits a turn without a reservation; usage
    // answering with an error (its database is down) refuses it.
    if (!(deps_->options.budget_fail_open && IsPeerUnreachable(reserve_.status()))) {
      return Unclaim(reserve_.status(), PromptStatus::kFailed);
    }
    // The rate limit still holds, per replica, while usage is away.
    if (deps_->gate != nullptr) {
      if (auto st =
              deps_->gate->AdmitWithoutUsage(req_.caller.user_id, RequestsPerMinute(), absl::Now());
          !st.ok()) {
        return Unclaim(st, PromptStatus::kRateLimited);
      }
    }
    if (deps_->metrics != nullptr) deps_->metrics->reservations_skipped().Increment();
    LogWarn("usage unreachable: turn admitted without a budget reservation",
            {{"prompt_id", facts_.prompt_id}});
  } else if (!reserve_->allowed) {
    if (deps_->gate != nullptr && reserve_->rate_limited) {
      deps_->gate->RateLimited(req_.caller.user_id, RequestsPerMinute(), reserve_->message,
                               reserve_->retry_at, absl::Now());
    }
    return Unclaim(
        absl::ResourceExhaustedError(reserve_->message),
        reserve_->rate_limited ? PromptStatus::kRateLimited : PromptStatus::kBudgetExceeded);
  }
  Stream();
}

// Undo a claim: release the reservation, take the user message back out of the
// conversation and record the refusal (which frees the idempotency key), at once;
// the client hears `status` once the refusal is on record (or, `then_replay`, the
// answer of the request that won the key).
void Turn::Unclaim(absl::Status status, std::optional<PromptStatus> prompt_status,
                   bool then_replay) {
  // A reservation or a user message whose call was cut off or got no clear answer
  // (a peer's deadline reaches us as UNAVAILABLE) may have committed; Release and
  // Retract are no-ops for what is not there.
  auto maybe_written = [](const absl::Status& s) {
    return s.ok() || absl::IsCancelled(s) || absl::IsDeadlineExceeded(s) || absl::IsUnavailable(s);
  };
  if (reserved_ || (!reserve_.ok() && maybe_written(reserve_.status()))) {
    deps_->usage->Release(event_id_);
    reserved_ = false;
  }
  const bool retract = !req_.regenerate && !req_.stateless && maybe_written(user_append_.status());
  const bool mark = prompt_status.has_value();
  if (deps_->metrics != nullptr && mark) deps_->metrics->Turn(PromptStatusName(*prompt_status));
  auto self = shared_from_this();
  std::string why(status.message());
  join_.store(1 + (retract ? 1 : 0) + (mark ? 1 : 0), std::memory_order_relaxed);
  auto arrive = [self, status = std::move(status), then_replay] {
    if (self->join_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (!then_replay) return self->Finish(status, nullptr);
    self->ReplayLater(0);
  };
  if (retract) {
    deps_->conversation->Retract(
        SaveCall(), req_.conversation_id, facts_.prompt_id, [arrive](absl::Status st) {
          if (!st.ok()) {
            LogWarn("user message of a refused turn not removed",
                    {{"code", std::string(absl::StatusCodeToString(st.code()))}});
          }
          arrive();
        });
  }
  if (mark) {
    deps_->workers->Submit([self, arrive, ps = *prompt_status, why = std::move(why)]() mutable {
      absl::Status st = self->deps_->store->MarkRefused(self->facts_.prompt_id, ps, why);
      arrive();
      if (Transient(st)) self->RetryRefusal(ps, std::move(why), 1, absl::Now());
    });
  }
  arrive();
}

void Turn::RetryRefusal(PromptStatus status, std::string why, int attempt, absl::Time since) {
  if (absl::Now() - since >= deps_->options.save_for) {
    LogError("refusal of a turn not recorded", {{"prompt_id", facts_.prompt_id}});
    return;
  }
  auto self = shared_from_this();
  deps_->workers->SubmitAfter(Backoff(deps_->options.save_backoff, attempt),
                              [self, status, why = std::move(why), attempt, since]() mutable {
                                absl::Status st = self->deps_->store->MarkRefused(
                                    self->facts_.prompt_id, status, why);
                                if (Transient(st))
                                  self->RetryRefusal(status, std::move(why), attempt + 1, since);
                              });
}

// ---- Stream: the provider's answer, delta by delta.

void Turn::Stream() {
  v1::Started started;
  started.set_prompt_id(facts_.prompt_id);
  started.set_user_message_id(facts_.user_message_id);
  started.set_model(facts_.model);
  sink_->OnStarted(started);
  NextAttempt();
}

// The next deployment of the current candidate, else the next candidate (a fallback).
// When not one call could be made (every circuit open), a second pass calls an open one
// rather than refuse. With nowhere left to go the turn ends with the last failure.
void Turn::NextAttempt() {
  const absl::Time now = absl::Now();
  while (candidate_ < candidates_.size()) {
    const ModelRecord& m = candidates_[candidate_].model.config;
    std::optional<Route> route;
    if (deps_->router != nullptr) {
      route = deps_->router->Pick(m, tried_, now, open_ok_);
    } else {
      auto ds = Router::DeploymentsOf(m);
      for (int i = 0; i < static_cast<int>(ds.size()) && !route; ++i) {
        if (std::find(tried_.begin(), tried_.end(), i) == tried_.end())
          route = Route{m.name, i, ds[i]};
      }
    }
    if (route.has_value()) return StartProvider(*std::move(route));
    ++candidate_;
    tried_.clear();
    if (candidate_ < candidates_.size() && deps_->metrics != nullptr && !open_ok_) {
      deps_->metrics->Fallback(candidates_[0].model.config.name,
                               candidates_[candidate_].model.config.name);
    }
  }
  if (!last_failure_.has_value() && deps_->router != nullptr && !open_ok_) {
    open_ok_ = true;
    candidate_ = 0;
    tried_.clear();
    return NextAttempt();
  }
  if (!last_failure_.has_value()) {
    LlmOutcome none;
    none.status = absl::UnavailableError(
        absl::StrCat("no deployment of model ", facts_.model, " can be called now"));
    none.kind = LlmErrorKind::kConnect;
    last_failure_ = std::move(none);
  }
  Conclude(*std::move(last_failure_));
}

void Turn::StartProvider(Route route) {
  const Candidate& c = candidates_[candidate_];
  // The turn is priced by the model that answers.
  facts_.model = c.model.config.name;
  facts_.provider_model = c.model.config.provider_model;
  facts_.prices = c.model.prices;
  CompletionRequest r;
  r.base_url = route.deployment.base_url.empty() ? deps_->options.default_base_url
                                                 : route.deployment.base_url;
  const std::string key_env = route.deployment.api_key_env.empty() ? std::string("OPENAI_API_KEY")
                                                                   : route.deployment.api_key_env;
  if (deps_->options.api_key) {
    r.api_key = deps_->options.api_key(key_env);
  } else if (const char* k = std::getenv(key_env.c_str()); k != nullptr) {
    r.api_key = k;
  }
  r.model = route.deployment.provider_model;
  // Another deployment or model may take the turn if this one fails before its first
  // delta: then it needs the messages again. Otherwise they go for good.
  const size_t deployments = Router::DeploymentsOf(c.model.config).size();
  const bool alternatives = candidate_ + 1 < candidates_.size() || tried_.size() + 1 < deployments;
  if (alternatives) {
    r.messages = messages_;
  } else {
    r.messages = std::move(messages_);
  }
  r.max_output_tokens = c.max_output;
  r.use_max_tokens_param = c.model.config.use_max_tokens_param;
  r.temperature =
      req_.temperature.has_value() ? *req_.temperature : c.model.config.default_temperature;
  r.stream = true;
  // Leave a moment before the caller's deadline to save what arrived.
  r.deadline =
      std::min(req_.deadline - absl::Milliseconds(100), started_at_ + deps_->options.total_timeout);
  r.stall_timeout = deps_->options.stall_timeout;
  r.retry = deps_->options.retry;
  // With somewhere else to go, a failing deployment is left at once, not retried.
  if (alternatives) r.retry.max_attempts = 1;
  route_ = std::move(route);
  auto self = shared_from_this();
  auto call = deps_->llm->Start(
      std::move(r), [self](std::string_view text) { self->sink_->OnDelta(text); },
      [self](LlmOutcome outcome) { self->OnProviderDone(std::move(outcome)); });
  bool cancel_now;
  {
    absl::MutexLock lock(&mu_);
    call_ = call;
    cancel_now = cancelled_;
  }
  if (cancel_now) call->Cancel();
}

namespace {

// What a call says of its deployment, and whether another may take the turn.
CallResult Judge(const LlmOutcome& o, bool deadline_passed, bool* fail_over) {
  *fail_over = false;
  if (o.status.ok()) return CallResult::kOk;
  // Only a call that consumed nothing may be passed on: not after a delta reached the
  // client, nor after the provider accepted the request (it is charged as it is).
  const bool before_first_delta = !o.delivered_any && o.http_status != 200;
  switch (o.kind) {
    case LlmErrorKind::kRateLimited:
      *fail_over = before_first_delta;
      return o.provider_error_code == "insufficient_quota" ? CallResult::kQuotaExhausted
                                                           : CallResult::kRateLimited;
    case LlmErrorKind::kServerError:
    case LlmErrorKind::kConnect:
    case LlmErrorKind::kTls:
    case LlmErrorKind::kMalformed:
    case LlmErrorKind::kTruncated:
    case LlmErrorKind::kStalled:
    case LlmErrorKind::kAuth:
    case LlmErrorKind::kModelNotFound:
      *fail_over = before_first_delta;
      return CallResult::kFailed;
    case LlmErrorKind::kTimeout:
      if (deadline_passed) return CallResult::kNeutral;
      *fail_over = before_first_delta;
      return CallResult::kFailed;
    default:  // a refused request (400), cancelled: nothing to learn, nowhere to go
      return CallResult::kNeutral;
  }
}

}  // namespace

void Turn::OnProviderDone(LlmOutcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    call_.reset();
  }
  const absl::Time now = absl::Now();
  bool fail_over = false;
  const bool deadline_passed = now >= req_.deadline - absl::Milliseconds(150);
  const CallResult result = Judge(outcome, deadline_passed, &fail_over);
  if (deps_->router != nullptr && route_.has_value()) {
    deps_->router->Report(*route_, result, outcome.retry_after, now);
  }
  if (fail_over && !cancelled() && !deadline_passed) {
    tried_.push_back(route_->index);
    last_failure_ = std::move(outcome);
    // Not on the LLM client's I/O thread: the next call starts from a worker.
    deps_->workers->Submit([self = shared_from_this()] { self->NextAttempt(); });
    return;
  }
  Conclude(std::move(outcome));
}

void Turn::Conclude(LlmOutcome outcome) {
  const absl::Time now = absl::Now();
  ended_at_ = now;
  end_ = ConcludeTurn(facts_, outcome, now);
  // Who answered (a fallback's name, real model and prices replace the first model's).
  end_.outcome.model = facts_.model;
  end_.outcome.provider_model = facts_.provider_model;
  end_.outcome.prices = facts_.prices;
  if (route_.has_value()) end_.outcome.deployment = route_->deployment.name;
  if (req_.stateless) {
    // No conversation keeps the answer; the prompt row does.
    end_.answer.reset();
    end_.outcome.answer_pending = false;
  }
  if (end_.release_reservation && reserved_) {
    deps_->usage->Release(event_id_);
    reserved_ = false;
  }
  if (deps_->metrics != nullptr) {
    AgentMetrics& m = *deps_->metrics;
    const std::string& model = facts_.model;
    // Per turn, as it ended (each attempt is in aichat_llm_deployment_requests_total).
    m.LlmRequest(model, outcome.status.ok() ? "ok" : std::string(LlmErrorKindName(outcome.kind)));
    m.LlmDuration(model, absl::ToDoubleSeconds(outcome.duration));
    if (outcome.delivered_any) {
      m.TimeToFirstToken(model, absl::ToDoubleSeconds(outcome.time_to_first_token));
    }
    const PromptOutcome& po = end_.outcome;
    m.Tokens(model, po.prompt_tokens, po.completion_tokens, po.cached_tokens);
    m.Cost(model, po.cost_nanos);
    m.Overhead(std::max(0.0, absl::ToDoubleSeconds(now - started_at_ - outcome.duration)));
    m.Turn(PromptStatusName(po.status));
  }
  Save();
}

// ---- Save: the answer and the prompt's outcome + usage event, at once.

void Turn::Save() {
  join_.store(end_.answer.has_value() ? 2 : 1, std::memory_order_relaxed);
  if (end_.answer.has_value()) SaveAnswer();
  deps_->workers->Submit([self = shared_from_this()] { self->SaveOutcome(); });
}

// Idempotent on the prompt: a retry whose first attempt did commit gets that
// message back. Retried while the failure may pass, for up to save_for; after
// that the janitor writes it from the prompt row.
void Turn::SaveAnswer() {
  auto self = shared_from_this();
  deps_->conversation->Append(SaveCall(), *end_.answer, [self](absl::StatusOr<int64_t> id) {
    if (!id.ok() && Transient(id.status()) &&
        absl::Now() - self->ended_at_ < self->deps_->options.save_for) {
      if (self->answer_attempts_++ == 0) self->StartAnswerWindow();
      self->deps_->workers->SubmitAfter(
          Backoff(self->deps_->options.save_backoff, self->answer_attempts_),
          [self] { self->SaveAnswer(); });
      return;
    }
    self->answer_id_ = std::move(id);
    self->Arrive(&Turn::AfterSave);
  });
}

void Turn::SaveOutcome() {
  std::optional<std::string> event;
  if (end_.usage.has_value()) event = EncodeUsageRecord(*end_.usage);
  auto outbox_id = deps_->store->FinishPrompt(facts_.prompt_id, end_.outcome, event,
                                              deps_->options.outbox_lease);
  // A retry after a commit whose answer was lost finds the prompt finished; its
  // outbox entry is delivered once the lease lapses.
  if (outcome_attempts_ > 0 && absl::IsFailedPrecondition(outbox_id.status())) outbox_id = 0;
  if (!outbox_id.ok() && Transient(outbox_id.status())) {
    if (outcome_attempts_++ == 0) {
      StartAnswerWindow();
      // The charge must not wait for PostgreSQL: usage takes the event now (the
      // outbox, once saved, repeats it; usage counts one event_id once).
      if (end_.usage.has_value()) deps_->publish(0, *end_.usage);
    }
    if (absl::Now() - ended_at_ < deps_->options.save_for) {
      auto self = shared_from_this();
      deps_->workers->SubmitAfter(Backoff(deps_->options.save_backoff, outcome_attempts_),
                                  [self] { self->SaveOutcome(); });
      return;
    }
  }
  if (!outbox_id.ok()) {
    // Left PENDING: the janitor finishes it (charging the same event_id, which
    // usage already has, so nothing is counted twice).
    LogError("turn outcome not saved", {{"prompt_id", facts_.prompt_id},
                                        {"error", std::string(outbox_id.status().message())}});
    if (end_.usage.has_value() && outcome_attempts_ == 0) deps_->publish(0, *end_.usage);
  } else if (*outbox_id > 0 && end_.usage.has_value()) {
    deps_->publish(*outbox_id, *end_.usage);
  }
  outcome_saved_ = outbox_id.status();
  Arrive(&Turn::AfterSave);
}

void Turn::AfterSave() {
  absl::Status status = end_.status;
  int64_t message_id = 0;
  if (end_.answer.has_value()) {
    if (answer_id_.ok()) {
      message_id = *answer_id_;
      if (outcome_saved_.ok()) deps_->answer_saved({facts_.prompt_id, message_id});
    } else if (Transient(answer_id_.status())) {
      // Still pending in the prompt row: the janitor writes it later, and a retry
      // with the same key writes it at once.
      if (status.ok()) {
        status = absl::UnavailableError(
            "the answer could not be saved yet; retry with the same idempotency_key");
      }
    } else {
      // The conversation refused the answer for good (e.g. it was deleted).
      LogError("assistant message not saved",
               {{"prompt_id", facts_.prompt_id},
                {"code", std::string(absl::StatusCodeToString(answer_id_.status().code()))}});
      std::string why = absl::StrCat("the answer could not be saved in the conversation: ",
                                     answer_id_.status().message());
      deps_->workers->Submit([self = shared_from_this(), why] {
        (void)self->deps_->store->MarkAnswerLost(self->facts_.prompt_id, why);
      });
      if (status.ok()) status = answer_id_.status();
    }
  }
  if (!outcome_saved_.ok() && status.ok()) {
    status = absl::UnavailableError(
        "the answer could not be saved yet; retry with the same idempotency_key");
  }
  if (!status.ok()) return Finish(status, nullptr);
  v1::TurnResult result;
  FillTurnResult(facts_, end_.outcome, message_id, &result);
  Finish(status, &result);
}

// A save is delayed: the client hears UNAVAILABLE answer_within after the answer
// ended while the save goes on (a retry with the same key then returns the answer).
void Turn::StartAnswerWindow() {
  {
    absl::MutexLock lock(&mu_);
    if (answer_window_) return;
    answer_window_ = true;
  }
  // Counted from the end of the answer (a first attempt may itself have waited for a
  // peer's deadline), and never past the client's own deadline: the client hears why.
  const absl::Time at =
      std::min(ended_at_ + deps_->options.answer_within, req_.deadline - absl::Milliseconds(200));
  std::weak_ptr<Turn> weak = weak_from_this();
  deps_->workers->SubmitAfter(std::max(absl::ZeroDuration(), at - absl::Now()), [weak] {
    if (auto self = weak.lock()) {
      self->Finish(absl::UnavailableError(
                       "the answer could not be saved yet; retry with the same idempotency_key"),
                   nullptr);
    }
  });
}

// ---- Replay: a request with an idempotency key already used.

void Turn::Replay(PromptRecord earlier) {
  if (earlier.conversation_id != req_.conversation_id) {
    return Finish(
        absl::InvalidArgumentError("idempotency_key was already used for another conversation"),
        nullptr);
  }
  if (!earlier.request_hash.empty() && earlier.request_hash != request_hash_) {
    return Finish(absl::InvalidArgumentError(
                      "idempotency_key was already used for a different request; use a new key"),
                  nullptr);
  }
  switch (earlier.status) {
    case PromptStatus::kCompleted:
      return ReplayAnswer(std::move(earlier));
    case PromptStatus::kPending:
    case PromptStatus::kStreaming: {
      // The first request still runs: wait for its end (an event when it runs on
      // this replica, else a poll that backs off).
      std::weak_ptr<Turn> weak = weak_from_this();
      auto waiter = deps_->running->Wait(req_.caller.user_id, req_.idempotency_key,
                                         [weak, workers = deps_->workers] {
                                           workers->Submit([weak] {
                                             if (auto self = weak.lock()) self->ReplayLater(0);
                                           });
                                         });
      if (waiter.ok()) return WatchWait(*waiter);
      if (absl::IsResourceExhausted(waiter.status())) return Finish(waiter.status(), nullptr);
      return ReplayLater(1);
    }
    case PromptStatus::kCancelled:
      return Finish(absl::AbortedError("the turn with this idempotency_key was cancelled"),
                    nullptr);
    default:
      // Not retryable with the same key: the provider was called and may have
      // charged; a new key starts a new turn.
      return Finish(absl::AbortedError(
                        absl::StrCat("the turn with this idempotency_key failed: ", earlier.error)),
                    nullptr);
  }
}

// While waiting for the first turn, looks every second whether this request's
// client left or its deadline passed; then it gives its place up and answers.
void Turn::WatchWait(uint64_t waiter) {
  const absl::Time at = std::min(absl::Now() + absl::Seconds(1), req_.deadline);
  std::weak_ptr<Turn> weak = weak_from_this();
  RunningTurns* running = deps_->running;
  deps_->workers->SubmitAfter(
      std::max(absl::ZeroDuration(), at - absl::Now()),
      [weak, running, waiter, user = req_.caller.user_id, key = req_.idempotency_key] {
        auto self = weak.lock();
        if (self != nullptr && !self->cancelled() && absl::Now() < self->req_.deadline) {
          if (running->Waiting(user, key, waiter)) self->WatchWait(waiter);
          return;
        }
        if (!running->Forget(user, key, waiter) || self == nullptr) return;
        if (self->cancelled()) {
          return self->Finish(absl::CancelledError("cancelled by the client"), nullptr);
        }
        self->Finish(absl::DeadlineExceededError(kKeyStillRunning), nullptr);
      });
}

// Looks again after a pause (attempt > 0) or at once, on a worker.
void Turn::ReplayLater(int attempt) {
  if (cancelled()) return Finish(absl::CancelledError("cancelled by the client"), nullptr);
  const absl::Duration pause =
      attempt == 0
          ? absl::ZeroDuration()
          : std::min(absl::Milliseconds(50) * (1 << std::min(attempt, 5)), absl::Seconds(1));
  if (absl::Now() + pause > req_.deadline) {
    return Finish(absl::DeadlineExceededError(kKeyStillRunning), nullptr);
  }
  auto self = shared_from_this();
  deps_->workers->SubmitAfter(pause, [self, attempt] {
    auto again = self->deps_->store->FindByIdempotencyKey(self->req_.caller.user_id,
                                                          self->req_.idempotency_key);
    if (absl::IsNotFound(again.status())) {
      // The first attempt ended before reaching the provider and freed the key.
      return self->Finish(
          absl::AbortedError("the earlier request with this idempotency_key was refused; retry it"),
          nullptr);
    }
    if (!again.ok()) return self->Finish(again.status(), nullptr);
    if (IsTerminal(again->status)) return self->Replay(*std::move(again));
    self->ReplayLater(attempt + 1);
  });
}

// The stored answer again. An answer still pending its conversation write is
// written now (idempotent on the prompt), so the retry sees it saved.
void Turn::ReplayAnswer(PromptRecord earlier) {
  auto answer = [self = shared_from_this(), earlier](int64_t message_id) {
    v1::Started started;
    started.set_prompt_id(earlier.id);
    started.set_user_message_id(earlier.user_message_id);
    started.set_model(earlier.model);
    self->sink_->OnStarted(started);
    if (!earlier.response_text.empty()) self->sink_->OnDelta(earlier.response_text);
    v1::TurnResult result;
    FillStoredResult(earlier, message_id, &result);
    self->Finish(absl::OkStatus(), &result);
  };
  if (!earlier.answer_pending || earlier.response_text.empty()) {
    return answer(earlier.response_message_id);
  }
  auto self = shared_from_this();
  deps_->conversation->Append(
      SaveCall(), StoredAnswer(earlier),
      [self, answer, id = earlier.id](absl::StatusOr<int64_t> mid) {
        if (!mid.ok()) {
          return self->Finish(
              absl::UnavailableError(
                  absl::StrCat("the answer is saved but not yet in the conversation (",
                               mid.status().message(), "); retry with the same idempotency_key")),
              nullptr);
        }
        self->deps_->answer_saved({id, *mid});
        answer(*mid);
      });
}

void Turn::Finish(const absl::Status& status, const v1::TurnResult* result) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  if (key_registered_) deps_->running->Remove(req_.caller.user_id, req_.idempotency_key);
  if (deps_->metrics != nullptr) deps_->metrics->active_streams().Decrement();
  sink_->OnFinished(ToGrpcStatus(status), result);
}

}  // namespace aichat::agent
