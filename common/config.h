// Settings from environment variables, overridable by `--name=value` flags, with
// `--help` listing every setting. Each service declares its settings in its own
// config.cc and reads typed values from here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc_channel.h"
#include "common/tls.h"

namespace aichat {

class Config {
 public:
  explicit Config(std::string program_summary);

  // `flag` is used as --flag; `env` is the environment variable. A secret's value
  // is never printed by --help.
  void Add(std::string flag, std::string env, std::string default_value, std::string help,
           bool secret = false);

  // Reads the environment, then argv. Unknown flags are an error. Returns
  // false (after printing the help text) when --help was given.
  absl::StatusOr<bool> Parse(int argc, char** argv);

  // Words of argv that are not flags (sub-commands).
  const std::vector<std::string>& positional() const { return positional_; }

  std::string Get(const std::string& flag) const;
  absl::StatusOr<int64_t> GetInt(const std::string& flag, int64_t min, int64_t max) const;
  absl::StatusOr<absl::Duration> GetDuration(const std::string& flag) const;
  absl::StatusOr<bool> GetBool(const std::string& flag) const;

  std::string HelpText() const;

 private:
  struct Entry {
    std::string flag;
    std::string env;
    std::string default_value;
    std::string help;
    bool secret;
    std::string value;
  };
  const Entry& Find(const std::string& flag) const;

  std::string summary_;
  std::vector<Entry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
  std::vector<std::string> positional_;
};

// Settings every service has: where to listen, the database, token verification,
// pools and timeouts. `default_port` and `default_metrics_port` follow DESIGN.md 6.
void AddCommonSettings(Config& config, int default_port, int default_metrics_port);

struct CommonSettings {
  std::string listen;
  std::string metrics_listen;  // empty = no metrics endpoint
  std::string database_url;
  std::vector<std::string> jwt_public_keys;  // base64url Ed25519 public keys
  int db_pool_size = 8;
  int workers = 8;
  absl::Duration shutdown_grace;
  int max_message_bytes = 4 << 20;
  ServerTlsFiles tls;                       // empty: plaintext
  std::string health_listen;                // a plaintext health-only listener; empty: none
  absl::Duration max_connection_age;        // zero: connections never age out
  absl::Duration max_connection_age_grace;  // default: shutdown_grace
  PeerChannelOptions peer;                  // how this service dials its peers
};
absl::StatusOr<CommonSettings> ReadCommonSettings(const Config& config);

}  // namespace aichat
