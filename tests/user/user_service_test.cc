// UserService over real gRPC (loopback) and a real PostgreSQL database.
#include "services/user/user_service.h"

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/user/user_fixture.h"

namespace aichat::user {
namespace {

using testing::Authorize;
using v1::UserService;

TEST_F(UserServiceTest, RegisterNormalisesEmailAndHidesThePassword) {
  v1::User u;
  ASSERT_TRUE(Register("  Alice@Example.COM ", kPassword, &u, "Alice").ok());
  EXPECT_GT(u.id(), 0);
  EXPECT_EQ(u.email(), "alice@example.com");
  EXPECT_EQ(u.display_name(), "Alice");
  EXPECT_EQ(u.role(), v1::ROLE_USER);
  EXPECT_EQ(u.requests_per_minute(), 20);
  EXPECT_TRUE(u.has_created_at());
  auto row = pool_->Exec("SELECT password_hash FROM users WHERE id = $1", {u.id()});
  ASSERT_EQ(row->rows(), 1);
  EXPECT_TRUE(row->String(0, 0).rfind("$argon2id$", 0) == 0);
  EXPECT_EQ(row->String(0, 0).find(kPassword), std::string::npos);
}

TEST_F(UserServiceTest, DuplicateEmailIsAlreadyExists) {
  v1::User u;
  ASSERT_TRUE(Register("bob@example.com", kPassword, &u).ok());
  auto st = Register("BOB@example.com", "another password", &u);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Count("users"), 1);
}

TEST_F(UserServiceTest, ValidationNamesTheFieldAndWritesNothing) {
  struct Case {
    std::string email, password, name, field;
  } cases[] = {
      {"", kPassword, "", "email"},
      {"no-at-sign", kPassword, "", "email"},
      {"a@b@c", kPassword, "", "email"},
      {"sp ace@example.com", kPassword, "", "email"},
      {std::string(250, 'a') + "@x.io", kPassword, "", "email"},
      {"x@example.com", "short", "", "password"},
      {"x@example.com", "", "", "password"},
      {"x@example.com", std::string(2000, 'p'), "", "password"},
      {"x@example.com", kPassword, std::string(101, 'n'), "display_name"},
      {"x@example.com", std::string("pass\0word123", 12), "", "password"},
  };
  for (const auto& c : cases) {
    v1::User u;
    auto st = Register(c.email, c.password, &u, c.name);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.email;
    EXPECT_NE(st.error_message().find(c.field), std::string::npos)
        << st.error_message() << " should name " << c.field;
  }
  EXPECT_EQ(Count("users"), 0);
}

// proto3 strings must be UTF-8: protobuf refuses bad bytes before any handler runs.
// A raw client still gets INVALID_ARGUMENT naming the field (not gRPC's bare
// UNIMPLEMENTED), nothing is written, and the server keeps serving.
TEST_F(UserServiceTest, InvalidUtf8OnTheWireIsRejectedNamingTheField) {
  v1::RegisterRequest req;
  req.set_email("utf8@example.com");
  req.set_password(kPassword);
  std::string valid = req.SerializeAsString();
  auto call = [&](const std::string& wire) {
    grpc::GenericStub generic(channel_);
    grpc::ClientContext ctx;
    grpc::Slice slice(wire);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    absl::Notification done;
    grpc::Status status;
    generic.UnaryCall(&ctx, "/aichat.user.v1.UserService/Register", grpc::StubOptions(), &request,
                      &response, [&](grpc::Status s) {
                        status = std::move(s);
                        done.Notify();
                      });
    done.WaitForNotification();
    return status;
  };
  // Field 3 (display_name), length-delimited: "a\xffb", 3 bytes, one of them invalid.
  const std::string bad_display_name = {'\x1a', '\x03', 'a', '\xff', 'b'};
  grpc::Status st = call(valid + bad_display_name);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(),
            "display_name must be valid UTF-8 (aichat.user.v1.RegisterRequest.display_name)");
  // Not protobuf at all (a length running past the end): a clear refusal too.
  st = call(valid + std::string("\x1a\x7f", 2));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "the request is not a valid protobuf message for this method");
  EXPECT_EQ(Count("users"), 0);
  v1::User u;
  EXPECT_TRUE(Register("after@example.com", kPassword, &u).ok());
}

