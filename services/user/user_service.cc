#include "services/user/user_service.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/page_token.h"
#include "common/proto_time.h"
#include "common/unary.h"
#include "services/user/user_checks.h"

namespace aichat::user {
namespace {

constexpr char kApiKeyPrefix[] = "aik_";
constexpr char kRefreshPrefix[] = "rt_";
// The same text for unknown email and wrong password: no account enumeration.
constexpr char kBadCredentials[] = "invalid email or password";

v1::Role ToProtoRole(Role r) {
  switch (r) {
    case Role::kAdmin:
      return v1::ROLE_ADMIN;
    case Role::kService:
      return v1::ROLE_SERVICE;
    case Role::kUser:
      break;
  }
  return v1::ROLE_USER;
}

void ToProto(const UserRecord& u, v1::User* out) {
  out->set_id(u.id);
  out->set_email(u.email);
  out->set_display_name(u.display_name);
  out->set_role(ToProtoRole(u.role));
  out->set_requests_per_minute(u.requests_per_minute);
  aichat::ToProto(u.created_at, out->mutable_created_at());
  aichat::ToProto(u.updated_at, out->mutable_updated_at());
}

void ToProto(const ApiKeyRecord& k, v1::ApiKey* out) {
  out->set_id(k.id);
  out->set_name(k.name);
  out->set_prefix(k.prefix);
  aichat::ToProto(k.created_at, out->mutable_created_at());
  if (k.last_used_at) aichat::ToProto(*k.last_used_at, out->mutable_last_used_at());
  if (k.revoked_at) aichat::ToProto(*k.revoked_at, out->mutable_revoked_at());
}

}  // namespace

UserServiceImpl::UserServiceImpl(UserStore* store, const Authenticator* auth, TokenSigner signer,
                                 const PasswordHasher* hasher, WorkerPool* pool,
                                 UserServiceOptions options, UserServiceGuards guards)
    : store_(store),
      auth_(auth),
      signer_(std::move(signer)),
      hasher_(hasher),
      pool_(pool),
      options_(options),
      guards_(guards) {}

absl::Status UserServiceImpl::IssueTokens(const UserRecord& user, bool with_refresh,
                                          v1::LoginResponse* resp) {
  absl::Time now = absl::Now();
  TokenClaims claims;
  claims.user_id = user.id;
  claims.role = user.role;
  claims.requests_per_minute = user.requests_per_minute;
  claims.issued_at = now;
  claims.expires_at = now + options_.access_token_ttl;
  resp->set_access_token(signer_.Sign(claims));
  aichat::ToProto(claims.expires_at, resp->mutable_expires_at());
  if (with_refresh) {
    std::string refresh = absl::StrCat(kRefreshPrefix, RandomToken(32));
    absl::Time refresh_expires = now + options_.refresh_token_ttl;
    if (auto st = store_->InsertRefreshToken(user.id, Sha256Hex(refresh), refresh_expires);
        !st.ok()) {
      return st;
    }
    resp->set_refresh_token(refresh);
    aichat::ToProto(refresh_expires, resp->mutable_refresh_expires_at());
  }
  ToProto(user, resp->mutable_user());
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<HashGate::Permit>> UserServiceImpl::TakeHashPermit() {
  if (guards_.hash_gate == nullptr) {
    return nullptr;
  }
  std::unique_ptr<HashGate::Permit> permit = guards_.hash_gate->TryAcquire();
  if (permit == nullptr) {
    return absl::ResourceExhaustedError(
        "too many logins and registrations in progress; try again in a moment");
  }
  return std::shared_ptr<HashGate::Permit>(std::move(permit));
}

// Checks run on the gRPC thread (they are cheap), so that a bad request or a
// refusal never takes a hashing permit or a place in the worker queue.
grpc::ServerUnaryReactor* UserServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                    const v1::RegisterRequest* req,
                                                    v1::User* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto email = NormalizeEmail(req->email());
  absl::Status checked = email.status();
  if (checked.ok()) checked = CheckPassword(req->password());
  if (checked.ok()) checked = CheckDisplayName(req->display_name());
  if (checked.ok() && !options_.registration_open) {
    // Closed: only an admin creates accounts.
    auto caller = auth_->Authenticate(*ctx);
    checked = caller.ok() && caller->is_admin()
                  ? absl::OkStatus()
                  : absl::PermissionDeniedError(
                        "self-registration is closed; ask an administrator for an account");
  }
  auto permit = checked.ok() ? TakeHashPermit() : checked;
  if (!permit.ok()) {
    reactor->Finish(ToGrpcStatus(permit.status()));
    return reactor;
  }
  absl::Time deadline =
      std::min(absl::FromChrono(ctx->deadline()), absl::Now() + options_.budget_call_timeout);
  pool_->Submit([this, ctx, reactor, req, resp, email = *email, permit = *std::move(permit),
                 deadline]() mutable {
    if (ctx->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
      return;
    }
    auto hash = hasher_->Hash(req->password());
    permit.reset();
    if (!hash.ok()) {
      reactor->Finish(ToGrpcStatus(hash.status()));
      return;
    }
    if (options_.default_monthly_budget_nanos <= 0 || guards_.budgets == nullptr) {
      reactor->Finish(ToGrpcStatus(CreateAccount(*req, email, *hash, 0, resp)));
      return;
    }
    // The budget first, under an id taken ahead: an account never exists
    // without its budget. If the row then fails (a duplicate email), the budget
    // of an id nobody will ever have is harmless.
    auto id = store_->NextUserId();
    if (!id.ok()) {
      reactor->Finish(ToGrpcStatus(id.status()));
      return;
    }
    guards_.budgets->SetMonthlyBudget(
        *id, options_.default_monthly_budget_nanos, deadline,
        [this, reactor, req, resp, email, hash = *hash, id = *id](absl::Status st) {
          if (!st.ok()) {
            LogWarn("default budget not set; registration refused",
                    {{"code", absl::StatusCodeToString(st.code())}});
            reactor->Finish(ToGrpcStatus(absl::UnavailableError(
                "cannot set the new account's budget in the usage service; try again")));
            return;
          }
          pool_->Submit([this, reactor, req, resp, email, hash, id] {
            reactor->Finish(ToGrpcStatus(CreateAccount(*req, email, hash, id, resp)));
          });
        });
  });
  return reactor;
}

absl::Status UserServiceImpl::CreateAccount(const v1::RegisterRequest& req,
                                            const std::string& email, const std::string& hash,
                                            int64_t id, v1::User* resp) {
  auto user =
      store_->CreateUser(email, hash, req.display_name(), options_.default_requests_per_minute, id);
  if (!user.ok()) return user.status();
  ToProto(*user, resp);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* UserServiceImpl::Login(grpc::CallbackServerContext* ctx,
                                                 const v1::LoginRequest* req,
                                                 v1::LoginResponse* resp) {
  std::string address = ClientAddress(ctx->peer());
  if (!req->api_key().empty()) {
    return RunUnary(ctx, *pool_, [this, req, resp, address]() -> absl::Status {
      return ApiKeyLogin(*req, address, resp);
    });
  }
  auto* reactor = ctx->DefaultReactor();
  absl::Status checked = absl::OkStatus();
  if (req->email().empty()) checked = absl::InvalidArgumentError("email is required");
  if (checked.ok() && req->password().empty()) {
    checked = absl::InvalidArgumentError("password is required");
  }
  // The throttle's account key: the normalised email, or nothing for one that
  // cannot be an account (then the address alone counts the failure).
  auto email = NormalizeEmail(req->email());
  std::string account = email.ok() ? *email : "";
  if (checked.ok() && guards_.throttle != nullptr) {
    if (absl::Duration wait = guards_.throttle->Wait(account, address);
        wait > absl::ZeroDuration()) {
      checked = absl::ResourceExhaustedError(
          absl::StrCat("too many failed logins; try again in ",
                       absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1))), "s"));
    }
  }
  auto permit = checked.ok() ? TakeHashPermit() : checked;
  if (!permit.ok()) {
    reactor->Finish(ToGrpcStatus(permit.status()));
    return reactor;
  }
  pool_->Submit(
      [this, ctx, reactor, req, resp, account, address, permit = *std::move(permit)]() mutable {
        if (ctx->IsCancelled()) {
          reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
          return;
        }
        absl::Status st = PasswordLogin(*req, account, address, resp);
        permit.reset();
        reactor->Finish(ToGrpcStatus(st));
      });
  return reactor;
}

