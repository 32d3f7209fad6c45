#include "services/ai-agent/janitor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace aichat::agent {

absl::Status Janitor::Start() {
  if (auto st = deps_->store->RenewLease(deps_->replica, options_.lease); !st.ok()) return st;
  deps_->workers->SubmitAfter(options_.renew_every, [this] { Renew(); });
  deps_->workers->Submit([this] { Sweep(); });
  return absl::OkStatus();
}

void Janitor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  (void)deps_->store->DropLease(deps_->replica);
}

void Janitor::Renew() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
  }
  if (auto st = deps_->store->RenewLease(deps_->replica, options_.lease); !st.ok()) {
    LogWarn("lease not renewed", {{"replica", deps_->replica}});
    absl::MutexLock lock(&mu_);
    renewal_failed_at_ = absl::Now();
  }
  deps_->workers->SubmitAfter(options_.renew_every, [this] { Renew(); });
}

void Janitor::Sweep() {
  bool settled;
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    // After an outage of PostgreSQL every replica's lease may have lapsed, the
    // live ones' too. Taking turns over waits until this replica's renewals have
    // held for a whole lease: by then every live replica has renewed its own.
    settled = absl::Now() - renewal_failed_at_ >= options_.lease;
  }
  if (settled) (void)SweepOnce();
  deps_->workers->SubmitAfter(options_.sweep_every, [this] { Sweep(); });
}

absl::StatusOr<int> Janitor::SweepOnce() {
  auto adopted = deps_->store->AdoptAbandoned(deps_->replica, 100, options_.unowned_after,
                                              options_.own_pending_after);
  if (!adopted.ok()) return adopted.status();
  for (const PromptRecord& p : *adopted) {
    if (!IsTerminal(p.status)) {
      FinishAbandoned(p);
    } else if (p.answer_pending) {
      SaveAbandonedAnswer(p);
    }
  }
  if (!adopted->empty()) {
    LogWarn("turns of a stopped replica taken over", {{"count", int64_t(adopted->size())}});
  }
  return static_cast<int>(adopted->size());
}

// Nothing is known of what the provider streamed: the prompt that was sent is
// charged as an estimate, and the turn is FAILED.
void Janitor::FinishAbandoned(const PromptRecord& p) {
  UsageRecord charge = AbandonedCharge(p, absl::Now());
  PromptOutcome o;
  o.status = PromptStatus::kFailed;
  o.error = "abandoned: the ai-agent replica running this turn stopped";
  o.prompt_tokens = charge.prompt_tokens;
  o.estimated = true;
  o.cost_nanos = charge.cost_nanos;
  auto outbox_id =
      deps_->store->FinishPrompt(p.id, o, EncodeUsageRecord(charge), deps_->options.outbox_lease);
  if (outbox_id.ok() && *outbox_id > 0) deps_->publish(*outbox_id, std::move(charge));
}

// The answer is complete in the prompt row; the conversation is given it now
// (idempotent on the prompt: an append that did happen is found, not repeated).
void Janitor::SaveAbandonedAnswer(const PromptRecord& p) {
  NewTurnMessage m = StoredAnswer(p);
  PeerCall call{.user_id = p.user_id, .deadline = absl::Now() + deps_->options.peer_timeout};
  TurnDeps* deps = deps_;
  const int64_t prompt_id = p.id;
  deps_->conversation->Append(call, m, [deps, prompt_id](absl::StatusOr<int64_t> id) {
    if (id.ok()) return deps->answer_saved({prompt_id, *id});
    if (absl::IsUnavailable(id.status()) || absl::IsDeadlineExceeded(id.status())) {
      return;  // still pending: the next sweep of whoever owns it then tries again
    }
    std::string why =
        absl::StrCat("the answer could not be saved in the conversation: ", id.status().message());
    deps->workers->Submit(
        [deps, prompt_id, why] { (void)deps->store->MarkAnswerLost(prompt_id, why); });
  });
}

}  // namespace aichat::agent
