// The HTTP/1.1 listener behind http_server.h: Boost.Beast on Asio coroutines.
//
// Threads: each connection is a Session whose coroutine runs on its own strand;
// everything a Session holds is touched only there. An Exchange (the answer to one
// request) is filled from any thread under its mutex and wakes its Session by
// posting to the strand through the Hub, which stops posting once the server is
// gone (a turn may outlive it).
#include "services/ai-agent/http/http_server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/metrics.h"
#include "services/ai-agent/http/absl_view.h"
#include "services/ai-agent/http/openai_wire.h"

namespace aichat::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using beast::error_code;
using Strand = asio::any_io_executor;  // a strand

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& h : headers) {
    if (h.name == name) return h.value;
  }
  return {};
}

namespace {

std::chrono::steady_clock::duration Chrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(d);
}

std::string MethodLabel(std::string_view m) {
  for (std::string_view known : {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}) {
    if (m == known) return std::string(known);
  }
  return "other";
}

// Posts to strands for as long as the server lives.
class Hub {
 public:
  void Post(const Strand& strand, std::function<void()> fn) {
    absl::MutexLock lock(&mu_);
    if (open_) asio::post(strand, std::move(fn));
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    open_ = false;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = true;
};

struct HttpMetrics {
  explicit HttpMetrics(prometheus::Registry& r)
      : requests(prometheus::BuildCounter()
                     .Name("http_requests_total")
                     .Help("HTTP requests answered, by method, route template and status code.")
                     .Register(r)),
        duration(prometheus::BuildHistogram()
                     .Name("http_request_duration_seconds")
                     .Help("Time from a request's headers to the end of its answer (a stream's "
                           "last byte), by method and route template.")
                     .Register(r)),
        connections(prometheus::BuildGauge()
                        .Name("http_connections")
                        .Help("Open HTTP connections.")
                        .Register(r)
                        .Add({})),
        in_flight(prometheus::BuildGauge()
                      .Name("http_requests_in_flight")
                      .Help("HTTP requests being answered.")
                      .Register(r)
                      .Add({})),
        refused(prometheus::BuildCounter()
                    .Name("http_connections_refused_total")
                    .Help("Connections closed at once because the connection limit was reached.")
                    .Register(r)
                    .Add({})) {}
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Gauge& connections;
  prometheus::Gauge& in_flight;
  prometheus::Counter& refused;
};

// What an Exchange has for its Session to write, taken under the Exchange's mutex.
struct Output {
  enum Kind { kNothing, kWhole, kStreamHead, kData } kind = kNothing;
  int status = 200;
  std::vector<HttpHeader> headers;
  std::string data;
  bool ended = false;  // after data (streams)
  bool gone = false;
};

class Session;

class Exchange final : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Hub> hub, Strand strand, std::weak_ptr<Session> session,
           size_t max_queued)
      : hub_(std::move(hub)),
        strand_(std::move(strand)),
        session_(std::move(session)),
        max_queued_(max_queued) {}

  void Respond(int status, std::vector<HttpHeader> headers, std::string body) override {
    {
      absl::MutexLock lock(&mu_);
      if (gone_ || kind_ != Output::kNothing) return;
      kind_ = Output::kWhole;
      status_ = status;
      headers_ = std::move(headers);
      pending_ = std::move(body);
    }
    Wake();
  }

  void StartStream(int status, std::vector<HttpHeader> headers) override {
    {
      absl::MutexLock lock(&mu_);
      if (gone_ || kind_ != Output::kNothing) return;
      kind_ = Output::kStreamHead;
      status_ = status;
      headers_ = std::move(headers);
    }
    Wake();
  }

  void Write(std::string data) override {
    bool overflow = false;
    {
      absl::MutexLock lock(&mu_);
      if (gone_ || ended_ || kind_ == Output::kNothing || kind_ == Output::kWhole) return;
      if (pending_.empty()) {
        pending_ = std::move(data);
      } else {
        pending_.append(data);
      }
      overflow = pending_.size() > max_queued_;
    }
    if (overflow) return Gone();  // a client that does not read is not buffered for
    Wake();
  }

  void End() override {
    {
      absl::MutexLock lock(&mu_);
      if (gone_ || ended_) return;
      ended_ = true;
    }
    Wake();
  }

  void OnClientGone(std::function<void()> gone) override {
    bool now = false;
    {
      absl::MutexLock lock(&mu_);
      if (gone_) {
        now = true;
      } else {
        on_gone_ = std::move(gone);
      }
    }
    if (now) gone();
  }

  void SetRoute(std::string_view route) override {
    absl::MutexLock lock(&mu_);
    route_ = std::string(route);
  }
  void SetUser(int64_t user_id) override {
    absl::MutexLock lock(&mu_);
    user_ = user_id;
  }
  void SetError(std::string_view type) override {
    absl::MutexLock lock(&mu_);
    error_ = std::string(type);
  }

  // ---- the Session's side (its strand)

  Output Take() {
    absl::MutexLock lock(&mu_);
    Output out;
    out.gone = gone_;
    if (gone_) return out;
    switch (kind_) {
      case Output::kNothing:
        break;
      case Output::kWhole:
        if (taken_head_) break;
        taken_head_ = true;
        out.kind = Output::kWhole;
        out.status = status_;
        out.headers = std::move(headers_);
        out.data.swap(pending_);
        break;
      case Output::kStreamHead:
      case Output::kData:
        if (!taken_head_) {
          taken_head_ = true;
          out.kind = Output::kStreamHead;
          out.status = status_;
          out.headers = std::move(headers_);
        } else if (!pending_.empty() || ended_) {
          out.kind = Output::kData;
        }
        out.data.swap(pending_);
        out.ended = ended_;
        break;
    }
    return out;
  }

  // The client left or stopped reading: whoever answers hears it once.
  void Gone() {
    std::function<void()> gone;
    {
      absl::MutexLock lock(&mu_);
      if (gone_) return;
      gone_ = true;
      pending_.clear();
      gone.swap(on_gone_);
    }
    if (gone) gone();
  }

  struct LogFacts {
    std::string route;
    int64_t user = 0;
    std::string error;
  };
  LogFacts Facts() {
    absl::MutexLock lock(&mu_);
    return {route_, user_, error_};
  }

 private:
  void Wake();

  std::shared_ptr<Hub> hub_;
  Strand strand_;
  std::weak_ptr<Session> session_;
  const size_t max_queued_;
  absl::Mutex mu_;
  Output::Kind kind_ ABSL_GUARDED_BY(mu_) = Output::kNothing;
  bool taken_head_ ABSL_GUARDED_BY(mu_) = false;
  int status_ ABSL_GUARDED_BY(mu_) = 200;
  std::vector<HttpHeader> headers_ ABSL_GUARDED_BY(mu_);
  std::string pending_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_gone_ ABSL_GUARDED_BY(mu_);
  std::string route_ ABSL_GUARDED_BY(mu_) = "other";
  int64_t user_ ABSL_GUARDED_BY(mu_) = 0;
  std::string error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

