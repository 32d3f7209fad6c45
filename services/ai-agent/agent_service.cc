#include "services/ai-agent/agent_service.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/page_token.h"
#include "common/proto_time.h"
#include "common/status.h"
#include "common/unary.h"

namespace aichat::agent {
namespace {

TurnRequest FromSend(const Caller& caller, const v1::SendMessageRequest& req,
                     grpc::CallbackServerContext* ctx) {
  TurnRequest t;
  t.caller = caller;
  t.conversation_id = req.conversation_id();
  t.content = req.content();
  t.model = req.has_model() ? req.model() : "";
  t.idempotency_key = req.idempotency_key();
  if (req.has_max_output_tokens()) t.max_output_tokens = req.max_output_tokens();
  if (req.has_temperature()) t.temperature = req.temperature();
  auto d = ctx->deadline();
  t.deadline = d == std::chrono::system_clock::time_point::max() ? absl::InfiniteFuture()
                                                                 : absl::FromChrono(d);
  t.server_context = ctx;
  return t;
}

// SendMessage: the turn's events are dropped except the final result.
class UnaryTurnReactor : public grpc::ServerUnaryReactor, public TurnSink {
 public:
  UnaryTurnReactor(TurnDeps* deps, const Authenticator* auth, grpc::CallbackServerContext* ctx,
                   const v1::SendMessageRequest* req, v1::TurnResult* resp)
      : resp_(resp) {
    auto caller = auth->Authenticate(*ctx);
    if (!caller.ok()) {
      Finish(ToGrpcStatus(caller.status()));
      return;
    }
    turn_ = Turn::Start(deps, FromSend(*caller, *req, ctx), this);
  }
  void OnStarted(const v1::Started&) override {}
  void OnDelta(std::string_view) override {}
  void OnFinished(const grpc::Status& status, const v1::TurnResult* result) override {
    if (result != nullptr) *resp_ = *result;
    Finish(status);
  }
  void OnCancel() override {
    if (turn_ != nullptr) turn_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  v1::TurnResult* resp_;
  std::shared_ptr<Turn> turn_;
};

// StreamMessage / RegenerateResponse: one write in flight at a time. What arrives
// meanwhile waits in place: the started event, the text of every delta since the
// last write (coalesced into one Delta), the result. A delta costs an append to a
// string whose buffer is reused, not an event of its own.
class StreamTurnReactor : public grpc::ServerWriteReactor<v1::TurnEvent>, public TurnSink {
 public:
  StreamTurnReactor(TurnDeps* deps, const Authenticator* auth, grpc::CallbackServerContext* ctx,
                    std::function<TurnRequest(const Caller&)> make_request) {
    auto caller = auth->Authenticate(*ctx);
    if (!caller.ok()) {
      Finish(ToGrpcStatus(caller.status()));
      return;
    }
    turn_ = Turn::Start(deps, make_request(*caller), this);
  }

  void OnStarted(const v1::Started& started) override {
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      started_ = std::make_unique<v1::Started>(started);
    }
    Pump();
  }

  void OnDelta(std::string_view text) override {
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      pending_text_.append(text.data(), text.size());
      if (writing_) return;
    }
    Pump();
  }

