// What every `aichat` command shares: where the services are, the saved login,
// output in text or JSON, and one-line error messages for gRPC statuses.
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cli/credential_store.h"
#include "common/grpc_channel.h"

namespace google::protobuf {
class Message;
}

namespace aichat::cli {

class Cli {
 public:
  // Parses global flags (--json, --server, --user_addr, --tls, --ca, ...) out of args.
  explicit Cli(std::vector<std::string>& args);
  // INVALID_ARGUMENT when the TLS files given cannot be used.
  absl::Status CheckTls() const { return CheckPeerChannelOptions(tls_); }

  bool json() const { return json_; }
  std::shared_ptr<grpc::Channel> Channel(const std::string& service);  // "user", ...

  // ~/.config/aichat/credentials (mode 0600, in a 0700 directory; see credential_store.h).
  std::string CredentialsPath() const { return store_.path(); }
  // nullopt when not logged in, or (after saying why on stderr) when the store is unsafe.
  std::optional<Credentials> LoadCredentials() const;
  absl::Status SaveCredentials(const Credentials& c) const { return store_.Save(c); }
  absl::Status ForgetCredentials() const { return store_.Forget(); }

  // A context with a deadline and, when `auth`, a fresh access token (refreshed
  // with the saved refresh token when it is about to expire). nullptr after
  // printing "not logged in" when there is no usable login.
  std::unique_ptr<grpc::ClientContext> Context(bool auth,
                                               absl::Duration deadline = absl::Seconds(30));

  // Prints a message as JSON (with --json) or as text via `text`.
  void Print(const google::protobuf::Message& m, const std::string& text) const;

  // "aichat: <what>: <clear words>" on stderr; returns the exit code for it.
  int Fail(const std::string& what, const grpc::Status& status) const;
  int Usage(const std::string& text) const;

 private:
  bool json_ = false;
  CredentialStore store_{CredentialStore::DefaultDir()};
  std::string host_;
  std::string user_addr_, conversation_addr_, agent_addr_, usage_addr_;
  PeerChannelOptions tls_;
  std::vector<std::pair<std::string, std::shared_ptr<grpc::Channel>>> channels_;
};

// Reads a password: without echo from a terminal, else one line of stdin.
std::string ReadSecret(const std::string& prompt);
std::string FormatTime(int64_t unix_seconds);
// "$0.000435000" from nanos, exact (integer formatting).
std::string FormatUsd(int64_t nanos);
// A price in micro-USD per million tokens as "$0.15" (exact; trailing zeros dropped).
std::string FormatPrice(int64_t micros_per_mtok);
// Parses a non-negative decimal ("5", "0.25", "$1.5") into units of 10^-scale exactly, with
// integer arithmetic only: ParseDecimal("1.5", 9) == 1500000000. nullopt when it is not a
// plain decimal, has more than `scale` fractional digits, or does not fit in int64.
std::optional<int64_t> ParseDecimal(const std::string& text, int scale);
// Takes "--name VALUE" or "--name=VALUE" out of args; true when it was there.
bool TakeFlag(std::vector<std::string>& args, const std::string& name, std::string* value);
// Takes a boolean "--name" out of args.
bool TakeSwitch(std::vector<std::string>& args, const std::string& name);

// Exit codes by outcome, for scripts.
enum ExitCode {
  kOk = 0,
  kError = 1,
  kUsage = 2,
  kAuth = 3,  // not logged in, bad credentials, permission denied
  kNotFound = 4,
  kLimited = 5,      // rate limit, budget, provider 429
  kUnavailable = 6,  // a service or the provider is down
  kInvalid = 7,      // bad input
  kCancelled = 130,
};

}  // namespace aichat::cli
