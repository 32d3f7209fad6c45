// libFuzzer target for the OpenAI-compatible HTTP API's request decoder
// (services/ai-agent/http/openai_wire.h), the part of the agent that reads bodies from
// anyone on the network. For any bytes, each decoder accepts or refuses without
// crashing, throwing or reading out of bounds; a refusal has a message; what it
// accepts is within its limits and strict UTF-8 without NUL; the encoder writes back
// accepted text so that it parses to the same text. No sockets: the decoder is plain
// code over a string. Build and run with scripts/fuzz.sh.
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_util.h"
#include "services/ai-agent/http/openai_wire.h"

using aichat::fuzz::IsCleanText;
using aichat::fuzz::Require;
namespace agent = aichat::agent;

namespace {

constexpr size_t kContent = 256 << 10;

void CheckMessages(const std::vector<agent::InputMessage>& messages) {
  Require(messages.size() <= agent::kMaxInputMessages);
  for (const auto& m : messages) {
    Require(m.role == "system" || m.role == "developer" || m.role == "user" ||
            m.role == "assistant");
    Require(IsCleanText(m.content, kContent));
  }
}

// The encoder gives back what the decoder accepted.
void RoundTrip(const std::string& text) {
  agent::CompletionFacts c;
  c.prompt_id = 1;
  c.model = "m";
  c.text = text;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(agent::ChatCompletionJson(c), ec);
  Require(!ec);
  Require(v.at("choices").at(0).at("message").at("content").as_string() == text);
  agent::ChunkWriter w(1, 0, "m", true);
  std::string event;
  w.AppendDelta(text, &event);
  Require(event.starts_with("data: ") && event.ends_with("\n\n"));
  v = boost::json::parse(event.substr(6, event.size() - 8), ec);
  Require(!ec);
  Require(v.at("choices").at(0).at("delta").at("content").as_string() == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  agent::ChatCompletionRequest chat;
  if (auto e = agent::DecodeChatCompletionRequest(data, &chat)) {
    Require(!e->message.empty());
  } else {
    Require(!chat.model.empty() && IsCleanText(chat.model, 100));
    Require(!chat.messages.empty());
    CheckMessages(chat.messages);
    Require(!chat.max_output_tokens || *chat.max_output_tokens >= 1);
    Require(!chat.temperature || (*chat.temperature >= 0 && *chat.temperature <= 2));
    Require(chat.stream || !chat.include_usage);
    Require(IsCleanText(chat.conversation, 64));
    for (const auto& m : chat.messages) RoundTrip(m.content);
  }

  agent::CreateResponseRequest response;
  if (auto e = agent::DecodeCreateResponseRequest(data, &response)) {
    Require(!e->message.empty());
  } else {
    Require(!response.input.empty());
    CheckMessages(response.input);
    Require(response.conversation.empty() || response.previous_response_id.empty());
    Require(!response.instructions || IsCleanText(*response.instructions, 32 << 10));
  }

  agent::CreateConversationRequest conversation;
  if (auto e = agent::DecodeCreateConversationRequest(data, &conversation)) {
    Require(!e->message.empty());
  } else {
    Require(IsCleanText(conversation.title, agent::kMaxTitleBytes));
    Require(!conversation.system_prompt ||
            IsCleanText(*conversation.system_prompt, agent::kMaxSystemPromptBytes));
  }

  agent::ListItemsQuery query;
  if (!agent::DecodeListItemsQuery(data, &query)) {
    Require(query.limit >= 1 && query.limit <= 100);
    Require(IsCleanText(query.after, 64));
  }
  // Ids: what parses prints back the same.
  if (auto id = agent::ParseConversationApiId(data)) {
    Require(*id > 0 && agent::ConversationApiId(*id) == data);
  }
  if (auto id = agent::ParseResponseApiId(data)) {
    Require(*id > 0 && agent::ResponseApiId(*id) == data);
  }
  return 0;
}
