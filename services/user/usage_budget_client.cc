// BudgetClient over gRPC to the usage service; see budget_client.h.
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "common/jwt.h"
#include "common/status.h"
#include "services/user/budget_client.h"

namespace aichat::user {
namespace {

class UsageBudgetClient : public BudgetClient {
 public:
  UsageBudgetClient(std::shared_ptr<grpc::Channel> channel, const TokenSigner* signer)
      : stub_(usage::v1::UsageService::NewStub(channel)), signer_(signer) {}

  void SetMonthlyBudget(int64_t user_id, int64_t limit_nanos, absl::Time deadline,
                        std::function<void(absl::Status)> done) override {
    struct Call {
      grpc::ClientContext ctx;
      usage::v1::SetBudgetRequest req;
      usage::v1::Budget resp;
      std::function<void(absl::Status)> done;
    };
    auto* call = new Call;
    call->done = std::move(done);
    call->req.set_user_id(user_id);
    call->req.set_monthly_limit_nanos(limit_nanos);
    call->ctx.set_deadline(absl::ToChronoTime(deadline));
    call->ctx.AddMetadata("authorization", absl::StrCat("Bearer ", AdminToken()));
    stub_->async()->SetBudget(&call->ctx, &call->req, &call->resp, [call](grpc::Status st) {
      std::unique_ptr<Call> owned(call);
      owned->done(FromGrpcStatus(st));
    });
  }

 private:
  std::string AdminToken() const {
    TokenClaims claims;
    claims.user_id = 0;
    claims.role = Role::kAdmin;
    claims.issued_at = absl::Now();
    claims.expires_at = claims.issued_at + absl::Minutes(2);
    claims.token_id = absl::StrCat("user.default-budget.", RandomToken(9));
    return signer_->Sign(claims);
  }

  std::unique_ptr<usage::v1::UsageService::Stub> stub_;
  const TokenSigner* signer_;
};

}  // namespace

std::unique_ptr<BudgetClient> MakeUsageBudgetClient(std::shared_ptr<grpc::Channel> channel,
                                                    const TokenSigner* signer) {
  return std::make_unique<UsageBudgetClient>(std::move(channel), signer);
}

}  // namespace aichat::user