TEST_F(UserServiceTest, ConcurrentRegistrationsOfOneEmailCreateOneAccount) {
  constexpr int kCallers = 20;
  std::vector<grpc::StatusCode> codes(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] {
      v1::User u;
      codes[i] = Register("race@example.com", kPassword, &u).error_code();
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, exists = 0;
  for (auto c : codes) {
    ok += c == grpc::StatusCode::OK;
    exists += c == grpc::StatusCode::ALREADY_EXISTS;
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(exists, kCallers - 1);
  EXPECT_EQ(Count("users"), 1);
}

TEST_F(UserServiceTest, LoginGivesWorkingTokensAndGetMe) {
  auto login = RegisterAndLogin("carol@example.com");
  EXPECT_FALSE(login.access_token().empty());
  EXPECT_EQ(login.refresh_token().rfind("rt_", 0), 0u);
  EXPECT_TRUE(login.has_expires_at());
  auto claims = auth_->verifier().Verify(login.access_token());
  ASSERT_TRUE(claims.ok());
  EXPECT_EQ(claims->user_id, login.user().id());
  EXPECT_EQ(claims->requests_per_minute, 20);

  grpc::ClientContext ctx;
  Authorize(ctx, login.access_token());
  v1::User me;
  ASSERT_TRUE(stub_->GetMe(&ctx, v1::GetMeRequest(), &me).ok());
  EXPECT_EQ(me.email(), "carol@example.com");
  // The refresh token is stored only as a hash.
  EXPECT_EQ(pool_
                ->Exec("SELECT count(*) FROM refresh_tokens WHERE token_hash = $1",
                       {login.refresh_token()})
                ->Int(0, 0),
            0);
  EXPECT_EQ(pool_
                ->Exec("SELECT count(*) FROM refresh_tokens WHERE token_hash = $1",
                       {Sha256Hex(login.refresh_token())})
                ->Int(0, 0),
            1);
}

TEST_F(UserServiceTest, UnknownEmailAndWrongPasswordAnswerTheSame) {
  RegisterAndLogin("dave@example.com");
  v1::LoginResponse r;
  auto wrong = Login("dave@example.com", "wrong password!", &r);
  auto unknown = Login("nobody@example.com", kPassword, &r);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), unknown.error_message());
}

