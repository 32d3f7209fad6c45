// The peers of a chat turn over gRPC (callback stubs). The only code of the agent
// that includes the conversation, usage and user services' generated headers.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "services/ai-agent/peers.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace aichat::agent {

struct GrpcPeerOptions {
  std::string service_token;                       // role=service, sent on every call
  absl::Duration call_timeout = absl::Seconds(5);  // each call's deadline at most
};

std::unique_ptr<ConversationPeer> MakeGrpcConversationPeer(std::shared_ptr<grpc::Channel> channel,
                                                           GrpcPeerOptions options);
std::unique_ptr<UsagePeer> MakeGrpcUsagePeer(std::shared_ptr<grpc::Channel> channel,
                                             GrpcPeerOptions options);
// The user service, for API-key logins (no service token: the key is the credential).
std::unique_ptr<UserPeer> MakeGrpcUserPeer(std::shared_ptr<grpc::Channel> channel);

}  // namespace aichat::agent
