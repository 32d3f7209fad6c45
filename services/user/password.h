// Argon2id password hashing (libsodium crypto_pwhash_str). The cost is a setting:
// production uses libsodium's "interactive" limits, tests the minimum.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace aichat::user {

struct PasswordHasherOptions {
  unsigned long long ops_limit = 2;           // crypto_pwhash_OPSLIMIT_INTERACTIVE
  size_t mem_limit_bytes = 64 * 1024 * 1024;  // crypto_pwhash_MEMLIMIT_INTERACTIVE
};

class PasswordHasher {
 public:
  explicit PasswordHasher(PasswordHasherOptions options);
  // The encoded Argon2id string ($argon2id$v=19$m=...,t=...,p=1$salt$hash).
  absl::StatusOr<std::string> Hash(std::string_view password) const;
  bool Verify(std::string_view password, const std::string& encoded) const;
  // Spends the same time as a real verification; used for unknown emails so
  // response time does not reveal which emails have accounts.
  void VerifyDummy(std::string_view password) const;

 private:
  PasswordHasherOptions options_;
  std::string dummy_hash_;
};

}  // namespace aichat::user
