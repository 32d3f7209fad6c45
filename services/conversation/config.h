// The conversation service's settings (environment variables; flags override).
#pragma once

#include "absl/status/statusor.h"
#include "common/config.h"
#include "services/conversation/conversation_service.h"

namespace aichat::conversation {

struct ConversationConfig {
  CommonSettings common;
  ConversationServiceOptions service;
};

void DeclareSettings(Config& config);
absl::StatusOr<ConversationConfig> ReadSettings(const Config& config);

}  // namespace aichat::conversation
