#include "services/ai-agent/outbox_publisher.h"

#include <grpcpp/client_context.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"

namespace aichat::agent {
namespace {

using aichat::usage::v1::RecordUsageRequest;
using aichat::usage::v1::RecordUsageResponse;

// A failing entry is logged on its first failure and then every this many
// attempts, so a long usage outage does not flood the log.
constexpr int kLogEvery = 10;
// Below this, a final flush at Stop could only time out and push the entries'
// next attempt back; better to leave them for the next replica or start.
constexpr absl::Duration kMinFlush = absl::Milliseconds(100);

// The in-flight window of one cycle. Shared with the callbacks so that it
// outlives the last one even while its Unlock is still returning.
struct Window {
  absl::Mutex mu;
  int in_flight ABSL_GUARDED_BY(mu) = 0;
};

struct Call {
  grpc::ClientContext ctx;
  RecordUsageRequest req;
  RecordUsageResponse resp;
  grpc::Status status;
};

}  // namespace

OutboxPublisher::OutboxPublisher(AgentStore* store, std::shared_ptr<grpc::Channel> usage_channel,
                                 std::string service_token, OutboxPublisherOptions options,
                                 prometheus::Registry* registry)
    : store_(store),
      stub_(aichat::usage::v1::UsageService::NewStub(std::move(usage_channel))),
      service_token_(std::move(service_token)),
      options_(options) {
  options_.batch_size = std::max(1, options_.batch_size);
  options_.max_in_flight = std::max(1, options_.max_in_flight);
  if (registry != nullptr) {
    backlog_ = &prometheus::BuildGauge()
                    .Name("aichat_outbox_backlog")
                    .Help("Usage events waiting in the outbox")
                    .Register(*registry)
                    .Add({});
    oldest_age_ = &prometheus::BuildGauge()
                       .Name("aichat_outbox_oldest_age_seconds")
                       .Help("Age of the oldest undelivered usage event")
                       .Register(*registry)
                       .Add({});
    auto& published = prometheus::BuildCounter()
                          .Name("aichat_outbox_published_total")
                          .Help("Outbox delivery attempts by result")
                          .Register(*registry);
    delivered_ = &published.Add({{"result", "delivered"}});
    duplicate_ = &published.Add({{"result", "duplicate"}});
    failed_ = &published.Add({{"result", "failed"}});
  }
}

OutboxPublisher::~OutboxPublisher() { Stop(absl::ZeroDuration()); }

void OutboxPublisher::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) {
    return;
  }
  thread_ = std::thread([this] { Run(); });
}

void OutboxPublisher::Notify() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void OutboxPublisher::Stop(absl::Duration grace) {
  absl::Time deadline = absl::Now() + grace;
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) {
    thread.join();
  }
  if (deadline - absl::Now() >= kMinFlush) {
    (void)Cycle(deadline);
  }
}

absl::StatusOr<int> OutboxPublisher::PublishOnce() {
  auto outcome = Cycle(absl::InfiniteFuture());
  if (!outcome.ok()) {
    return outcome.status();
  }
  return outcome->delivered;
}

void OutboxPublisher::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        return;
      }
      wake_ = false;
    }
    auto outcome = Cycle(absl::InfiniteFuture());
    // A full batch means more is probably due: go again at once.
    if (outcome.ok() && outcome->claimed >= options_.batch_size) {
      continue;
    }
    absl::MutexLock lock(&mu_);
    auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return wake_ || stopping_; };
    mu_.AwaitWithTimeout(absl::Condition(&woken), options_.idle_poll);
  }
}

