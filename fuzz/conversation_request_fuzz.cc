// libFuzzer target for the conversation service's request checks
// (services/conversation/conversation_checks.h), what CreateConversation,
// UpdateConversation and AppendMessage (USER and ASSISTANT contents) run before
// anything is written, under limits the input chooses; and the token estimate
// GetContext relies on.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <string>

#include "fuzz/fuzz_util.h"
#include "services/conversation/conversation_checks.h"

using aichat::fuzz::HasSpaceOrControl;
using aichat::fuzz::IsCleanText;
using aichat::fuzz::Require;
using aichat::fuzz::RequireVerdict;
namespace conv = aichat::conversation;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  conv::ConversationServiceOptions o;
  o.max_title_chars = in.ConsumeIntegralInRange<size_t>(0, 64);
  o.max_model_chars = in.ConsumeIntegralInRange<size_t>(0, 64);
  o.max_system_prompt_bytes = in.ConsumeIntegralInRange<size_t>(0, 512);
  o.max_content_bytes = in.ConsumeIntegralInRange<size_t>(0, 2048);
  o.max_assistant_content_bytes = in.ConsumeIntegralInRange<size_t>(0, 4096);
  int64_t token_count = in.ConsumeIntegral<int64_t>();
  std::string title = in.ConsumeRandomLengthString(300);
  std::string model = in.ConsumeRandomLengthString(100);
  std::string system_prompt = in.ConsumeRandomLengthString(600);
  std::string content = in.ConsumeRemainingBytesAsString();

  RequireVerdict(conv::CheckTitle(title, o),
                 IsCleanText(title, 4 * o.max_title_chars) &&
                     aichat::CountCodePoints(title) <= o.max_title_chars,
                 "title");
  RequireVerdict(conv::CheckModel(model, o),
                 IsCleanText(model, o.max_model_chars) && !HasSpaceOrControl(model), "model");
  RequireVerdict(conv::CheckSystemPrompt(system_prompt, o),
                 IsCleanText(system_prompt, o.max_system_prompt_bytes), "system_prompt");
  RequireVerdict(conv::CheckContent(content, o),
                 !content.empty() && IsCleanText(content, o.max_content_bytes), "content");
  RequireVerdict(conv::CheckAssistantContent(content, o),
                 !content.empty() && IsCleanText(content, o.max_assistant_content_bytes),
                 "content");
  RequireVerdict(conv::CheckTokenCount(token_count),
                 token_count >= 0 && token_count <= conv::kMaxMessageTokens, "token_count");

  // The estimate errs high: at least a token per 4 ASCII bytes and one per other code
  // point, never negative, never above what a caller may declare, 0 only when empty.
  int32_t estimate = conv::EstimateTokens(content);
  Require(estimate >= 0 && estimate <= conv::kMaxMessageTokens);
  Require((estimate == 0) == content.empty());
  if (!content.empty() && aichat::IsValidUtf8(content)) {
    Require(static_cast<int64_t>(estimate) >=
            std::min<int64_t>(static_cast<int64_t>(aichat::CountCodePoints(content)) / 4,
                              conv::kMaxMessageTokens));
  }
  return 0;
}
