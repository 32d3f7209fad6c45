// libFuzzer target for TokenVerifier::Verify (common/jwt.h), the parser every
// service runs on every request's bearer token before anything else.
//
// Input: arbitrary bytes as the token, verified against a fixed key. Properties:
// no crash or sanitizer report; only UNAUTHENTICATED on failure; a token accepted
// must be one our own signer made (the fuzzer cannot forge Ed25519, so any
// acceptance of a mutated input is a bug unless it is byte-identical to the seed);
// and a freshly signed token built from fuzzed claims always verifies.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/time/time.h"
#include "common/jwt.h"

namespace {

struct Keys {
  aichat::TokenSigner signer;
  aichat::TokenVerifier verifier;
  std::string seed_token;
};

const Keys& GetKeys() {
  static const Keys* keys = [] {
    // A fixed seed so that corpus tokens stay valid across runs.
    auto signer = aichat::TokenSigner::Create("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    if (!signer.ok()) std::abort();
    auto verifier = aichat::TokenVerifier::Create({signer->public_key()});
    if (!verifier.ok()) std::abort();
    aichat::TokenClaims c;
    c.user_id = 42;
    c.issued_at = absl::FromUnixSeconds(1700000000);
    c.expires_at = absl::FromUnixSeconds(1700000900);
    c.token_id = "seed";
    std::string seed = signer->Sign(c);
    return new Keys{*std::move(signer), *std::move(verifier), seed};
  }();
  return *keys;
}

const absl::Time kNow = absl::FromUnixSeconds(1700000100);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Keys& k = GetKeys();
  std::string token(reinterpret_cast<const char*>(data), size);
  auto claims = k.verifier.Verify(token, kNow);
  if (claims.ok()) {
    if (token != k.seed_token) std::abort();  // accepted a token we never signed
  } else if (claims.status().code() != absl::StatusCode::kUnauthenticated) {
    std::abort();
  }
  // Round trip: whatever claims, what we sign verifies to the same claims.
  if (size >= 9) {
    aichat::TokenClaims c;
    c.user_id = 1 + (static_cast<int64_t>(data[0]) << 40 | data[1] << 16 | data[2]);
    c.role = static_cast<aichat::Role>(data[3] % 3);
    c.requests_per_minute = data[4] * 100;
    c.issued_at = kNow - absl::Seconds(data[5]);
    c.expires_at = kNow + absl::Seconds(1 + data[6] * 10);
    // jti is always RandomToken() output (base64url) in the services.
    static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 7; i < size && i < 40; ++i) c.token_id += kB64[data[i] % 64];
    std::string signed_token = k.signer.Sign(c);
    auto back = k.verifier.Verify(signed_token, kNow);
    if (!back.ok()) {
      fprintf(stderr, "round trip: %s\n", std::string(back.status().message()).c_str());
      std::abort();
    }
    if (back->user_id != c.user_id || back->role != c.role ||
        back->requests_per_minute != c.requests_per_minute) {
      std::abort();
    }
  }
  return 0;
}
