// File: a small asynchronous HTTP/1.1 server (Boost.Beast, kept inside
// http_server.cc): keep-alive, bounded requests (header and body bytes, read and
// idle timeouts against slow or stalled clients), whole or streamed (chunked)
// responses, client disconnects noticed while a response is being prepared, the
// Prometheus community's HTTP metrics (http_requests_total{method,route,code},
// http_request_duration_seconds{method,route}) and one JSON log line per request.
//
// The handler gets each request with an HttpExchange to answer it on, from any
// thread, whenever it is ready: nothing here waits on the handler.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace aichat::agent {

struct HttpHeader {
  std::string name;
  std::string value;
};

struct HttpRequest {
  std::string method;               // as sent: "GET", "POST", ...
  std::string path;                 // the target before '?', not decoded
  std::string query;                // after '?', not decoded
  std::vector<HttpHeader> headers;  // names lower-cased
  std::string body;
  std::string peer;  // the client's address

  // The first header of that (lower-case) name; "" when absent.
  std::string_view Header(std::string_view name) const;
};

// The answer to one request. Thread-safe: call from any thread, never blocks.
// Either Respond once, or StartStream, Write any number of times, End.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void Respond(int status, std::vector<HttpHeader> headers, std::string body) = 0;
  virtual void StartStream(int status, std::vector<HttpHeader> headers) = 0;
  // Queued and written as soon as the socket takes it (pieces written meanwhile go
  // out together).
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // `gone` runs once, on a server thread, if the client leaves (or stops reading)
  // before the answer is complete; later calls above are dropped. Set it at once.
  virtual void OnClientGone(std::function<void()> gone) = 0;
  // For the request's metrics and log line: the route template (a bounded label:
  // "/v1/conversations/{id}") and the user, once known.
  virtual void SetRoute(std::string_view route) = 0;
  virtual void SetUser(int64_t user_id) = 0;
  // Shows in the log line (OpenAI's error type of a refused request).
  virtual void SetError(std::string_view type) = 0;
};

using HttpHandler =
    std::function<void(HttpRequest request, std::shared_ptr<HttpExchange> exchange)>;

struct HttpServerOptions {
  std::string listen = "0.0.0.0:8080";  // host:port; port 0 picks a free one
  int threads = 1;
  size_t max_header_bytes = 16 << 10;
  size_t max_body_bytes = 8 << 20;
  // The headers, and then the body, must each arrive within this.
  absl::Duration read_timeout = absl::Seconds(30);
  // A keep-alive connection with no new request for this long is closed.
  absl::Duration idle_timeout = absl::Seconds(75);
  // A client that takes no bytes of a response for this long is cut off.
  absl::Duration write_timeout = absl::Seconds(30);
  int max_connections = 4096;
  // Request bodies being received at once hold their declared size (a chunked one:
  // max_body_bytes) against this, before anyone is authenticated; 503 beyond.
  size_t max_receiving_body_bytes = 256 << 20;
  // Output queued for a client that reads slower than it is produced, at most.
  size_t max_queued_bytes = 8 << 20;
};

class HttpServer {
 public:
  // Listens and serves at once. `registry` (may be null) gets the HTTP metrics.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           HttpHandler handler,
                                                           prometheus::Registry* registry);
  ~HttpServer();  // Shutdown(now) if not done

  int port() const;
  // Stops accepting, closes idle keep-alive connections; answers still being made
  // are written and then their connection closes.
  void BeginShutdown();
  // BeginShutdown, then waits for the answers under way until `deadline`; what is
  // left is cut off (their clients are gone: turns are cancelled). Joins the threads.
  void Shutdown(absl::Time deadline);

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aichat::agent
