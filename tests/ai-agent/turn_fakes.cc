#include "tests/ai-agent/turn_fakes.h"

#include <algorithm>
#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace aichat::agent::fakes {

// ---- conversation

int64_t FakeConversation::Create(int64_t user_id, std::string model, std::string system_prompt) {
  absl::MutexLock lock(&mu_);
  int64_t id = next_id_++;
  convs_[id] = Conv{user_id, std::move(model), std::move(system_prompt), {}};
  return id;
}

void FakeConversation::ReadContext(const PeerCall& call, int64_t conversation_id,
                                   int32_t max_tokens,
                                   std::function<void(absl::StatusOr<TurnContext>)> done) {
  absl::StatusOr<TurnContext> out;
  {
    absl::MutexLock lock(&mu_);
    auto it = convs_.find(conversation_id);
    if (fail_reads_ > 0) {
      --fail_reads_;
      out = read_error_;
    } else if (it == convs_.end() || it->second.user_id != call.user_id) {
      out = absl::NotFoundError("conversation not found");
    } else {
      TurnContext ctx;
      ctx.model = it->second.model;
      ctx.system_prompt = it->second.system_prompt;
      ctx.system_prompt_tokens = static_cast<int32_t>(EstimateTokens(ctx.system_prompt));
      int64_t used = ctx.system_prompt_tokens;
      const auto& msgs = it->second.messages;
      for (auto m = msgs.rbegin(); m != msgs.rend(); ++m) {
        if (m->superseded) continue;
        if (used + m->token_count > max_tokens) {
          ctx.truncated = true;
          break;
        }
        used += m->token_count;
        ctx.messages.insert(ctx.messages.begin(), {m->id, m->role, m->content, m->token_count});
      }
      out = std::move(ctx);
    }
  }
  done(std::move(out));
}

void FakeConversation::Append(const PeerCall& call, const NewTurnMessage& m,
                              std::function<void(absl::StatusOr<int64_t>)> done) {
  absl::StatusOr<int64_t> out;
  {
    absl::MutexLock lock(&mu_);
    ++appends_;
    auto it = convs_.find(m.conversation_id);
    if (fail_appends_ > 0 && m.role == fail_role_) {
      --fail_appends_;
      out = append_error_;
    } else if (it == convs_.end() || it->second.user_id != call.user_id) {
      out = absl::NotFoundError("conversation not found");
    } else {
      auto& msgs = it->second.messages;
      auto same = std::find_if(msgs.begin(), msgs.end(), [&](const StoredMessage& s) {
        return m.prompt_id > 0 && s.prompt_id == m.prompt_id && s.role == m.role;
      });
      if (same != msgs.end()) {
        out = same->id;  // a retried append returns the first one
      } else {
        if (m.replaces_message_id > 0) {
          for (auto& s : msgs) {
            if (s.id == m.replaces_message_id) s.superseded = true;
          }
        }
        int64_t id = next_id_++;
        msgs.push_back({id, m.role, m.content,
                        m.token_count.value_or(static_cast<int32_t>(EstimateTokens(m.content))),
                        m.prompt_id, false});
        out = id;
      }
    }
  }
  done(std::move(out));
}

void FakeConversation::Retract(const PeerCall& call, int64_t conversation_id, int64_t prompt_id,
                               std::function<void(absl::Status)> done) {
  {
    absl::MutexLock lock(&mu_);
    auto it = convs_.find(conversation_id);
    if (it != convs_.end() && it->second.user_id == call.user_id) {
      auto& msgs = it->second.messages;
      msgs.erase(std::remove_if(msgs.begin(), msgs.end(),
                                [&](const StoredMessage& s) {
                                  return s.prompt_id == prompt_id && s.role == MessageRole::kUser;
                                }),
                 msgs.end());
    }
  }
  done(absl::OkStatus());
}

void FakeConversation::FailReads(int n, absl::Status status) {
  absl::MutexLock lock(&mu_);
  fail_reads_ = n;
  read_error_ = std::move(status);
}

void FakeConversation::FailAppends(int n, absl::Status status, MessageRole role) {
  absl::MutexLock lock(&mu_);
  fail_appends_ = n;
  append_error_ = std::move(status);
  fail_role_ = role;
}

std::vector<StoredMessage> FakeConversation::Messages(int64_t conversation_id) {
  absl::MutexLock lock(&mu_);
  return convs_[conversation_id].messages;
}

// ---- usage

