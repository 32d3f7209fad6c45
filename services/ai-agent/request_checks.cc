#include "services/ai-agent/request_checks.h"

#include "common/validate.h"

namespace aichat::agent {
namespace {

bool IsModelNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':' || c == '/' || c == '@';
}

}  // namespace

absl::Status ValidateTurnRequest(const TurnRequest& r) {
  if (r.conversation_id <= 0) {
    return absl::InvalidArgumentError("conversation_id must be positive");
  }
  if (!r.regenerate) {
    if (auto st = CheckText("content", r.content, kMaxContentBytes, true); !st.ok()) return st;
  }
  if (auto st = CheckText("model", r.model, kMaxModelBytes, false); !st.ok()) return st;
  if (auto st = CheckText("idempotency_key", r.idempotency_key, kMaxIdempotencyKeyBytes, false);
      !st.ok()) {
    return st;
  }
  if (r.max_output_tokens.has_value() && *r.max_output_tokens < 1) {
    return absl::InvalidArgumentError("max_output_tokens must be at least 1");
  }
  if (r.temperature.has_value() && !(*r.temperature >= 0.0 && *r.temperature <= 2.0)) {
    return absl::InvalidArgumentError("temperature must be between 0 and 2");
  }
  return absl::OkStatus();
}

absl::Status ValidateModelConfig(const v1::ModelConfig& m) {
  if (m.name().empty() || m.name().size() > 100) {
    return absl::InvalidArgumentError("model.name must be 1 to 100 characters");
  }
  for (char c : m.name()) {
    if (!IsModelNameChar(c)) {
      return absl::InvalidArgumentError("model.name may use letters, digits and - _ . : / @");
    }
  }
  if (auto st = CheckText("model.provider_model", m.provider_model(), 200, false); !st.ok()) {
    return st;
  }
  if (!m.base_url().empty() && m.base_url().rfind("https://", 0) != 0 &&
      m.base_url().rfind("http://", 0) != 0) {
    return absl::InvalidArgumentError("model.base_url must start with https:// or http://");
  }
  if (auto st = CheckText("model.base_url", m.base_url(), 500, false); !st.ok()) return st;
  for (size_t i = 0; i < m.api_key_env().size(); ++i) {
    char c = m.api_key_env()[i];
    bool ok = (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
    if (!ok || m.api_key_env().size() > 100) {
      return absl::InvalidArgumentError(
          "model.api_key_env must be an environment variable name like OPENAI_API_KEY");
    }
  }
  if (m.input_price_micros_per_mtok() < 0 || m.cached_input_price_micros_per_mtok() < 0 ||
      m.output_price_micros_per_mtok() < 0) {
    return absl::InvalidArgumentError("model prices must not be negative");
  }
  if (m.context_window() < 2) {
    return absl::InvalidArgumentError("model.context_window must be at least 2");
  }
  if (m.max_output_tokens() < 1 || m.max_output_tokens() >= m.context_window()) {
    return absl::InvalidArgumentError(
        "model.max_output_tokens must be at least 1 and less than context_window");
  }
  if (!(m.default_temperature() >= 0 && m.default_temperature() <= 2)) {
    return absl::InvalidArgumentError("model.default_temperature must be between 0 and 2");
  }
  return absl::OkStatus();
}

}  // namespace aichat::agent