absl::Status UserServiceImpl::ApiKeyLogin(const v1::LoginRequest& req, const std::string& address,
                                          v1::LoginResponse* resp) {
  if (!req.email().empty() || !req.password().empty()) {
    return absl::InvalidArgumentError("api_key login takes no email or password");
  }
  if (guards_.throttle != nullptr) {
    if (absl::Duration wait = guards_.throttle->Wait("", address); wait > absl::ZeroDuration()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many failed logins; try again in ",
                       absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1))), "s"));
    }
  }
  auto user = absl::StartsWith(req.api_key(), kApiKeyPrefix) && req.api_key().size() <= 200
                  ? store_->UseApiKey(Sha256Hex(req.api_key()))
                  : absl::NotFoundError("not an API key");
  if (absl::IsNotFound(user.status())) {
    if (guards_.throttle != nullptr) guards_.throttle->RecordFailure("", address);
    return absl::UnauthenticatedError("invalid API key");
  }
  if (!user.ok()) return user.status();
  return IssueTokens(*user, /*with_refresh=*/false, resp);
}

absl::Status UserServiceImpl::PasswordLogin(const v1::LoginRequest& req, const std::string& account,
                                            const std::string& address, v1::LoginResponse* resp) {
  auto failed = [&] {
    if (guards_.throttle != nullptr) guards_.throttle->RecordFailure(account, address);
    return absl::UnauthenticatedError(kBadCredentials);
  };
  if (req.password().size() > kMaxPasswordBytes) return failed();
  if (account.empty()) {
    hasher_->VerifyDummy(req.password());
    return failed();
  }
  auto user = store_->FindUserByEmail(account);
  if (absl::IsNotFound(user.status())) {
    hasher_->VerifyDummy(req.password());
    return failed();
  }
  if (!user.ok()) return user.status();
  if (!hasher_->Verify(req.password(), user->password_hash)) return failed();
  if (guards_.throttle != nullptr) guards_.throttle->RecordSuccess(account);
  return IssueTokens(*user, /*with_refresh=*/true, resp);
}

