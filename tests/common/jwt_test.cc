#include "common/jwt.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/base64.h"

namespace aichat {
namespace {

TokenClaims Claims(absl::Time now) {
  TokenClaims c;
  c.user_id = 42;
  c.role = Role::kAdmin;
  c.requests_per_minute = 7;
  c.issued_at = now;
  c.expires_at = now + absl::Minutes(15);
  return c;
}

struct Keys {
  KeyPair pair = GenerateKeyPair();
  TokenSigner signer = *TokenSigner::Create(pair.private_key);
  TokenVerifier verifier = *TokenVerifier::Create({pair.public_key});
};

TEST(JwtTest, RoundTripKeepsClaims) {
  Keys k;
  absl::Time now = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()));
  std::string token = k.signer.Sign(Claims(now));
  auto c = k.verifier.Verify(token, now);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->user_id, 42);
  EXPECT_EQ(c->role, Role::kAdmin);
  EXPECT_EQ(c->requests_per_minute, 7);
  EXPECT_EQ(c->issued_at, now);
  EXPECT_EQ(c->expires_at, now + absl::Minutes(15));
  EXPECT_FALSE(c->token_id.empty());
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(*Base64UrlDecode(parts[0]), R"({"alg":"EdDSA","typ":"JWT"})");
}

TEST(JwtTest, ExpiredAfterLeewayIsRejected) {
  Keys k;
  absl::Time now = absl::Now();
  std::string token = k.signer.Sign(Claims(now));
  EXPECT_TRUE(k.verifier.Verify(token, now + absl::Minutes(15) + absl::Seconds(29)).ok());
  auto late = k.verifier.Verify(token, now + absl::Minutes(15) + absl::Seconds(31));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(late.status().message().find("expired"), std::string::npos);
}

TEST(JwtTest, NotYetValidIsRejected) {
  Keys k;
  absl::Time now = absl::Now();
  std::string token = k.signer.Sign(Claims(now + absl::Minutes(5)));
  EXPECT_EQ(k.verifier.Verify(token, now).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(JwtTest, OtherKeyIsRejected) {
  Keys a, b;
  std::string token = a.signer.Sign(Claims(absl::Now()));
  EXPECT_EQ(b.verifier.Verify(token).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(JwtTest, AnyConfiguredKeyVerifies) {
  Keys a, b;
  auto both = *TokenVerifier::Create({a.pair.public_key, b.pair.public_key});
  EXPECT_TRUE(both.Verify(a.signer.Sign(Claims(absl::Now()))).ok());
  EXPECT_TRUE(both.Verify(b.signer.Sign(Claims(absl::Now()))).ok());
}

TEST(JwtTest, TamperedPayloadIsRejected) {
  Keys k;
  std::string token = k.signer.Sign(Claims(absl::Now()));
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  std::string payload = *Base64UrlDecode(parts[1]);
  payload.replace(payload.find("\"42\""), 4, "\"1\"");
  std::string forged = absl::StrCat(parts[0], ".", Base64UrlEncode(payload), ".", parts[2]);
  EXPECT_EQ(k.verifier.Verify(forged).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(JwtTest, AlgNoneIsRejected) {
  Keys k;
  std::string token = k.signer.Sign(Claims(absl::Now()));
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  std::string none =
      absl::StrCat(Base64UrlEncode(R"({"alg":"none","typ":"JWT"})"), ".", parts[1], ".");
  EXPECT_EQ(k.verifier.Verify(none).status().code(), absl::StatusCode::kUnauthenticated);
  std::string none_sig =
      absl::StrCat(Base64UrlEncode(R"({"alg":"none"})"), ".", parts[1], ".", parts[2]);
  EXPECT_EQ(k.verifier.Verify(none_sig).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(JwtTest, Hs256WithThePublicKeyIsRejected) {
  Keys k;
  std::string token = k.signer.Sign(Claims(absl::Now()));
  std::vector<std::string> parts = absl::StrSplit(token, '.');
  std::string input =
      absl::StrCat(Base64UrlEncode(R"({"alg":"HS256","typ":"JWT"})"), ".", parts[1]);
  std::string key = *Base64UrlDecode(k.pair.public_key);
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  std::string forged =
      absl::StrCat(input, ".", Base64UrlEncode({reinterpret_cast<char*>(mac), len}));
  auto st = k.verifier.Verify(forged).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(st.message().find("algorithm"), std::string::npos);
}

TEST(JwtTest, GarbageIsRejected) {
  Keys k;
  for (const char* t : {"", "a", "a.b", "a.b.c", "...", "e30.e30.e30", "!!.??.##"}) {
    EXPECT_EQ(k.verifier.Verify(t).status().code(), absl::StatusCode::kUnauthenticated) << t;
  }
}

TEST(JwtTest, BadKeysAreConfigErrors) {
  EXPECT_FALSE(TokenSigner::Create("short").ok());
  EXPECT_FALSE(TokenVerifier::Create({"not-a-key"}).ok());
  EXPECT_FALSE(TokenVerifier::Create({}).ok());
}

TEST(JwtTest, HashAndRandom) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(RandomToken(32), RandomToken(32));
  EXPECT_EQ(Base64UrlDecode(RandomToken(32))->size(), 32u);
}

}  // namespace
}  // namespace aichat
