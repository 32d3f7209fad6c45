// The ai-agent service's settings (environment variables; flags override).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "services/ai-agent/turn.h"

namespace aichat::agent {

struct AgentConfig {
  CommonSettings common;
  std::string conversation_addr;
  std::string usage_addr;
  std::string service_token;  // role=service token for calls to conversation and usage
  TurnOptions turn;
  int llm_io_threads = 1;
  std::string llm_ca_file;
  size_t llm_max_response_bytes = 16 << 20;
  absl::Duration outbox_interval;
  absl::Duration outbox_linger;
  std::string replica_name;  // "" = made up at start

  // The OpenAI-compatible HTTP API (services/ai-agent/http/).
  std::string http_listen;  // "" = off
  std::string user_addr;    // the user service, for API-key logins over HTTP
  int http_threads = 1;
  int64_t http_max_body_bytes = 8 << 20;
  absl::Duration http_read_timeout;
  absl::Duration http_idle_timeout;
  absl::Duration http_write_timeout;
  int http_max_connections = 4096;
  absl::Duration http_stream_hold;
};

void DeclareSettings(Config& config);
absl::StatusOr<AgentConfig> ReadSettings(const Config& config);

}  // namespace aichat::agent
