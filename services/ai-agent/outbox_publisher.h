// Delivers the usage outbox to usage.RecordUsage: a background thread claims
// due entries with a lease, calls the usage service outside any transaction,
// deletes what was acknowledged and reschedules failures with backoff. Several
// replicas may publish from one database; leases keep them off each other's
// rows and RecordUsage's idempotency on event_id absorbs a re-publish after a
// crash, so every event is counted exactly once.
#pragma once

#include <grpcpp/channel.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "services/ai-agent/agent_store.h"

namespace prometheus {
class Registry;
class Gauge;
class Counter;
}  // namespace prometheus

namespace aichat::agent {

struct OutboxPublisherOptions {
  int batch_size = 100;
  absl::Duration lease = absl::Seconds(30);
  absl::Duration idle_poll = absl::Seconds(1);
  absl::Duration backoff_initial = absl::Milliseconds(200);
  absl::Duration backoff_max = absl::Seconds(30);
  absl::Duration call_timeout = absl::Seconds(5);
  int max_in_flight = 16;  // concurrent RecordUsage calls within one batch
};

class OutboxPublisher {
 public:
  // `store` must outlive the publisher. `registry` may be null (no metrics).
  OutboxPublisher(AgentStore* store, std::shared_ptr<grpc::Channel> usage_channel,
                  std::string service_token, OutboxPublisherOptions options,
                  prometheus::Registry* registry);
  ~OutboxPublisher();  // Stop(ZeroDuration()) if still running
  OutboxPublisher(const OutboxPublisher&) = delete;
  OutboxPublisher& operator=(const OutboxPublisher&) = delete;

  void Start();
  // Wakes the publisher now (a turn just committed an event).
  void Notify();
  // Stops the thread, then makes one last delivery attempt bounded by `grace`.
  void Stop(absl::Duration grace);

  // One claim + deliver cycle, synchronously. Returns how many entries were
  // delivered (duplicates included); an error only when the database failed.
  absl::StatusOr<int> PublishOnce();

 private:
  enum class Result { kDelivered, kDuplicate, kFailed };

  struct CycleOutcome {
    int claimed = 0;
    int delivered = 0;
  };

  void Run();
  absl::StatusOr<CycleOutcome> Cycle(absl::Time deadline);
  absl::Duration Backoff(int attempts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(cycle_mu_);
  void RefreshBacklog();
  void Count(Result r);

  AgentStore* store_;
  std::unique_ptr<aichat::usage::v1::UsageService::Stub> stub_;
  std::string service_token_;
  OutboxPublisherOptions options_;

  prometheus::Gauge* backlog_ = nullptr;
  prometheus::Gauge* oldest_age_ = nullptr;
  prometheus::Counter* delivered_ = nullptr;
  prometheus::Counter* duplicate_ = nullptr;
  prometheus::Counter* failed_ = nullptr;

  // One cycle at a time per publisher (the thread, PublishOnce, the final flush).
  absl::Mutex cycle_mu_;
  absl::BitGen rng_ ABSL_GUARDED_BY(cycle_mu_);

  absl::Mutex mu_;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace aichat::agent
