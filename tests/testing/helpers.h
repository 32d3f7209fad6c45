// Test helpers: signing keys and tokens, client metadata, loopback channels,
// captured log lines.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/auth.h"
#include "common/jwt.h"

namespace aichat::testing {

class TestKeys {
 public:
  TestKeys();
  const TokenSigner& signer() const { return *signer_; }
  std::vector<std::string> public_keys() const { return {pair_.public_key}; }
  const KeyPair& pair() const { return pair_; }
  Authenticator MakeAuthenticator() const;

  std::string Token(int64_t user_id, Role role = Role::kUser, int32_t rpm = 20,
                    absl::Duration ttl = absl::Minutes(5)) const;
  std::string ServiceToken() const { return Token(0, Role::kService, 0, absl::Hours(1)); }

 private:
  KeyPair pair_;
  std::unique_ptr<TokenSigner> signer_;
};

// Adds `authorization: Bearer token` (and the acting-user header when > 0).
void Authorize(grpc::ClientContext& ctx, const std::string& token, int64_t acting_user = 0);
void SetDeadline(grpc::ClientContext& ctx, absl::Duration d = absl::Seconds(10));

std::shared_ptr<grpc::Channel> LocalChannel(int port);

// Captures every log line while alive.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string Text() const;
  bool Contains(std::string_view needle) const;

 private:
  mutable absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aichat::testing
