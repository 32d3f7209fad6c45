#include "services/ai-agent/turn.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/jwt.h"
#include "common/log.h"
#include "common/money.h"
#include "common/proto_time.h"
#include "common/status.h"

namespace aichat::agent {
namespace {

namespace cv1 = conversation::v1;
namespace uv1 = usage::v1;

// Peer failures are reported with the peer named, so operators know where to look.
absl::Status PeerError(const char* peer, const grpc::Status& st) {
  absl::Status s = FromGrpcStatus(st);
  if (s.code() == absl::StatusCode::kUnavailable ||
      s.code() == absl::StatusCode::kDeadlineExceeded || s.code() == absl::StatusCode::kInternal ||
      s.code() == absl::StatusCode::kUnknown) {
    return absl::UnavailableError(absl::StrCat(peer, " service unavailable"));
  }
  return s;
}

const char* RoleName(cv1::MessageRole r) {
  switch (r) {
    case cv1::MESSAGE_ROLE_ASSISTANT:
      return "assistant";
    case cv1::MESSAGE_ROLE_SYSTEM:
      return "system";
    default:
      return "user";
  }
}

void FillResult(const PromptRecord& p, v1::TurnResult* r) {
  r->set_prompt_id(p.id);
  r->set_user_message_id(p.user_message_id);
  r->set_response_message_id(p.response_message_id);
  r->set_text(p.response_text);
  FillUsage(p, r->mutable_usage());
  r->set_cost_nanos(p.cost_nanos);
  r->set_model(p.model);
  r->set_provider_model(p.provider_model);
  r->set_finish_reason(p.finish_reason);
  r->set_latency_ms(p.latency_ms);
}

}  // namespace

Turn::Turn(TurnDeps* deps, TurnRequest request, TurnSink* sink)
    : deps_(deps), req_(std::move(request)), sink_(sink), started_at_(absl::Now()) {
  event_id_ = absl::StrCat("turn-", RandomToken(16));
}

std::shared_ptr<Turn> Turn::Start(TurnDeps* deps, TurnRequest request, TurnSink* sink) {
  auto turn = std::make_shared<Turn>(deps, std::move(request), sink);
  if (deps->metrics != nullptr) deps->metrics->active_streams().Increment();
  if (auto st = ValidateTurnRequest(turn->req_); !st.ok()) {
    turn->Finish(st, nullptr);
    return turn;
  }
  turn->Submit(&Turn::Prepare);
  return turn;
}

void Turn::Submit(void (Turn::*step)()) {
  deps_->workers->Submit([self = shared_from_this(), step] { ((*self).*step)(); });
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

std::unique_ptr<grpc::ClientContext> Turn::PeerContext() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  absl::Time deadline = std::min(req_.deadline, absl::Now() + deps_->options.peer_timeout);
  ctx->set_deadline(absl::ToChronoTime(deadline));
  ctx->AddMetadata("authorization", absl::StrCat("Bearer ", deps_->service_token));
  ctx->AddMetadata(kActingUserHeader, absl::StrCat(req_.caller.user_id));
  // A peer that just restarted is reconnected to within the deadline instead of
  // failing the call at once while the channel is in reconnect backoff.
  ctx->set_wait_for_ready(true);
  return ctx;
}

void Turn::Prepare() {
  if (cancelled()) return FailBeforeProvider(absl::CancelledError("cancelled by the client"), {});
  if (!req_.idempotency_key.empty()) {
    auto existing = deps_->store->FindByIdempotencyKey(req_.caller.user_id, req_.idempotency_key);
    if (existing.ok()) return ReturnExisting(*std::move(existing));
    if (!absl::IsNotFound(existing.status())) return Finish(existing.status(), nullptr);
  }
  cv1::GetConversationRequest creq;
  creq.set_id(req_.conversation_id);
  cv1::Conversation conv;
  {
    auto ctx = PeerContext();
    grpc::Status st = deps_->conversation->GetConversation(ctx.get(), creq, &conv);
    if (!st.ok()) return Finish(PeerError("conversation", st), nullptr);
  }
  system_prompt_ = conv.system_prompt();
  conversation_model_ = conv.model();
  auto model = deps_->models->Resolve(req_.model, conv.model());
  if (!model.ok()) return Finish(model.status(), nullptr);
  model_ = *std::move(model);
  max_output_ = model_.config.max_output_tokens;
  if (req_.max_output_tokens.has_value()) {
    if (*req_.max_output_tokens > max_output_) {
      return Finish(
          absl::InvalidArgumentError(absl::StrCat("max_output_tokens must be at most ", max_output_,
                                                  " for model ", model_.config.name)),
          nullptr);
    }
    max_output_ = *req_.max_output_tokens;
  }
  int64_t budget = int64_t{model_.config.context_window} - max_output_;
  int64_t own = 0;
  if (!req_.regenerate) {
    own = EstimateTokens(req_.content) + 4;
    if (own > budget) {
      return Finish(absl::InvalidArgumentError(absl::StrCat(
                        "content is too long for the context window of model ", model_.config.name,
                        " (about ", own, " tokens; at most ", budget, ")")),
                    nullptr);
    }
  }
  // The context comes first (a read): the reservation is sized from it, and then the
  // reservation and the prompt row are written at the same time.
  cv1::GetContextRequest greq;
  greq.set_conversation_id(req_.conversation_id);
  greq.set_max_tokens(static_cast<int32_t>(std::clamp<int64_t>(budget - own, 1, INT32_MAX)));
  cv1::GetContextResponse gresp;
  {
    auto ctx = PeerContext();
    grpc::Status st = deps_->conversation->GetContext(ctx.get(), greq, &gresp);
    if (!st.ok()) return Finish(PeerError("conversation", st), nullptr);
  }
  if (!gresp.system_prompt().empty()) messages_.push_back({"system", gresp.system_prompt()});
  context_tokens_ = gresp.system_prompt_tokens();
  if (!req_.regenerate) {
    for (const auto& m : gresp.messages()) {
      messages_.push_back({RoleName(m.role()), m.content()});
      context_tokens_ += m.token_count();
    }
    messages_.push_back({"user", req_.content});
    context_tokens_ += own;
    return Claim();
  }
  // Regeneration: the context ends at the last user message; the answer after it
  // (if any) is the one being replaced.
  int last_user = -1;
  for (int i = gresp.messages_size() - 1; i >= 0; --i) {
    if (gresp.messages(i).role() == cv1::MESSAGE_ROLE_USER) {
      last_user = i;
      break;
    }
  }
  if (last_user < 0) {
    return Finish(absl::FailedPreconditionError("the conversation has no user message to answer"),
                  nullptr);
  }
  for (int i = gresp.messages_size() - 1; i > last_user; --i) {
    if (gresp.messages(i).role() == cv1::MESSAGE_ROLE_ASSISTANT) {
      replaces_message_id_ = gresp.messages(i).id();
      break;
    }
  }
  user_message_id_ = gresp.messages(last_user).id();
  for (int i = 0; i <= last_user; ++i) {
    messages_.push_back({RoleName(gresp.messages(i).role()), gresp.messages(i).content()});
    context_tokens_ += gresp.messages(i).token_count();
  }
  Claim();
}

void Turn::Claim() {
  NewPrompt p;
  p.user_id = req_.caller.user_id;
  p.conversation_id = req_.conversation_id;
  p.idempotency_key = req_.idempotency_key;
  p.event_id = event_id_;
  p.model = model_.config.name;
  p.provider_model = model_.config.provider_model;
  p.prices = model_.prices;
  p.context_window = model_.config.context_window;
  p.max_output_tokens = max_output_;
  p.user_message_id = user_message_id_;
  p.replaces_message_id = replaces_message_id_;
  {
    absl::MutexLock lock(&join_mu_);
    pending_ = 2;
  }
  auto arrive = [self = shared_from_this()] {
    bool last;
    {
      absl::MutexLock lock(&self->join_mu_);
      last = --self->pending_ == 0;
    }
    if (last) self->Submit(&Turn::AfterClaim);
  };
  // The reservation (a commit in usage) runs while the prompt row is committed here:
  // one durable write on the way to the first token instead of two. Worst case: the
  // whole context at the input price plus every allowed answer token.
  reserve_req_.set_user_id(req_.caller.user_id);
  reserve_req_.set_event_id(event_id_);
  reserve_req_.set_max_cost_nanos(CostNanos(context_tokens_, 0, max_output_, model_.prices));
  // A service acting for a user carries no per-user rate in its token: apply the default.
  reserve_req_.set_requests_per_minute(req_.caller.requests_per_minute > 0
                                           ? req_.caller.requests_per_minute
                                           : deps_->options.default_requests_per_minute);
  reserve_ctx_ = PeerContext();
  reserve_ctx_->set_wait_for_ready(false);  // usage down must read UNAVAILABLE, not a timeout
  deps_->usage->async()->ReserveBudget(reserve_ctx_.get(), &reserve_req_, &reserve_resp_,
                                       [self = shared_from_this(), arrive](grpc::Status st) {
                                         {
                                           absl::MutexLock lock(&self->join_mu_);
                                           self->reserve_status_ = std::move(st);
                                         }
                                         arrive();
                                       });
  auto claim = deps_->store->InsertPrompt(p);
  {
    absl::MutexLock lock(&join_mu_);
    claim_ = std::move(claim);
  }
  arrive();
}

void Turn::AfterClaim() {
  absl::StatusOr<PromptRecord> claim = absl::UnknownError("unset");
  grpc::Status st;
  {
    absl::MutexLock lock(&join_mu_);
    claim = claim_;
    st = reserve_status_;
  }
  const uv1::ReserveBudgetResponse rresp = std::move(reserve_resp_);
  // An admission this turn will not use goes back at once (its budget share; the
  // rate window still counts it, as it counts any admitted request).
  reserved_ = st.ok() && rresp.allowed();
  if (absl::IsAlreadyExists(claim.status())) {
    // A concurrent request with the same idempotency key won the race.
    if (reserved_) Release();
    auto existing = deps_->store->FindByIdempotencyKey(req_.caller.user_id, req_.idempotency_key);
    if (!existing.ok()) return Finish(existing.status(), nullptr);
    return ReturnExisting(*std::move(existing));
  }
  if (!claim.ok()) {
    if (reserved_) Release();
    return Finish(claim.status(), nullptr);
  }
  prompt_id_ = claim->id;
  if (st.ok()) {
    if (!rresp.allowed()) {
      bool rate = rresp.reason() == uv1::REFUSAL_REASON_RATE_LIMITED;
      return FailBeforeProvider(absl::ResourceExhaustedError(rresp.message()),
                                rate ? PromptStatus::kRateLimited : PromptStatus::kBudgetExceeded);
    }
  } else if (deps_->options.budget_fail_open && st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    // Only "cannot reach usage" admits a turn: a slow usage (DEADLINE_EXCEEDED)
    // is overload, and admitting under overload would let bursts skip the limits.
    if (deps_->metrics != nullptr) deps_->metrics->reservations_skipped().Increment();
    LogWarn("usage unavailable; turn admitted without a reservation",
            {{"prompt_id", prompt_id_}, {"user_id", req_.caller.user_id}});
  } else {
    return FailBeforeProvider(PeerError("usage", st), PromptStatus::kFailed);
  }
  if (cancelled()) {
    return FailBeforeProvider(absl::CancelledError("cancelled by the client"),
                              PromptStatus::kCancelled);
  }
  AfterReservation();
}

void Turn::AfterReservation() {
  if (!req_.regenerate) {
    cv1::AppendMessageRequest areq;
    areq.set_conversation_id(req_.conversation_id);
    areq.set_role(cv1::MESSAGE_ROLE_USER);
    areq.set_content(req_.content);
    areq.set_prompt_id(prompt_id_);
    cv1::Message msg;
    auto ctx = PeerContext();
    grpc::Status st = deps_->conversation->AppendMessage(ctx.get(), areq, &msg);
    if (!st.ok()) return FailBeforeProvider(PeerError("conversation", st), PromptStatus::kFailed);
    user_message_id_ = msg.id();
  }
  if (cancelled()) {
    return FailBeforeProvider(absl::CancelledError("cancelled by the client"),
                              PromptStatus::kCancelled);
  }
  // Not on the critical path: the STREAMING mark is written while the provider works.
  deps_->workers->Submit([store = deps_->store, id = prompt_id_, mid = user_message_id_] {
    (void)store->MarkStreaming(id, mid);
  });
  v1::Started started;
  started.set_prompt_id(prompt_id_);
  started.set_user_message_id(user_message_id_);
  started.set_model(model_.config.name);
  sink_->OnStarted(started);
  StartProvider();
}

void Turn::StartProvider() {
  CompletionRequest r;
  r.base_url =
      model_.config.base_url.empty() ? deps_->options.default_base_url : model_.config.base_url;
  const std::string& key_env =
      model_.config.api_key_env.empty() ? std::string("OPENAI_API_KEY") : model_.config.api_key_env;
  if (deps_->options.api_key) {
    r.api_key = deps_->options.api_key(key_env);
  } else if (const char* k = std::getenv(key_env.c_str()); k != nullptr) {
    r.api_key = k;
  }
  r.model = model_.config.provider_model;
  r.messages = messages_;
  r.max_output_tokens = max_output_;
  r.use_max_tokens_param = model_.config.use_max_tokens_param;
  r.temperature =
      req_.temperature.has_value() ? *req_.temperature : model_.config.default_temperature;
  r.stream = true;
  // Leave a moment before the caller's deadline to save what arrived.
  r.deadline =
      std::min(req_.deadline - absl::Milliseconds(100), started_at_ + deps_->options.total_timeout);
  r.stall_timeout = deps_->options.stall_timeout;
  r.retry = deps_->options.retry;
  provider_started_ = absl::Now();
  auto self = shared_from_this();
  auto call = deps_->llm->Start(
      std::move(r), [self](std::string_view text) { self->sink_->OnDelta(text); },
      [self](LlmOutcome outcome) {
        self->deps_->workers->Submit([self, outcome = std::move(outcome)]() mutable {
          self->OnProviderDone(std::move(outcome));
        });
      });
  bool cancel_now;
  {
    absl::MutexLock lock(&mu_);
    call_ = call;
    cancel_now = cancelled_;
  }
  if (cancel_now) call->Cancel();
}

void Turn::OnProviderDone(LlmOutcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    call_.reset();
  }
  const std::string& model_name = model_.config.name;
  const bool ok = outcome.status.ok();
  const bool client_cancelled = outcome.kind == LlmErrorKind::kCancelled;
  if (deps_->metrics != nullptr) {
    deps_->metrics->LlmRequest(model_name, ok ? "ok" : std::string(LlmErrorKindName(outcome.kind)));
    deps_->metrics->LlmDuration(model_name, absl::ToDoubleSeconds(outcome.duration));
    if (outcome.delivered_any) {
      deps_->metrics->TimeToFirstToken(model_name,
                                       absl::ToDoubleSeconds(outcome.time_to_first_token));
    }
  }
  // Tokens were consumed once the provider accepted the request (HTTP 200: it
  // read the prompt, even if the stream then broke) or reported usage; an error
  // answer or a connection that never got a response costs nothing.
  const bool consumed = ok || outcome.http_status == 200 || !outcome.content.empty() ||
                        outcome.usage.prompt_tokens + outcome.usage.completion_tokens > 0;

