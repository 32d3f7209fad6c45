#include "common/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace aichat {

absl::StatusOr<Caller> Authenticator::Authenticate(const grpc::ServerContextBase& ctx) const {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError("missing authorization metadata (Bearer access token)");
  }
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (value.size() <= kBearer.size() || !absl::StartsWithIgnoreCase(value, kBearer)) {
    return absl::UnauthenticatedError("authorization metadata must be `Bearer <token>`");
  }
  auto token = value.substr(kBearer.size());
  auto claims = verifier_.Verify(std::string_view(token.data(), token.size()));
  if (!claims.ok()) return claims.status();

  Caller caller;
  caller.user_id = claims->user_id;
  caller.role = claims->role;
  caller.requests_per_minute = claims->requests_per_minute;
  auto acting = md.find(kActingUserHeader);
  if (acting != md.end()) {
    if (caller.role != Role::kService) {
      return absl::PermissionDeniedError(
          absl::StrCat(kActingUserHeader, " is only accepted from service callers"));
    }
    int64_t uid = 0;
    if (!absl::SimpleAtoi(absl::string_view(acting->second.data(), acting->second.size()), &uid) ||
        uid <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(kActingUserHeader, " must be a user id"));
    }
    caller.user_id = uid;
    caller.acting_for_user = true;
  }
  CallAnnotations::Get().SetUser(&ctx, caller.user_id);
  return caller;
}

absl::Status RequireAdmin(const Caller& caller) {
  if (!caller.is_admin()) {
    return absl::PermissionDeniedError("this call needs the admin role");
  }
  return absl::OkStatus();
}

absl::Status RequireService(const Caller& caller) {
  if (!caller.is_service()) {
    return absl::PermissionDeniedError("this call is for aichat services only");
  }
  return absl::OkStatus();
}

CallAnnotations& CallAnnotations::Get() {
  static auto* const annotations = new CallAnnotations;
  return *annotations;
}

void CallAnnotations::SetUser(const void* call, int64_t user_id) {
  absl::MutexLock lock(&mu_);
  users_[call] = user_id;
}

int64_t CallAnnotations::TakeUser(const void* call) {
  absl::MutexLock lock(&mu_);
  auto it = users_.find(call);
  if (it == users_.end()) return 0;
  int64_t v = it->second;
  users_.erase(it);
  return v;
}

}  // namespace aichat