TEST_F(UserServiceTest, BadTokensAreUnauthenticated) {
  auto login = RegisterAndLogin("erin@example.com");
  testing::TestKeys other;
  TokenClaims expired;
  expired.user_id = login.user().id();
  expired.issued_at = absl::Now() - absl::Hours(2);
  expired.expires_at = absl::Now() - absl::Hours(1);
  std::vector<std::string> bad = {
      "",
      "not-a-jwt",
      other.Token(login.user().id()),                                // wrong key
      TokenSigner::Create(keys_.pair().private_key)->Sign(expired),  // expired
      login.access_token() + "x",                                    // broken signature
  };
  for (const auto& token : bad) {
    grpc::ClientContext ctx;
    if (!token.empty()) Authorize(ctx, token);
    v1::User me;
    EXPECT_EQ(stub_->GetMe(&ctx, v1::GetMeRequest(), &me).error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << token;
  }
  // Not "Bearer".
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Basic " + login.access_token());
  v1::User me;
  EXPECT_EQ(stub_->GetMe(&ctx, v1::GetMeRequest(), &me).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(UserServiceTest, ActingUserHeaderFromAUserTokenIsRefused) {
  auto a = RegisterAndLogin("a@example.com");
  auto b = RegisterAndLogin("b@example.com");
  grpc::ClientContext ctx;
  Authorize(ctx, a.access_token(), b.user().id());
  v1::User me;
  EXPECT_EQ(stub_->GetMe(&ctx, v1::GetMeRequest(), &me).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(UserServiceTest, RefreshRotatesAndAUsedTokenIsDead) {
  auto login = RegisterAndLogin("frank@example.com");
  v1::RefreshRequest req;
  req.set_refresh_token(login.refresh_token());
  v1::LoginResponse first;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Refresh(&ctx, req, &first).ok());
  }
  EXPECT_NE(first.refresh_token(), login.refresh_token());
  EXPECT_TRUE(auth_->verifier().Verify(first.access_token()).ok());
  // The old one is dead; presenting it again also kills the rotated one (theft response).
  {
    grpc::ClientContext ctx;
    v1::LoginResponse r;
    EXPECT_EQ(stub_->Refresh(&ctx, req, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    v1::RefreshRequest next;
    next.set_refresh_token(first.refresh_token());
    v1::LoginResponse r;
    EXPECT_EQ(stub_->Refresh(&ctx, next, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_F(UserServiceTest, LogoutRevokesTheRefreshToken) {
  auto login = RegisterAndLogin("gina@example.com");
  {
    grpc::ClientContext ctx;
    v1::LogoutRequest req;
    req.set_refresh_token(login.refresh_token());
    v1::LogoutResponse resp;
    ASSERT_TRUE(stub_->Logout(&ctx, req, &resp).ok());
  }
  grpc::ClientContext ctx;
  v1::RefreshRequest req;
  req.set_refresh_token(login.refresh_token());
  v1::LoginResponse r;
  EXPECT_EQ(stub_->Refresh(&ctx, req, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx2;
  v1::RefreshRequest empty;
  EXPECT_EQ(stub_->Refresh(&ctx2, empty, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(UserServiceTest, ApiKeysLoginListAndRevoke) {
  auto login = RegisterAndLogin("hank@example.com");
  v1::CreateApiKeyResponse created;
  {
    grpc::ClientContext ctx;
    Authorize(ctx, login.access_token());
    v1::CreateApiKeyRequest req;
    req.set_name("ci bot");
    ASSERT_TRUE(stub_->CreateApiKey(&ctx, req, &created).ok());
  }
  EXPECT_EQ(created.key().rfind("aik_", 0), 0u);
  EXPECT_EQ(created.api_key().prefix(), created.key().substr(0, 12));
  // The key is not stored in clear.
  EXPECT_EQ(pool_
                ->Exec("SELECT count(*) FROM api_keys WHERE key_hash = $1 OR prefix = $1",
                       {created.key()})
                ->Int(0, 0),
            0);

  v1::LoginResponse by_key;
  {
    grpc::ClientContext ctx;
    v1::LoginRequest req;
    req.set_api_key(created.key());
    ASSERT_TRUE(stub_->Login(&ctx, req, &by_key).ok());
  }
  EXPECT_EQ(by_key.user().id(), login.user().id());
  EXPECT_TRUE(by_key.refresh_token().empty());

  {
    grpc::ClientContext ctx;
    Authorize(ctx, login.access_token());
    v1::ListApiKeysResponse list;
    ASSERT_TRUE(stub_->ListApiKeys(&ctx, v1::ListApiKeysRequest(), &list).ok());
    ASSERT_EQ(list.api_keys_size(), 1);
    EXPECT_TRUE(list.api_keys(0).has_last_used_at());
    EXPECT_FALSE(list.api_keys(0).has_revoked_at());
  }
  // Another user cannot revoke it.
  auto other = RegisterAndLogin("ivy@example.com");
  {
    grpc::ClientContext ctx;
    Authorize(ctx, other.access_token());
    v1::RevokeApiKeyRequest req;
    req.set_id(created.api_key().id());
    v1::RevokeApiKeyResponse resp;
    EXPECT_EQ(stub_->RevokeApiKey(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, login.access_token());
    v1::RevokeApiKeyRequest req;
    req.set_id(created.api_key().id());
    v1::RevokeApiKeyResponse resp;
    ASSERT_TRUE(stub_->RevokeApiKey(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.api_key().has_revoked_at());
  }
  grpc::ClientContext ctx;
  v1::LoginRequest req;
  req.set_api_key(created.key());
  v1::LoginResponse r;
  EXPECT_EQ(stub_->Login(&ctx, req, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext ctx2;
  Authorize(ctx2, login.access_token());
  v1::CreateApiKeyRequest noname;
  v1::CreateApiKeyResponse none;
  auto st = stub_->CreateApiKey(&ctx2, noname, &none);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("name"), std::string::npos);
}

TEST_F(UserServiceTest, AdminRpcsNeedTheAdminRole) {
  auto user = RegisterAndLogin("user@example.com");
  std::string admin = AdminToken("admin@example.com");
  {
    grpc::ClientContext ctx;
    Authorize(ctx, user.access_token());
    v1::ListUsersResponse resp;
    EXPECT_EQ(stub_->ListUsers(&ctx, v1::ListUsersRequest(), &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, user.access_token());
    v1::SetUserRoleRequest req;
    req.set_user_id(user.user().id());
    req.set_role(v1::ROLE_ADMIN);
    v1::User resp;
    EXPECT_EQ(stub_->SetUserRole(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, user.access_token());
    v1::SetUserRateLimitRequest req;
    req.set_user_id(user.user().id());
    req.set_requests_per_minute(1000);
    v1::User resp;
    EXPECT_EQ(stub_->SetUserRateLimit(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, admin);
    v1::SetUserRateLimitRequest req;
    req.set_user_id(user.user().id());
    req.set_requests_per_minute(7);
    v1::User resp;
    ASSERT_TRUE(stub_->SetUserRateLimit(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.requests_per_minute(), 7);
  }
  {
    grpc::ClientContext ctx;
    Authorize(ctx, admin);
    v1::SetUserRoleRequest req;
    req.set_user_id(user.user().id());
    req.set_role(v1::ROLE_SERVICE);
    v1::User resp;
    EXPECT_EQ(stub_->SetUserRole(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    req.set_role(v1::ROLE_ADMIN);
    grpc::ClientContext ctx2;
    Authorize(ctx2, admin);
    ASSERT_TRUE(stub_->SetUserRole(&ctx2, req, &resp).ok());
    EXPECT_EQ(resp.role(), v1::ROLE_ADMIN);
    req.set_user_id(999999);
    grpc::ClientContext ctx3;
    Authorize(ctx3, admin);
    EXPECT_EQ(stub_->SetUserRole(&ctx3, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // The new rate limit and role reach the next token.
  v1::LoginResponse again;
  ASSERT_TRUE(Login("user@example.com", kPassword, &again).ok());
  auto claims = auth_->verifier().Verify(again.access_token());
  EXPECT_EQ(claims->requests_per_minute, 7);
  EXPECT_EQ(claims->role, Role::kAdmin);
}

TEST_F(UserServiceTest, ListUsersPagesThroughEveryone) {
  std::string admin = AdminToken("root@example.com");
  for (int i = 0; i < 6; ++i) {
    v1::User u;
    ASSERT_TRUE(Register("p" + std::to_string(i) + "@example.com", kPassword, &u).ok());
  }
  std::vector<int64_t> seen;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    Authorize(ctx, admin);
    v1::ListUsersRequest req;
    req.set_page_size(3);
    req.set_page_token(token);
    v1::ListUsersResponse resp;
    ASSERT_TRUE(stub_->ListUsers(&ctx, req, &resp).ok());
    for (const auto& u : resp.users()) seen.push_back(u.id());
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen.size(), 7u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(pages, 3);
  grpc::ClientContext ctx;
  Authorize(ctx, admin);
  v1::ListUsersRequest bad;
  bad.set_page_token("bogus");
  v1::ListUsersResponse resp;
  EXPECT_EQ(stub_->ListUsers(&ctx, bad, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(UserServiceTest, SecretsNeverReachTheLog) {
  testing::LogCapture logs;
  auto login = RegisterAndLogin("secret@example.com");
  grpc::ClientContext ctx;
  Authorize(ctx, login.access_token());
  v1::CreateApiKeyRequest req;
  req.set_name("k");
  v1::CreateApiKeyResponse key;
  ASSERT_TRUE(stub_->CreateApiKey(&ctx, req, &key).ok());
  v1::LoginResponse wrong;
  (void)Login("secret@example.com", "wrong password here", &wrong);
  // Every request produced a log line...
  EXPECT_TRUE(logs.Contains("\"method\":\"Register\""));
  EXPECT_TRUE(logs.Contains("\"method\":\"Login\""));
  EXPECT_TRUE(logs.Contains("\"code\":\"UNAUTHENTICATED\""));
  EXPECT_TRUE(logs.Contains(absl::StrCat("\"user_id\":", login.user().id())));
  // ...and none carries a secret.
  std::string text = logs.Text();
  for (const std::string& secret : {std::string(kPassword), std::string("wrong password here"),
                                    login.access_token(), login.refresh_token(), key.key()}) {
    EXPECT_EQ(text.find(secret), std::string::npos) << "leaked: " << secret.substr(0, 8);
  }
  auto hash = pool_->Exec("SELECT password_hash FROM users LIMIT 1")->String(0, 0);
  EXPECT_EQ(text.find(hash), std::string::npos);
}

TEST_F(UserServiceTest, ReflectionListsTheService) {
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel_);
  grpc::ClientContext ctx;
  auto stream = reflection->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  stream->WritesDone();
  bool found = false;
  for (const auto& s : resp.list_services_response().service()) {
    found |= s.name() == "aichat.user.v1.UserService";
  }
  EXPECT_TRUE(found);
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace aichat::user
