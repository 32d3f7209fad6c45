// The conversation service's limits and request checks, apart from the service so
// that tests and the fuzz target (fuzz/conversation_request_fuzz.cc) run them alone.
// Each refusal is INVALID_ARGUMENT naming the field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace aichat::conversation {

// What a message costs in a response beyond its content (ids, counts, times and
// protobuf framing come to under 80 bytes), so that many small messages cannot
// outgrow a byte budget that counted contents alone.
inline constexpr int64_t kMessageFramingBytes = 96;

struct ConversationServiceOptions {
  size_t max_title_chars = 200;
  size_t max_model_chars = 100;
  size_t max_system_prompt_bytes = 32 * 1024;
  size_t max_content_bytes = 256 * 1024;
  // ASSISTANT messages (from services only) hold a model's whole answer, which
  // may be longer than anything a user types; under the 4 MiB gRPC limit.
  size_t max_assistant_content_bytes = 3 * 1024 * 1024;
  // Message contents (and system prompts) per response stay under this, so a
  // page never exceeds the gRPC message limit: pages end early, GetContext
  // leaves older messages out (truncated). At least the largest message with
  // the system prompt twice (GetContext carries it twice) and its framing.
  size_t max_response_bytes =
      max_assistant_content_bytes + 2 * max_system_prompt_bytes + kMessageFramingBytes;
  // GetContext serves a larger max_tokens as this: the largest context window of
  // any enabled model (the conversation service does not know the models).
  int64_t max_context_tokens = 1 << 20;
  // USER messages a user may append a minute (0: no limit), and at once; per
  // replica. Services are not limited.
  int append_rate_per_minute = 120;
  int append_burst = 20;
};

// The largest token_count a caller may give for one message.
inline constexpr int32_t kMaxMessageTokens = 10'000'000;
// Tokens added to every estimate for the chat format's per-message framing.
inline constexpr int32_t kEstimateOverheadTokens = 4;

// The token estimate used when no tokenizer count is given: one token per 4 ASCII
// bytes (rounded up) plus one per non-ASCII code point, plus the per-message
// overhead; 0 for empty text. It errs high for accented and CJK text (where
// tokenizers spend about one token per character), so a context built from
// estimates does not overflow the model's window.
int32_t EstimateTokens(std::string_view text);

absl::Status CheckTitle(std::string_view title, const ConversationServiceOptions& o);
// A model name: no spaces or control characters.
absl::Status CheckModel(std::string_view model, const ConversationServiceOptions& o);
absl::Status CheckSystemPrompt(std::string_view prompt, const ConversationServiceOptions& o);
// A message's content: required, at most max_content_bytes.
absl::Status CheckContent(std::string_view content, const ConversationServiceOptions& o);
// An ASSISTANT message's content: required, at most max_assistant_content_bytes.
absl::Status CheckAssistantContent(std::string_view content, const ConversationServiceOptions& o);
// A token count given by a service: 0 to kMaxMessageTokens.
absl::Status CheckTokenCount(int64_t token_count);

}  // namespace aichat::conversation
