// aichat-llm-stream: streams one completion to stdout with the production
// client, for checking a provider by hand:
//   OPENAI_API_KEY=... [OPENAI_BASE_URL=...] aichat-llm-stream [--model=M] [--ca_file=PEM] "prompt"
// Prints the outcome (status, usage, time to first token) on stderr.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "absl/synchronization/notification.h"
#include "services/ai-agent/llm/llm_client.h"

int main(int argc, char** argv) {
  using aichat::agent::LlmOutcome;
  std::string model = "gpt-4o-mini";
  std::string prompt;
  aichat::agent::HttpLlmClientOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.rfind("--model=", 0) == 0) {
      model = std::string(arg.substr(8));
    } else if (arg.rfind("--ca_file=", 0) == 0) {
      options.ca_file = std::string(arg.substr(10));
    } else {
      prompt = std::string(arg);
    }
  }
  const char* key = std::getenv("OPENAI_API_KEY");
  const char* base = std::getenv("OPENAI_BASE_URL");
  if (prompt.empty()) {
    std::cerr << "usage: OPENAI_API_KEY=... [OPENAI_BASE_URL=...] aichat-llm-stream "
                 "[--model=M] [--ca_file=PEM] \"prompt\"\n";
    return 2;
  }
  aichat::agent::CompletionRequest request;
  request.base_url = base != nullptr && *base != '\0' ? base : "https://api.openai.com/v1";
  request.api_key = key != nullptr ? key : "";
  request.model = model;
  request.messages = {{"user", prompt}};
  request.deadline = absl::Now() + absl::Minutes(2);
  auto client = aichat::agent::MakeHttpLlmClient(options);
  absl::Notification done;
  LlmOutcome outcome;
  client->Start(
      std::move(request),
      [](std::string_view delta) {
        std::fwrite(delta.data(), 1, delta.size(), stdout);
        std::fflush(stdout);
      },
      [&](LlmOutcome o) {
        outcome = std::move(o);
        done.Notify();
      });
  done.WaitForNotification();
  std::cout << std::endl;
  std::cerr << "status: " << outcome.status << "\nkind: "
            << aichat::agent::LlmErrorKindName(outcome.kind) << "\nmodel: " << outcome.provider_model
            << "\nfinish_reason: " << outcome.finish_reason
            << "\nusage: prompt=" << outcome.usage.prompt_tokens
            << " completion=" << outcome.usage.completion_tokens
            << " cached=" << outcome.usage.cached_tokens
            << (outcome.usage.estimated ? " (estimated)" : "") << "\nattempts: " << outcome.attempts
            << "\ntime_to_first_token: " << absl::FormatDuration(outcome.time_to_first_token)
            << "\n";
  return outcome.status.ok() ? 0 : 1;
}
