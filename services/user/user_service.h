// The UserService gRPC handlers: validate, call the store, map to protos.
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "common/auth.h"
#include "common/jwt.h"
#include "common/worker_pool.h"
#include "services/user/budget_client.h"
#include "services/user/hash_gate.h"
#include "services/user/login_throttle.h"
#include "services/user/password.h"
#include "services/user/user_checks.h"
#include "services/user/user_store.h"

namespace aichat::user {

struct UserServiceOptions {
  absl::Duration access_token_ttl = absl::Minutes(15);
  absl::Duration refresh_token_ttl = absl::Hours(24 * 30);
  int32_t default_requests_per_minute = 20;
  // false: Register is refused (PERMISSION_DENIED) unless an admin calls it.
  bool registration_open = true;
  // A new account's monthly budget, set in the usage service before the account
  // is created (nanos of USD); 0 leaves it unlimited. Needs a BudgetClient.
  int64_t default_monthly_budget_nanos = 0;
  absl::Duration budget_call_timeout = absl::Seconds(5);
};

// Abuse guards and peers; each may be null (no bound, no throttle, no budget).
struct UserServiceGuards {
  HashGate* hash_gate = nullptr;
  LoginThrottle* throttle = nullptr;
  BudgetClient* budgets = nullptr;
};

class UserServiceImpl final : public v1::UserService::CallbackService {
 public:
  UserServiceImpl(UserStore* store, const Authenticator* auth, TokenSigner signer,
                  const PasswordHasher* hasher, WorkerPool* pool, UserServiceOptions options,
                  UserServiceGuards guards = {});

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const v1::RegisterRequest* req, v1::User* resp) override;
  grpc::ServerUnaryReactor* Login(grpc::CallbackServerContext* ctx, const v1::LoginRequest* req,
                                  v1::LoginResponse* resp) override;
  grpc::ServerUnaryReactor* Refresh(grpc::CallbackServerContext* ctx, const v1::RefreshRequest* req,
                                    v1::LoginResponse* resp) override;
  grpc::ServerUnaryReactor* Logout(grpc::CallbackServerContext* ctx, const v1::LogoutRequest* req,
                                   v1::LogoutResponse* resp) override;
  grpc::ServerUnaryReactor* CreateApiKey(grpc::CallbackServerContext* ctx,
                                         const v1::CreateApiKeyRequest* req,
                                         v1::CreateApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* ListApiKeys(grpc::CallbackServerContext* ctx,
                                        const v1::ListApiKeysRequest* req,
                                        v1::ListApiKeysResponse* resp) override;
  grpc::ServerUnaryReactor* RevokeApiKey(grpc::CallbackServerContext* ctx,
                                         const v1::RevokeApiKeyRequest* req,
                                         v1::RevokeApiKeyResponse* resp) override;
  grpc::ServerUnaryReactor* GetMe(grpc::CallbackServerContext* ctx, const v1::GetMeRequest* req,
                                  v1::User* resp) override;
  grpc::ServerUnaryReactor* ListUsers(grpc::CallbackServerContext* ctx,
                                      const v1::ListUsersRequest* req,
                                      v1::ListUsersResponse* resp) override;
  grpc::ServerUnaryReactor* SetUserRole(grpc::CallbackServerContext* ctx,
                                        const v1::SetUserRoleRequest* req, v1::User* resp) override;
  grpc::ServerUnaryReactor* SetUserRateLimit(grpc::CallbackServerContext* ctx,
                                             const v1::SetUserRateLimitRequest* req,
                                             v1::User* resp) override;

 private:
  absl::Status IssueTokens(const UserRecord& user, bool with_refresh, v1::LoginResponse* resp);
  // RESOURCE_EXHAUSTED when all hashing permits are taken; else a permit (null
  // when hashing is not bounded).
  absl::StatusOr<std::shared_ptr<HashGate::Permit>> TakeHashPermit();
  absl::Status PasswordLogin(const v1::LoginRequest& req, const std::string& account,
                             const std::string& address, v1::LoginResponse* resp);
  absl::Status ApiKeyLogin(const v1::LoginRequest& req, const std::string& address,
                           v1::LoginResponse* resp);
  // Register's last step: the row, once the id (and budget) are settled.
  absl::Status CreateAccount(const v1::RegisterRequest& req, const std::string& email,
                             const std::string& hash, int64_t id, v1::User* resp);

  UserStore* store_;
  const Authenticator* auth_;
  TokenSigner signer_;
  const PasswordHasher* hasher_;
  WorkerPool* pool_;
  UserServiceOptions options_;
  UserServiceGuards guards_;
};

}  // namespace aichat::user
