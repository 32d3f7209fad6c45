// The UserService test fixture: the service over real gRPC (loopback) on a
// fresh real PostgreSQL database, with helpers for the common calls.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "aichat/user/v1/user.grpc.pb.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"
#include "services/user/migrations.h"
#include "services/user/pg_user_store.h"
#include "services/user/user_service.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace aichat::user {

inline constexpr char kPassword[] = "correct horse battery";

class UserServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PgPoolOptions opts;
    opts.url = aichat::testing::TestPostgres::Shared().CreateDatabase();
    opts.size = 8;
    pool_ = std::make_unique<PgPool>(opts);
    ASSERT_TRUE(ApplyMigrations(*pool_, Migrations()).ok());
    store_ = std::make_unique<PgUserStore>(pool_.get());
    auth_ = std::make_unique<Authenticator>(keys_.MakeAuthenticator());
    // The minimum Argon2id cost keeps tests fast; production uses the interactive limits.
    hasher_ = std::make_unique<PasswordHasher>(PasswordHasherOptions{1, 8192});
    workers_ = std::make_unique<WorkerPool>(8);
    StartService();
  }

  // (Re)starts the service with these options and guards.
  void StartService(UserServiceOptions options = {}, UserServiceGuards guards = {}) {
    if (server_) server_->Shutdown();
    server_.reset();
    service_ = std::make_unique<UserServiceImpl>(store_.get(), auth_.get(),
                                                 *TokenSigner::Create(keys_.pair().private_key),
                                                 hasher_.get(), workers_.get(), options, guards);
    server_ = std::make_unique<ServiceServer>(
        ServerOptions{.name = "user", .listen = "127.0.0.1:0", .metrics_listen = ""});
    server_->AddService(service_.get());
    ASSERT_TRUE(server_->Start().ok());
    channel_ = aichat::testing::LocalChannel(server_->port());
    stub_ = v1::UserService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  grpc::Status Register(const std::string& email, const std::string& password, v1::User* out,
                        const std::string& name = "") {
    grpc::ClientContext ctx;
    v1::RegisterRequest req;
    req.set_email(email);
    req.set_password(password);
    req.set_display_name(name);
    return stub_->Register(&ctx, req, out);
  }

  grpc::Status Login(const std::string& email, const std::string& password,
                     v1::LoginResponse* out) {
    grpc::ClientContext ctx;
    v1::LoginRequest req;
    req.set_email(email);
    req.set_password(password);
    return stub_->Login(&ctx, req, out);
  }

  v1::LoginResponse RegisterAndLogin(const std::string& email) {
    v1::User u;
    EXPECT_TRUE(Register(email, kPassword, &u).ok());
    v1::LoginResponse login;
    EXPECT_TRUE(Login(email, kPassword, &login).ok());
    return login;
  }

  // Promotes directly in the database, as `aichat-user set-role` does.
  std::string AdminToken(const std::string& email) {
    auto login = RegisterAndLogin(email);
    EXPECT_TRUE(store_->SetRole(login.user().id(), Role::kAdmin).ok());
    v1::LoginResponse again;
    EXPECT_TRUE(Login(email, kPassword, &again).ok());
    return again.access_token();
  }

  int64_t Count(const std::string& table) {
    return pool_->Exec("SELECT count(*) FROM " + table)->Int(0, 0);
  }

  testing::TestKeys keys_;
  std::unique_ptr<PgPool> pool_;
  std::unique_ptr<PgUserStore> store_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<PasswordHasher> hasher_;
  std::unique_ptr<WorkerPool> workers_;
  std::unique_ptr<UserServiceImpl> service_;
  std::unique_ptr<ServiceServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::UserService::Stub> stub_;
};

}  // namespace aichat::user
