#include "services/ai-agent/outbox_publisher.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"

namespace aichat::agent {
namespace {

// A failing entry is logged on its first failure and then every this many
// attempts, so a long usage outage does not flood the log.
constexpr int kLogEvery = 10;
// Below this, a final delivery at Stop could only time out.
constexpr absl::Duration kMinFlush = absl::Milliseconds(100);

}  // namespace

OutboxPublisher::OutboxPublisher(AgentStore* store, UsagePeer* usage,
                                 OutboxPublisherOptions options, prometheus::Registry* registry)
    : store_(store), usage_(usage), options_(options) {
  options_.batch_size = std::clamp(options_.batch_size, 1, 500);
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
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { Run(); });
}

void OutboxPublisher::Publish(int64_t outbox_id, UsageRecord record) {
  absl::MutexLock lock(&mu_);
  // Entries of the table can wait there; only an event not yet saved must stay.
  if (fresh_.size() + retry_.size() >= options_.max_queued && outbox_id > 0) return;
  absl::Time now = absl::Now();
  fresh_.push_back({outbox_id, std::move(record), 0, now + options_.linger, now});
}

void OutboxPublisher::AnswerSaved(SavedAnswer saved) {
  absl::MutexLock lock(&mu_);
  if (saved_.empty()) saved_due_ = absl::Now() + options_.linger;
  saved_.push_back(saved);
}

void OutboxPublisher::Notify() {
  absl::MutexLock lock(&mu_);
  recover_now_ = true;
}

void OutboxPublisher::Stop(absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
  while (deadline - absl::Now() >= kMinFlush) {
    std::vector<Pending> batch;
    {
      absl::MutexLock lock(&mu_);
      batch = TakeDue(absl::InfiniteFuture());
    }
    if (batch.empty()) break;
    absl::MutexLock lock(&deliver_mu_);
    if (Deliver(std::move(batch), deadline, false) == 0) break;
  }
  // What stays undelivered is in the table; the next replica or start recovers it.
  (void)Flush();
}

absl::StatusOr<int> OutboxPublisher::PublishOnce() {
  int delivered = 0;
  std::vector<Pending> held;
  {
    absl::MutexLock lock(&mu_);
    while (!fresh_.empty() || !retry_.empty()) {
      auto batch = TakeDue(absl::InfiniteFuture());
      held.insert(held.end(), std::make_move_iterator(batch.begin()),
                  std::make_move_iterator(batch.end()));
    }
  }
  for (size_t i = 0; i < held.size(); i += options_.batch_size) {
    std::vector<Pending> batch(
        std::make_move_iterator(held.begin() + i),
        std::make_move_iterator(held.begin() + std::min(held.size(), i + options_.batch_size)));
    absl::MutexLock lock(&deliver_mu_);
    delivered += Deliver(std::move(batch), absl::InfiniteFuture(), false);
  }
  auto recovered = Recover(absl::InfiniteFuture());
  absl::Status flushed = Flush();
  if (!recovered.ok()) return recovered.status();
  if (!flushed.ok()) return flushed;
  return delivered + *recovered;
}

std::vector<OutboxPublisher::Pending> OutboxPublisher::TakeDue(absl::Time now) {
  std::vector<Pending> batch;
  const size_t max = options_.batch_size;
  const bool full = fresh_.size() >= max;
  while (!fresh_.empty() && batch.size() < max && (full || fresh_.front().due <= now)) {
    batch.push_back(std::move(fresh_.front()));
    fresh_.pop_front();
  }
  while (!retry_.empty() && batch.size() < max && retry_.begin()->first <= now) {
    batch.push_back(std::move(retry_.begin()->second));
    retry_.erase(retry_.begin());
  }
  return batch;
}

void OutboxPublisher::Run() {
  absl::Time next_recovery = absl::Now();
  for (;;) {
    std::vector<Pending> batch;
    bool recover = false;
    bool settle = false;
    {
      absl::MutexLock lock(&mu_);
      // Sleep until a batch is due (the oldest fresh event lingered, a batch is
      // full, a retry's backoff ended), the answer marks lingered, the recovery
      // scan is due, or Stop.
      absl::Time wake = std::min(next_recovery, saved_due_);
      if (!fresh_.empty()) wake = std::min(wake, fresh_.front().due);
      if (!retry_.empty()) wake = std::min(wake, retry_.begin()->first);
      const size_t max = options_.batch_size;
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || recover_now_ || fresh_.size() >= max || absl::Now() >= wake;
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
      if (stopping_) return;
      const absl::Time now = absl::Now();
      batch = TakeDue(now);
      recover = recover_now_ || now >= next_recovery;
      recover_now_ = false;
      settle = now >= saved_due_;
      if (settle) saved_due_ = absl::InfiniteFuture();
    }
    if (!batch.empty()) {
      absl::MutexLock lock(&deliver_mu_);
      Deliver(std::move(batch), absl::InfiniteFuture(), false);
      settle = true;
    }
    if (recover) {
      (void)Recover(absl::InfiniteFuture());
      next_recovery = absl::Now() + options_.idle_poll;
      settle = true;
    }
    if (settle && !Flush().ok()) {
      // Acks and marks stay held; try again a little later.
      absl::MutexLock lock(&mu_);
      saved_due_ = std::min(saved_due_, absl::Now() + absl::Milliseconds(200));
    }
  }
}

