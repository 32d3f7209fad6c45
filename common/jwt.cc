#include "common/jwt.h"

#include <sodium.h>

#include <algorithm>
#include <optional>
#include <boost/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/base64.h"

namespace aichat {
namespace {

namespace json = boost::json;

void EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  (void)ok;
}

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("invalid access token: ", why));
}

// Reads an integer claim that JSON may carry as int64, uint64 or an integral double.
bool ReadInt(const json::object& o, std::string_view key, int64_t* out) {
  auto it = o.find(key);
  if (it == o.end()) return false;
  const json::value& v = it->value();
  if (v.is_int64()) {
    *out = v.as_int64();
    return true;
  }
  if (v.is_uint64() && v.as_uint64() <= uint64_t(INT64_MAX)) {
    *out = int64_t(v.as_uint64());
    return true;
  }
  return false;
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kService:
      return "service";
    case Role::kUser:
      break;
  }
  return "user";
}

absl::StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "user") return Role::kUser;
  if (name == "admin") return Role::kAdmin;
  if (name == "service") return Role::kService;
  return absl::InvalidArgumentError(absl::StrCat("unknown role"));
}

KeyPair GenerateKeyPair() {
  EnsureSodium();
  unsigned char seed[crypto_sign_SEEDBYTES];
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_SECRETKEYBYTES];
  randombytes_buf(seed, sizeof seed);
  crypto_sign_seed_keypair(pk, sk, seed);
  KeyPair kp{Base64UrlEncode({reinterpret_cast<char*>(pk), sizeof pk}),
             Base64UrlEncode({reinterpret_cast<char*>(seed), sizeof seed})};
  sodium_memzero(seed, sizeof seed);
  sodium_memzero(sk, sizeof sk);
  return kp;
}

absl::StatusOr<TokenSigner> TokenSigner::Create(std::string_view private_key) {
  EnsureSodium();
  auto seed = Base64UrlDecode(private_key);
  if (!seed.has_value() || seed->size() != crypto_sign_SEEDBYTES) {
    return absl::InvalidArgumentError("signing key must be a base64url 32-byte Ed25519 seed");
  }
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  unsigned char sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_seed_keypair(pk, sk, reinterpret_cast<const unsigned char*>(seed->data()));
  TokenSigner s;
  s.secret_.assign(reinterpret_cast<char*>(sk), sizeof sk);
  s.public_key_b64_ = Base64UrlEncode({reinterpret_cast<char*>(pk), sizeof pk});
  sodium_memzero(sk, sizeof sk);
  return s;
}

std::string TokenSigner::Sign(TokenClaims claims) const {
  if (claims.token_id.empty()) claims.token_id = RandomToken(12);
  static const std::string kHeader = Base64UrlEncode(R"({"alg":"EdDSA","typ":"JWT"})");
  json::object payload;
  payload["sub"] = std::to_string(claims.user_id);
  payload["role"] = RoleName(claims.role);
  payload["rpm"] = claims.requests_per_minute;
  payload["iat"] = absl::ToUnixSeconds(claims.issued_at);
  payload["nbf"] = absl::ToUnixSeconds(claims.issued_at);
  payload["exp"] = absl::ToUnixSeconds(claims.expires_at);
  payload["jti"] = claims.token_id;
  std::string signing_input = absl::StrCat(kHeader, ".", Base64UrlEncode(json::serialize(payload)));
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(signing_input.data()),
                       signing_input.size(),
                       reinterpret_cast<const unsigned char*>(secret_.data()));
  return absl::StrCat(signing_input, ".",
                      Base64UrlEncode({reinterpret_cast<char*>(sig), sizeof sig}));
}