class HttpServer::Impl {
 public:
  Impl(HttpServerOptions options, HttpHandler handler, prometheus::Registry* registry)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        work_(asio::make_work_guard(io_)),
        accept_strand_(asio::make_strand(io_)),
        acceptor_(accept_strand_),
        hub_(std::make_shared<Hub>()) {
    if (registry != nullptr) metrics_ = std::make_unique<HttpMetrics>(*registry);
  }

  absl::Status Listen();
  void Run();
  void BeginShutdown();
  void Shutdown(absl::Time deadline);

  const HttpServerOptions& options() const { return options_; }
  const HttpHandler& handler() const { return handler_; }
  const std::shared_ptr<Hub>& hub() const { return hub_; }
  HttpMetrics* metrics() { return metrics_.get(); }
  bool draining() const { return draining_.load(); }
  int port() const { return port_; }
  // The budget of request bodies being received (max_receiving_body_bytes).
  bool TakeBodyBytes(size_t n) {
    size_t held = receiving_body_bytes_.load();
    do {
      if (held + n > options_.max_receiving_body_bytes) return false;
    } while (!receiving_body_bytes_.compare_exchange_weak(held, held + n));
    return true;
  }
  void GiveBodyBytes(size_t n) { receiving_body_bytes_.fetch_sub(n); }

