// HttpTurn (api_internal.h): one chat turn answered over HTTP.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/jwt.h"
#include "common/status.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/api_internal.h"

namespace aichat::agent {

TokenFigures Figures(const v1::TurnResult& r) {
  return TokenFigures{.prompt_tokens = r.usage().prompt_tokens(),
                      .completion_tokens = r.usage().completion_tokens(),
                      .cached_tokens = r.usage().cached_tokens(),
                      .cost_nanos = r.cost_nanos(),
                      .estimated = r.usage().estimated()};
}

HttpTurn::HttpTurn(std::shared_ptr<ApiCall> call, TurnKey key, bool stream, ParamNames names)
    : call_(std::move(call)), key_(std::move(key)), stream_(stream), names_(std::move(names)) {}

void HttpTurn::Start(TurnRequest request) {
  self_ = shared_from_this();
  std::weak_ptr<HttpTurn> weak = self_;
  call_->exchange->OnClientGone([weak] {
    if (auto self = weak.lock()) self->ClientGone();
  });
  Run(std::move(request));
}

void HttpTurn::Run(TurnRequest request) {
  // A turn refused at once calls OnFinished before Start returns, which lets go of self_.
  std::shared_ptr<HttpTurn> hold = shared_from_this();
  request.idempotency_key = key_.key;
  if (key_.automatic && !restarted_) retry_copy_ = request;
  auto turn = Turn::Start(call_->deps, std::move(request), this);
  bool gone;
  {
    absl::MutexLock lock(&turn_mu_);
    turn_ = turn;
    gone = gone_;
  }
  if (gone) turn->Cancel();
}

// The client left: stop the turn (from a worker: Cancel reaches into the LLM client).
void HttpTurn::ClientGone() {
  std::shared_ptr<Turn> turn;
  {
    absl::MutexLock lock(&turn_mu_);
    gone_ = true;
    turn = turn_;
  }
  if (turn != nullptr) call_->deps->workers->Submit([turn] { turn->Cancel(); });
}

void HttpTurn::OnStarted(const v1::Started& started) {
  {
    absl::MutexLock lock(&mu_);
    started_ = started;
  }
  if (!stream_) return;
  std::weak_ptr<HttpTurn> weak = weak_from_this();
  call_->deps->workers->SubmitAfter(call_->options->stream_hold, [weak] {
    if (auto self = weak.lock()) self->HoldExpired();
  });
}

void HttpTurn::HoldExpired() {
  absl::MutexLock lock(&mu_);
  if (!head_sent_ && !finished_ && started_.has_value()) SendHead();
}

void HttpTurn::SendHead() {
  head_sent_ = true;
  call_->exchange->StartStream(200, EventStreamHeaders());
  call_->exchange->Write(StreamBegin(*started_));
}

void HttpTurn::OnDelta(std::string_view text) {
  absl::MutexLock lock(&mu_);
  any_delta_ = true;
  if (!stream_ || finished_) return;  // a whole answer comes with the result
  if (!head_sent_) SendHead();
  std::string out;
  StreamDelta(text, &out);
  call_->exchange->Write(std::move(out));
}

void HttpTurn::OnFinished(const grpc::Status& grpc_status, const v1::TurnResult* result) {
  std::shared_ptr<HttpTurn> keep = std::move(self_);  // may be the last reference
  absl::Status status = FromGrpcStatus(grpc_status);
  bool started;
  {
    absl::MutexLock lock(&mu_);
    started = started_.has_value();
  }
  // An automatic key whose first attempt failed or was cancelled: a retry of it runs
  // afresh (as it would have without the key) rather than failing for good.
  if (absl::IsAborted(status) && key_.automatic && !restarted_ && !started &&
      retry_copy_.has_value()) {
    restarted_ = true;
    key_.key = absl::StrCat("sdk-", RandomToken(12));
    call_->retry_keys->Remember(key_.fingerprint, key_.key, absl::Now());
    self_ = std::move(keep);
    TurnRequest again = *std::move(retry_copy_);
    retry_copy_.reset();
    return Run(std::move(again));
  }
  retry_copy_.reset();
  bool refused = false;
  {
    absl::MutexLock lock(&mu_);
    finished_ = true;
    HttpExchange& ex = *call_->exchange;
    if (status.ok() && result != nullptr) {
      if (!stream_) {
        ReplyJson(ex, 200, WholeBody(*result));
      } else {
        if (!head_sent_) SendHead();
        ex.Write(StreamEnd(*result));
        ex.End();
      }
    } else {
      if (status.ok()) status = absl::InternalError("a turn ended without a result");
      ApiError e = ApiErrorFromStatus(status, names_, absl::Now());
      // Once tokens were consumed (and charged), a retry is a new charge — or, with the
      // same key, the same failure again — unless the answer is complete and only its
      // save was delayed: a retry with the key then replays it.
      if (any_delta_) {
        e.should_retry = !key_.key.empty() &&
                         absl::StrContains(Av(e.message), "retry with the same idempotency_key");
      }
      if (!head_sent_) {
        ReplyError(ex, e);
        refused = !started_.has_value();
      } else {
        ex.SetError(e.code.empty() ? e.type : e.code);
        ex.Write(StreamError(e));
        ex.End();
      }
    }
  }
  if (refused) Refused();
}

}  // namespace aichat::agent
