// Prompt status names as stored in ai_prompts.status and shown in the API.
#include "services/ai-agent/agent_store.h"

namespace aichat::agent {

const char* PromptStatusName(PromptStatus s) {
  switch (s) {
    case PromptStatus::kPending:
      return "PENDING";
    case PromptStatus::kStreaming:
      return "STREAMING";
    case PromptStatus::kCompleted:
      return "COMPLETED";
    case PromptStatus::kFailed:
      return "FAILED";
    case PromptStatus::kCancelled:
      return "CANCELLED";
    case PromptStatus::kRateLimited:
      return "RATE_LIMITED";
    case PromptStatus::kBudgetExceeded:
      return "BUDGET_EXCEEDED";
  }
  return "FAILED";
}

PromptStatus ParsePromptStatus(std::string_view s) {
  if (s == "PENDING") {
    return PromptStatus::kPending;
  }
  if (s == "STREAMING") {
    return PromptStatus::kStreaming;
  }
  if (s == "COMPLETED") {
    return PromptStatus::kCompleted;
  }
  if (s == "CANCELLED") {
    return PromptStatus::kCancelled;
  }
  if (s == "RATE_LIMITED") {
    return PromptStatus::kRateLimited;
  }
  if (s == "BUDGET_EXCEEDED") {
    return PromptStatus::kBudgetExceeded;
  }
  // The column's CHECK admits nothing else; an unknown name is treated as the
  // safe terminal state rather than as an open turn.
  return PromptStatus::kFailed;
}

bool IsTerminal(PromptStatus s) {
  return s != PromptStatus::kPending && s != PromptStatus::kStreaming;
}

}  // namespace aichat::agent