void FakeUsage::Reserve(const PeerCall& call, const ReserveRequest& r,
                        std::function<void(absl::StatusOr<ReserveDecision>)> done) {
  absl::StatusOr<ReserveDecision> out;
  {
    absl::MutexLock lock(&mu_);
    amounts_.push_back(r.max_cost_nanos);
    if (!reserve_error_.ok()) {
      out = reserve_error_;
    } else {
      ReserveDecision d;
      auto& window = window_[call.user_id];
      absl::Time now = absl::Now();
      while (!window.empty() && window.front() < now - absl::Minutes(1)) window.pop_front();
      int64_t spent = 0;
      for (const auto& [id, e] : ledger_) spent += e.user_id == call.user_id ? e.cost_nanos : 0;
      int64_t held = 0;
      for (const auto& [id, n] : active_) held += n;
      if (r.requests_per_minute > 0 && static_cast<int>(window.size()) >= r.requests_per_minute) {
        d.rate_limited = true;
        d.message = "rate limit reached";
        d.retry_at = window.front() + absl::Minutes(1);
      } else if (limit_ > 0 && spent + held + r.max_cost_nanos > limit_) {
        d.message = "monthly budget reached";
        d.retry_at = now + absl::Hours(24);
      } else {
        d.allowed = true;
        window.push_back(now);
        active_[r.event_id] = r.max_cost_nanos;
      }
      out = std::move(d);
    }
  }
  done(std::move(out));
}

void FakeUsage::Release(const std::string& event_id) {
  absl::MutexLock lock(&mu_);
  ++releases_;
  active_.erase(event_id);
}

void FakeUsage::Record(std::vector<UsageRecord> events, absl::Time,
                       std::function<void(absl::StatusOr<std::vector<bool>>)> done) {
  std::vector<bool> recorded;
  {
    absl::MutexLock lock(&mu_);
    for (auto& e : events) {
      active_.erase(e.event_id);
      recorded.push_back(ledger_.emplace(e.event_id, e).second);
    }
  }
  done(std::move(recorded));
}

void FakeUsage::SetBudget(int64_t limit_nanos) {
  absl::MutexLock lock(&mu_);
  limit_ = limit_nanos;
}

void FakeUsage::SetReserveError(absl::Status status) {
  absl::MutexLock lock(&mu_);
  reserve_error_ = std::move(status);
}

int64_t FakeUsage::reserved() {
  absl::MutexLock lock(&mu_);
  int64_t held = 0;
  for (const auto& [id, n] : active_) held += n;
  return held;
}

std::map<std::string, UsageRecord> FakeUsage::ledger() {
  absl::MutexLock lock(&mu_);
  return ledger_;
}

std::vector<int64_t> FakeUsage::reserved_amounts() {
  absl::MutexLock lock(&mu_);
  return amounts_;
}

int FakeUsage::releases() {
  absl::MutexLock lock(&mu_);
  return releases_;
}

// ---- store

absl::StatusOr<std::vector<ModelRecord>> MemoryAgentStore::ListModels() {
  absl::MutexLock lock(&mu_);
  return models_;
}

absl::StatusOr<ModelRecord> MemoryAgentStore::UpsertModel(const ModelRecord&) {
  return absl::UnimplementedError("not in the fake");
}

absl::Status MemoryAgentStore::DeleteModel(const std::string&) {
  return absl::UnimplementedError("not in the fake");
}

absl::StatusOr<std::vector<int64_t>> MemoryAgentStore::ReservePromptIds(int n) {
  absl::MutexLock lock(&mu_);
  std::vector<int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), next_id_);
  next_id_ += n;
  return ids;
}

absl::Status MemoryAgentStore::InsertPrompt(const NewPrompt& p) {
  absl::MutexLock lock(&mu_);
  if (!p.idempotency_key.empty()) {
    for (const auto& [id, q] : prompts_) {
      if (q.user_id == p.user_id && q.idempotency_key == p.idempotency_key) {
        return absl::AlreadyExistsError("idempotency key already used");
      }
    }
  }
  PromptRecord r;
  r.id = p.id;
  r.user_id = p.user_id;
  r.conversation_id = p.conversation_id;
  r.idempotency_key = p.idempotency_key;
  r.request_hash = p.request_hash;
  r.event_id = p.event_id;
  r.owner = p.owner;
  r.model = p.model;
  r.provider_model = p.provider_model;
  r.prices = p.prices;
  r.context_window = p.context_window;
  r.max_output_tokens = p.max_output_tokens;
  r.context_tokens = p.context_tokens;
  r.user_message_id = p.user_message_id;
  r.replaces_message_id = p.replaces_message_id;
  r.created_at = absl::Now();
  prompts_[p.id] = r;
  return absl::OkStatus();
}

