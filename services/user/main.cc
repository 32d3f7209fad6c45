// aichat-user: the user service, plus operator sub-commands.
//   aichat-user [serve]                 run the service
//   aichat-user keygen                  print a new Ed25519 key pair as env lines
//   aichat-user mint-service-token      print a long-lived role=service token
//   aichat-user set-role EMAIL ROLE     grant admin (or user) directly in the database
#include <iostream>

#include "absl/time/clock.h"
#include "common/bootstrap.h"
#include "common/grpc_channel.h"
#include "common/log.h"
#include "services/user/config.h"
#include "services/user/migrations.h"
#include "services/user/pg_user_store.h"
#include "services/user/user_service.h"

namespace aichat::user {
namespace {

constexpr char kProgram[] = "aichat-user";

int Fail(const absl::Status& st) { return StartupFailure(kProgram, st); }

int KeyGen() {
  KeyPair kp = GenerateKeyPair();
  std::cout << "AICHAT_JWT_SIGNING_KEY=" << kp.private_key << "\n"
            << "AICHAT_JWT_PUBLIC_KEYS=" << kp.public_key << "\n";
  return 0;
}

int MintServiceToken(const UserConfig& cfg) {
  auto signer = TokenSigner::Create(cfg.signing_key);
  if (!signer.ok()) return Fail(signer.status());
  TokenClaims claims;
  claims.user_id = 0;
  claims.role = Role::kService;
  claims.issued_at = absl::Now();
  claims.expires_at = claims.issued_at + cfg.service_token_ttl;
  claims.token_id = absl::StrCat(cfg.service_name, ".", RandomToken(9));
  std::cout << signer->Sign(claims) << "\n";
  return 0;
}

int SetRole(const UserConfig& cfg, const std::string& email_arg, const std::string& role_arg) {
  auto email = NormalizeEmail(email_arg);
  if (!email.ok()) return Fail(email.status());
  auto role = ParseRole(role_arg);
  if (!role.ok() || *role == Role::kService) {
    return Fail(absl::InvalidArgumentError("ROLE must be user or admin"));
  }
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return Fail(pool.status());
  PgUserStore store(pool->get());
  auto user = store.FindUserByEmail(*email);
  if (!user.ok()) return Fail(absl::NotFoundError("no account with that email; Register first"));
  auto updated = store.SetRole(user->id, *role);
  if (!updated.ok()) return Fail(updated.status());
  std::cout << "user " << updated->id << " <" << updated->email << "> is now "
            << RoleName(updated->role) << "\n";
  return 0;
}

int Serve(const UserConfig& cfg) {
  SetLogService("user");
  auto verifier = TokenVerifier::Create(cfg.common.jwt_public_keys);
  if (!verifier.ok()) return Fail(verifier.status());
  auto signer = TokenSigner::Create(cfg.signing_key);
  if (!signer.ok()) return Fail(signer.status());
  auto pool = OpenDatabase(cfg.common, Migrations());
  if (!pool.ok()) return Fail(pool.status());
  Authenticator auth(*std::move(verifier));
  PasswordHasher hasher(cfg.password);
  WorkerPool workers(cfg.common.workers);
  PgUserStore store(pool->get());
  HashGate hash_gate(cfg.hash_concurrency);
  LoginThrottle throttle(cfg.throttle);
  UserServiceGuards guards{.hash_gate = &hash_gate, .throttle = &throttle};
  std::unique_ptr<BudgetClient> budgets;
  if (cfg.service.default_monthly_budget_nanos > 0) {
    budgets = MakeUsageBudgetClient(MakePeerChannel(cfg.usage_addr, cfg.common.peer), &*signer);
    guards.budgets = budgets.get();
  }
  TokenSigner service_signer = *signer;
  UserServiceImpl service(&store, &auth, std::move(service_signer), &hasher, &workers, cfg.service,
                          guards);

  ServiceServer server(ServerOptionsFrom("user", cfg.common));
  (*pool)->ExportMetrics(server.registry());
  server.AddService(&service);
  if (auto st = server.Start(); !st.ok()) return Fail(st);
  WaitForTerminationSignal();
  server.Shutdown();
  return 0;
}

}  // namespace
}  // namespace aichat::user

int main(int argc, char** argv) {
  using namespace aichat;
  using namespace aichat::user;
  BlockTerminationSignals();
  Config config(
      "aichat-user: accounts, login, tokens and API keys.\n"
      "Usage: aichat-user [serve | keygen | mint-service-token | set-role EMAIL ROLE] [--flags]");
  DeclareSettings(config);
  auto parsed = config.Parse(argc, argv);
  if (!parsed.ok()) return Fail(parsed.status());
  if (!*parsed) return 0;
  const auto& args = config.positional();
  std::string cmd = args.empty() ? "serve" : args[0];
  if (cmd == "keygen") return KeyGen();
  if (cmd == "mint-service-token") {
    auto cfg = ReadSettings(config, /*needs_database=*/false);
    if (!cfg.ok()) return Fail(cfg.status());
    return MintServiceToken(*cfg);
  }
  if (cmd == "set-role") {
    if (args.size() != 3) return Fail(absl::InvalidArgumentError("usage: set-role EMAIL ROLE"));
    // Needs only the database: an operator runs it with DATABASE_URL alone.
    UserConfig cfg;
    cfg.common.database_url = config.Get("database_url");
    cfg.common.db_pool_size = 1;
    if (cfg.common.database_url.empty()) {
      return Fail(absl::InvalidArgumentError("DATABASE_URL (--database_url) is required"));
    }
    return SetRole(cfg, args[1], args[2]);
  }
  if (cmd != "serve") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command ", cmd, " (see --help)")));
  }
  auto cfg = ReadSettings(config, /*needs_database=*/true);
  if (!cfg.ok()) return Fail(cfg.status());
  return Serve(*cfg);
}