  void OnFinished(const grpc::Status& status, const v1::TurnResult* result) override {
    {
      absl::MutexLock lock(&mu_);
      if (result != nullptr && !broken_) completed_ = std::make_unique<v1::TurnResult>(*result);
      final_ = status;
      finishing_ = true;
    }
    Pump();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client is gone; stop the turn (it still saves and charges what it used).
        broken_ = true;
        pending_text_.clear();
        started_.reset();
        completed_.reset();
      }
    }
    if (!ok && turn_ != nullptr) turn_->Cancel();
    Pump();
  }

  void OnCancel() override {
    if (turn_ != nullptr) turn_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void Pump() {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || done_) return;
      if (started_ != nullptr) {
        current_.Clear();
        current_.set_allocated_started(started_.release());
        action = kWrite;
      } else if (!pending_text_.empty()) {
        // Swap buffers: the text written last time becomes the next pending buffer.
        std::string* text = current_.mutable_delta()->mutable_text();
        text->clear();
        text->swap(pending_text_);
        action = kWrite;
      } else if (completed_ != nullptr) {
        current_.Clear();
        current_.set_allocated_completed(completed_.release());
        action = kWrite;
      } else if (finishing_) {
        done_ = true;
        status = final_;
        action = kFinish;
      }
      if (action == kWrite) writing_ = true;
    }
    if (action == kWrite) {
      StartWrite(&current_);
    } else if (action == kFinish) {
      Finish(status);
    }
  }

  std::shared_ptr<Turn> turn_;
  absl::Mutex mu_;
  v1::TurnEvent current_;  // the event being written; touched only by the writer
  std::unique_ptr<v1::Started> started_ ABSL_GUARDED_BY(mu_);
  std::string pending_text_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<v1::TurnResult> completed_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

v1::PromptStatus ToProtoStatus(PromptStatus s) {
  switch (s) {
    case PromptStatus::kPending:
      return v1::PROMPT_STATUS_PENDING;
    case PromptStatus::kStreaming:
      return v1::PROMPT_STATUS_STREAMING;
    case PromptStatus::kCompleted:
      return v1::PROMPT_STATUS_COMPLETED;
    case PromptStatus::kFailed:
      return v1::PROMPT_STATUS_FAILED;
    case PromptStatus::kCancelled:
      return v1::PROMPT_STATUS_CANCELLED;
    case PromptStatus::kRateLimited:
      return v1::PROMPT_STATUS_RATE_LIMITED;
    case PromptStatus::kBudgetExceeded:
      return v1::PROMPT_STATUS_BUDGET_EXCEEDED;
  }
  return v1::PROMPT_STATUS_UNSPECIFIED;
}

void ToProto(const PromptRecord& p, v1::Prompt* out) {
  out->set_id(p.id);
  out->set_user_id(p.user_id);
  out->set_conversation_id(p.conversation_id);
  out->set_status(ToProtoStatus(p.status));
  out->set_model(p.model);
  out->set_provider_model(p.provider_model);
  out->set_error(p.error);
  FillUsage(p, out->mutable_usage());
  out->set_cost_nanos(p.cost_nanos);
  out->set_finish_reason(p.finish_reason);
  out->set_latency_ms(p.latency_ms);
  out->set_time_to_first_token_ms(p.ttft_ms);
  out->set_input_price_micros_per_mtok(p.prices.input_micros_per_mtok);
  out->set_cached_input_price_micros_per_mtok(p.prices.cached_input_micros_per_mtok);
  out->set_output_price_micros_per_mtok(p.prices.output_micros_per_mtok);
  out->set_user_message_id(p.user_message_id);
  out->set_response_message_id(p.response_message_id);
  out->set_idempotency_key(p.idempotency_key);
  aichat::ToProto(p.created_at, out->mutable_created_at());
  if (p.completed_at) aichat::ToProto(*p.completed_at, out->mutable_completed_at());
  out->set_deployment(p.deployment);
}

void ToProto(const ModelRecord& m, v1::ModelConfig* out) {
  out->set_name(m.name);
  out->set_provider_model(m.provider_model);
  out->set_base_url(m.base_url);
  out->set_api_key_env(m.api_key_env);
  out->set_input_price_micros_per_mtok(m.prices.input_micros_per_mtok);
  out->set_cached_input_price_micros_per_mtok(m.prices.cached_input_micros_per_mtok);
  out->set_output_price_micros_per_mtok(m.prices.output_micros_per_mtok);
  out->set_context_window(m.context_window);
  out->set_max_output_tokens(m.max_output_tokens);
  out->set_default_temperature(m.default_temperature);
  out->set_enabled(m.enabled);
  out->set_is_default(m.is_default);
  out->set_use_max_tokens_param(m.use_max_tokens_param);
  aichat::ToProto(m.updated_at, out->mutable_updated_at());
  for (const auto& d : m.deployments) {
    v1::Deployment* o = out->add_deployments();
    o->set_name(d.name);
    o->set_base_url(d.base_url);
    o->set_api_key_env(d.api_key_env);
    o->set_provider_model(d.provider_model);
    o->set_weight(d.weight);
    o->set_max_concurrency(d.max_concurrency);
  }
  for (const auto& f : m.fallbacks) out->add_fallbacks(f);
}