absl::StatusOr<PromptRecord> MemoryAgentStore::FindByIdempotencyKey(int64_t user_id,
                                                                    const std::string& key) {
  absl::MutexLock lock(&mu_);
  for (const auto& [id, p] : prompts_) {
    if (!key.empty() && p.user_id == user_id && p.idempotency_key == key) return p;
  }
  return absl::NotFoundError("prompt not found");
}

absl::StatusOr<PromptRecord> MemoryAgentStore::GetPrompt(int64_t user_id, int64_t prompt_id) {
  absl::MutexLock lock(&mu_);
  auto it = prompts_.find(prompt_id);
  if (it == prompts_.end() || it->second.user_id != user_id) {
    return absl::NotFoundError("prompt not found");
  }
  return it->second;
}

absl::StatusOr<std::vector<PromptRecord>> MemoryAgentStore::ListPrompts(int64_t,
                                                                        std::optional<int64_t>,
                                                                        int64_t, int) {
  return absl::UnimplementedError("not in the fake");
}

absl::Status MemoryAgentStore::MarkRefused(int64_t prompt_id, PromptStatus status,
                                           const std::string& error) {
  absl::MutexLock lock(&mu_);
  if (fail_refusals_ > 0) {
    --fail_refusals_;
    return absl::UnavailableError("database unavailable");
  }
  auto it = prompts_.find(prompt_id);
  if (it == prompts_.end()) return absl::NotFoundError("prompt not found");
  if (IsTerminal(it->second.status)) return absl::FailedPreconditionError("finished");
  it->second.status = status;
  it->second.error = error;
  it->second.idempotency_key.clear();
  return absl::OkStatus();
}

absl::StatusOr<int64_t> MemoryAgentStore::FinishPrompt(int64_t prompt_id, const PromptOutcome& o,
                                                       const std::optional<std::string>& event,
                                                       absl::Duration) {
  absl::MutexLock lock(&mu_);
  if (fail_finishes_ > 0) {
    --fail_finishes_;
    return absl::UnavailableError("database unavailable");
  }
  auto it = prompts_.find(prompt_id);
  if (it == prompts_.end()) return absl::NotFoundError("prompt not found");
  PromptRecord& p = it->second;
  if (IsTerminal(p.status)) return absl::FailedPreconditionError("prompt already finished");
  p.status = o.status;
  p.response_message_id = o.response_message_id;
  p.answer_pending = o.answer_pending;
  p.response_text = o.response_text;
  p.prompt_tokens = o.prompt_tokens;
  p.completion_tokens = o.completion_tokens;
  p.cached_tokens = o.cached_tokens;
  p.estimated = o.estimated;
  p.cost_nanos = o.cost_nanos;
  p.finish_reason = o.finish_reason;
  p.error = o.error;
  if (o.user_message_id > 0) p.user_message_id = o.user_message_id;
  if (!o.model.empty()) {
    p.model = o.model;
    p.provider_model = o.provider_model;
    p.prices = o.prices;
  }
  p.deployment = o.deployment;
  p.completed_at = absl::Now();
  if (!event.has_value()) return 0;
  int64_t id = next_outbox_++;
  outbox_[id] = p.event_id;
  return id;
}

absl::Status MemoryAgentStore::Settle(const std::vector<int64_t>& delivered,
                                      const std::vector<SavedAnswer>& saved) {
  absl::MutexLock lock(&mu_);
  for (int64_t id : delivered) outbox_.erase(id);
  for (const auto& s : saved) {
    auto it = prompts_.find(s.prompt_id);
    if (it == prompts_.end()) continue;
    it->second.answer_pending = false;
    it->second.response_message_id = s.message_id;
  }
  return absl::OkStatus();
}

absl::Status MemoryAgentStore::MarkAnswerLost(int64_t prompt_id, const std::string& error) {
  absl::MutexLock lock(&mu_);
  auto it = prompts_.find(prompt_id);
  if (it == prompts_.end() || !it->second.answer_pending) return absl::OkStatus();
  it->second.answer_pending = false;
  it->second.status = PromptStatus::kFailed;
  it->second.error = error;
  return absl::OkStatus();
}

absl::Status MemoryAgentStore::RenewLease(const std::string&, absl::Duration) {
  return absl::OkStatus();
}

absl::Status MemoryAgentStore::DropLease(const std::string&) { return absl::OkStatus(); }

absl::StatusOr<std::vector<PromptRecord>> MemoryAgentStore::AdoptAbandoned(const std::string&, int,
                                                                           absl::Duration,
                                                                           absl::Duration) {
  return std::vector<PromptRecord>{};
}

