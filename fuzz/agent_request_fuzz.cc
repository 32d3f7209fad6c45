// libFuzzer target for the ai-agent's request checks (services/ai-agent/request_checks.h):
// ValidateModelConfig on arbitrary bytes parsed as a ModelConfig (what UpsertModel
// saves), and ValidateTurnRequest on turns built from the input (what SendMessage,
// StreamMessage and RegenerateResponse run before anything is written).
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <string>

#include "fuzz/fuzz_util.h"
#include "services/ai-agent/request_checks.h"

using aichat::fuzz::IsCleanText;
using aichat::fuzz::Require;
using aichat::fuzz::RequireRefusal;
namespace agent = aichat::agent;

namespace {

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("-_.:/@").find(c) != std::string_view::npos;
}

void CheckModelConfig(const std::string& bytes) {
  aichat::agent::v1::ModelConfig m;
  if (!m.ParseFromString(bytes)) return;
  auto st = agent::ValidateModelConfig(m);
  if (!st.ok()) {
    RequireRefusal(st, "model");
    return;
  }
  // What the registry and the cost arithmetic rely on for a saved model.
  Require(!m.name().empty() && m.name().size() <= 100);
  for (char c : m.name()) Require(IsNameChar(c));
  Require(IsCleanText(m.provider_model(), 200) && IsCleanText(m.base_url(), 500));
  Require(m.base_url().empty() || m.base_url().rfind("https://", 0) == 0 ||
          m.base_url().rfind("http://", 0) == 0);
  Require(m.input_price_micros_per_mtok() >= 0 && m.cached_input_price_micros_per_mtok() >= 0 &&
          m.output_price_micros_per_mtok() >= 0);
  Require(m.max_output_tokens() >= 1 && m.max_output_tokens() < m.context_window());
  Require(m.default_temperature() >= 0 && m.default_temperature() <= 2);
  Require(m.api_key_env().size() <= 100);  // an environment variable name
  for (size_t i = 0; i < m.api_key_env().size(); ++i) {
    char c = m.api_key_env()[i];
    Require((c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9'));
  }
}

void CheckTurn(FuzzedDataProvider& in) {
  agent::TurnRequest r;
  r.conversation_id = in.ConsumeIntegral<int64_t>();
  r.regenerate = in.ConsumeBool();
  if (in.ConsumeBool()) r.max_output_tokens = in.ConsumeIntegral<int32_t>();
  if (in.ConsumeBool()) {
    // Any bit pattern, NaN and infinities included.
    r.temperature = in.ConsumeBool() ? in.ConsumeFloatingPoint<double>()
                                     : in.ConsumeProbability<double>() * 3.0 - 0.5;
  }
  r.model = in.ConsumeRandomLengthString(150);
  r.idempotency_key = in.ConsumeRandomLengthString(200);
  r.content = in.ConsumeRemainingBytesAsString();
  auto st = agent::ValidateTurnRequest(r);
  if (!st.ok()) {
    Require(st.code() == absl::StatusCode::kInvalidArgument);
    bool names_field = false;
    for (std::string_view field : {"conversation_id", "content", "model", "idempotency_key",
                                   "max_output_tokens", "temperature"}) {
      names_field = names_field || aichat::fuzz::Message(st).rfind(field, 0) == 0;
    }
    Require(names_field);
    return;
  }
  Require(r.conversation_id > 0);
  Require(r.regenerate || (!r.content.empty() && IsCleanText(r.content, agent::kMaxContentBytes)));
  Require(IsCleanText(r.model, agent::kMaxModelBytes));
  Require(IsCleanText(r.idempotency_key, agent::kMaxIdempotencyKeyBytes));
  Require(!r.max_output_tokens || *r.max_output_tokens >= 1);
  Require(!r.temperature ||
          (std::isfinite(*r.temperature) && *r.temperature >= 0 && *r.temperature <= 2));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  if (in.ConsumeBool()) {
    CheckModelConfig(in.ConsumeRemainingBytesAsString());
  } else {
    CheckTurn(in);
  }
  return 0;
}
