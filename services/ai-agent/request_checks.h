// The ai-agent's request checks, apart from the turn engine and the service so that
// tests and the fuzz target (fuzz/agent_request_fuzz.cc) run them alone. Each refusal
// is INVALID_ARGUMENT naming the field, before anything is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "aichat/agent/v1/agent.pb.h"
#include "common/auth.h"
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

inline constexpr size_t kMaxContentBytes = 256 * 1024;
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;
inline constexpr size_t kMaxModelBytes = 100;

inline constexpr size_t kMaxStatelessMessages = 2048;
inline constexpr size_t kMaxStatelessBytes = 4 * 1024 * 1024;

struct TurnRequest {
  Caller caller;
  // A stored conversation: its history is the context, both messages are saved.
  int64_t conversation_id = 0;
  // Or a stateless turn (the OpenAI-compatible API without a conversation): the whole
  // context is `messages` as (role, content), nothing is saved in a conversation, and
  // the turn is still budgeted, rate-limited, stored as a prompt and charged.
  bool stateless = false;
  std::vector<std::pair<std::string, std::string>> messages;
  std::string content;  // empty for regenerations and stateless turns
  std::string model;
  std::string idempotency_key;
  std::optional<int32_t> max_output_tokens;
  std::optional<double> temperature;
  bool regenerate = false;
  absl::Time deadline = absl::InfiniteFuture();
  // The gRPC call this turn serves, if any: the turn's peer calls inherit its
  // deadline and cancellation.
  const grpc::CallbackServerContext* server_context = nullptr;
};

// conversation_id, content (unless regenerating), or messages (stateless), model,
// idempotency_key, max_output_tokens and temperature.
absl::Status ValidateTurnRequest(const TurnRequest& request);

// Where the agent may send a provider key (the operator's settings). A model config
// names a URL and a key variable; an admin must not be able to send any other secret
// of the agent, or a key to a host of their choosing.
struct ProviderPolicy {
  bool allow_plain_http = false;   // http:// to hosts other than loopback
  std::vector<std::string> hosts;  // empty: any host; "*.example.com" matches subdomains
};

// OPENAI_API_KEY or AICHAT_PROVIDER_KEY_<A-Z0-9_>: the only variables a key comes from.
bool IsProviderKeyVariable(std::string_view name);
// INVALID_ARGUMENT naming `field` unless `url` is an http(s) URL the policy allows.
absl::Status CheckProviderUrl(const std::string& field, std::string_view url,
                              const ProviderPolicy& policy);

// INVALID_ARGUMENT naming the field for a configuration an admin must not save.
absl::Status ValidateModelConfig(const v1::ModelConfig& m, const ProviderPolicy& policy = {});
// The fallbacks of `m` against the models saved so far (`m` replacing its old self):
// each exists and is enabled, and following fallbacks never comes back to a model.
absl::Status CheckFallbacks(const v1::ModelConfig& m, const std::vector<ModelRecord>& saved);

}  // namespace aichat::agent