  PromptOutcome po;
  po.user_message_id = user_message_id_;
  po.status = ok                 ? PromptStatus::kCompleted
              : client_cancelled ? PromptStatus::kCancelled
                                 : PromptStatus::kFailed;
  po.response_text = outcome.content;
  po.reported_model = outcome.provider_model;
  po.finish_reason = outcome.finish_reason;
  if (!ok) po.error = std::string(outcome.status.message());
  if (consumed) {
    po.prompt_tokens = outcome.usage.prompt_tokens;
    po.completion_tokens = outcome.usage.completion_tokens;
    po.cached_tokens = std::min(outcome.usage.cached_tokens, outcome.usage.prompt_tokens);
    po.estimated = outcome.usage.estimated;
    po.cost_nanos =
        CostNanos(po.prompt_tokens, po.cached_tokens, po.completion_tokens, model_.prices);
  }
  po.ttft_ms = outcome.delivered_any ? absl::ToInt64Milliseconds(outcome.time_to_first_token) : 0;

  absl::Status client_status =
      ok ? absl::OkStatus()
         : absl::Status(outcome.status.code(),
                        absl::StrCat("provider: ", outcome.status.message()));

  // Save the answer (or the part that arrived) in the conversation. A partial
  // answer never replaces the one a regeneration would have replaced.
  if (!outcome.content.empty()) {
    cv1::AppendMessageRequest areq;
    areq.set_conversation_id(req_.conversation_id);
    areq.set_role(cv1::MESSAGE_ROLE_ASSISTANT);
    areq.set_content(outcome.content);
    areq.set_token_count(static_cast<int32_t>(std::clamp<int64_t>(
        po.completion_tokens > 0 ? po.completion_tokens : EstimateTokens(outcome.content), 1,
        INT32_MAX)));
    areq.set_prompt_id(prompt_id_);
    if (ok && replaces_message_id_ > 0) areq.set_replaces_message_id(replaces_message_id_);
    grpc::Status st;
    for (int attempt = 0; attempt < 3; ++attempt) {
      cv1::Message msg;
      auto ctx = PeerContext();
      ctx->set_deadline(absl::ToChronoTime(absl::Now() + deps_->options.peer_timeout));
      st = deps_->conversation->AppendMessage(ctx.get(), areq, &msg);
      if (st.ok()) {
        po.response_message_id = msg.id();
        break;
      }
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      absl::SleepFor(absl::Milliseconds(50 << attempt));
    }
    if (!st.ok()) {
      // The text stays in the prompt row; the turn is reported as failed.
      LogError("assistant message not saved",
               {{"prompt_id", prompt_id_}, {"code", GrpcCodeName(st.error_code())}});
      if (ok) {
        po.status = PromptStatus::kFailed;
        po.error = "the answer could not be saved in the conversation";
        client_status = PeerError("conversation", st);
      }
    }
  }

