#include "cli/client.h"

#include <google/protobuf/util/json_util.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <limits>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "aichat/user/v1/user.grpc.pb.h"

namespace aichat::cli {
namespace {

std::string Env(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

}  // namespace

bool TakeFlag(std::vector<std::string>& args, const std::string& name, std::string* value) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--" + name && i + 1 < args.size()) {
      *value = args[i + 1];
      args.erase(args.begin() + i, args.begin() + i + 2);
      return true;
    }
    if (absl::StartsWith(a, "--" + name + "=")) {
      *value = a.substr(name.size() + 3);
      args.erase(args.begin() + i);
      return true;
    }
  }
  return false;
}

bool TakeSwitch(std::vector<std::string>& args, const std::string& name) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--" + name) {
      args.erase(args.begin() + i);
      return true;
    }
  }
  return false;
}

namespace {

std::string Words(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAUTHENTICATED:
      return "not authorised";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "not allowed";
    case grpc::StatusCode::NOT_FOUND:
      return "not found";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "already exists";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "invalid input";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "limit reached";
    case grpc::StatusCode::UNAVAILABLE:
      return "service unavailable";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "timed out";
    case grpc::StatusCode::CANCELLED:
      return "cancelled";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "not possible now";
    default:
      return "failed";
  }
}

}  // namespace

Cli::Cli(std::vector<std::string>& args) {
  std::string v;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--json") {
      json_ = true;
      args.erase(args.begin() + i);
      break;
    }
  }
  host_ = Env("AICHAT_HOST", "127.0.0.1");
  if (TakeFlag(args, "server", &v)) host_ = v;
  user_addr_ = Env("AICHAT_USER_ADDR", host_ + ":50051");
  conversation_addr_ = Env("AICHAT_CONVERSATION_ADDR", host_ + ":50052");
  agent_addr_ = Env("AICHAT_AGENT_ADDR", host_ + ":50053");
  usage_addr_ = Env("AICHAT_USAGE_ADDR", host_ + ":50054");
  if (TakeFlag(args, "user_addr", &v)) user_addr_ = v;
  if (TakeFlag(args, "conversation_addr", &v)) conversation_addr_ = v;
  if (TakeFlag(args, "agent_addr", &v)) agent_addr_ = v;
  if (TakeFlag(args, "usage_addr", &v)) usage_addr_ = v;
  // TLS: --tls (system roots), --ca FILE (implies --tls), --cert/--key FILE for mutual TLS.
  std::string tls_env = Env("AICHAT_TLS", "");
  tls_.tls = tls_env == "1" || tls_env == "true";
  tls_.tls_ca_file = Env("AICHAT_TLS_CA", "");
  tls_.tls_cert_file = Env("AICHAT_TLS_CLIENT_CERT", "");
  tls_.tls_key_file = Env("AICHAT_TLS_CLIENT_KEY", "");
  tls_.tls_server_name = Env("AICHAT_TLS_SERVER_NAME", "");
  if (TakeSwitch(args, "tls")) tls_.tls = true;
  if (TakeFlag(args, "ca", &v)) tls_.tls_ca_file = v;
  if (TakeFlag(args, "cert", &v)) tls_.tls_cert_file = v;
  if (TakeFlag(args, "key", &v)) tls_.tls_key_file = v;
  if (TakeFlag(args, "tls_server_name", &v)) tls_.tls_server_name = v;
  if (!tls_.tls_ca_file.empty() || !tls_.tls_cert_file.empty()) tls_.tls = true;
}

std::shared_ptr<grpc::Channel> Cli::Channel(const std::string& service) {
  for (auto& [name, ch] : channels_) {
    if (name == service) return ch;
  }
  std::string addr = service == "user"           ? user_addr_
                     : service == "conversation" ? conversation_addr_
                     : service == "ai-agent"     ? agent_addr_
                                                 : usage_addr_;
  auto ch = MakePeerChannel(addr, tls_);
  channels_.emplace_back(service, ch);
  return ch;
}

std::optional<Credentials> Cli::LoadCredentials() const {
  auto creds = store_.Load();
  if (!creds.ok()) {
    std::cerr << "aichat: " << creds.status().message() << "\n";
    return std::nullopt;
  }
  return *creds;
}

