// Keeps this replica's lease alive and finishes the turns of replicas that died:
// a turn still running when its owner's lease lapsed becomes FAILED and is charged
// what it is known to have sent (its context, flagged estimated); an answer that
// was complete but not yet in the conversation is written there from the prompt
// row. Runs on the worker pool's timers; every step is one store or peer call.
#pragma once

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/worker_pool.h"
#include "services/ai-agent/turn.h"

namespace aichat::agent {

struct JanitorOptions {
  absl::Duration lease = absl::Seconds(30);  // how long a renewal holds
  absl::Duration renew_every = absl::Seconds(5);
  absl::Duration sweep_every = absl::Seconds(15);
  // Turns with no owner, and this replica's own unfinished turns, count as
  // abandoned this long after they started: longer than a turn can run and then
  // retry its save (main.cc: total_timeout + save_for + 1 min).
  absl::Duration unowned_after = absl::Minutes(8);
  // This replica's own answers still not in the conversation this long after
  // their turn ended are written again from the prompt row.
  absl::Duration own_pending_after = absl::Minutes(2);
};

class Janitor {
 public:
  // `deps` (store, workers, conversation, publish, answer_saved, replica) must
  // outlive the janitor.
  Janitor(TurnDeps* deps, JanitorOptions options) : deps_(deps), options_(options) {}

  // Takes the lease (blocking), then renews and sweeps on timers.
  absl::Status Start();
  // Stops the timers and gives the lease up, so other replicas take over at once
  // whatever this one leaves unfinished.
  void Stop();

  // One sweep, synchronously (tests): returns how many turns were taken over.
  absl::StatusOr<int> SweepOnce();

 private:
  void Renew();
  void Sweep();
  void FinishAbandoned(const PromptRecord& p);
  void SaveAbandonedAnswer(const PromptRecord& p);

  TurnDeps* deps_;
  JanitorOptions options_;
  absl::Mutex mu_;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time renewal_failed_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace aichat::agent
