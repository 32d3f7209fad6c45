// Account commands: register, login, logout, whoami, keys, users (admin).
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "cli/commands.h"

namespace aichat::cli {
namespace {

using user::v1::UserService;

const char* RoleWord(user::v1::Role r) {
  switch (r) {
    case user::v1::ROLE_ADMIN:
      return "admin";
    case user::v1::ROLE_SERVICE:
      return "service";
    default:
      return "user";
  }
}

std::string UserText(const user::v1::User& u) {
  return absl::StrFormat("%s (id %d, %s, %d requests/minute)%s", u.email(), u.id(),
                         RoleWord(u.role()), u.requests_per_minute(),
                         u.display_name().empty() ? "" : " — " + u.display_name());
}

}  // namespace

int Register(Cli& cli, const Args& args) {
  if (args.empty() || args.size() > 2) return cli.Usage("aichat register EMAIL [DISPLAY NAME]");
  user::v1::RegisterRequest req;
  req.set_email(args[0]);
  if (args.size() == 2) req.set_display_name(args[1]);
  req.set_password(ReadSecret("Password (8+ characters): "));
  auto ctx = cli.Context(false);
  user::v1::User resp;
  auto st = UserService::NewStub(cli.Channel("user"))->Register(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("register", st);
  cli.Print(resp, "Registered " + UserText(resp) + ". Next: aichat login " + resp.email());
  return kOk;
}

int Login(Cli& cli, const Args& args) {
  user::v1::LoginRequest req;
  if (args.size() == 2 && args[0] == "--api-key") {
    req.set_api_key(args[1]);
  } else if (args.size() == 1) {
    req.set_email(args[0]);
    req.set_password(ReadSecret("Password: "));
  } else {
    return cli.Usage("aichat login EMAIL | aichat login --api-key KEY");
  }
  auto ctx = cli.Context(false);
  user::v1::LoginResponse resp;
  auto st = UserService::NewStub(cli.Channel("user"))->Login(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("login", st);
  Credentials c{resp.access_token(), resp.refresh_token(), resp.expires_at().seconds(),
                resp.user().email(), resp.user().id()};
  if (auto saved = cli.SaveCredentials(c); !saved.ok()) {
    std::cerr << "aichat: login not saved: " << saved.message() << "\n";
    return kError;
  }
  // The tokens are written to the credentials file only, never to stdout.
  user::v1::User shown = resp.user();
  cli.Print(shown, "Logged in as " + UserText(resp.user()));
  return kOk;
}

int Logout(Cli& cli, const Args& args) {
  auto creds = cli.LoadCredentials();
  if (creds && !creds->refresh_token.empty()) {
    auto ctx = cli.Context(false);
    user::v1::LogoutRequest req;
    req.set_refresh_token(creds->refresh_token);
    user::v1::LogoutResponse resp;
    auto st = UserService::NewStub(cli.Channel("user"))->Logout(ctx.get(), req, &resp);
    if (!st.ok() && st.error_code() != grpc::StatusCode::UNAVAILABLE) return cli.Fail("logout", st);
  }
  if (auto forgot = cli.ForgetCredentials(); !forgot.ok()) {
    std::cerr << "aichat: " << forgot.message() << "\n";
    return kError;
  }
  if (!cli.json()) std::cout << "Logged out.\n";
  return kOk;
}

int WhoAmI(Cli& cli, const Args& args) {
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  user::v1::User resp;
  auto st = UserService::NewStub(cli.Channel("user"))->GetMe(ctx.get(), {}, &resp);
  if (!st.ok()) return cli.Fail("whoami", st);
  cli.Print(resp, UserText(resp));
  return kOk;
}

int ApiKeys(Cli& cli, const Args& args) {
  auto stub = UserService::NewStub(cli.Channel("user"));
  std::string sub = args.empty() ? "list" : args[0];
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  if (sub == "list") {
    user::v1::ListApiKeysResponse resp;
    auto st = stub->ListApiKeys(ctx.get(), {}, &resp);
    if (!st.ok()) return cli.Fail("keys", st);
    std::string text;
    for (const auto& k : resp.api_keys()) {
      absl::StrAppend(&text, absl::StrFormat("%-6d %-14s %-20s created %s%s\n", k.id(), k.prefix(),
                                             k.name(), FormatTime(k.created_at().seconds()),
                                             k.has_revoked_at() ? " (revoked)" : ""));
    }
    cli.Print(resp, text.empty() ? "No API keys." : text);
    return kOk;
  }
  if (sub == "create" && args.size() == 2) {
    user::v1::CreateApiKeyRequest req;
    req.set_name(args[1]);
    user::v1::CreateApiKeyResponse resp;
    auto st = stub->CreateApiKey(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("keys create", st);
    cli.Print(resp, "API key (shown once; store it now): " + resp.key());
    return kOk;
  }
  int64_t id = 0;
  if (sub == "revoke" && args.size() == 2 && absl::SimpleAtoi(args[1], &id)) {
    user::v1::RevokeApiKeyRequest req;
    req.set_id(id);
    user::v1::RevokeApiKeyResponse resp;
    auto st = stub->RevokeApiKey(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("keys revoke", st);
    cli.Print(resp, "Revoked key " + args[1] + ".");
    return kOk;
  }
  return cli.Usage("aichat keys [list | create NAME | revoke ID]");
}

int Users(Cli& cli, const Args& args) {
  auto stub = UserService::NewStub(cli.Channel("user"));
  std::string sub = args.empty() ? "list" : args[0];
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  int64_t id = 0;
  if (sub == "list") {
    user::v1::ListUsersRequest req;
    req.set_page_size(500);
    user::v1::ListUsersResponse resp;
    auto st = stub->ListUsers(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("users", st);
    std::string text;
    for (const auto& u : resp.users()) absl::StrAppend(&text, UserText(u), "\n");
    cli.Print(resp, text);
    return kOk;
  }
  if (sub == "role" && args.size() == 3 && absl::SimpleAtoi(args[1], &id)) {
    user::v1::SetUserRoleRequest req;
    req.set_user_id(id);
    req.set_role(args[2] == "admin"  ? user::v1::ROLE_ADMIN
                 : args[2] == "user" ? user::v1::ROLE_USER
                                     : user::v1::ROLE_UNSPECIFIED);
    user::v1::User resp;
    auto st = stub->SetUserRole(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("users role", st);
    cli.Print(resp, UserText(resp));
    return kOk;
  }
  int rpm = 0;
  if (sub == "rate" && args.size() == 3 && absl::SimpleAtoi(args[1], &id) &&
      absl::SimpleAtoi(args[2], &rpm)) {
    user::v1::SetUserRateLimitRequest req;
    req.set_user_id(id);
    req.set_requests_per_minute(rpm);
    user::v1::User resp;
    auto st = stub->SetUserRateLimit(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("users rate", st);
    cli.Print(resp, UserText(resp));
    return kOk;
  }
  return cli.Usage(
      "aichat users [list | role USER_ID admin|user | rate USER_ID REQUESTS_PER_MINUTE]");
}

}  // namespace aichat::cli
