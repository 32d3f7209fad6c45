#include "services/ai-agent/config.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

namespace aichat::agent {

void DeclareSettings(Config& config) {
  AddCommonSettings(config, 50053, 9103);
  config.Add("conversation_addr", "AICHAT_CONVERSATION_ADDR", "127.0.0.1:50052",
             "conversation service address");
  config.Add("usage_addr", "AICHAT_USAGE_ADDR", "127.0.0.1:50054", "usage service address");
  config.Add("service_token", "AICHAT_SERVICE_TOKEN", "",
             "role=service token for calls to conversation and usage "
             "(`aichat-user mint-service-token`)",
             /*secret=*/true);
  config.Add("openai_base_url", "OPENAI_BASE_URL", "https://api.openai.com/v1",
             "API root for models whose base_url is empty (any OpenAI-compatible server)");
  config.Add("llm_total_timeout", "AICHAT_LLM_TOTAL_TIMEOUT", "300s",
             "Longest a provider call may take (also bounded by the caller's deadline)");
  config.Add("llm_stall_timeout", "AICHAT_LLM_STALL_TIMEOUT", "30s",
             "A provider stream silent for longer is cut");
  config.Add("llm_max_attempts", "AICHAT_LLM_MAX_ATTEMPTS", "3",
             "Provider attempts per turn (retries only before the first delta)");
  config.Add("llm_io_threads", "AICHAT_LLM_IO_THREADS", "1", "Threads for provider I/O");
  config.Add("llm_ca_file", "AICHAT_LLM_CA_FILE", "",
             "Extra CA bundle for the provider (default: the system store; SSL_CERT_FILE works)");
  config.Add("llm_max_response_bytes", "AICHAT_LLM_MAX_RESPONSE_BYTES", "16777216",
             "Largest provider response in bytes (a longer one fails the turn)");
  config.Add("peer_timeout", "AICHAT_PEER_TIMEOUT", "5s",
             "Deadline of each call to conversation and usage");
  config.Add("budget_fail_open", "AICHAT_BUDGET_FAIL_OPEN", "true",
             "When usage is unreachable, admit turns without a budget reservation");
  config.Add("default_requests_per_minute", "AICHAT_DEFAULT_RPM", "20",
             "Chat turns per minute for service callers acting for a user (user tokens carry "
             "their own limit)");
  config.Add("outbox_interval", "AICHAT_OUTBOX_INTERVAL", "1s",
             "How often the usage outbox is scanned for events whose delivery lapsed");
  config.Add("outbox_linger", "AICHAT_OUTBOX_LINGER", "50ms",
             "How long usage events gather before they go to usage as one batch");
  config.Add("provider_hosts", "AICHAT_PROVIDER_HOSTS", "",
             "Comma-separated hosts a model's base_url may name (\"*.example.com\" for "
             "subdomains); empty: any host");
  config.Add("provider_allow_http", "AICHAT_PROVIDER_ALLOW_HTTP", "false",
             "Allow http:// base URLs to non-loopback hosts (keys then cross the network in "
             "clear)");
  config.Add("http_listen", "AICHAT_HTTP_LISTEN", "0.0.0.0:8080",
             "The OpenAI-compatible HTTP API (host:port, plaintext; empty: off)");
  config.Add("user_addr", "AICHAT_USER_ADDR", "127.0.0.1:50051",
             "user service address (the HTTP API exchanges `Bearer aik_...` API keys there)");
  config.Add("http_threads", "AICHAT_HTTP_THREADS", "1", "Threads for the HTTP listener's I/O");
  config.Add("http_max_body_bytes", "AICHAT_HTTP_MAX_BODY_BYTES", "8388608",
             "Largest HTTP request body in bytes (a larger one is refused with 413)");
  config.Add("http_read_timeout", "AICHAT_HTTP_READ_TIMEOUT", "30s",
             "An HTTP request's headers, and then its body, must each arrive within this");
  config.Add("http_idle_timeout", "AICHAT_HTTP_IDLE_TIMEOUT", "75s",
             "A keep-alive HTTP connection with no new request for this long is closed");
  config.Add("http_write_timeout", "AICHAT_HTTP_WRITE_TIMEOUT", "30s",
             "An HTTP client that takes no bytes of its answer for this long is cut off (its "
             "turn is cancelled)");
  config.Add("http_max_connections", "AICHAT_HTTP_MAX_CONNECTIONS", "4096",
             "Open HTTP connections at most; more are closed at once");
  config.Add("http_stream_hold", "AICHAT_HTTP_STREAM_HOLD", "10s",
             "A streamed answer's headers wait for the first token at most this long (until "
             "then a refusal or provider error is a real HTTP status)");
  config.Add("replica_name", "AICHAT_REPLICA_NAME", "",
             "This replica's name for its lease on running turns (default: host name, process "
             "id and a random suffix)");
}

absl::StatusOr<AgentConfig> ReadSettings(const Config& config) {
  AgentConfig c;
  auto common = ReadCommonSettings(config);
  if (!common.ok()) return common.status();
  c.common = *common;
  c.conversation_addr = config.Get("conversation_addr");
  c.usage_addr = config.Get("usage_addr");
  c.service_token = config.Get("service_token");
  if (c.service_token.empty()) {
    return absl::InvalidArgumentError(
        "AICHAT_SERVICE_TOKEN (--service_token) is required; `aichat-user mint-service-token` "
        "makes one");
  }
  c.turn.default_base_url = config.Get("openai_base_url");
  auto total = config.GetDuration("llm_total_timeout");
  if (!total.ok()) return total.status();
  c.turn.total_timeout = *total;
  auto stall = config.GetDuration("llm_stall_timeout");
  if (!stall.ok()) return stall.status();
  c.turn.stall_timeout = *stall;
  auto attempts = config.GetInt("llm_max_attempts", 1, 10);
  if (!attempts.ok()) return attempts.status();
  c.turn.retry.max_attempts = static_cast<int>(*attempts);
  auto io = config.GetInt("llm_io_threads", 1, 64);
  if (!io.ok()) return io.status();
  c.llm_io_threads = static_cast<int>(*io);
  c.llm_ca_file = config.Get("llm_ca_file");
  auto max_response = config.GetInt("llm_max_response_bytes", 4096, int64_t{1} << 32);
  if (!max_response.ok()) return max_response.status();
  c.llm_max_response_bytes = static_cast<size_t>(*max_response);
  auto peer = config.GetDuration("peer_timeout");
  if (!peer.ok()) return peer.status();
  c.turn.peer_timeout = *peer;
  auto open = config.GetBool("budget_fail_open");
  if (!open.ok()) return open.status();
  c.turn.budget_fail_open = *open;
  auto rpm = config.GetInt("default_requests_per_minute", 1, 1000000);
  if (!rpm.ok()) return rpm.status();
  c.turn.default_requests_per_minute = static_cast<int32_t>(*rpm);
  auto interval = config.GetDuration("outbox_interval");
  if (!interval.ok()) return interval.status();
  c.outbox_interval = *interval;
  auto linger = config.GetDuration("outbox_linger");
  if (!linger.ok()) return linger.status();
  c.outbox_linger = *linger;
  c.replica_name = config.Get("replica_name");
  c.http_listen = config.Get("http_listen");
  c.user_addr = config.Get("user_addr");
  auto http_threads = config.GetInt("http_threads", 1, 64);
  if (!http_threads.ok()) return http_threads.status();
  c.http_threads = static_cast<int>(*http_threads);
  auto max_body = config.GetInt("http_max_body_bytes", 1024, int64_t{1} << 30);
  if (!max_body.ok()) return max_body.status();
  c.http_max_body_bytes = *max_body;
  for (auto [name, out] : {std::pair{"http_read_timeout", &c.http_read_timeout},
                           std::pair{"http_idle_timeout", &c.http_idle_timeout},
                           std::pair{"http_write_timeout", &c.http_write_timeout},
                           std::pair{"http_stream_hold", &c.http_stream_hold}}) {
    auto d = config.GetDuration(name);
    if (!d.ok()) return d.status();
    *out = *d;
  }
  auto max_conn = config.GetInt("http_max_connections", 1, 1000000);
  if (!max_conn.ok()) return max_conn.status();
  c.http_max_connections = static_cast<int>(*max_conn);
  for (absl::string_view h : absl::StrSplit(config.Get("provider_hosts"), ',', absl::SkipEmpty())) {
    c.turn.provider_policy.hosts.push_back(absl::AsciiStrToLower(absl::StripAsciiWhitespace(h)));
  }
  auto allow_http = config.GetBool("provider_allow_http");
  if (!allow_http.ok()) return allow_http.status();
  c.turn.provider_policy.allow_plain_http = *allow_http;
  return c;
}

}  // namespace aichat::agent