// Each deployment (the model's own settings as one when it lists none) with this
// replica's view of its health.
void AddDeploymentStates(const ModelRecord& m, Router* router, v1::ModelConfig* out) {
  if (router == nullptr) return;
  auto all = Router::DeploymentsOf(m);
  if (out->deployments_size() == 0) {
    v1::Deployment* d = out->add_deployments();
    d->set_name(all[0].name);
    d->set_weight(all[0].weight);
  }
  const absl::Time now = absl::Now();
  for (int i = 0; i < out->deployments_size() && i < static_cast<int>(all.size()); ++i) {
    v1::Deployment* d = out->mutable_deployments(i);
    if (d->name().empty()) d->set_name(all[i].name);
    DeploymentHealth h = router->Health(m.name, all[i].name, now);
    v1::DeploymentState* st = d->mutable_state();
    st->set_circuit(h.circuit);
    st->set_in_flight(h.in_flight);
    st->set_consecutive_failures(h.consecutive_failures);
    if (h.cooldown_until.has_value())
      aichat::ToProto(*h.cooldown_until, st->mutable_cooldown_until());
  }
}

ModelRecord FromProto(const v1::ModelConfig& m) {
  ModelRecord r;
  r.name = m.name();
  r.provider_model = m.provider_model().empty() ? m.name() : m.provider_model();
  r.base_url = m.base_url();
  r.api_key_env = m.api_key_env().empty() ? "OPENAI_API_KEY" : m.api_key_env();
  r.prices = {m.input_price_micros_per_mtok(), m.cached_input_price_micros_per_mtok(),
              m.output_price_micros_per_mtok()};
  r.context_window = m.context_window();
  r.max_output_tokens = m.max_output_tokens();
  r.default_temperature = m.default_temperature();
  r.enabled = m.enabled();
  r.is_default = m.is_default();
  r.use_max_tokens_param = m.use_max_tokens_param();
  for (int i = 0; i < m.deployments_size(); ++i) {
    const v1::Deployment& d = m.deployments(i);
    r.deployments.push_back({d.name().empty() ? absl::StrCat("d", i + 1) : d.name(), d.base_url(),
                             d.api_key_env(), d.provider_model(), d.weight() > 0 ? d.weight() : 1,
                             d.max_concurrency()});
  }
  r.fallbacks.assign(m.fallbacks().begin(), m.fallbacks().end());
  return r;
}

}  // namespace

grpc::ServerUnaryReactor* AgentServiceImpl::SendMessage(grpc::CallbackServerContext* ctx,
                                                        const v1::SendMessageRequest* req,
                                                        v1::TurnResult* resp) {
  return new UnaryTurnReactor(deps_, auth_, ctx, req, resp);
}

grpc::ServerWriteReactor<v1::TurnEvent>* AgentServiceImpl::StreamMessage(
    grpc::CallbackServerContext* ctx, const v1::SendMessageRequest* req) {
  return new StreamTurnReactor(
      deps_, auth_, ctx, [req, ctx](const Caller& caller) { return FromSend(caller, *req, ctx); });
}

grpc::ServerWriteReactor<v1::TurnEvent>* AgentServiceImpl::RegenerateResponse(
    grpc::CallbackServerContext* ctx, const v1::RegenerateResponseRequest* req) {
  return new StreamTurnReactor(deps_, auth_, ctx, [req, ctx](const Caller& caller) {
    TurnRequest t;
    t.caller = caller;
    t.conversation_id = req->conversation_id();
    t.model = req->has_model() ? req->model() : "";
    t.idempotency_key = req->idempotency_key();
    t.regenerate = true;
    auto d = ctx->deadline();
    t.deadline = d == std::chrono::system_clock::time_point::max() ? absl::InfiniteFuture()
                                                                   : absl::FromChrono(d);
    t.server_context = ctx;
    return t;
  });
}