  void Add(const std::shared_ptr<Session>& s);
  void Remove(Session* s);

 private:
  asio::awaitable<void> Accept();

  HttpServerOptions options_;
  HttpHandler handler_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  Strand accept_strand_;  // the acceptor's
  tcp::acceptor acceptor_;
  std::shared_ptr<Hub> hub_;
  std::unique_ptr<HttpMetrics> metrics_;
  std::vector<std::thread> threads_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<size_t> receiving_body_bytes_{0};
  int port_ = 0;
  absl::Mutex mu_;
  absl::flat_hash_map<Session*, std::weak_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl* server, tcp::socket socket)
      : server_(server),
        strand_(socket.get_executor()),
        stream_(std::move(socket)),
        wake_(strand_) {
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) peer_ = ep.address().to_string();
  }

  const Strand& strand() const { return strand_; }

  asio::awaitable<void> Run();

  // On the strand: closes now if no request is being answered (idle keep-alive), or
  // at once when `force`.
  void Close(bool force) {
    if (!force && !idle_) return;
    client_gone_ = true;  // an answer under way is cut off: its turn is cancelled
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    wake_.cancel();
  }

  void Wake() { wake_.cancel(); }

 private:
  asio::awaitable<bool> ReadRequest(HttpRequest* request, bool* keep_alive);
  enum class Served { kKeepAlive, kClose, kGone };
  asio::awaitable<Served> Serve(const std::shared_ptr<Exchange>& exchange, bool head,
                                bool keep_alive, int* status);
  asio::awaitable<void> Refuse(int status, std::string_view code, std::string_view message);
  void RecordRefusal(int status, std::string_view code);
  void Watch();
  void Record(const std::string& method, const Exchange::LogFacts& facts, int status,
              absl::Time start);

  HttpServer::Impl* server_;
  Strand strand_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  asio::steady_timer wake_;
  std::string peer_;
  bool idle_ = true;
  bool client_gone_ = false;
  uint64_t watch_ = 0;  // the current watch; older ones are stale
};

void Exchange::Wake() {
  hub_->Post(strand_, [weak = session_] {
    if (auto s = weak.lock()) s->Wake();
  });
}

// A request the listener itself refuses (unparsable, too large, too slow): OpenAI's
// error shape, then the connection closes.
asio::awaitable<void> Session::Refuse(int status, std::string_view code, std::string_view message) {
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "aichat");
  res.set(http::field::content_type, "application/json");
  res.keep_alive(false);
  res.body() =
      ErrorJson(message, status >= 500 ? "server_error" : "invalid_request_error", "", code);
  res.prepare_payload();
  error_code ec;
  stream_.expires_after(Chrono(server_->options().write_timeout));
  co_await http::async_write(stream_, res, asio::redirect_error(asio::use_awaitable, ec));
  RecordRefusal(status, code);
}

void Session::RecordRefusal(int status, std::string_view code) {
  if (HttpMetrics* m = server_->metrics()) {
    m->requests.Add({{"method", "other"}, {"route", "invalid"}, {"code", absl::StrCat(status)}})
        .Increment();
  }
  LogInfo(
      "request",
      {{"protocol", "http"}, {"route", "invalid"}, {"code", status}, {"error", std::string(code)}});
}

