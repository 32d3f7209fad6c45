#include "services/user/password.h"

#include <sodium.h>

namespace aichat::user {

PasswordHasher::PasswordHasher(PasswordHasherOptions options) : options_(options) {
  if (sodium_init() < 0) {
    return;
  }
  auto dummy = Hash("aichat-dummy-password");
  if (dummy.ok()) dummy_hash_ = *dummy;
}

absl::StatusOr<std::string> PasswordHasher::Hash(std::string_view password) const {
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), options_.ops_limit,
                            options_.mem_limit_bytes, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return absl::ResourceExhaustedError("password hashing ran out of memory");
  }
  return std::string(out);
}

bool PasswordHasher::Verify(std::string_view password, const std::string& encoded) const {
  return crypto_pwhash_str_verify(encoded.c_str(), password.data(), password.size()) == 0;
}

void PasswordHasher::VerifyDummy(std::string_view password) const {
  if (!dummy_hash_.empty()) {
    (void)Verify(password, dummy_hash_);
  }
}

}  // namespace aichat::user
