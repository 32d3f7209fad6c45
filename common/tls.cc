#include "common/tls.h"

#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace aichat {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& setting) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(setting, ": cannot read ", path));
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string pem = text.str();
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(setting, ": ", path, " holds no PEM data"));
  }
  return pem;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files) {
  if (!files.enabled()) {
    if (!files.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "AICHAT_TLS_CLIENT_CA needs AICHAT_TLS_CERT and AICHAT_TLS_KEY (mutual TLS is TLS)");
    }
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError("AICHAT_TLS_CERT and AICHAT_TLS_KEY go together");
  }
  auto cert = ReadPemFile(files.cert_file, "AICHAT_TLS_CERT");
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(files.key_file, "AICHAT_TLS_KEY");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!files.client_ca_file.empty()) {
    auto ca = ReadPemFile(files.client_ca_file, "AICHAT_TLS_CLIENT_CA");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace aichat
