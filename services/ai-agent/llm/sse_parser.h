// Incremental Server-Sent Events parser (WHATWG "text/event-stream" rules).
//
// Bytes arrive in arbitrary pieces from the network; Feed() accepts any split
// (inside a line, between CR and LF, inside a UTF-8 character) and invokes the
// callback once per complete event, i.e. when a blank line dispatches it.
// Only complete events are emitted, so partial UTF-8 sequences are simply held.
// No Boost, no allocation per byte; memory is bounded by `max_event_bytes`.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace aichat::agent {

struct SseEvent {
  std::string event;  // "event:" field; empty means the default "message"
  std::string data;   // "data:" lines joined with "\n"
  std::string id;     // "id:" field (last one seen in the event)
};

class SseParser {
 public:
  // Returning false from the callback stops parsing: Feed() returns at once
  // with OK and ignores the rest of that piece (used after "[DONE]").
  using EventCallback = std::function<bool(const SseEvent&)>;

  static constexpr size_t kDefaultMaxEventBytes = 4 << 20;

  explicit SseParser(EventCallback on_event, size_t max_event_bytes = kDefaultMaxEventBytes);

  // Consumes `bytes`. Returns ResourceExhausted if a single line or event grows
  // beyond the limit; the parser is then unusable (every later call fails).
  absl::Status Feed(std::string_view bytes);

  // True if bytes of an unfinished event are buffered (a stream ending here
  // was cut mid-event).
  bool HasPartialEvent() const;

  // Bytes currently held for the unfinished line and event.
  size_t BufferedBytes() const { return line_.size() + pending_.data.size(); }

 private:
  absl::Status ProcessLine(std::string_view line);
  bool Dispatch();

  EventCallback on_event_;
  size_t max_event_bytes_;
  std::string line_;          // the unfinished line (without terminator)
  SseEvent pending_;          // fields of the event being assembled
  bool has_data_ = false;     // at least one data: line in pending_
  bool has_fields_ = false;   // any field line seen since the last dispatch
  bool skip_lf_ = false;      // last byte was CR: a following LF ends nothing
  bool stopped_ = false;      // callback asked to stop
  absl::Status error_;
};

}  // namespace aichat::agent
