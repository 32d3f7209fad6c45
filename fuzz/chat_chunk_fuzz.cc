// libFuzzer target: the chat completions JSON decoders must return a value or
// a typed error for any input, never crash or throw; the request encoder must
// round-trip any valid UTF-8 text. Build and run with scripts/fuzz.sh.
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "services/ai-agent/llm/chat_chunk.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);
  auto chunk = aichat::agent::DecodeChatChunk(data);
  if (chunk.ok() && chunk->usage &&
      (chunk->usage->prompt_tokens < 0 || chunk->usage->completion_tokens < 0)) {
    std::abort();
  }
  (void)aichat::agent::DecodeChatCompletion(data);
  (void)aichat::agent::DecodeProviderError(data);

  aichat::agent::ChatRequestBody request;
  request.model = "m";
  request.messages = {{"user", std::string(data)}};
  std::string encoded = aichat::agent::EncodeChatRequest(request);
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(encoded, ec);
  if (!ec) {
    const boost::json::value* content = &v.at("messages").at(0).at("content");
    if (content->as_string() != data) {
      std::abort();
    }
  }
  return 0;
}
