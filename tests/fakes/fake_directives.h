// Per-request behaviour of the fake LLM provider and its `[[fake:...]]`
// directive syntax (see fake_llm_server.h for the list). No Beast here.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aichat::fakes {

struct FakeBehavior {
  int status = 0;  // 0: answer normally
  std::string code;
  std::string type;  // the error's "type"; default by status
  std::string message;
  bool html = false;     // the error body is an HTML page (a CDN or proxy in front)
  int echo_auth = -1;    // the error body is text: N filler bytes, then the Authorization header
  int error_after = -1;  // after N content chunks, an in-stream error event ends the stream
  bool error_event = false;  // ... sent with an "event: error" line
  std::optional<double> retry_after;
  bool hangup = false;
  int drop_after = -1;
  int stall_after = -1;
  bool hold_last = false;
  int slow_start_ms = -1;
  int delay_ms = -1;
  bool no_usage = false;
  bool malformed = false;
  int tokens = -1;
  int cached = 0;
  std::string model;
  std::optional<bool> crlf;
  std::string split;
};

// Applies "key=value flag ..." (the inside of one directive) to `b`.
void ApplyDirective(std::string_view text, FakeBehavior& b);

// Returns `text` without its `[[fake:...]]` directives; appends their insides
// to `found` if not null.
std::string StripDirectives(std::string_view text, std::vector<std::string>* found);

// Whitespace-separated words.
std::vector<std::string> Words(std::string_view text);

}  // namespace aichat::fakes
