// The one thing `user` asks of the usage service: a new account's default
// monthly budget. An interface in domain types so the service never touches a
// generated stub and tests can count calls; usage_budget_client.cc is the gRPC one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace grpc {
class Channel;
}

namespace aichat {
class TokenSigner;
}

namespace aichat::user {

class BudgetClient {
 public:
  virtual ~BudgetClient() = default;
  // Sets `user_id`'s monthly spending limit (nanos of USD). Never blocks: `done`
  // runs exactly once, on a gRPC thread, with the peer's status.
  virtual void SetMonthlyBudget(int64_t user_id, int64_t limit_nanos, absl::Time deadline,
                                std::function<void(absl::Status)> done) = 0;
};

// Calls UsageService.SetBudget over `channel`. SetBudget is an admin call, and
// `user` is where identities come from: each call carries an admin token of its
// own (subject 0, two minutes) signed with `signer`, which must outlive the client.
std::unique_ptr<BudgetClient> MakeUsageBudgetClient(std::shared_ptr<grpc::Channel> channel,
                                                    const TokenSigner* signer);

}  // namespace aichat::user