// Reads one request; false when the connection is to close (idle, broken, refused).
asio::awaitable<bool> Session::ReadRequest(HttpRequest* request, bool* keep_alive) {
  const HttpServerOptions& o = server_->options();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(o.max_header_bytes));
  parser_->body_limit(o.max_body_bytes);
  error_code ec;
  // Waiting for a request (keep-alive): its first bytes within the idle timeout...
  idle_ = true;
  if (server_->draining()) co_return false;
  if (buffer_.size() == 0) {
    stream_.expires_after(Chrono(o.idle_timeout));
    const size_t n = co_await stream_.async_read_some(
        buffer_.prepare(4096), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;  // closed by the client, or idle for too long
    buffer_.commit(n);
  }
  idle_ = false;
  // ... and then all its headers within the read timeout (a slow drip is cut off).
  stream_.expires_after(Chrono(o.read_timeout));
  co_await http::async_read_header(stream_, buffer_, *parser_,
                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (ec == http::error::body_limit) {  // a Content-Length over the limit
      co_await Refuse(413, "request_too_large",
                      absl::StrCat("the request body exceeds ", o.max_body_bytes, " bytes"));
    } else if (ec == http::error::header_limit) {
      co_await Refuse(431, "request_headers_too_large",
                      absl::StrCat("the request headers exceed ", o.max_header_bytes, " bytes"));
    } else if (ec == beast::error::timeout) {
      // The timeout closed the socket: nothing can be said any more; the log says 408.
      RecordRefusal(408, "request_timeout");
    } else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
               ec != http::error::end_of_stream && ec != http::error::partial_message) {
      co_await Refuse(400, "invalid_http", absl::StrCat("malformed HTTP request: ", ec.message()));
    }
    co_return false;
  }
  auto& head = parser_->get();
  if (auto length = parser_->content_length(); length.has_value() && *length > o.max_body_bytes) {
    co_await Refuse(413, "request_too_large",
                    absl::StrCat("the request body exceeds ", o.max_body_bytes, " bytes"));
    co_return false;
  }
  if (absl::EqualsIgnoreCase(Av(std::string_view(head[http::field::expect])), "100-continue")) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    stream_.expires_after(Chrono(o.write_timeout));
    co_await asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;
  }
  size_t held = 0;
  if (!parser_->is_done()) {
    held = static_cast<size_t>(parser_->content_length().value_or(o.max_body_bytes));
    if (!server_->TakeBodyBytes(held)) {
      co_await Refuse(503, "server_busy",
                      "too many request bodies are being received at once; retry shortly");
      co_return false;
    }
  }
  absl::Cleanup give_back = [this, held] {
    if (held > 0) server_->GiveBodyBytes(held);
  };
  if (!parser_->is_done()) {
    stream_.expires_after(Chrono(o.read_timeout));
    co_await http::async_read(stream_, buffer_, *parser_,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::body_limit) {
      co_await Refuse(413, "request_too_large",
                      absl::StrCat("the request body exceeds ", o.max_body_bytes, " bytes"));
      co_return false;
    }
    if (ec == beast::error::timeout) {
      RecordRefusal(408, "request_timeout");
      co_return false;
    }
    if (ec) {
      if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
          ec != http::error::end_of_stream && ec != http::error::partial_message) {
        co_await Refuse(400, "invalid_http",
                        absl::StrCat("malformed HTTP request: ", ec.message()));
      }
      co_return false;
    }
  }
  stream_.expires_never();
  auto req = parser_->release();
  std::string_view target(req.target().data(), req.target().size());
  size_t q = target.find('?');
  request->method = std::string(req.method_string());
  request->path = std::string(target.substr(0, q));
  request->query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));
  request->headers.clear();
  for (const auto& f : req) {
    request->headers.push_back(
        {absl::AsciiStrToLower(Av(std::string_view(f.name_string()))), std::string(f.value())});
  }
  request->body = std::move(req.body());
  request->peer = peer_;
  *keep_alive = req.keep_alive();
  co_return true;
}

// Notices a client that goes away while its answer is being prepared: the socket
// turns readable with nothing to read (FIN or RST). Bytes of a next (pipelined)
// request are kept for ReadRequest and the watch goes on (past a header's worth
// it ends: such a client is left to the timeouts).
void Session::Watch() {
  const uint64_t id = ++watch_;
  stream_.socket().async_wait(
      tcp::socket::wait_read,
      asio::bind_executor(strand_, [self = shared_from_this(), id](const error_code& ec) {
        if (id != self->watch_ || ec == asio::error::operation_aborted) return;
        error_code avail_ec;
        const size_t avail = ec ? 0 : self->stream_.socket().available(avail_ec);
        if (!avail_ec && avail > 0) {
          if (self->buffer_.size() + avail > self->server_->options().max_header_bytes) return;
          error_code read_ec;
          const size_t n = self->stream_.socket().read_some(self->buffer_.prepare(avail), read_ec);
          self->buffer_.commit(n);
          if (!read_ec) return self->Watch();
        }
        self->client_gone_ = true;
        self->wake_.cancel();
      }));
}