grpc::ServerUnaryReactor* UserServiceImpl::Refresh(grpc::CallbackServerContext* ctx,
                                                   const v1::RefreshRequest* req,
                                                   v1::LoginResponse* resp) {
  return RunUnary(ctx, *pool_, [this, req, resp]() -> absl::Status {
    if (req->refresh_token().empty()) {
      return absl::InvalidArgumentError("refresh_token is required");
    }
    if (!absl::StartsWith(req->refresh_token(), kRefreshPrefix) ||
        req->refresh_token().size() > 200) {
      return absl::UnauthenticatedError("invalid refresh token");
    }
    std::string fresh = absl::StrCat(kRefreshPrefix, RandomToken(32));
    absl::Time now = absl::Now();
    absl::Time fresh_expires = now + options_.refresh_token_ttl;
    auto user_id = store_->RotateRefreshToken(Sha256Hex(req->refresh_token()), Sha256Hex(fresh),
                                              fresh_expires);
    if (absl::IsNotFound(user_id.status()) || absl::IsPermissionDenied(user_id.status())) {
      return absl::UnauthenticatedError("invalid refresh token");
    }
    if (!user_id.ok()) return user_id.status();
    auto user = store_->GetUser(*user_id);
    if (!user.ok()) return user.status();
    if (auto st = IssueTokens(*user, /*with_refresh=*/false, resp); !st.ok()) return st;
    resp->set_refresh_token(fresh);
    aichat::ToProto(fresh_expires, resp->mutable_refresh_expires_at());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::Logout(grpc::CallbackServerContext* ctx,
                                                  const v1::LogoutRequest* req,
                                                  v1::LogoutResponse* /*resp*/) {
  return RunUnary(ctx, *pool_, [this, req]() -> absl::Status {
    if (req->refresh_token().empty()) {
      return absl::InvalidArgumentError("refresh_token is required");
    }
    if (req->refresh_token().size() > 200) return absl::OkStatus();
    return store_->RevokeRefreshToken(Sha256Hex(req->refresh_token()));
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::CreateApiKey(grpc::CallbackServerContext* ctx,
                                                        const v1::CreateApiKeyRequest* req,
                                                        v1::CreateApiKeyResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = CheckKeyName(req->name()); !st.ok()) return st;
    std::string key = absl::StrCat(kApiKeyPrefix, RandomToken(32));
    auto rec =
        store_->CreateApiKey(caller->user_id, req->name(), key.substr(0, 12), Sha256Hex(key));
    if (!rec.ok()) return rec.status();
    resp->set_key(key);
    ToProto(*rec, resp->mutable_api_key());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListApiKeys(grpc::CallbackServerContext* ctx,
                                                       const v1::ListApiKeysRequest* /*req*/,
                                                       v1::ListApiKeysResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    auto keys = store_->ListApiKeys(caller->user_id);
    if (!keys.ok()) return keys.status();
    for (const auto& k : *keys) ToProto(k, resp->add_api_keys());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::RevokeApiKey(grpc::CallbackServerContext* ctx,
                                                        const v1::RevokeApiKeyRequest* req,
                                                        v1::RevokeApiKeyResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (req->id() <= 0) return absl::InvalidArgumentError("id must be positive");
    auto rec = store_->RevokeApiKey(caller->user_id, req->id());
    if (!rec.ok()) return rec.status();
    ToProto(*rec, resp->mutable_api_key());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::GetMe(grpc::CallbackServerContext* ctx,
                                                 const v1::GetMeRequest* /*req*/, v1::User* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    auto user = store_->GetUser(caller->user_id);
    if (absl::IsNotFound(user.status())) {
      // A valid token for a deleted account (or a service token without a user).
      return absl::NotFoundError("no account for this token");
    }
    if (!user.ok()) return user.status();
    ToProto(*user, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListUsers(grpc::CallbackServerContext* ctx,
                                                     const v1::ListUsersRequest* req,
                                                     v1::ListUsersResponse* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = RequireAdmin(*caller); !st.ok()) return st;
    auto size = NormalizePageSize(req->page_size());
    if (!size.ok()) return size.status();
    int64_t after = 0;
    if (!req->page_token().empty()) {
      auto parts = DecodePageToken(req->page_token(), 1);
      if (!parts.ok()) return parts.status();
      if (!absl::SimpleAtoi((*parts)[0], &after)) {
        return absl::InvalidArgumentError("page_token is invalid");
      }
    }
    auto users = store_->ListUsers(after, *size + 1);
    if (!users.ok()) return users.status();
    bool more = static_cast<int>(users->size()) > *size;
    if (more) users->pop_back();
    for (const auto& u : *users) ToProto(u, resp->add_users());
    if (more && !users->empty()) {
      resp->set_next_page_token(EncodePageToken({absl::StrCat(users->back().id)}));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::SetUserRole(grpc::CallbackServerContext* ctx,
                                                       const v1::SetUserRoleRequest* req,
                                                       v1::User* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = RequireAdmin(*caller); !st.ok()) return st;
    if (req->user_id() <= 0) return absl::InvalidArgumentError("user_id must be positive");
    Role role;
    switch (req->role()) {
      case v1::ROLE_USER:
        role = Role::kUser;
        break;
      case v1::ROLE_ADMIN:
        role = Role::kAdmin;
        break;
      default:
        // Service identities are minted as tokens, never granted to accounts.
        return absl::InvalidArgumentError("role must be ROLE_USER or ROLE_ADMIN");
    }
    auto user = store_->SetRole(req->user_id(), role);
    if (!user.ok()) return user.status();
    ToProto(*user, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::SetUserRateLimit(grpc::CallbackServerContext* ctx,
                                                            const v1::SetUserRateLimitRequest* req,
                                                            v1::User* resp) {
  return RunUnary(ctx, *pool_, [this, ctx, req, resp]() -> absl::Status {
    auto caller = auth_->Authenticate(*ctx);
    if (!caller.ok()) return caller.status();
    if (auto st = RequireAdmin(*caller); !st.ok()) return st;
    if (req->user_id() <= 0) return absl::InvalidArgumentError("user_id must be positive");
    if (req->requests_per_minute() < 1 || req->requests_per_minute() > 100000) {
      return absl::InvalidArgumentError("requests_per_minute must be between 1 and 100000");
    }
    auto user = store_->SetRateLimit(req->user_id(), req->requests_per_minute());
    if (!user.ok()) return user.status();
    ToProto(*user, resp);
    return absl::OkStatus();
  });
}

}  // namespace aichat::user