absl::StatusOr<std::vector<OutboxEntry>> MemoryAgentStore::ClaimOutbox(int, absl::Duration) {
  return std::vector<OutboxEntry>{};
}

absl::Status MemoryAgentStore::AckOutbox(const std::vector<int64_t>& ids) {
  return Settle(ids, {});
}

absl::Status MemoryAgentStore::RetryOutbox(int64_t, absl::Duration, const std::string&) {
  return absl::OkStatus();
}

absl::StatusOr<AgentStore::OutboxStats> MemoryAgentStore::OutboxBacklog() {
  absl::MutexLock lock(&mu_);
  return OutboxStats{static_cast<int64_t>(outbox_.size()), 0};
}

void MemoryAgentStore::FailFinishes(int n) {
  absl::MutexLock lock(&mu_);
  fail_finishes_ = n;
}

void MemoryAgentStore::FailRefusals(int n) {
  absl::MutexLock lock(&mu_);
  fail_refusals_ = n;
}

std::optional<PromptRecord> MemoryAgentStore::Prompt(int64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = prompts_.find(id);
  if (it == prompts_.end()) return std::nullopt;
  return it->second;
}

std::vector<PromptRecord> MemoryAgentStore::Prompts() {
  absl::MutexLock lock(&mu_);
  std::vector<PromptRecord> out;
  for (const auto& [id, p] : prompts_) out.push_back(p);
  return out;
}

size_t MemoryAgentStore::outbox_size() {
  absl::MutexLock lock(&mu_);
  return outbox_.size();
}

// ---- LLM

namespace {

class ScriptedCall final : public LlmCall {
 public:
  void Cancel() override { cancelled_.Notify(); }
  bool cancelled() const { return cancelled_.HasBeenNotified(); }
  bool WaitCancelled(absl::Duration d) { return cancelled_.WaitForNotificationWithTimeout(d); }

 private:
  absl::Notification cancelled_;
};

}  // namespace

ScriptedLlm::~ScriptedLlm() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

void ScriptedLlm::Push(LlmScript script) {
  absl::MutexLock lock(&mu_);
  scripts_.push_back(std::move(script));
}

std::map<std::string, int> ScriptedLlm::max_in_flight() {
  absl::MutexLock lock(&mu_);
  return max_in_flight_;
}

std::vector<CompletionRequest> ScriptedLlm::requests() {
  absl::MutexLock lock(&mu_);
  return requests_;
}

std::shared_ptr<LlmCall> ScriptedLlm::Start(CompletionRequest request,
                                            std::function<void(std::string_view)> on_delta,
                                            std::function<void(LlmOutcome)> on_done) {
  LlmScript script;
  script.deltas = {"ok"};
  auto call = std::make_shared<ScriptedCall>();
  absl::MutexLock lock(&mu_);
  if (!scripts_.empty()) {
    script = std::move(scripts_.front());
    scripts_.pop_front();
  }
  requests_.push_back(request);
  const std::string url = request.base_url;
  int now_in = ++in_flight_[url];
  max_in_flight_[url] = std::max(max_in_flight_[url], now_in);
  threads_.emplace_back([this, url, call, script, on_delta = std::move(on_delta),
                         on_done = std::move(on_done)] {
    const absl::Time start = absl::Now();
    LlmOutcome out;
    out.attempts = 1;
    out.http_status = script.http_status;
    for (const auto& d : script.deltas) {
      if (script.delta_gap > absl::ZeroDuration() && call->WaitCancelled(script.delta_gap)) break;
      if (call->cancelled()) break;
      if (!out.delivered_any) out.time_to_first_token = absl::Now() - start;
      out.delivered_any = true;
      out.content += d;
      on_delta(d);
    }
    if (script.wait_for_cancel && !call->cancelled()) call->WaitCancelled(absl::Seconds(30));
    if (call->cancelled()) {
      out.status = absl::CancelledError("cancelled");
      out.kind = LlmErrorKind::kCancelled;
      out.usage = {10, static_cast<int64_t>(out.content.size() / 4 + (out.content.empty() ? 0 : 1)),
                   0, true};
    } else {
      out.status = script.status;
      out.kind = script.kind;
      out.usage = script.usage;
      out.finish_reason = script.status.ok() ? "stop" : "";
    }
    out.provider_model = "scripted";
    out.duration = absl::Now() - start;
    {
      absl::MutexLock lock(&mu_);
      --in_flight_[url];
    }
    on_done(std::move(out));
  });
  return call;
}

}  // namespace aichat::agent::fakes
