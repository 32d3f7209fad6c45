#include "common/config.h"

#include <cstdlib>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace aichat {

Config::Config(std::string program_summary) : summary_(std::move(program_summary)) {}

void Config::Add(std::string flag, std::string env, std::string default_value, std::string help,
                 bool secret) {
  index_[flag] = entries_.size();
  std::string value = default_value;
  entries_.push_back(Entry{std::move(flag), std::move(env), std::move(default_value),
                           std::move(help), secret, std::move(value)});
}

absl::StatusOr<bool> Config::Parse(int argc, char** argv) {
  for (auto& e : entries_) {
    if (const char* v = std::getenv(e.env.c_str()); v != nullptr) {
      e.value = v;
    }
  }
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (flags_done || !absl::StartsWith(arg, "--")) {
      positional_.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "--help" || arg == "-h") {
      std::cout << HelpText();
      return false;
    }
    arg.remove_prefix(2);
    std::string name;
    std::string value;
    if (auto eq = arg.find('='); eq != absl::string_view::npos) {
      name = std::string(arg.substr(0, eq));
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      name = std::string(arg);
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("flag --", arg, " needs a value"));
    }
    auto it = index_.find(name);
    if (it == index_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    entries_[it->second].value = value;
  }
  return true;
}

const Config::Entry& Config::Find(const std::string& flag) const {
  auto it = index_.find(flag);
  if (it == index_.end()) {
    std::cerr << "internal error: setting " << flag << " was never declared\n";
    std::abort();
  }
  return entries_[it->second];
}

std::string Config::Get(const std::string& flag) const { return Find(flag).value; }

absl::StatusOr<int64_t> Config::GetInt(const std::string& flag, int64_t min, int64_t max) const {
  const Entry& e = Find(flag);
  int64_t v = 0;
  if (!absl::SimpleAtoi(e.value, &v) || v < min || v > max) {
    return absl::InvalidArgumentError(
        absl::StrCat(e.env, " (--", e.flag, ") must be an integer in [", min, ", ", max, "]"));
  }
  return v;
}

absl::StatusOr<absl::Duration> Config::GetDuration(const std::string& flag) const {
  const Entry& e = Find(flag);
  absl::Duration d;
  if (!absl::ParseDuration(e.value, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(e.env, " (--", e.flag, ") must be a duration like 30s or 500ms"));
  }
  return d;
}

absl::StatusOr<bool> Config::GetBool(const std::string& flag) const {
  const Entry& e = Find(flag);
  std::string v = absl::AsciiStrToLower(e.value);
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off" || v.empty()) return false;
  return absl::InvalidArgumentError(absl::StrCat(e.env, " (--", e.flag, ") must be true or false"));
}

