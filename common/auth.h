// Who is calling: the access token from `authorization: Bearer` metadata, and the
// service rule — `x-aichat-user-id` names the acting user only when the token's
// role is `service`; from any other token it is refused.
#pragma once

#include <grpcpp/server_context.h>

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/jwt.h"

namespace aichat {

struct Caller {
  int64_t user_id = 0;  // the acting user (for a service acting for a user: that user)
  Role role = Role::kUser;
  int32_t requests_per_minute = 0;
  bool acting_for_user = false;  // a service call that named a user

  bool is_admin() const { return role == Role::kAdmin; }
  bool is_service() const { return role == Role::kService; }
};

class Authenticator {
 public:
  explicit Authenticator(TokenVerifier verifier) : verifier_(std::move(verifier)) {}

  // UNAUTHENTICATED for a missing/malformed/expired/forged token; PERMISSION_DENIED
  // for `x-aichat-user-id` from a non-service token. Notes the user id for the
  // request log line.
  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& ctx) const;

  const TokenVerifier& verifier() const { return verifier_; }

 private:
  TokenVerifier verifier_;
};

absl::Status RequireAdmin(const Caller& caller);
absl::Status RequireService(const Caller& caller);

// The metadata key services use to name the acting user.
inline constexpr char kActingUserHeader[] = "x-aichat-user-id";

// Remembers the authenticated user id of an in-flight call, so the request log
// line (written by the server interceptor) can carry it.
class CallAnnotations {
 public:
  static CallAnnotations& Get();
  void SetUser(const void* call, int64_t user_id);
  // Returns 0 when unknown, and forgets the call.
  int64_t TakeUser(const void* call);

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<const void*, int64_t> users_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat
