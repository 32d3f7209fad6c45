#include "common/grpc_channel.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tls.h"

namespace aichat {
namespace {

// Peer calls that are idempotent by design, so that an attempt lost with a
// replica can be made again on another one without doing anything twice.
constexpr std::pair<const char*, const char*> kIdempotentPeerMethods[] = {
    // Reads.
    {"aichat.conversation.v1.ConversationService", "GetContext"},
    {"aichat.conversation.v1.ConversationService", "GetConversation"},
    // A second append with the same prompt_id and role returns the first message
    // (the agent always sends prompt_id; users may not, and are not retried).
    {"aichat.conversation.v1.ConversationService", "AppendMessage"},
    // Removing what is already removed answers removed=false.
    {"aichat.conversation.v1.ConversationService", "RetractMessage"},
    // All keyed by event_id: a repeated reservation returns the stored decision,
    // a repeated release or record changes nothing.
    {"aichat.usage.v1.UsageService", "ReserveBudget"},
    {"aichat.usage.v1.UsageService", "ReleaseBudget"},
    {"aichat.usage.v1.UsageService", "RecordUsage"},
    {"aichat.usage.v1.UsageService", "RecordUsageBatch"},
};

// Room for the largest request (an answer of up to 3 MiB plus framing) to be kept
// for a retry; a bigger one is sent once (gRPC's default keeps only 256 KiB).
constexpr int kRetryBufferBytes = 4 << 20;

}  // namespace

PeerChannelOptions WithIdempotentRetries(PeerChannelOptions options) {
  options.retry_idempotent = true;
  return options;
}

std::string PeerServiceConfig(const PeerChannelOptions& options) {
  std::string config = R"({"loadBalancingConfig":[{"round_robin":{}}])";
  if (options.retry_idempotent) {
    std::vector<std::string> names;
    for (const auto& [service, method] : kIdempotentPeerMethods) {
      names.push_back(absl::StrCat(R"({"service":")", service, R"(","method":")", method, R"("})"));
    }
    // Three attempts in all, 50 ms then 100 ms apart (with jitter), UNAVAILABLE
    // only: that is what a call lost with its replica ends with, before any
    // answer; a replica's own refusals carry other codes and are final. The
    // throttle stops retrying while failures outnumber successes (a peer down
    // everywhere), so an outage does not triple the calls that fail anyway.
    absl::StrAppend(&config, R"(,"methodConfig":[{"name":[)", absl::StrJoin(names, ","),
                    R"(],"retryPolicy":{"maxAttempts":3,"initialBackoff":"0.05s",)",
                    R"("maxBackoff":"0.5s","backoffMultiplier":2,)",
                    R"("retryableStatusCodes":["UNAVAILABLE"]}}])",
                    R"(,"retryThrottling":{"maxTokens":100,"tokenRatio":1})");
  }
  return config + "}";
}

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
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A connection closed by the server (its maximum age, a replica leaving) makes
  // round_robin ask the resolver again; gRPC's default waits up to 30 s between
  // two DNS look-ups, which would keep a new replica idle that long.
  args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 2000);
  // Our service config is the one in force: a DNS TXT record may not replace it.
  args.SetInt(GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, 1);
  args.SetServiceConfigJSON(PeerServiceConfig(options));
  if (options.retry_idempotent) {
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);  // gRPC 1.51's default, said out loud
    args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE, kRetryBufferBytes);
  }
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