// Writes what the Exchange produces until its answer is complete.
asio::awaitable<Session::Served> Session::Serve(const std::shared_ptr<Exchange>& exchange,
                                                bool head, bool keep_alive, int* status) {
  const HttpServerOptions& o = server_->options();
  client_gone_ = false;
  Watch();
  std::optional<http::response<http::empty_body>> stream_head;
  error_code ec;
  // How the exchange ended: written (kept alive or not), or the client is gone.
  auto finish = [&](bool written, bool keep) {
    ++watch_;
    error_code ignored;
    stream_.socket().cancel(ignored);  // the watch
    stream_.expires_never();
    if (!written) {
      exchange->Gone();
      return Served::kGone;
    }
    return keep ? Served::kKeepAlive : Served::kClose;
  };
  for (;;) {
    if (client_gone_) co_return finish(false, false);
    Output out = exchange->Take();
    if (out.gone) co_return finish(false, false);
    const bool keep = keep_alive && !server_->draining();
    if (out.kind == Output::kWhole) {
      http::response<http::string_body> res{static_cast<http::status>(out.status), 11};
      res.set(http::field::server, "aichat");
      for (auto& h : out.headers) res.insert(h.name, h.value);
      res.keep_alive(keep);
      res.body() = std::move(out.data);
      res.prepare_payload();
      if (head) res.body().clear();  // HEAD: the length of what GET would send, no body
      *status = out.status;
      stream_.expires_after(Chrono(o.write_timeout));
      co_await http::async_write(stream_, res, asio::redirect_error(asio::use_awaitable, ec));
      co_return finish(!ec, keep);
    }
    if (out.kind == Output::kStreamHead) {
      stream_head.emplace(static_cast<http::status>(out.status), 11);
      stream_head->set(http::field::server, "aichat");
      for (auto& h : out.headers) stream_head->insert(h.name, h.value);
      stream_head->keep_alive(keep);
      stream_head->chunked(true);
      *status = out.status;
      http::response_serializer<http::empty_body> sr{*stream_head};
      stream_.expires_after(Chrono(o.write_timeout));
      co_await http::async_write_header(stream_, sr, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return finish(false, false);
      out.kind = Output::kData;
    }
    if (out.kind == Output::kData) {
      if (!out.data.empty()) {
        stream_.expires_after(Chrono(o.write_timeout));
        co_await asio::async_write(stream_, http::make_chunk(asio::buffer(out.data)),
                                   asio::redirect_error(asio::use_awaitable, ec));
        if (ec) co_return finish(false, false);
      }
      if (out.ended) {
        stream_.expires_after(Chrono(o.write_timeout));
        co_await asio::async_write(stream_, http::make_chunk_last(),
                                   asio::redirect_error(asio::use_awaitable, ec));
        co_return finish(!ec, stream_head->keep_alive());
      }
      stream_.expires_never();
      continue;  // more may have come while writing
    }
    // Nothing to write yet: wait for the Exchange (or the watch) to wake us.
    wake_.expires_at(asio::steady_timer::time_point::max());
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

void Session::Record(const std::string& method, const Exchange::LogFacts& facts, int status,
                     absl::Time start) {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (HttpMetrics* m = server_->metrics()) {
    const std::string label = MethodLabel(method);
    m->requests.Add({{"method", label}, {"route", facts.route}, {"code", absl::StrCat(status)}})
        .Increment();
    m->duration.Add({{"method", label}, {"route", facts.route}}, LatencyBuckets()).Observe(seconds);
  }
  if (facts.route == "/healthz" || facts.route == "/readyz") return;  // polled constantly
  LogInfo("request", {{"protocol", "http"},
                      {"method", MethodLabel(method)},
                      {"route", facts.route},
                      {"code", status},
                      {"latency_ms", seconds * 1000.0},
                      {"user_id", facts.user},
                      {"error", facts.error}});
}

asio::awaitable<void> Session::Run() {
  HttpMetrics* m = server_->metrics();
  for (;;) {
    HttpRequest request;
    bool keep_alive = false;
    if (!co_await ReadRequest(&request, &keep_alive)) break;
    const absl::Time start = absl::Now();
    const std::string method = request.method;
    auto exchange = std::make_shared<Exchange>(server_->hub(), strand_, weak_from_this(),
                                               server_->options().max_queued_bytes);
    if (m != nullptr) m->in_flight.Increment();
    server_->handler()(std::move(request), exchange);
    int status = 499;  // the client left before an answer was written
    const Served served = co_await Serve(exchange, method == "HEAD", keep_alive, &status);
    if (m != nullptr) m->in_flight.Decrement();
    Record(method, exchange->Facts(), served == Served::kGone ? 499 : status, start);
    if (served != Served::kKeepAlive) break;
  }
  Close(/*force=*/true);
}

}  // namespace

absl::Status HttpServer::Impl::Listen() {
  std::string_view listen = options_.listen;
  size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string_view::npos || !absl::SimpleAtoi(Av(listen.substr(colon + 1)), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("AICHAT_HTTP_LISTEN must be host:port, not \"", Av(listen), "\""));
  }
  std::string host(listen.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  error_code ec;
  auto address = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("AICHAT_HTTP_LISTEN: \"", host, "\" is not an IP address"));
  }
  tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", options_.listen, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void HttpServer::Impl::Run() {
  asio::co_spawn(accept_strand_, Accept(), asio::detached);
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    threads_.emplace_back([this] { io_.run(); });
  }
}