grpc::ServerUnaryReactor* AgentServiceImpl::GetPrompt(grpc::CallbackServerContext* ctx,
                                                      const v1::GetPromptRequest* req,
                                                      v1::Prompt* resp) {
  return RunUnary(ctx, *deps_->workers, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (req->prompt_id() <= 0) return absl::InvalidArgumentError("prompt_id must be positive");
    auto p = deps_->store->GetPrompt(caller->user_id, req->prompt_id());
    if (!p.ok()) return p.status();
    ToProto(*p, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AgentServiceImpl::ListPrompts(grpc::CallbackServerContext* ctx,
                                                        const v1::ListPromptsRequest* req,
                                                        v1::ListPromptsResponse* resp) {
  return RunUnary(ctx, *deps_->workers, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    auto size = NormalizePageSize(req->page_size());
    if (!size.ok()) return size.status();
    int64_t before = 0;
    if (!req->page_token().empty()) {
      auto parts = DecodePageToken(req->page_token(), 1);
      if (!parts.ok()) return parts.status();
      if (!absl::SimpleAtoi((*parts)[0], &before)) {
        return absl::InvalidArgumentError("page_token is invalid");
      }
    }
    std::optional<int64_t> conv;
    if (req->has_conversation_id()) conv = req->conversation_id();
    auto list = deps_->store->ListPrompts(caller->user_id, conv, before, *size + 1);
    if (!list.ok()) return list.status();
    bool more = static_cast<int>(list->size()) > *size;
    if (more) list->pop_back();
    for (const auto& p : *list) ToProto(p, resp->add_prompts());
    if (more) resp->set_next_page_token(EncodePageToken({absl::StrCat(list->back().id)}));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AgentServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                       const v1::ListModelsRequest* req,
                                                       v1::ListModelsResponse* resp) {
  return RunUnary(ctx, *deps_->workers, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    auto models = deps_->models->List();
    if (!models.ok()) return models.status();
    bool all = req->include_disabled() && caller->is_admin();
    for (const auto& m : *models) {
      if (!m.enabled && !all) continue;
      v1::ModelConfig* out = resp->add_models();
      ToProto(m, out);
      // Where keys go is the operators' business, not every user's.
      if (!caller->is_admin()) {
        out->clear_base_url();
        out->clear_api_key_env();
        out->clear_deployments();
      } else {
        AddDeploymentStates(m, deps_->router, out);
      }
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AgentServiceImpl::UpsertModel(grpc::CallbackServerContext* ctx,
                                                        const v1::UpsertModelRequest* req,
                                                        v1::ModelConfig* resp) {
  return RunUnary(ctx, *deps_->workers, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = RequireAdmin(*caller); !st.ok()) return st;
    if (auto st = ValidateModelConfig(req->model(), deps_->options.provider_policy); !st.ok()) {
      return st;
    }
    if (req->model().fallbacks_size() > 0) {
      auto saved_models = deps_->store->ListModels();
      if (!saved_models.ok()) return saved_models.status();
      if (auto st = CheckFallbacks(req->model(), *saved_models); !st.ok()) return st;
    }
    auto saved = deps_->store->UpsertModel(FromProto(req->model()));
    if (!saved.ok()) return saved.status();
    (void)deps_->models->Load();
    ToProto(*saved, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AgentServiceImpl::DeleteModel(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteModelRequest* req,
                                                        v1::DeleteModelResponse* /*resp*/) {
  return RunUnary(ctx, *deps_->workers, [this, ctx, req]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = RequireAdmin(*caller); !st.ok()) return st;
    if (req->name().empty()) return absl::InvalidArgumentError("name is required");
    auto st = deps_->store->DeleteModel(req->name());
    (void)deps_->models->Load();
    return st;
  });
}

}  // namespace aichat::agent
