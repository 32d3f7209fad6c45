#include "common/grpc_channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "common/tls.h"

namespace aichat {

absl::Status CheckPeerChannelOptions(const PeerChannelOptions& options) {
  if (!options.tls) {
    if (!options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
        !options.tls_key_file.empty()) {
      return absl::InvalidArgumentError("TLS files are set but TLS is off for this channel");
    }
    return absl::OkStatus();
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate and its key go together");
  }
  for (const auto& [file, what] : {std::pair{options.tls_ca_file, "the CA file"},
                                   std::pair{options.tls_cert_file, "the client certificate"},
                                   std::pair{options.tls_key_file, "the client key"}}) {
    if (!file.empty()) {
      if (auto pem = ReadPemFile(file, what); !pem.ok()) return pem.status();
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& target,
                                               const PeerChannelOptions& options) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetLoadBalancingPolicyName("round_robin");
  if (!options.tls) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  // An unreadable file leaves its part empty: the handshake then fails and so
  // does every call (UNAVAILABLE). CheckPeerChannelOptions says why, at start-up.
  grpc::SslCredentialsOptions ssl;
  for (auto [file, out] : {std::pair{&options.tls_ca_file, &ssl.pem_root_certs},
                           std::pair{&options.tls_cert_file, &ssl.pem_cert_chain},
                           std::pair{&options.tls_key_file, &ssl.pem_private_key}}) {
    if (file->empty()) continue;
    if (auto pem = ReadPemFile(*file, *file); pem.ok()) *out = *std::move(pem);
  }
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

}  // namespace aichat