int OutboxPublisher::Deliver(std::vector<Pending> batch, absl::Time deadline, bool from_table) {
  if (batch.empty()) return 0;
  std::vector<UsageRecord> records;
  records.reserve(batch.size());
  for (const auto& p : batch) records.push_back(p.record);
  absl::StatusOr<std::vector<bool>> result;
  absl::Notification done;
  usage_->Record(std::move(records), std::min(deadline, absl::Now() + options_.call_timeout),
                 [&](absl::StatusOr<std::vector<bool>> r) {
                   result = std::move(r);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (absl::IsInvalidArgument(result.status()) && batch.size() > 1) {
    // One bad event refuses the batch: send each alone, so the others go through.
    int n = 0;
    for (auto& p : batch) n += Deliver({std::move(p)}, deadline, from_table);
    return n;
  }
  if (result.ok()) {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < batch.size(); ++i) {
      prometheus::Counter* c = (*result)[i] ? delivered_ : duplicate_;
      if (c != nullptr) c->Increment();
      if (batch[i].outbox_id > 0) acks_.push_back(batch[i].outbox_id);
    }
    return static_cast<int>(batch.size());
  }
  const absl::Status& st = result.status();
  absl::Time now = absl::Now();
  std::vector<Pending> again;
  for (auto& p : batch) {
    if (failed_ != nullptr) failed_->Increment();
    // A claim from the table has counted this attempt already.
    if (!from_table) ++p.attempts;
    if (p.attempts == 1 || p.attempts % kLogEvery == 0) {
      // Never the payload: only the id and how it failed.
      LogWarn("usage event delivery failed",
              {{"event_id", p.record.event_id},
               {"attempts", p.attempts},
               {"code", std::string(absl::StatusCodeToString(st.code()))}});
    }
    if (from_table || (p.outbox_id > 0 && now - p.since > options_.lease / 2)) {
      // The table keeps it: reschedule there (a lease that lapses does the same).
      if (p.outbox_id > 0) {
        (void)store_->RetryOutbox(
            p.outbox_id, Backoff(p.attempts),
            absl::StrCat(absl::StatusCodeToString(st.code()), ": ", st.message()));
      }
      continue;
    }
    p.due = now + Backoff(p.attempts);
    again.push_back(std::move(p));
  }
  if (!again.empty()) {
    absl::MutexLock lock(&mu_);
    for (auto& p : again) {
      absl::Time due = p.due;
      retry_.emplace(due, std::move(p));
    }
  }
  return 0;
}

absl::Status OutboxPublisher::Flush() {
  std::vector<int64_t> acks;
  std::vector<SavedAnswer> saved;
  {
    absl::MutexLock lock(&mu_);
    acks.swap(acks_);
    saved.swap(saved_);
  }
  if (acks.empty() && saved.empty()) return absl::OkStatus();
  absl::Status st = store_->Settle(acks, saved);
  if (!st.ok()) {
    // Delivered but not deleted: the lease lapses, the event is sent again and
    // usage answers "duplicate". Kept to try again meanwhile.
    absl::MutexLock lock(&mu_);
    acks_.insert(acks_.end(), acks.begin(), acks.end());
    if (saved_.empty() && !saved.empty()) saved_due_ = absl::Now() + options_.linger;
    saved_.insert(saved_.end(), saved.begin(), saved.end());
  }
  return st;
}

absl::StatusOr<int> OutboxPublisher::Recover(absl::Time deadline) {
  absl::MutexLock lock(&deliver_mu_);
  auto claimed = store_->ClaimOutbox(options_.batch_size, options_.lease);
  if (!claimed.ok()) {
    RefreshBacklog();
    return claimed.status();
  }
  std::vector<Pending> batch;
  batch.reserve(claimed->size());
  for (auto& e : *claimed) {
    auto record = DecodeUsageRecord(e.payload);
    if (!record.has_value() || record->event_id != e.event_id) {
      if (failed_ != nullptr) failed_->Increment();
      (void)store_->RetryOutbox(e.id, Backoff(e.attempts), "outbox payload does not decode");
      continue;
    }
    batch.push_back({e.id, *std::move(record), e.attempts, absl::Now(), e.created_at});
  }
  int delivered = Deliver(std::move(batch), deadline, true);
  RefreshBacklog();
  return delivered;
}

absl::Duration OutboxPublisher::Backoff(int attempts) {
  absl::Duration d = options_.backoff_initial;
  for (int i = 1; i < attempts && d < options_.backoff_max; ++i) d *= 2;
  d = std::min(d, options_.backoff_max);
  // Half fixed, half random: replicas and entries that failed together do not
  // all come back in the same instant.
  return d * absl::Uniform(rng_, 0.5, 1.0);
}

void OutboxPublisher::RefreshBacklog() {
  if (backlog_ == nullptr) return;
  auto stats = store_->OutboxBacklog();
  if (!stats.ok()) return;
  backlog_->Set(static_cast<double>(stats->backlog));
  oldest_age_->Set(stats->oldest_age_seconds);
}

}  // namespace aichat::agent
