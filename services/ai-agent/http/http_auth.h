// File: who calls the HTTP API. The same rules as over gRPC (common/auth.h):
// `Authorization: Bearer <access token>` verified locally, `x-aichat-user-id` only
// from role service. Also `Bearer aik_…`, an aichat API key: exchanged once at the
// user service (Login with api_key) for an access token, which is kept under a hash
// of the key until shortly before it expires; concurrent requests with the same new
// key share one login, and a refused key is refused again for a short while without
// asking. Keys and tokens are never logged.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/jwt.h"
#include "services/ai-agent/peers.h"

namespace aichat::agent {

struct HttpAuthOptions {
  absl::Duration renew_before = absl::Seconds(60);  // a kept token is renewed this early
  absl::Duration login_timeout = absl::Seconds(5);
  absl::Duration refusal_ttl = absl::Seconds(10);  // a refused key is refused again this long
  size_t max_keys = 10000;                         // keys remembered at most
};

// Threads: Authenticate runs on the caller's thread; a login completes on a gRPC
// callback thread. keys_ is shared under mu_.
class HttpAuthenticator {
 public:
  // `users` may be null: API keys are then refused.
  HttpAuthenticator(const TokenVerifier* verifier, UserPeer* users, HttpAuthOptions options = {});

  // `done` runs exactly once, maybe before this returns. UNAUTHENTICATED for a
  // missing, malformed, expired or forged token or an unknown key; PERMISSION_DENIED
  // for `acting_user` from a token whose role is not service.
  void Authenticate(std::string_view authorization, std::string_view acting_user,
                    std::function<void(absl::StatusOr<Caller>)> done);

 private:
  struct Key {
    std::string token;  // "" while the login is under way or after a refusal
    absl::Time good_until = absl::InfinitePast();
    absl::Status refusal;  // remembered until good_until
    bool pending = false;
    std::vector<std::function<void(absl::StatusOr<std::string>)>> waiters;
  };
  void TokenForKey(const std::string& key, std::function<void(absl::StatusOr<std::string>)> done);
  void Evict(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TokenVerifier* verifier_;
  UserPeer* users_;
  HttpAuthOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Key> keys_ ABSL_GUARDED_BY(mu_);  // by SHA-256 of the key
};

// The caller a verified token names, with the service rule for `acting_user`.
absl::StatusOr<Caller> CallerFromToken(const TokenVerifier& verifier, std::string_view token,
                                       std::string_view acting_user);

}  // namespace aichat::agent
