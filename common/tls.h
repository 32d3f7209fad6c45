// TLS material for gRPC from PEM files: server credentials (optionally requiring
// a client certificate signed by a given CA: mutual TLS) and channel credentials.
// Files are read once, when called: a certificate rotation takes a restart.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ServerCredentials;
}

namespace aichat {

// The file's contents; INVALID_ARGUMENT naming `setting` when it cannot be read
// or holds no PEM block.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& setting);

struct ServerTlsFiles {
  std::string cert_file;       // AICHAT_TLS_CERT: the server's chain, PEM
  std::string key_file;        // AICHAT_TLS_KEY
  std::string client_ca_file;  // AICHAT_TLS_CLIENT_CA: non-empty = clients must present a
                               // certificate signed by it (mutual TLS)
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// Insecure credentials when no file is set; INVALID_ARGUMENT naming the setting
// for a half-given pair, a client CA without a certificate, or an unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

}  // namespace aichat