std::unique_ptr<grpc::ClientContext> Cli::Context(bool auth, absl::Duration deadline) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(deadline)));
  if (!auth) return ctx;
  auto creds = LoadCredentials();
  if (!creds) {
    std::cerr << "aichat: not logged in (run `aichat login EMAIL`)\n";
    return nullptr;
  }
  if (creds->expires_at - 30 < absl::ToUnixSeconds(absl::Now()) && !creds->refresh_token.empty()) {
    auto stub = user::v1::UserService::NewStub(Channel("user"));
    grpc::ClientContext rctx;
    rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    user::v1::RefreshRequest req;
    req.set_refresh_token(creds->refresh_token);
    user::v1::LoginResponse resp;
    if (stub->Refresh(&rctx, req, &resp).ok()) {
      creds->access_token = resp.access_token();
      creds->refresh_token = resp.refresh_token();
      creds->expires_at = resp.expires_at().seconds();
      if (auto saved = SaveCredentials(*creds); !saved.ok()) {
        std::cerr << "aichat: " << saved.message() << "\n";
      }
    }
  }
  ctx->AddMetadata("authorization", "Bearer " + creds->access_token);
  return ctx;
}

void Cli::Print(const google::protobuf::Message& m, const std::string& text) const {
  if (json_) {
    std::string out;
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
    std::cout << out << "\n";
  } else {
    std::cout << text;
    if (!text.empty() && text.back() != '\n') std::cout << "\n";
  }
}

int Cli::Fail(const std::string& what, const grpc::Status& status) const {
  std::string msg = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      (msg.find("failed to connect") != std::string::npos ||
       msg.find("connections to all backends failing") != std::string::npos)) {
    msg = "cannot reach the service (is the suite running? scripts/run.sh status)";
  }
  std::cerr << "aichat: " << what << ": " << Words(status.error_code());
  if (!msg.empty()) std::cerr << ": " << msg;
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    std::cerr << " (run `aichat login EMAIL`)";
  }
  std::cerr << "\n";
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kAuth;
    case grpc::StatusCode::NOT_FOUND:
      return kNotFound;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return kLimited;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kUnavailable;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return kInvalid;
    case grpc::StatusCode::CANCELLED:
      return kCancelled;
    default:
      return kError;
  }
}

int Cli::Usage(const std::string& text) const {
  std::cerr << "usage: " << text << "\n";
  return kUsage;
}

std::string ReadSecret(const std::string& prompt) {
  std::string line;
  if (isatty(STDIN_FILENO)) {
    std::cerr << prompt << std::flush;
    termios old{};
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~ECHO;
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::getline(std::cin, line);
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  } else {
    std::getline(std::cin, line);
  }
  return line;
}

std::string FormatTime(int64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

std::string FormatUsd(int64_t nanos) {
  const char* sign = nanos < 0 ? "-" : "";
  uint64_t n = nanos < 0 ? uint64_t(-(nanos + 1)) + 1 : uint64_t(nanos);
  return absl::StrFormat("%s$%d.%09d", sign, n / 1000000000, n % 1000000000);
}

std::string FormatPrice(int64_t micros_per_mtok) {
  std::string s = absl::StrFormat("%d.%06d", micros_per_mtok / 1000000, micros_per_mtok % 1000000);
  while (s.back() == '0' && s.size() > s.find('.') + 3) s.pop_back();
  return "$" + s;
}

std::optional<int64_t> ParseDecimal(const std::string& text, int scale) {
  std::string_view s = text;
  if (!s.empty() && s.front() == '$') s.remove_prefix(1);
  size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if ((whole.empty() && frac.empty()) || frac.size() > static_cast<size_t>(scale)) {
    return std::nullopt;
  }
  if (dot != std::string_view::npos && frac.empty()) return std::nullopt;  // "5."
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t v = 0;
  auto push = [&](char c) {
    if (c < '0' || c > '9' || v > (kMax - (c - '0')) / 10) return false;
    v = v * 10 + (c - '0');
    return true;
  };
  for (char c : whole) {
    if (!push(c)) return std::nullopt;
  }
  for (int i = 0; i < scale; ++i) {
    if (!push(i < static_cast<int>(frac.size()) ? frac[i] : '0')) return std::nullopt;
  }
  return v;
}

}  // namespace aichat::cli
