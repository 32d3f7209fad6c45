// The ai-agent's request checks, apart from the turn engine and the service so that
// tests and the fuzz target (fuzz/agent_request_fuzz.cc) run them alone. Each refusal
// is INVALID_ARGUMENT naming the field, before anything is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "aichat/agent/v1/agent.pb.h"
#include "common/auth.h"

namespace aichat::agent {

inline constexpr size_t kMaxContentBytes = 256 * 1024;
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;
inline constexpr size_t kMaxModelBytes = 100;

struct TurnRequest {
  Caller caller;
  int64_t conversation_id = 0;
  std::string content;  // empty for regenerations
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

// conversation_id, content (unless regenerating), model, idempotency_key,
// max_output_tokens and temperature.
absl::Status ValidateTurnRequest(const TurnRequest& request);

// INVALID_ARGUMENT naming the field for a configuration an admin must not save.
absl::Status ValidateModelConfig(const v1::ModelConfig& m);

}  // namespace aichat::agent