// Claims of tokens whose signature verified, keyed by the exact token text. Bounded: when
// full it starts over (tokens are few in practice: one per service plus active users).
class TokenVerifier::Cache {
 public:
  struct Entry {
    TokenClaims claims;
    absl::Time not_before;
  };
  std::optional<Entry> Find(std::string_view token) {
    absl::ReaderMutexLock lock(&mu_);
    auto it = map_.find(absl::string_view(token.data(), token.size()));
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  void Add(std::string_view token, Entry e) {
    absl::MutexLock lock(&mu_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(std::string(token), std::move(e));
  }

 private:
  static constexpr size_t kMaxEntries = 4096;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> map_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<TokenVerifier> TokenVerifier::Create(const std::vector<std::string>& public_keys,
                                                    absl::Duration leeway) {
  EnsureSodium();
  TokenVerifier v;
  v.leeway_ = leeway;
  v.cache_ = std::make_shared<Cache>();
  for (const auto& k : public_keys) {
    auto raw = Base64UrlDecode(k);
    if (!raw.has_value() || raw->size() != crypto_sign_PUBLICKEYBYTES) {
      return absl::InvalidArgumentError("a JWT public key is not a base64url 32-byte Ed25519 key");
    }
    v.keys_.push_back(*raw);
  }
  if (v.keys_.empty()) {
    return absl::InvalidArgumentError("no JWT public key configured");
  }
  return v;
}

absl::StatusOr<TokenClaims> TokenVerifier::Verify(std::string_view token, absl::Time now) const {
  if (token.size() > 4096) return Unauthenticated("too long");
  if (cache_ != nullptr) {
    if (auto hit = cache_->Find(token); hit.has_value()) {
      if (now > hit->claims.expires_at + leeway_) return Unauthenticated("expired");
      if (hit->not_before > now + leeway_) return Unauthenticated("not yet valid");
      return hit->claims;
    }
  }
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::string_view(token.data(), token.size()), '.');
  if (parts.size() != 3) return Unauthenticated("malformed");
  auto header_raw = Base64UrlDecode({parts[0].data(), parts[0].size()});
  auto payload_raw = Base64UrlDecode({parts[1].data(), parts[1].size()});
  auto sig = Base64UrlDecode({parts[2].data(), parts[2].size()});
  if (!header_raw || !payload_raw || !sig) return Unauthenticated("malformed");

  boost::system::error_code ec;
  json::value header = json::parse(*header_raw, ec);
  if (ec || !header.is_object()) return Unauthenticated("malformed header");
  const auto* alg = header.as_object().if_contains("alg");
  // Only EdDSA: "none" and HS256-with-the-public-key attacks fail here.
  if (alg == nullptr || !alg->is_string() || alg->as_string() != "EdDSA") {
    return Unauthenticated("unsupported algorithm");
  }
  if (sig->size() != crypto_sign_BYTES) return Unauthenticated("bad signature");
  size_t signed_len = parts[0].size() + 1 + parts[1].size();
  bool good = false;
  for (const auto& key : keys_) {
    if (crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                    reinterpret_cast<const unsigned char*>(token.data()),
                                    signed_len,
                                    reinterpret_cast<const unsigned char*>(key.data())) == 0) {
      good = true;
      break;
    }
  }
  if (!good) return Unauthenticated("bad signature");

  json::value payload = json::parse(*payload_raw, ec);
  if (ec || !payload.is_object()) return Unauthenticated("malformed payload");
  const json::object& o = payload.as_object();
  TokenClaims c;
  const auto* sub = o.if_contains("sub");
  const auto* role = o.if_contains("role");
  const auto* jti = o.if_contains("jti");
  int64_t iat = 0, exp = 0, rpm = 0, nbf = 0;
  if (sub == nullptr || !sub->is_string() || role == nullptr || !role->is_string() ||
      !ReadInt(o, "iat", &iat) || !ReadInt(o, "exp", &exp)) {
    return Unauthenticated("missing claims");
  }
  if (!absl::SimpleAtoi(absl::string_view(sub->as_string().data(), sub->as_string().size()),
                        &c.user_id) ||
      c.user_id < 0) {
    return Unauthenticated("bad subject");
  }
  auto r = ParseRole(std::string_view(role->as_string()));
  if (!r.ok()) return Unauthenticated("bad role");
  c.role = *r;
  if (ReadInt(o, "rpm", &rpm))
    c.requests_per_minute = int32_t(std::clamp<int64_t>(rpm, 0, INT32_MAX));
  if (jti != nullptr && jti->is_string()) c.token_id = std::string(jti->as_string());
  c.issued_at = absl::FromUnixSeconds(iat);
  c.expires_at = absl::FromUnixSeconds(exp);
  if (now > c.expires_at + leeway_) return Unauthenticated("expired");
  if (!ReadInt(o, "nbf", &nbf)) nbf = iat;
  absl::Time not_before = absl::FromUnixSeconds(std::max(nbf, iat));
  if (not_before > now + leeway_) return Unauthenticated("not yet valid");
  if (cache_ != nullptr) cache_->Add(token, {c, not_before});
  return c;
}

std::string RandomToken(size_t bytes) {
  EnsureSodium();
  std::string buf(bytes, '\0');
  randombytes_buf(buf.data(), buf.size());
  return Base64UrlEncode(buf);
}

std::string Sha256Hex(std::string_view data) {
  EnsureSodium();
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return HexEncode({reinterpret_cast<char*>(out), sizeof out});
}

}  // namespace aichat