  absl::Time now = absl::Now();
  po.latency_ms = absl::ToInt64Milliseconds(now - started_at_);
  std::optional<std::string> event;
  if (consumed) {
    uv1::UsageEvent e;
    e.set_event_id(event_id_);
    e.set_user_id(req_.caller.user_id);
    e.set_conversation_id(req_.conversation_id);
    e.set_prompt_id(prompt_id_);
    e.set_model(model_name);
    e.set_provider_model(model_.config.provider_model);
    e.set_prompt_tokens(po.prompt_tokens);
    e.set_completion_tokens(po.completion_tokens);
    e.set_cached_tokens(po.cached_tokens);
    e.set_input_price_micros_per_mtok(model_.prices.input_micros_per_mtok);
    e.set_cached_input_price_micros_per_mtok(model_.prices.cached_input_micros_per_mtok);
    e.set_output_price_micros_per_mtok(model_.prices.output_micros_per_mtok);
    e.set_cost_nanos(po.cost_nanos);
    e.set_estimated(po.estimated);
    e.set_outcome(po.status == PromptStatus::kCompleted   ? uv1::OUTCOME_COMPLETED
                  : po.status == PromptStatus::kCancelled ? uv1::OUTCOME_CANCELLED
                                                          : uv1::OUTCOME_FAILED);
    aichat::ToProto(now, e.mutable_occurred_at());
    event = e.SerializeAsString();
  }
  if (!consumed && reserved_) Release();
  if (deps_->metrics != nullptr) {
    deps_->metrics->Tokens(model_name, po.prompt_tokens, po.completion_tokens, po.cached_tokens);
    deps_->metrics->Cost(model_name, po.cost_nanos);
    deps_->metrics->Overhead(
        std::max(0.0, absl::ToDoubleSeconds(now - started_at_ - outcome.duration)));
    deps_->metrics->Turn(PromptStatusName(po.status));
  }
  if (client_status.ok()) {
    auto result = std::make_unique<v1::TurnResult>();
    result->set_prompt_id(prompt_id_);
    result->set_user_message_id(user_message_id_);
    result->set_response_message_id(po.response_message_id);
    result->set_text(outcome.content);
    FillUsage(po, result->mutable_usage());
    result->set_cost_nanos(po.cost_nanos);
    result->set_model(model_name);
    result->set_provider_model(model_.config.provider_model);
    result->set_finish_reason(po.finish_reason);
    result->set_latency_ms(po.latency_ms);
    result_ = std::move(result);
  }
  outcome_ = std::move(po);
  event_ = std::move(event);
  client_status_ = client_status;
  first_save_ = now;
  SaveOutcome();
}

