// JSON wire format of OpenAI-compatible chat completions.
//
// Decodes streamed `chat.completion.chunk` objects, whole `chat.completion`
// responses and error bodies, and encodes the request body. Malformed input
// yields a typed error (absl::Status), never an exception or a crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aichat::agent {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct TokenUsage {
  int64_t prompt_tokens = 0;      // includes cached_tokens, as OpenAI counts them
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  bool estimated = false;         // true: our estimate, no provider figures arrived
};

// One `data:` payload of a streamed response.
struct ChatChunk {
  std::string model;
  std::string content;                 // choices[0].delta.content, may be empty
  std::string finish_reason;           // choices[0].finish_reason when not null
  std::optional<TokenUsage> usage;     // present on the chunk that carries usage
};

// A non-streamed `chat.completion`.
struct ChatCompletion {
  std::string model;
  std::string content;
  std::string finish_reason;
  std::optional<TokenUsage> usage;
};

// `{"error": {"message", "type", "code", "param"}}`; fields may be missing.
struct ProviderError {
  std::string message;
  std::string type;
  std::string code;
};

struct ChatRequestBody {
  std::string model;
  std::vector<ChatMessage> messages;
  int max_output_tokens = 0;          // 0: omitted
  bool use_max_tokens_param = false;  // "max_tokens" instead of "max_completion_tokens"
  std::optional<double> temperature;
  bool stream = true;                 // adds stream_options.include_usage
};

// Errors are InvalidArgument("malformed ...") for bad JSON or wrong shapes.
absl::StatusOr<ChatChunk> DecodeChatChunk(std::string_view json);
absl::StatusOr<ChatCompletion> DecodeChatCompletion(std::string_view json);

// Reads an error body; returns nullopt if it is not an OpenAI-style error
// object (e.g. an HTML page from a proxy).
std::optional<ProviderError> DecodeProviderError(std::string_view json);

std::string EncodeChatRequest(const ChatRequestBody& request);

}  // namespace aichat::agent
