#include "services/conversation/conversation_checks.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/validate.h"

namespace aichat::conversation {

int32_t EstimateTokens(std::string_view text) {
  if (text.empty()) return 0;
  int64_t ascii = 0;
  int64_t other = 0;
  for (unsigned char c : text) {
    if (c < 0x80) {
      ++ascii;
    } else if ((c & 0xC0) != 0x80) {
      ++other;  // the lead byte of a multi-byte code point
    }
  }
  int64_t tokens = (ascii + 3) / 4 + other + kEstimateOverheadTokens;
  return static_cast<int32_t>(std::min<int64_t>(tokens, kMaxMessageTokens));
}

absl::Status CheckTitle(std::string_view title, const ConversationServiceOptions& o) {
  return CheckTextChars("title", title, o.max_title_chars, false);
}

absl::Status CheckModel(std::string_view model, const ConversationServiceOptions& o) {
  if (auto st = CheckText("model", model, o.max_model_chars, false); !st.ok()) return st;
  return CheckNoSpaceOrControl("model", model);
}

absl::Status CheckSystemPrompt(std::string_view prompt, const ConversationServiceOptions& o) {
  return CheckText("system_prompt", prompt, o.max_system_prompt_bytes, false);
}

absl::Status CheckContent(std::string_view content, const ConversationServiceOptions& o) {
  return CheckText("content", content, o.max_content_bytes, true);
}

absl::Status CheckAssistantContent(std::string_view content, const ConversationServiceOptions& o) {
  return CheckText("content", content, o.max_assistant_content_bytes, true);
}

absl::Status CheckTokenCount(int64_t token_count) {
  if (token_count < 0 || token_count > kMaxMessageTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("token_count must be between 0 and ", kMaxMessageTokens));
  }
  return absl::OkStatus();
}

}  // namespace aichat::conversation