// The prompt outcome and the usage event commit together. While PostgreSQL is
// unreachable (a restart, a failover) the save is retried from a timer: the
// client waits for up to kAnswerWithin, then hears UNAVAILABLE (a retry with the
// same idempotency_key returns the answer once it is saved); the save goes on
// for up to kSaveFor. Only then is the event handed to usage directly, so the
// tokens are charged even if the prompt row stays behind.
void Turn::SaveOutcome() {
  constexpr absl::Duration kAnswerWithin = absl::Seconds(10);
  constexpr absl::Duration kSaveFor = absl::Minutes(2);
  absl::Status saved = deps_->store->FinishPrompt(prompt_id_, outcome_, event_);
  // A retry after a commit whose answer was lost finds the prompt finished.
  if (save_attempts_ > 0 && absl::IsFailedPrecondition(saved)) saved = absl::OkStatus();
  ++save_attempts_;
  absl::Time now = absl::Now();
  if (saved.ok()) {
    if (event_.has_value() && deps_->on_usage_committed) deps_->on_usage_committed();
    return Finish(client_status_, client_status_.ok() ? result_.get() : nullptr);
  }
  if (saved.code() == absl::StatusCode::kUnavailable && now - first_save_ < kSaveFor) {
    if (now - first_save_ >= kAnswerWithin) {
      Finish(absl::UnavailableError(
                 "the answer could not be saved yet; retry with the same idempotency_key"),
             nullptr);
    }
    absl::Duration delay =
        std::min(absl::Milliseconds(100) * (1 << std::min(save_attempts_, 6)), absl::Seconds(5));
    deps_->workers->SubmitAfter(delay, [self = shared_from_this()] { self->SaveOutcome(); });
    return;
  }
  LogError("turn outcome not saved",
           {{"prompt_id", prompt_id_}, {"error", std::string(saved.message())}});
  if (event_.has_value()) RecordUsageDirectly(*event_);
  Finish(absl::UnavailableError("the answer could not be saved"), nullptr);
}