absl::StatusOr<OutboxPublisher::CycleOutcome> OutboxPublisher::Cycle(absl::Time deadline) {
  absl::MutexLock cycle_lock(&cycle_mu_);
  auto claimed = store_->ClaimOutbox(options_.batch_size, options_.lease);
  if (!claimed.ok()) {
    RefreshBacklog();
    return claimed.status();
  }
  const std::vector<OutboxEntry>& entries = *claimed;
  CycleOutcome outcome;
  outcome.claimed = static_cast<int>(entries.size());

  // Up to max_in_flight calls at once on the callback API; this thread only
  // waits for the window and for the last answer.
  std::vector<std::unique_ptr<Call>> calls(entries.size());
  std::vector<bool> parsed(entries.size(), false);
  auto window = std::make_shared<Window>();
  for (size_t i = 0; i < entries.size(); ++i) {
    auto call = std::make_unique<Call>();
    if (!call->req.mutable_event()->ParseFromString(entries[i].payload) ||
        call->req.event().event_id() != entries[i].event_id) {
      call->status = grpc::Status(grpc::StatusCode::INTERNAL, "outbox payload does not decode");
      calls[i] = std::move(call);
      continue;
    }
    parsed[i] = true;
    call->ctx.AddMetadata("authorization", absl::StrCat("Bearer ", service_token_));
    {
      absl::MutexLock lock(&window->mu);
      const int max_in_flight = options_.max_in_flight;
      auto has_room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(window->mu) {
        return window->in_flight < max_in_flight;
      };
      window->mu.Await(absl::Condition(&has_room));
      ++window->in_flight;
    }
    // Each call gets its own deadline from when it is sent, not from the start
    // of the batch (later calls would otherwise expire before being sent).
    call->ctx.set_deadline(absl::ToChronoTime(
        std::max(std::min(deadline, absl::Now() + options_.call_timeout),
                 absl::Now() + absl::Milliseconds(100))));
    Call* raw = call.get();
    calls[i] = std::move(call);
    stub_->async()->RecordUsage(&raw->ctx, &raw->req, &raw->resp,
                                [raw, window](grpc::Status status) {
                                  absl::MutexLock lock(&window->mu);
                                  raw->status = std::move(status);
                                  --window->in_flight;
                                });
  }
  {
    absl::MutexLock lock(&window->mu);
    auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(window->mu) {
      return window->in_flight == 0;
    };
    window->mu.Await(absl::Condition(&all_done));
  }

  std::vector<int64_t> done_ids;
  absl::Status first_error;
  for (size_t i = 0; i < entries.size(); ++i) {
    const OutboxEntry& e = entries[i];
    const Call& call = *calls[i];
    if (parsed[i] && call.status.ok()) {
      Count(call.resp.recorded() ? Result::kDelivered : Result::kDuplicate);
      done_ids.push_back(e.id);
      continue;
    }
    Count(Result::kFailed);
    if (e.attempts == 1 || e.attempts % kLogEvery == 0) {
      // Never the payload: only the id and how it failed.
      LogWarn("outbox delivery failed", {{"event_id", e.event_id},
                                         {"attempts", e.attempts},
                                         {"code", GrpcCodeName(call.status.error_code())}});
    }
    absl::Status st = store_->RetryOutbox(
        e.id, Backoff(e.attempts),
        absl::StrCat(GrpcCodeName(call.status.error_code()), ": ", call.status.error_message()));
    // When even the reschedule fails the lease still runs out, so the entry
    // comes back on its own; the error is reported to the caller.
    if (!st.ok() && !absl::IsNotFound(st) && first_error.ok()) {
      first_error = st;
    }
  }
  if (absl::Status st = store_->AckOutbox(done_ids); !st.ok() && first_error.ok()) {
    // Delivered but not deleted: the lease expires, the entries are sent again
    // and the usage service answers "duplicate". Nothing is counted twice.
    first_error = st;
  }
  outcome.delivered = static_cast<int>(done_ids.size());
  RefreshBacklog();
  if (!first_error.ok()) {
    return first_error;
  }
  return outcome;
}

absl::Duration OutboxPublisher::Backoff(int attempts) {
  absl::Duration d = options_.backoff_initial;
  for (int i = 1; i < attempts && d < options_.backoff_max; ++i) {
    d *= 2;
  }
  d = std::min(d, options_.backoff_max);
  // Half fixed, half random: replicas and entries that failed together do not
  // all come back in the same instant.
  double jitter = absl::Uniform(rng_, 0.5, 1.0);
  return d * jitter;
}

void OutboxPublisher::RefreshBacklog() {
  if (backlog_ == nullptr) {
    return;
  }
  auto stats = store_->OutboxBacklog();
  if (!stats.ok()) {
    return;
  }
  backlog_->Set(static_cast<double>(stats->backlog));
  oldest_age_->Set(stats->oldest_age_seconds);
}

void OutboxPublisher::Count(Result r) {
  prometheus::Counter* c = r == Result::kDelivered   ? delivered_
                           : r == Result::kDuplicate ? duplicate_
                                                     : failed_;
  if (c != nullptr) {
    c->Increment();
  }
}

}  // namespace aichat::agent
