#include "tests/testing/helpers.h"

#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace aichat::testing {

TestKeys::TestKeys() : pair_(GenerateKeyPair()) {
  signer_ = std::make_unique<TokenSigner>(*TokenSigner::Create(pair_.private_key));
}

Authenticator TestKeys::MakeAuthenticator() const {
  return Authenticator(*TokenVerifier::Create(public_keys()));
}

std::string TestKeys::Token(int64_t user_id, Role role, int32_t rpm, absl::Duration ttl) const {
  TokenClaims c;
  c.user_id = user_id;
  c.role = role;
  c.requests_per_minute = rpm;
  c.issued_at = absl::Now();
  c.expires_at = c.issued_at + ttl;
  return signer_->Sign(c);
}

void Authorize(grpc::ClientContext& ctx, const std::string& token, int64_t acting_user) {
  ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  if (acting_user > 0) ctx.AddMetadata(kActingUserHeader, absl::StrCat(acting_user));
}

void SetDeadline(grpc::ClientContext& ctx, absl::Duration d) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(absl::ToInt64Milliseconds(d)));
}

std::shared_ptr<grpc::Channel> LocalChannel(int port) {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
}

LogCapture::LogCapture() {
  SetLogSink([this](std::string_view line) {
    absl::MutexLock lock(&mu_);
    text_.append(line.data(), line.size());
  });
}

LogCapture::~LogCapture() { SetLogSink(nullptr); }

std::string LogCapture::Text() const {
  absl::MutexLock lock(&mu_);
  return text_;
}

bool LogCapture::Contains(std::string_view needle) const {
  absl::MutexLock lock(&mu_);
  return text_.find(needle) != std::string::npos;
}

}  // namespace aichat::testing
