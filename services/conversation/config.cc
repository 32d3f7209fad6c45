#include "services/conversation/config.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "services/conversation/conversation_checks.h"

namespace aichat::conversation {
namespace {
// Room in a gRPC message for everything but the contents (framing, other fields).
constexpr int64_t kEnvelopeBytes = 64 * 1024;
}  // namespace

void DeclareSettings(Config& config) {
  AddCommonSettings(config, 50052, 9102);
  // AICHAT_MAX_MESSAGE_BYTES is the gRPC message limit (common); this is the text.
  config.Add("max_content_bytes", "AICHAT_MAX_CONTENT_BYTES", "262144",
             "Largest message content in bytes");
  config.Add("max_assistant_content_bytes", "AICHAT_MAX_ASSISTANT_CONTENT_BYTES", "3145728",
             "Largest ASSISTANT message content in bytes (a model's whole answer, appended by "
             "the ai-agent)");
  config.Add("max_title_chars", "AICHAT_MAX_TITLE_CHARS", "200",
             "Longest conversation title in characters");
  config.Add("max_system_prompt_bytes", "AICHAT_MAX_SYSTEM_PROMPT_BYTES", "32768",
             "Largest system prompt in bytes");
  config.Add("max_model_chars", "AICHAT_MAX_MODEL_CHARS", "100", "Longest model name");
  config.Add("max_context_tokens", "AICHAT_MAX_CONTEXT_TOKENS", "1048576",
             "Largest GetContext max_tokens served; larger requests are clamped to it. Set it "
             "to the largest context window of any enabled model");
  config.Add("append_rate", "AICHAT_APPEND_RATE", "120",
             "USER messages one user may append a minute, per replica (0: no limit); more answer "
             "RESOURCE_EXHAUSTED. Services (the ai-agent) are not limited");
  config.Add("append_burst", "AICHAT_APPEND_BURST", "20",
             "USER messages one user may append at once within AICHAT_APPEND_RATE");
}

absl::StatusOr<ConversationConfig> ReadSettings(const Config& config) {
  ConversationConfig c;
  auto common = ReadCommonSettings(config);
  if (!common.ok()) return common.status();
  c.common = *common;
  const int64_t grpc_limit = c.common.max_message_bytes;
  auto content = config.GetInt("max_content_bytes", 1, 64 << 20);
  if (!content.ok()) return content.status();
  auto assistant = config.GetInt("max_assistant_content_bytes", 1, 64 << 20);
  if (!assistant.ok()) return assistant.status();
  auto title = config.GetInt("max_title_chars", 1, 10000);
  if (!title.ok()) return title.status();
  auto prompt = config.GetInt("max_system_prompt_bytes", 1, 16 << 20);
  if (!prompt.ok()) return prompt.status();
  auto model = config.GetInt("max_model_chars", 1, 1000);
  if (!model.ok()) return model.status();
  auto context_tokens = config.GetInt("max_context_tokens", 1, 1 << 30);
  if (!context_tokens.ok()) return context_tokens.status();
  auto append_rate = config.GetInt("append_rate", 0, 1'000'000);
  if (!append_rate.ok()) return append_rate.status();
  auto append_burst = config.GetInt("append_burst", 1, 1'000'000);
  if (!append_burst.ok()) return append_burst.status();
  // Every response must hold the largest message with the system prompt (twice,
  // in GetContext) and its framing: otherwise that message could never be read.
  const int64_t largest_message = std::max(*content, *assistant);
  const int64_t one_message_response = largest_message + 2 * *prompt + kMessageFramingBytes;
  if (one_message_response + kEnvelopeBytes > grpc_limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AICHAT_MAX_CONTENT_BYTES or AICHAT_MAX_ASSISTANT_CONTENT_BYTES (whichever is larger) "
        "plus twice AICHAT_MAX_SYSTEM_PROMPT_BYTES must stay at least ",
        kEnvelopeBytes + kMessageFramingBytes, " bytes under AICHAT_MAX_MESSAGE_BYTES (",
        grpc_limit, ")"));
  }
  c.service.max_content_bytes = static_cast<size_t>(*content);
  c.service.max_assistant_content_bytes = static_cast<size_t>(*assistant);
  c.service.max_title_chars = static_cast<size_t>(*title);
  c.service.max_system_prompt_bytes = static_cast<size_t>(*prompt);
  c.service.max_model_chars = static_cast<size_t>(*model);
  c.service.max_context_tokens = *context_tokens;
  c.service.append_rate_per_minute = static_cast<int>(*append_rate);
  c.service.append_burst = static_cast<int>(*append_burst);
  // Contents per response: three quarters of the gRPC limit, at least one message.
  c.service.max_response_bytes =
      static_cast<size_t>(std::max<int64_t>(grpc_limit * 3 / 4, one_message_response));
  return c;
}

}  // namespace aichat::conversation
