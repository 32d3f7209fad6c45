#include "services/user/user_service.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
                                 UserServiceOptions options)
    : store_(store),
      auth_(auth),
      signer_(std::move(signer)),
      hasher_(hasher),
      pool_(pool),
      options_(options) {}

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

grpc::ServerUnaryReactor* UserServiceImpl::Register(grpc::CallbackServerContext* ctx,
                                                    const v1::RegisterRequest* req,
                                                    v1::User* resp) {
  return RunUnary(ctx, *pool_, [this, req, resp]() -> absl::Status {
    auto email = NormalizeEmail(req->email());
    if (!email.ok()) return email.status();
    if (auto st = CheckPassword(req->password()); !st.ok()) return st;
    if (auto st = CheckDisplayName(req->display_name()); !st.ok()) return st;
    auto hash = hasher_->Hash(req->password());
    if (!hash.ok()) return hash.status();
    auto user = store_->CreateUser(*email, *hash, req->display_name(),
                                   options_.default_requests_per_minute);
    if (!user.ok()) return user.status();
    ToProto(*user, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* UserServiceImpl::Login(grpc::CallbackServerContext* ctx,
                                                 const v1::LoginRequest* req,
                                                 v1::LoginResponse* resp) {
  return RunUnary(ctx, *pool_, [this, req, resp]() -> absl::Status {
    if (!req->api_key().empty()) {
      if (!req->email().empty() || !req->password().empty()) {
        return absl::InvalidArgumentError("api_key login takes no email or password");
      }
      if (!absl::StartsWith(req->api_key(), kApiKeyPrefix) || req->api_key().size() > 200) {
        return absl::UnauthenticatedError("invalid API key");
      }
      auto user = store_->UseApiKey(Sha256Hex(req->api_key()));
      if (absl::IsNotFound(user.status())) return absl::UnauthenticatedError("invalid API key");
      if (!user.ok()) return user.status();
      return IssueTokens(*user, /*with_refresh=*/false, resp);
    }
    if (req->email().empty()) return absl::InvalidArgumentError("email is required");
    if (req->password().empty()) return absl::InvalidArgumentError("password is required");
    if (req->password().size() > kMaxPasswordBytes) {
      return absl::UnauthenticatedError(kBadCredentials);
    }
    auto email = NormalizeEmail(req->email());
    if (!email.ok()) {
      hasher_->VerifyDummy(req->password());
      return absl::UnauthenticatedError(kBadCredentials);
    }
    auto user = store_->FindUserByEmail(*email);
    if (absl::IsNotFound(user.status())) {
      hasher_->VerifyDummy(req->password());
      return absl::UnauthenticatedError(kBadCredentials);
    }
    if (!user.ok()) return user.status();
    if (!hasher_->Verify(req->password(), user->password_hash)) {
      return absl::UnauthenticatedError(kBadCredentials);
    }
    return IssueTokens(*user, /*with_refresh=*/true, resp);
  });
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
