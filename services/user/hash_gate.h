// A bound on password hashing in flight. Argon2id costs ~64 MiB and tens of
// milliseconds per call; queued without bound behind the worker pool, a flood of
// Login/Register calls would pile up memory and latency for everyone. A call
// takes a permit before it is queued and gives it back when its hashing is done;
// when none is free it is refused at once (RESOURCE_EXHAUSTED) instead of waiting.
#pragma once

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace aichat::user {

class HashGate {
 public:
  // A held permit; destroying it gives it back. Must not outlive the gate.
  class Permit {
   public:
    explicit Permit(HashGate* gate) : gate_(gate) {}
    ~Permit() { gate_->Release(); }
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;

   private:
    HashGate* gate_;
  };

  explicit HashGate(int max_in_flight) : max_(max_in_flight) {}

  // A permit, or nullptr when `max_in_flight` are held already. Never blocks.
  std::unique_ptr<Permit> TryAcquire();
  int in_flight() const;

 private:
  void Release();

  const int max_;
  mutable absl::Mutex mu_;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace aichat::user
