// Access tokens: EdDSA (Ed25519) JWTs. Only the `user` service holds a signing
// key; every service verifies locally with the public key(s) from its config.
// Verification accepts exactly alg "EdDSA" (never "none", never HS*), checks the
// signature against every configured key, `exp`, `nbf`/`iat` with a clock-skew
// leeway, and the claim types.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace aichat {

enum class Role { kUser, kAdmin, kService };
const char* RoleName(Role role);  // "user", "admin", "service"
absl::StatusOr<Role> ParseRole(std::string_view name);

struct TokenClaims {
  int64_t user_id = 0;  // `sub`
  Role role = Role::kUser;
  int32_t requests_per_minute = 0;  // `rpm`
  absl::Time issued_at;             // `iat`
  absl::Time expires_at;            // `exp`
  std::string token_id;             // `jti`
};

struct KeyPair {
  std::string public_key;   // base64url, 32 bytes
  std::string private_key;  // base64url, 32-byte seed
};
KeyPair GenerateKeyPair();

class TokenSigner {
 public:
  // `private_key` is a base64url 32-byte seed. Fails on anything else.
  static absl::StatusOr<TokenSigner> Create(std::string_view private_key);
  // Signs claims; `token_id` is filled with a random id when empty.
  std::string Sign(TokenClaims claims) const;
  const std::string& public_key() const { return public_key_b64_; }

 private:
  std::string secret_;  // libsodium 64-byte secret key
  std::string public_key_b64_;
};

class TokenVerifier {
 public:
  static absl::StatusOr<TokenVerifier> Create(const std::vector<std::string>& public_keys,
                                              absl::Duration leeway = absl::Seconds(30));
  // UNAUTHENTICATED with a short reason for anything but a valid, current token.
  // A token whose signature was already checked is found in a small cache (keyed by the
  // whole token, signature included) and only its times are checked again: an Ed25519
  // verification costs ~0.6 M instructions, and the service token comes with every peer
  // call.
  absl::StatusOr<TokenClaims> Verify(std::string_view token, absl::Time now = absl::Now()) const;

  class Cache;

 private:
  std::vector<std::string> keys_;  // raw 32-byte public keys
  absl::Duration leeway_;
  std::shared_ptr<Cache> cache_;  // shared by copies of this verifier
};

// Random bytes from libsodium, base64url-encoded (for refresh tokens, API keys, ids).
std::string RandomToken(size_t bytes);
// SHA-256, hex; for storing high-entropy secrets (refresh tokens, API keys).
std::string Sha256Hex(std::string_view data);

}  // namespace aichat