void Turn::ReturnExisting(PromptRecord existing) {
  if (!IsTerminal(existing.status)) {
    // Another request with this key is still running. Check again shortly
    // (from a timer, not a sleeping worker) until it ends or this call's
    // deadline passes, so both callers see the same answer. A turn older than
    // any turn can live belonged to a replica that died.
    absl::Time now = absl::Now();
    if (existing.created_at + deps_->options.total_timeout + absl::Minutes(1) < now) {
      (void)deps_->store->SweepAbandoned(deps_->options.total_timeout + absl::Minutes(1));
    } else {
      if (cancelled()) return Finish(absl::CancelledError("cancelled by the client"), nullptr);
      if (now + absl::Milliseconds(50) > req_.deadline) {
        return Finish(
            absl::DeadlineExceededError(absl::StrCat("the turn with this idempotency_key (prompt ",
                                                     existing.id, ") is still running")),
            nullptr);
      }
      deps_->workers->SubmitAfter(absl::Milliseconds(50), [self = shared_from_this()] {
        auto again = self->deps_->store->FindByIdempotencyKey(self->req_.caller.user_id,
                                                              self->req_.idempotency_key);
        if (absl::IsNotFound(again.status())) {
          // The first attempt ended before reaching the provider and freed the key.
          return self->Finish(absl::AbortedError("the earlier request with this idempotency_key "
                                                 "was refused; retry it"),
                              nullptr);
        }
        if (!again.ok()) return self->Finish(again.status(), nullptr);
        self->ReturnExisting(*std::move(again));
      });
      return;
    }
    auto again = deps_->store->FindByIdempotencyKey(req_.caller.user_id, req_.idempotency_key);
    if (!again.ok()) return Finish(again.status(), nullptr);
    existing = *std::move(again);
  }
  if (existing.conversation_id != req_.conversation_id) {
    return Finish(
        absl::InvalidArgumentError("idempotency_key was already used for another conversation"),
        nullptr);
  }
  switch (existing.status) {
    case PromptStatus::kCompleted: {
      v1::Started started;
      started.set_prompt_id(existing.id);
      started.set_user_message_id(existing.user_message_id);
      started.set_model(existing.model);
      sink_->OnStarted(started);
      if (!existing.response_text.empty()) sink_->OnDelta(existing.response_text);
      v1::TurnResult result;
      FillResult(existing, &result);
      return Finish(absl::OkStatus(), &result);
    }
    case PromptStatus::kCancelled:
      return Finish(absl::AbortedError("the turn with this idempotency_key was cancelled"),
                    nullptr);
    default:
      // Not retryable with the same key: the provider was called and may have
      // charged; a new key starts a new turn.
      return Finish(absl::AbortedError(absl::StrCat("the turn with this idempotency_key failed: ",
                                                    existing.error)),
                    nullptr);
  }
}

