// Incremental Server-Sent Events parser; see sse_parser.h.
#include "services/ai-agent/llm/sse_parser.h"

#include <cstring>
#include <utility>

namespace aichat::agent {

SseParser::SseParser(EventCallback on_event, size_t max_event_bytes)
    : on_event_(std::move(on_event)), max_event_bytes_(max_event_bytes) {}

bool SseParser::HasPartialEvent() const { return !line_.empty() || has_fields_; }

absl::Status SseParser::Feed(std::string_view bytes) {
  if (!error_.ok()) {
    return error_;
  }
  if (stopped_) {
    return absl::OkStatus();
  }
  const char* p = bytes.data();
  const char* end = p + bytes.size();
  while (p < end) {
    if (skip_lf_) {
      skip_lf_ = false;
      if (*p == '\n') {
        ++p;
        continue;
      }
    }
    // Scan to the next line terminator in one go (memchr-speed for long lines).
    const char* q = p;
    while (q < end && *q != '\n' && *q != '\r') {
      ++q;
    }
    if (line_.size() + pending_.data.size() + static_cast<size_t>(q - p) > max_event_bytes_) {
      error_ = absl::ResourceExhaustedError("SSE event exceeds the size limit");
      return error_;
    }
    if (q == end) {
      line_.append(p, q);
      break;
    }
    skip_lf_ = (*q == '\r');
    absl::Status status;
    if (line_.empty()) {
      status = ProcessLine(std::string_view(p, q - p));
    } else {
      line_.append(p, q);
      status = ProcessLine(line_);
      line_.clear();
    }
    if (!status.ok()) {
      error_ = status;
      return error_;
    }
    if (stopped_) {
      return absl::OkStatus();
    }
    p = q + 1;
  }
  return absl::OkStatus();
}

absl::Status SseParser::ProcessLine(std::string_view line) {
  if (line.empty()) {
    if (has_fields_) {
      if (!Dispatch()) {
        stopped_ = true;
      }
    }
    return absl::OkStatus();
  }
  if (line.front() == ':') {
    return absl::OkStatus();  // comment, e.g. ": keep-alive"
  }
  std::string_view field = line;
  std::string_view value;
  if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') {
      value.remove_prefix(1);
    }
  }
  has_fields_ = true;
  if (field == "data") {
    if (has_data_) {
      pending_.data.push_back('\n');
    }
    pending_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    pending_.event.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) {
      pending_.id.assign(value);
    }
  }
  // "retry" and unknown fields are ignored, as the specification says.
  return absl::OkStatus();
}

bool SseParser::Dispatch() {
  bool keep_going = true;
  // Per the specification an event with no data lines is not dispatched.
  if (has_data_) {
    keep_going = on_event_(pending_);
  }
  pending_.data.clear();
  pending_.event.clear();
  has_data_ = false;
  has_fields_ = false;
  return keep_going;
}

}  // namespace aichat::agent
