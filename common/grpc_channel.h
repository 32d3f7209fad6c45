// Channels to aichat services, for services (peers) and clients (the CLI):
// plaintext by default, TLS (server verified against a CA file or the system
// roots) and mutual TLS (our certificate and key) when asked. The channel
// arguments are the ones peers need: keepalive every 30 s, and a reconnect
// backoff of 100 ms to 1 s, so a restarted peer is used again within a second
// rather than after gRPC's default backoff of up to two minutes; round_robin
// over every address the target resolves to (dns:/// on a headless Service).
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace grpc {
class Channel;
}

namespace aichat {

struct PeerChannelOptions {
  std::string tls_ca_file;    // trust anchors for the server; empty: the system roots
  std::string tls_cert_file;  // our certificate chain, for mutual TLS (with tls_key_file)
  std::string tls_key_file;
  bool tls = false;
  // The name checked in the server's certificate instead of the target's host
  // (e.g. when dialling pods by IP); empty: the target's host.
  std::string tls_server_name;
};

// INVALID_ARGUMENT naming the file when a set file cannot be read, a
// certificate comes without its key, or files are given without tls.
absl::Status CheckPeerChannelOptions(const PeerChannelOptions& options);

// Never fails: with unreadable files (see CheckPeerChannelOptions, which
// start-up should call) every call on the channel fails UNAVAILABLE.
std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& target,
                                               const PeerChannelOptions& options);

}  // namespace aichat
