#include "services/ai-agent/http/http_auth.h"

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/ai-agent/http/absl_view.h"

namespace aichat::agent {
namespace {

constexpr std::string_view kApiKeyPrefix = "aik_";
constexpr size_t kMaxCredentialBytes = 4096;

}  // namespace

absl::StatusOr<Caller> CallerFromToken(const TokenVerifier& verifier, std::string_view token,
                                       std::string_view acting_user) {
  auto claims = verifier.Verify(token);
  if (!claims.ok()) return claims.status();
  Caller caller;
  caller.user_id = claims->user_id;
  caller.role = claims->role;
  caller.requests_per_minute = claims->requests_per_minute;
  if (!acting_user.empty()) {
    if (caller.role != Role::kService) {
      return absl::PermissionDeniedError(
          absl::StrCat(kActingUserHeader, " is only accepted from service callers"));
    }
    int64_t uid = 0;
    if (!absl::SimpleAtoi(Av(acting_user), &uid) || uid <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(kActingUserHeader, " must be a user id"));
    }
    caller.user_id = uid;
    caller.acting_for_user = true;
  }
  return caller;
}

HttpAuthenticator::HttpAuthenticator(const TokenVerifier* verifier, UserPeer* users,
                                     HttpAuthOptions options)
    : verifier_(verifier), users_(users), options_(options) {}

void HttpAuthenticator::Authenticate(std::string_view authorization, std::string_view acting_user,
                                     std::function<void(absl::StatusOr<Caller>)> done) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.empty()) {
    return done(absl::UnauthenticatedError(
        "missing Authorization header (Bearer access token or aichat API key)"));
  }
  if (authorization.size() <= kBearer.size() || authorization.size() > kMaxCredentialBytes ||
      !absl::StartsWithIgnoreCase(Av(authorization), Av(kBearer))) {
    return done(absl::UnauthenticatedError(
        "the Authorization header must be `Bearer <access token or API key>`"));
  }
  std::string_view credential = authorization.substr(kBearer.size());
  if (!credential.starts_with(kApiKeyPrefix)) {
    return done(CallerFromToken(*verifier_, credential, acting_user));
  }
  TokenForKey(std::string(credential), [this, acting = std::string(acting_user),
                                        done = std::move(done)](absl::StatusOr<std::string> token) {
    if (!token.ok()) return done(token.status());
    done(CallerFromToken(*verifier_, *token, acting));
  });
}

void HttpAuthenticator::TokenForKey(const std::string& key,
                                    std::function<void(absl::StatusOr<std::string>)> done) {
  if (users_ == nullptr) {
    return done(absl::UnauthenticatedError("API keys are not accepted here; use an access token"));
  }
  const std::string id = Sha256Hex(key);
  const absl::Time now = absl::Now();
  std::optional<absl::StatusOr<std::string>> known;
  {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(id);
    if (it != keys_.end() && it->second.pending) {
      it->second.waiters.push_back(std::move(done));
      return;
    }
    if (it != keys_.end() && now < it->second.good_until) {
      const Key& k = it->second;
      known = k.token.empty() ? absl::StatusOr<std::string>(k.refusal) : k.token;
    } else {
      if (keys_.size() >= options_.max_keys) Evict(now);
      Key& k = keys_[id];
      k.pending = true;
      k.token.clear();
      k.waiters.push_back(std::move(done));
    }
  }
  if (known.has_value()) return done(*std::move(known));
  users_->LoginWithApiKey(
      key, now + options_.login_timeout, [this, id](absl::StatusOr<ApiKeyLogin> login) {
        std::vector<std::function<void(absl::StatusOr<std::string>)>> waiters;
        absl::StatusOr<std::string> result = login.ok()
                                                 ? absl::StatusOr<std::string>(login->access_token)
                                                 : absl::StatusOr<std::string>(login.status());
        {
          absl::MutexLock lock(&mu_);
          auto it = keys_.find(id);
          if (it != keys_.end()) {
            Key& k = it->second;
            k.pending = false;
            waiters.swap(k.waiters);
            const absl::Time now = absl::Now();
            if (login.ok()) {
              k.token = login->access_token;
              k.refusal = absl::OkStatus();
              k.good_until = login->expires_at - options_.renew_before;
            } else if (absl::IsUnauthenticated(login.status())) {
              k.refusal = login.status();
              k.good_until = now + options_.refusal_ttl;
            } else {
              keys_.erase(it);  // the user service is away: ask again next time
            }
          }
        }
        for (auto& w : waiters) w(result);
      });
}

// Forgets what has lapsed; if the table is still full, the entries that lapse
// first (never a login under way).
void HttpAuthenticator::Evict(absl::Time now) {
  absl::erase_if(
      keys_, [now](const auto& kv) { return !kv.second.pending && kv.second.good_until <= now; });
  while (keys_.size() >= options_.max_keys) {
    auto oldest = keys_.end();
    for (auto it = keys_.begin(); it != keys_.end(); ++it) {
      if (!it->second.pending &&
          (oldest == keys_.end() || it->second.good_until < oldest->second.good_until)) {
        oldest = it;
      }
    }
    if (oldest == keys_.end()) return;
    keys_.erase(oldest);
  }
}

}  // namespace aichat::agent
