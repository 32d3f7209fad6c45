// Delivers usage events to the ledger (usage.RecordUsageBatch) and keeps the books
// of finished turns. A turn hands its event over in memory the moment its outbox
// row commits; the publisher's thread sends what accumulated within `linger` as
// one batch (one RPC, one transaction in usage), then deletes the delivered rows
// together with the turns' "answer saved" marks in one statement. The outbox
// table is read only to recover events whose own replica could not deliver them
// (their lease lapsed: usage was down, or the replica died). Several replicas
// share one database; leases keep them off each other's rows and usage's
// idempotency on event_id absorbs a repeat, so every event counts exactly once.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/ai-agent/agent_store.h"
#include "services/ai-agent/peers.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
}  // namespace prometheus

namespace aichat::agent {

struct OutboxPublisherOptions {
  int batch_size = 200;                            // events per RecordUsageBatch
  absl::Duration linger = absl::Milliseconds(50);  // gathering a batch
  absl::Duration lease = absl::Seconds(30);        // of a recovered entry
  absl::Duration idle_poll = absl::Seconds(1);     // the recovery scan
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(30);
  absl::Duration call_timeout = absl::Seconds(5);
  size_t max_queued = 100000;  // beyond, entries wait in the table for recovery
};

class OutboxPublisher {
 public:
  // `store` and `usage` must outlive the publisher. `registry` may be null.
  OutboxPublisher(AgentStore* store, UsagePeer* usage, OutboxPublisherOptions options,
                  prometheus::Registry* registry);
  ~OutboxPublisher();  // Stop(ZeroDuration()) if still running
  OutboxPublisher(const OutboxPublisher&) = delete;
  OutboxPublisher& operator=(const OutboxPublisher&) = delete;

  void Start();
  // A turn's usage event, committed as outbox entry `outbox_id` (0: not in the
  // outbox yet, e.g. PostgreSQL is down): delivered within `linger`.
  void Publish(int64_t outbox_id, UsageRecord record);
  // An answer reached the conversation: recorded with the next flush.
  void AnswerSaved(SavedAnswer saved);
  // Wakes the recovery scan now.
  void Notify();
  // Stops the thread, then delivers and settles what is held, within `grace`.
  void Stop(absl::Duration grace);

  // Synchronously: delivers every event held (due or not), then one recovery
  // cycle (claims lapsed entries of the table and delivers them), then settles.
  // Returns how many were delivered (duplicates included); an error only when
  // the database failed.
  absl::StatusOr<int> PublishOnce();

 private:
  struct Pending {
    int64_t outbox_id = 0;
    UsageRecord record;
    int attempts = 0;
    absl::Time due;
    absl::Time since;
  };

  void Run();
  // Sends `batch`; the delivered are acknowledged in acks_, the failed come back
  // with a backoff (or, for entries of the table, are rescheduled there).
  int Deliver(std::vector<Pending> batch, absl::Time deadline, bool from_table)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(deliver_mu_);
  // Due entries, up to a batch: fresh ones that lingered (or fill a batch), then retries.
  std::vector<Pending> TakeDue(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Flush();  // acks_ and saved_ in one statement
  absl::StatusOr<int> Recover(absl::Time deadline);
  absl::Duration Backoff(int attempts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(deliver_mu_);
  void RefreshBacklog();

  AgentStore* store_;
  UsagePeer* usage_;
  OutboxPublisherOptions options_;

  prometheus::Gauge* backlog_ = nullptr;
  prometheus::Gauge* oldest_age_ = nullptr;
  prometheus::Counter* delivered_ = nullptr;
  prometheus::Counter* duplicate_ = nullptr;
  prometheus::Counter* failed_ = nullptr;

  // One delivery at a time (the thread, PublishOnce, the final flush).
  absl::Mutex deliver_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(deliver_mu_);

  absl::Mutex mu_;
  std::deque<Pending> fresh_ ABSL_GUARDED_BY(mu_);                 // in arrival (= due) order
  std::multimap<absl::Time, Pending> retry_ ABSL_GUARDED_BY(mu_);  // by due time
  std::vector<int64_t> acks_ ABSL_GUARDED_BY(mu_);
  std::vector<SavedAnswer> saved_ ABSL_GUARDED_BY(mu_);
  absl::Time saved_due_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool recover_now_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace aichat::agent
