// The UsageService gRPC handlers: authorise, validate, call the store, map to protos.
#pragma once

#include <functional>
#include <vector>

#include "absl/time/time.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/auth.h"
#include "common/worker_pool.h"
#include "services/usage/usage_store.h"

namespace prometheus {
class Registry;
class Counter;
template <typename T>
class Family;
}  // namespace prometheus

namespace aichat::usage {

// Where "now" comes from; tests move it to cross rate windows, TTLs and months.
using Clock = std::function<absl::Time()>;

class UsageServiceImpl final : public v1::UsageService::CallbackService {
 public:
  // Metrics are registered on `registry`.
  UsageServiceImpl(UsageStore* store, const Authenticator* auth, WorkerPool* pool,
                   prometheus::Registry& registry, Clock clock);

  grpc::ServerUnaryReactor* RecordUsage(grpc::CallbackServerContext* ctx,
                                        const v1::RecordUsageRequest* req,
                                        v1::RecordUsageResponse* resp) override;
  grpc::ServerUnaryReactor* RecordUsageBatch(grpc::CallbackServerContext* ctx,
                                             const v1::RecordUsageBatchRequest* req,
                                             v1::RecordUsageBatchResponse* resp) override;
  grpc::ServerUnaryReactor* GetUsageSummary(grpc::CallbackServerContext* ctx,
                                            const v1::GetUsageSummaryRequest* req,
                                            v1::GetUsageSummaryResponse* resp) override;
  grpc::ServerUnaryReactor* ListUsage(grpc::CallbackServerContext* ctx,
                                      const v1::ListUsageRequest* req,
                                      v1::ListUsageResponse* resp) override;
  grpc::ServerUnaryReactor* SetBudget(grpc::CallbackServerContext* ctx,
                                      const v1::SetBudgetRequest* req, v1::Budget* resp) override;
  grpc::ServerUnaryReactor* GetBudget(grpc::CallbackServerContext* ctx,
                                      const v1::GetBudgetRequest* req, v1::Budget* resp) override;
  grpc::ServerUnaryReactor* ReserveBudget(grpc::CallbackServerContext* ctx,
                                          const v1::ReserveBudgetRequest* req,
                                          v1::ReserveBudgetResponse* resp) override;
  grpc::ServerUnaryReactor* ReleaseBudget(grpc::CallbackServerContext* ctx,
                                          const v1::ReleaseBudgetRequest* req,
                                          v1::ReleaseBudgetResponse* resp) override;

 private:
  // Records validated events (one store call) and counts them in the metrics.
  absl::StatusOr<std::vector<bool>> Record(const std::vector<UsageEventRecord>& events,
                                           absl::Time now);

  // Counters with bounded labels (no user ids).
  struct Metrics {
    explicit Metrics(prometheus::Registry& registry);
    prometheus::Family<prometheus::Counter>& reservations;
    prometheus::Family<prometheus::Counter>& events;
    prometheus::Family<prometheus::Counter>& releases;
    prometheus::Counter& reserve_allowed;
    prometheus::Counter& reserve_rate_limited;
    prometheus::Counter& reserve_budget_exceeded;
    prometheus::Counter& reserve_replayed;
    prometheus::Counter& events_recorded;
    prometheus::Counter& events_duplicate;
    prometheus::Counter& cost_nanos;
    prometheus::Counter& released;
    prometheus::Counter& release_noop;
  };

  UsageStore* store_;
  const Authenticator* auth_;
  WorkerPool* pool_;
  Metrics metrics_;
  Clock clock_;
};

}  // namespace aichat::usage