std::string Config::HelpText() const {
  std::string out =
      absl::StrCat(summary_, "\n\nSettings (environment variable, or --flag=value):\n");
  for (const auto& e : entries_) {
    absl::StrAppend(&out, "  --", e.flag, "  [$", e.env, "]\n      ", e.help);
    if (e.secret) {
      absl::StrAppend(&out, " (secret)");
    } else if (!e.default_value.empty()) {
      absl::StrAppend(&out, " (default: ", e.default_value, ")");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

void AddCommonSettings(Config& config, int default_port, int default_metrics_port) {
  config.Add("listen", "AICHAT_LISTEN", absl::StrCat("0.0.0.0:", default_port),
             "gRPC listen address (host:port; port 0 picks a free one)");
  config.Add("metrics_listen", "AICHAT_METRICS_LISTEN",
             absl::StrCat("0.0.0.0:", default_metrics_port),
             "Prometheus /metrics listen address; empty disables it");
  config.Add("database_url", "DATABASE_URL", "",
             "PostgreSQL connection URL of this service's own database", /*secret=*/true);
  config.Add("jwt_public_keys", "AICHAT_JWT_PUBLIC_KEYS", "",
             "Comma-separated base64url Ed25519 public keys that access tokens may be signed with");
  config.Add("db_pool_size", "AICHAT_DB_POOL_SIZE", "8", "PostgreSQL connections at most");
  config.Add("workers", "AICHAT_WORKERS", "8", "Threads for blocking work (database calls)");
  config.Add("shutdown_grace", "AICHAT_SHUTDOWN_GRACE", "30s",
             "On SIGTERM, time allowed for in-flight calls and streams to finish");
  config.Add("max_connection_age", "AICHAT_MAX_CONNECTION_AGE", "5m",
             "Clients' connections are closed (GOAWAY) after about this long, so that they look "
             "up the replicas again and spread over new ones; 0: never");
  config.Add("max_connection_age_grace", "AICHAT_MAX_CONNECTION_AGE_GRACE", "",
             "Time calls still running on an aged-out connection get to finish; empty: "
             "AICHAT_SHUTDOWN_GRACE (so a stream is never cut sooner than a shutdown would)");
  config.Add("max_message_bytes", "AICHAT_MAX_MESSAGE_BYTES", "4194304",
             "Largest gRPC message accepted");
  config.Add("tls_cert", "AICHAT_TLS_CERT", "",
             "PEM certificate chain: the gRPC listener speaks TLS (with AICHAT_TLS_KEY); also "
             "this service's client certificate towards peers when AICHAT_PEER_TLS is on");
  config.Add("tls_key", "AICHAT_TLS_KEY", "", "PEM private key of AICHAT_TLS_CERT");
  config.Add("tls_client_ca", "AICHAT_TLS_CLIENT_CA", "",
             "PEM CA bundle: callers must present a certificate it signed (mutual TLS)");
  config.Add("health_listen", "AICHAT_HEALTH_LISTEN", "",
             "Extra plaintext listener serving only grpc.health.v1.Health (for Kubernetes "
             "probes, which cannot speak TLS); empty: none");
  config.Add("peer_tls", "AICHAT_PEER_TLS", "false",
             "Call peer services over TLS, presenting AICHAT_TLS_CERT/KEY when set (mutual TLS)");
  config.Add("peer_tls_ca", "AICHAT_PEER_TLS_CA", "",
             "PEM CA bundle that peers' certificates must chain to; default AICHAT_TLS_CLIENT_CA, "
             "else the system roots");
}

absl::StatusOr<CommonSettings> ReadCommonSettings(const Config& config) {
  CommonSettings s;
  s.listen = config.Get("listen");
  s.metrics_listen = config.Get("metrics_listen");
  s.database_url = config.Get("database_url");
  if (s.database_url.empty()) {
    return absl::InvalidArgumentError("DATABASE_URL (--database_url) is required");
  }
  for (absl::string_view k :
       absl::StrSplit(config.Get("jwt_public_keys"), ',', absl::SkipWhitespace())) {
    s.jwt_public_keys.emplace_back(absl::StripAsciiWhitespace(k));
  }
  if (s.jwt_public_keys.empty()) {
    return absl::InvalidArgumentError(
        "AICHAT_JWT_PUBLIC_KEYS (--jwt_public_keys) is required; `aichat-user keygen` makes a "
        "pair");
  }
  auto pool = config.GetInt("db_pool_size", 1, 1000);
  if (!pool.ok()) return pool.status();
  s.db_pool_size = int(*pool);
  auto workers = config.GetInt("workers", 1, 1000);
  if (!workers.ok()) return workers.status();
  s.workers = int(*workers);
  auto grace = config.GetDuration("shutdown_grace");
  if (!grace.ok()) return grace.status();
  s.shutdown_grace = *grace;
  auto age = config.GetDuration("max_connection_age");
  if (!age.ok()) return age.status();
  s.max_connection_age = *age;
  s.max_connection_age_grace = s.shutdown_grace;
  if (!config.Get("max_connection_age_grace").empty()) {
    auto age_grace = config.GetDuration("max_connection_age_grace");
    if (!age_grace.ok()) return age_grace.status();
    s.max_connection_age_grace = *age_grace;
  }
  auto max_msg = config.GetInt("max_message_bytes", 1024, 64 << 20);
  if (!max_msg.ok()) return max_msg.status();
  s.max_message_bytes = int(*max_msg);
  s.tls = {.cert_file = config.Get("tls_cert"),
           .key_file = config.Get("tls_key"),
           .client_ca_file = config.Get("tls_client_ca")};
  if (auto creds = MakeServerCredentials(s.tls); !creds.ok()) return creds.status();
  s.health_listen = config.Get("health_listen");
  auto peer_tls = config.GetBool("peer_tls");
  if (!peer_tls.ok()) return peer_tls.status();
  s.peer.tls = *peer_tls;
  if (s.peer.tls) {
    s.peer.tls_ca_file = config.Get("peer_tls_ca");
    if (s.peer.tls_ca_file.empty()) s.peer.tls_ca_file = s.tls.client_ca_file;
    s.peer.tls_cert_file = s.tls.cert_file;
    s.peer.tls_key_file = s.tls.key_file;
  }
  if (auto st = CheckPeerChannelOptions(s.peer); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("AICHAT_PEER_TLS: ", st.message()));
  }
  return s;
}

}  // namespace aichat
