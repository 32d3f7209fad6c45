// Channels to aichat services, for services (peers) and clients (the CLI):
// plaintext by default, TLS (server verified against a CA file or the system
// roots) and mutual TLS (our certificate and key) when asked.
//
// A target may name several replicas: `dns:///aichat-conversation-peers:50052`
// (a headless Service: one address per ready pod, looked up again whenever a
// connection closes, e.g. when a server's maximum connection age ends it) or
// `ipv4:127.0.0.1:50052,127.0.0.1:50152` (a fixed list, for local runs). Every
// channel balances calls over all of them with round_robin, pings a busy
// connection every 30 s (a peer that vanished without closing is noticed in
// 40 s), and reconnects with a backoff of 100 ms to 1 s, so a restarted
// replica is used again within a second rather than after gRPC's default
// backoff of up to two minutes.
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
  // Retry the peer calls that are idempotent by design (the list is in
  // grpc_channel.cc: reads, and writes keyed by prompt_id or event_id) up to 3
  // attempts in all, on another replica, when an attempt fails UNAVAILABLE
  // before any answer (a replica killed or restarting mid-call). Off by default:
  // only a caller that always sends those keys may turn it on, since a user's
  // own AppendMessage (no prompt_id) is not idempotent. The deadline covers
  // every attempt.
  bool retry_idempotent = false;
};

// `options` with retry_idempotent on: the ai-agent's channels to conversation
// and usage, whose calls always carry their idempotency keys.
PeerChannelOptions WithIdempotentRetries(PeerChannelOptions options);

// The gRPC service config (JSON) of MakePeerChannel's channels: round_robin,
// and with retry_idempotent the retry policy and its throttle.
std::string PeerServiceConfig(const PeerChannelOptions& options);

// INVALID_ARGUMENT naming the file when a set file cannot be read, a
// certificate comes without its key, or files are given without tls.
absl::Status CheckPeerChannelOptions(const PeerChannelOptions& options);

// Never fails: with unreadable files (see CheckPeerChannelOptions, which
// start-up should call) every call on the channel fails UNAVAILABLE.
std::shared_ptr<grpc::Channel> MakePeerChannel(const std::string& target,
                                               const PeerChannelOptions& options);

}  // namespace aichat