asio::awaitable<void> HttpServer::Impl::Accept() {
  for (;;) {
    error_code ec;
    tcp::socket socket = co_await acceptor_.async_accept(
        asio::make_strand(io_), asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      // e.g. EMFILE: the listening socket stays readable, so accepting again at
      // once would spin; a pause lets connections close first.
      asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    size_t open;
    {
      absl::MutexLock lock(&mu_);
      open = sessions_.size();
    }
    if (open >= static_cast<size_t>(options_.max_connections) || draining()) {
      if (metrics_ != nullptr) metrics_->refused.Increment();
      socket.close(ec);
      continue;
    }
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto session = std::make_shared<Session>(this, std::move(socket));
    Add(session);
    asio::co_spawn(session->strand(), session->Run(),
                   [this, session](std::exception_ptr) { Remove(session.get()); });
  }
}

void HttpServer::Impl::Add(const std::shared_ptr<Session>& s) {
  absl::MutexLock lock(&mu_);
  sessions_[s.get()] = s;
  if (metrics_ != nullptr) metrics_->connections.Set(static_cast<double>(sessions_.size()));
}

void HttpServer::Impl::Remove(Session* s) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(s);
  if (metrics_ != nullptr) metrics_->connections.Set(static_cast<double>(sessions_.size()));
}

void HttpServer::Impl::BeginShutdown() {
  if (draining_.exchange(true)) return;
  asio::post(accept_strand_, [this] {
    error_code ec;
    acceptor_.close(ec);
  });
  std::vector<std::shared_ptr<Session>> open;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [raw, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) {
    hub_->Post(s->strand(), [s] { s->Close(/*force=*/false); });
  }
}

void HttpServer::Impl::Shutdown(absl::Time deadline) {
  if (stopped_.exchange(true)) return;
  BeginShutdown();
  auto remaining = [this] {
    absl::MutexLock lock(&mu_);
    return sessions_.size();
  };
  while (remaining() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
  // Whatever is still answering is cut off: its clients hear a closed connection.
  {
    std::vector<std::shared_ptr<Session>> open;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [raw, weak] : sessions_) {
        if (auto s = weak.lock()) open.push_back(std::move(s));
      }
    }
    for (auto& s : open) hub_->Post(s->strand(), [s] { s->Close(/*force=*/true); });
  }
  const absl::Time until = absl::Now() + absl::Seconds(2);
  while (remaining() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  hub_->Close();
  work_.reset();
  io_.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  if (impl_ != nullptr) impl_->Shutdown(absl::Now());
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              HttpHandler handler,
                                                              prometheus::Registry* registry) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler), registry);
  if (auto st = impl->Listen(); !st.ok()) return st;
  impl->Run();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port(); }
void HttpServer::BeginShutdown() { impl_->BeginShutdown(); }
void HttpServer::Shutdown(absl::Time deadline) { impl_->Shutdown(deadline); }

}  // namespace aichat::agent
