// The UserService gRPC handlers: validate, call the store, map to protos.
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "common/auth.h"
#include "common/jwt.h"
#include "common/worker_pool.h"
#include "services/user/password.h"
#include "services/user/user_checks.h"
#include "services/user/user_store.h"

namespace aichat::user {

struct UserServiceOptions {
  absl::Duration access_token_ttl = absl::Minutes(15);
  absl::Duration refresh_token_ttl = absl::Hours(24 * 30);
  int32_t default_requests_per_minute = 20;
};

class UserServiceImpl final : public v1::UserService::CallbackService {
 public:
  UserServiceImpl(UserStore* store, const Authenticator* auth, TokenSigner signer,
                  const PasswordHasher* hasher, WorkerPool* pool, UserServiceOptions options);

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

  UserStore* store_;
  const Authenticator* auth_;
  TokenSigner signer_;
  const PasswordHasher* hasher_;
  WorkerPool* pool_;
  UserServiceOptions options_;
};

}  // namespace aichat::user