void Turn::RecordUsageDirectly(const std::string& event) {
  struct Call {
    grpc::ClientContext ctx;
    uv1::RecordUsageRequest req;
    uv1::RecordUsageResponse resp;
  };
  auto* c = new Call;
  c->ctx.set_deadline(absl::ToChronoTime(absl::Now() + deps_->options.peer_timeout));
  c->ctx.AddMetadata("authorization", absl::StrCat("Bearer ", deps_->service_token));
  if (!c->req.mutable_event()->ParseFromString(event)) {
    delete c;
    return;
  }
  deps_->usage->async()->RecordUsage(&c->ctx, &c->req, &c->resp, [c](const grpc::Status& st) {
    if (!st.ok()) {
      LogError("usage event lost: neither the outbox nor usage took it",
               {{"event_id", c->req.event().event_id()}, {"code", GrpcCodeName(st.error_code())}});
    }
    delete c;
  });
}

void Turn::FailBeforeProvider(const absl::Status& status,
                              std::optional<PromptStatus> prompt_status) {
  if (prompt_id_ > 0 && prompt_status.has_value()) {
    (void)deps_->store->MarkRefused(prompt_id_, *prompt_status, std::string(status.message()));
  }
  if (reserved_) Release();
  if (deps_->metrics != nullptr && prompt_status.has_value()) {
    deps_->metrics->Turn(PromptStatusName(*prompt_status));
  }
  Finish(status, nullptr);
}

void Turn::Release() {
  reserved_ = false;
  struct Call {
    grpc::ClientContext ctx;
    uv1::ReleaseBudgetRequest req;
    uv1::ReleaseBudgetResponse resp;
  };
  auto* c = new Call;
  c->ctx.set_deadline(absl::ToChronoTime(absl::Now() + deps_->options.peer_timeout));
  c->ctx.AddMetadata("authorization", absl::StrCat("Bearer ", deps_->service_token));
  c->req.set_event_id(event_id_);
  // If this fails the reservation simply expires (usage's reservation TTL).
  deps_->usage->async()->ReleaseBudget(&c->ctx, &c->req, &c->resp,
                                       [c](const grpc::Status&) { delete c; });
}

void Turn::Finish(const absl::Status& status, const v1::TurnResult* result) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  if (deps_->metrics != nullptr) deps_->metrics->active_streams().Decrement();
  sink_->OnFinished(ToGrpcStatus(status), result);
}

}  // namespace aichat::agent
