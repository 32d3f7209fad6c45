// Closed-loop HTTP/1.1 load for OpenAI-compatible endpoints (the fake provider
// straight, or a gateway in front of it). Plain HTTP only: the bench compares relays,
// not TLS stacks. Beast stays inside http_load.cc.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace aichat::bench {

struct HttpLoadTarget {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/v1/chat/completions";
  std::string body;  // the JSON request
  std::vector<std::pair<std::string, std::string>> headers;
  // Header lines ("Name: value\r\n") added to each request as it is sent, e.g. an
  // aichat user's token and the conversation the request is bound to; may be empty.
  // Called from the I/O threads.
  std::function<std::string()> per_request_headers;
};

struct HttpResult {
  int http_status = 0;       // 0: the connection failed
  std::string error;         // for http_status 0
  double start_s = 0;        // seconds on the driver's clock
  double first_byte_s = -1;  // first body bytes (the first SSE event)
  double end_s = 0;
  bool done_marker = false;     // the body held "[DONE]" (streams) or was complete JSON
  std::vector<double> event_s;  // when each SSE "data:" event arrived
};

// Runs `connections` callers on `io_threads` threads; each sends a request, waits for the
// whole response, reports it, and sends the next while keep_going() holds. Returns when
// every caller has stopped. `now` is the driver's clock in seconds.
void RunHttpClosedLoop(const HttpLoadTarget& target, int connections, int io_threads,
                       const std::function<double()>& now, const std::function<bool()>& keep_going,
                       const std::function<void(const HttpResult&)>& report);

}  // namespace aichat::bench
