// The Boost.Beast implementation of LlmClient: HTTPS (or plain HTTP) to an
// OpenAI-compatible server, streaming SSE, keep-alive pooling, retries,
// timeouts, proxies and cancellation.
//
// Threading: each I/O thread owns one io_context, its connection pool and the
// calls assigned to it (round-robin), so a call, its sockets and its timers are
// only ever touched by one thread and need no strands or locks. Every call is
// one C++20 coroutine; Beast's tcp_stream timeouts implement both the stall
// timeout and the deadline (each operation expires at min(now + stall,
// deadline)).
#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/ai-agent/llm/chat_chunk.h"
#include "services/ai-agent/llm/http_util.h"
#include "services/ai-agent/llm/llm_client.h"
#include "services/ai-agent/llm/sse_parser.h"

namespace aichat::agent {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using beast::error_code;

// Body bytes per read. SSE events are ~200 bytes and arrive a few at a time, and this buffer
// lives in every open stream's coroutine frame: 2 KiB, not 8, saves 6 KiB per stream.
constexpr size_t kReadChunk = 2048;

std::chrono::steady_clock::time_point SteadyAt(absl::Time t) {
  absl::Duration left = t - absl::Now();
  if (left > absl::Hours(24 * 365)) {
    left = absl::Hours(24 * 365);
  }
  return std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(left);
}

// One HTTP/1.1 connection: TCP (possibly through a proxy tunnel), optionally TLS.
struct Connection {
  std::string key;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  absl::Time idle_since;

  beast::tcp_stream& Tcp() { return secure ? secure->next_layer() : *plain; }
  void Close() {
    error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    Tcp().close();
  }
  // A pooled socket the server has closed (or sent junk on) is readable.
  bool LooksAlive() {
    tcp::socket& s = Tcp().socket();
    if (!s.is_open() || buffer.size() != 0) {
      return false;
    }
    error_code ec;
    char c;
    s.non_blocking(true, ec);
    s.receive(asio::buffer(&c, 1), tcp::socket::message_peek, ec);
    error_code ignored;
    s.non_blocking(false, ignored);
    return ec == asio::error::would_block;
  }
};

struct Shared {
  HttpLlmClientOptions options;
  ProxyConfig proxy;
  mutable ssl::context ssl_ctx{ssl::context::tls_client};  // SSL_CTX is thread-safe
};

// An I/O thread with its own io_context and connection pool.
class Worker {
 public:
  Worker() : work_(asio::make_work_guard(ioc_)) {}
  void Run() {
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void Stop() {
    work_.reset();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  asio::io_context& ioc() { return ioc_; }

  // Pool access: only on this worker's thread.
  std::unique_ptr<Connection> TakeIdle(const std::string& key, absl::Duration idle_timeout) {
    auto it = idle_.find(key);
    if (it == idle_.end()) {
      return nullptr;
    }
    std::deque<std::unique_ptr<Connection>>& q = it->second;
    while (!q.empty()) {
      std::unique_ptr<Connection> c = std::move(q.back());  // most recently used first
      q.pop_back();
      if (absl::Now() - c->idle_since < idle_timeout && c->LooksAlive()) {
        return c;
      }
      c->Close();
    }
    return nullptr;
  }
  void ReturnIdle(std::unique_ptr<Connection> c, size_t max_per_host) {
    c->idle_since = absl::Now();
    c->Tcp().expires_never();
    std::deque<std::unique_ptr<Connection>>& q = idle_[c->key];
    q.push_back(std::move(c));
    while (q.size() > max_per_host) {
      q.front()->Close();
      q.pop_front();
    }
  }
  void DropIdle() { idle_.clear(); }

 private:
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::map<std::string, std::deque<std::unique_ptr<Connection>>> idle_;
  std::thread thread_;
};

// Result of one step; kind kNone means success.
struct StepError {
  LlmErrorKind kind = LlmErrorKind::kNone;
  std::string message;
  bool permanent = false;  // not retried even if the kind usually is (out of quota)
  bool ok() const { return kind == LlmErrorKind::kNone; }
};

class HttpCall : public LlmCall, public std::enable_shared_from_this<HttpCall> {
 public:
  HttpCall(std::shared_ptr<Worker> worker, std::shared_ptr<const Shared> shared,
           CompletionRequest request, std::function<void(std::string_view)> on_delta,
           std::function<void(LlmOutcome)> on_done)
      : worker_(std::move(worker)),
        shared_(std::move(shared)),
        request_(std::move(request)),
        on_delta_(std::move(on_delta)),
        on_done_(std::move(on_done)),
        backoff_timer_(worker_->ioc()) {}

  void Cancel() override {
    if (finished_.load()) {
      return;
    }
    if (worker_->ioc().get_executor().running_in_this_thread()) {
      DoCancel();
    } else {
      asio::post(worker_->ioc(), [self = shared_from_this()] { self->DoCancel(); });
    }
  }

  static asio::awaitable<void> Run(std::shared_ptr<HttpCall> self) { co_await self->Main(); }

  // Fails the call if the coroutine died of an exception (it should not).
  void FailIfUnfinished(const std::string& why) {
    if (!finished_.load()) {
      outcome_.kind = LlmErrorKind::kMalformed;
      Finish(why);
    }
  }

 private:
  void DoCancel() {
    if (finished_.load() || cancelled_) {
      return;
    }
    cancelled_ = true;
    if (current_ != nullptr) {
      current_->Close();
    }
    if (resolver_ != nullptr) {
      resolver_->cancel();
    }
    backoff_timer_.cancel();
  }

  // Expiry of the next network operation.
  std::chrono::steady_clock::time_point OpExpiry(absl::Duration budget) const {
    return SteadyAt(std::min(absl::Now() + budget, request_.deadline));
  }

  // Classifies a network error code of a step.
  StepError NetError(const error_code& ec, LlmErrorKind otherwise, absl::string_view what) const {
    if (cancelled_) {
      return {LlmErrorKind::kCancelled, "cancelled by the caller"};
    }
    if (ec == beast::error::timeout) {
      if (absl::Now() >= request_.deadline - absl::Milliseconds(1)) {
        return {LlmErrorKind::kTimeout, absl::StrCat("deadline exceeded while ", what)};
      }
      if (otherwise == LlmErrorKind::kConnect || otherwise == LlmErrorKind::kTls) {
        return {LlmErrorKind::kConnect, absl::StrCat("timed out ", what)};
      }
      return {LlmErrorKind::kStalled,
              absl::StrCat("no data for ", absl::FormatDuration(request_.stall_timeout), " while ",
                           what)};
    }
    return {otherwise, absl::StrCat(what, ": ", ec.message())};
  }

  asio::awaitable<void> Main();
  asio::awaitable<StepError> Attempt(const Url& url, const std::optional<Url>& proxy,
                                     const std::string& target, const std::string& body);
  asio::awaitable<StepError> Connect(const Url& url, const std::optional<Url>& proxy,
                                     Connection& conn);
  template <class Stream>
  asio::awaitable<StepError> Exchange(Stream& stream, Connection& conn,
                                      const http::request<http::span_body<const char>>& req,
                                      bool reused, bool& redo_on_fresh, bool& reusable);
  template <class Stream>
  asio::awaitable<StepError> ReadBody(Stream& stream, Connection& conn,
                                      http::response_parser<http::buffer_body>& parser,
                                      const std::function<StepError(std::string_view)>& sink,
                                      std::function<bool()> stop);
  StepError HandleEvent(const SseEvent& event);
  void Deliver(std::string_view text);
  void Finish(const std::string& message);

  std::shared_ptr<Worker> worker_;
  std::shared_ptr<const Shared> shared_;
  CompletionRequest request_;
  std::function<void(std::string_view)> on_delta_;
  std::function<void(LlmOutcome)> on_done_;
  asio::steady_timer backoff_timer_;
  // Touched only on the worker's thread.
  Connection* current_ = nullptr;
  tcp::resolver* resolver_ = nullptr;
  bool cancelled_ = false;
  bool saw_done_ = false;
  absl::Time start_ = absl::Now();
  int64_t prompt_estimate_ = 0;
  LlmOutcome outcome_;
  std::atomic<bool> finished_{false};
};

void HttpCall::Deliver(std::string_view text) {
  if (text.empty() || cancelled_) {
    return;
  }
  if (!outcome_.delivered_any) {
    outcome_.delivered_any = true;
    outcome_.time_to_first_token = absl::Now() - start_;
  }
  outcome_.content.append(text);
  on_delta_(text);
}

void HttpCall::Finish(const std::string& message) {
  if (finished_.exchange(true)) {
    return;
  }
  current_ = nullptr;
  LlmOutcome& o = outcome_;
  if (o.kind != LlmErrorKind::kNone) {
    o.status = absl::Status(StatusCodeFor(o.kind), Redact(message, request_.api_key));
  }
  if (o.usage.prompt_tokens == 0 && o.usage.completion_tokens == 0 && o.http_status == 200) {
    // Generation ran but no provider figures arrived (no usage chunk, cut or
    // cancelled stream): charge an estimate, flagged. A request that never got
    // a 200 (connect error, 4xx, 429) consumed nothing.
    o.usage.prompt_tokens = prompt_estimate_;
    o.usage.completion_tokens = EstimateTokens(o.content);
    o.usage.estimated = true;
  }
  o.duration = absl::Now() - start_;
  auto done = std::move(on_done_);
  on_delta_ = nullptr;
  done(std::move(o));
}

asio::awaitable<void> HttpCall::Main() {
  absl::StatusOr<Url> url = ParseUrl(request_.base_url);
  if (!url.ok()) {
    outcome_.kind = LlmErrorKind::kBadRequest;
    Finish(absl::StrCat("invalid base_url: ", url.status().message()));
    co_return;
  }
  std::optional<Url> proxy = ProxyFor(*url, shared_->proxy);
  std::string target = url->path + "/chat/completions";
  if (proxy && !url->tls) {
    target = absl::StrCat("http://", url->HostHeader(), target);  // absolute-form for a proxy
  }
  // The messages are encoded once and not kept: the body is all a retry needs, and
  // the estimate is all a call that gets no usage figures needs.
  prompt_estimate_ = EstimatePromptTokens(request_.messages);
  ChatRequestBody body_spec{request_.model,
                            std::move(request_.messages),
                            request_.max_output_tokens,
                            request_.use_max_tokens_param,
                            request_.temperature,
                            request_.stream};
  request_.messages = {};
  std::string body = EncodeChatRequest(body_spec);
  body_spec = {};

  StepError err;
  for (int attempt = 1;; ++attempt) {
    outcome_.attempts = attempt;
    outcome_.retry_after.reset();
    outcome_.provider_error_code.clear();
    if (absl::Now() >= request_.deadline) {
      err = {LlmErrorKind::kTimeout, "deadline exceeded before the request was sent"};
      break;
    }
    err = co_await Attempt(*url, proxy, target, body);
    if (cancelled_) {
      err = {LlmErrorKind::kCancelled, "cancelled by the caller"};
    }
    if (err.ok() || !IsRetryable(err.kind) || err.permanent || outcome_.delivered_any ||
        attempt >= request_.retry.max_attempts) {
      break;
    }
    // Retries are rare: one generator per I/O thread, not a 2.5 KB one per call.
    thread_local absl::BitGen rng;
    absl::Duration delay = BackoffDelay(request_.retry, attempt, absl::Uniform(rng, 0.0, 1.0));
    if (outcome_.retry_after) {
      if (*outcome_.retry_after > request_.retry.max_retry_after) {
        break;
      }
      delay = std::max(delay, *outcome_.retry_after);
    }
    if (absl::Now() + delay >= request_.deadline) {
      break;  // waiting would pass the deadline: report the provider's error
    }
    backoff_timer_.expires_after(absl::ToChronoNanoseconds(delay));
    error_code ec;
    co_await backoff_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (cancelled_) {
      err = {LlmErrorKind::kCancelled, "cancelled by the caller"};
      break;
    }
  }
  outcome_.kind = err.kind;
  Finish(err.message);
}

asio::awaitable<StepError> HttpCall::Attempt(const Url& url, const std::optional<Url>& proxy,
                                             const std::string& target, const std::string& body) {
  const HttpLlmClientOptions& options = shared_->options;
  std::string key = absl::StrCat(url.tls ? "https://" : "http://", url.HostPort());
  if (proxy) {
    absl::StrAppend(&key, " via ", proxy->HostPort());
  }
  // The body is the caller's string, not a copy: a stream holds its request once.
  http::request<http::span_body<const char>> req{http::verb::post, target, 11};
  req.set(http::field::host, url.HostHeader());
  req.set(http::field::authorization, absl::StrCat("Bearer ", request_.api_key));
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, request_.stream ? "text/event-stream" : "application/json");
  req.set(http::field::user_agent, "aichat-llm/1");
  if (proxy && !url.tls && !proxy->user_info.empty()) {
    req.set(http::field::proxy_authorization,
            absl::StrCat("Basic ", absl::Base64Escape(proxy->user_info)));
  }
  req.keep_alive(true);
  req.body() = boost::span<const char>(body.data(), body.size());
  req.prepare_payload();

  std::unique_ptr<Connection> conn = worker_->TakeIdle(key, options.idle_timeout);
  for (;;) {
    bool reused = conn != nullptr;
    if (!reused) {
      conn = std::make_unique<Connection>();
      conn->key = key;
      if (url.tls) {
        conn->secure.emplace(worker_->ioc(), shared_->ssl_ctx);
      } else {
        conn->plain.emplace(worker_->ioc());
      }
      current_ = conn.get();
      StepError e = co_await Connect(url, proxy, *conn);
      if (!e.ok()) {
        current_ = nullptr;
        co_return e;
      }
    }
    current_ = conn.get();
    bool redo = false;
    bool reusable = false;
    // (No co_await inside ?: — g++ 12 destroys the temporaries twice.)
    StepError e;
    if (conn->secure) {
      e = co_await Exchange(*conn->secure, *conn, req, reused, redo, reusable);
    } else {
      e = co_await Exchange(*conn->plain, *conn, req, reused, redo, reusable);
    }
    current_ = nullptr;
    if (redo && !cancelled_) {
      conn->Close();
      conn.reset();  // a stale pooled connection: once more on a fresh one, not a retry
      continue;
    }
    if (reusable && !cancelled_) {
      worker_->ReturnIdle(std::move(conn), options.max_idle_connections_per_host);
    } else {
      conn->Close();
    }
    co_return e;
  }
}

asio::awaitable<StepError> HttpCall::Connect(const Url& url, const std::optional<Url>& proxy,
                                             Connection& conn) {
  const Url& hop = proxy ? *proxy : url;
  std::string what = proxy ? absl::StrCat("connecting to proxy ", hop.HostPort())
                           : absl::StrCat("connecting to ", hop.HostPort());
  error_code ec;
  tcp::resolver resolver(worker_->ioc());
  resolver_ = &resolver;
  tcp::resolver::results_type endpoints = co_await resolver.async_resolve(
      hop.host, std::to_string(hop.port), asio::redirect_error(asio::use_awaitable, ec));
  resolver_ = nullptr;
  if (ec || cancelled_) {
    co_return NetError(ec, LlmErrorKind::kConnect, absl::StrCat("resolving ", hop.host));
  }
  beast::tcp_stream& tcp_stream = conn.Tcp();
  tcp_stream.expires_at(OpExpiry(request_.connect_timeout));
  co_await tcp_stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec || cancelled_) {
    co_return NetError(ec, LlmErrorKind::kConnect, what);
  }
  error_code ignored;
  tcp_stream.socket().set_option(tcp::no_delay(true), ignored);

  if (proxy && url.tls) {
    http::request<http::empty_body> connect{http::verb::connect, url.HostPort(), 11};
    connect.set(http::field::host, url.HostPort());
    if (!proxy->user_info.empty()) {
      connect.set(http::field::proxy_authorization,
                  absl::StrCat("Basic ", absl::Base64Escape(proxy->user_info)));
    }
    std::string proxy_name = absl::StrCat("proxy ", proxy->HostPort());  // never its user_info
    co_await http::async_write(tcp_stream, connect, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || cancelled_) {
      co_return NetError(ec, LlmErrorKind::kConnect,
                         absl::StrCat("sending CONNECT to ", proxy_name));
    }
    http::response_parser<http::empty_body> proxy_response;
    proxy_response.skip(true);  // a 2xx answer to CONNECT has no body
    co_await http::async_read_header(tcp_stream, conn.buffer, proxy_response,
                                     asio::redirect_error(asio::use_awaitable, ec));
    if (ec || cancelled_) {
      co_return NetError(ec, LlmErrorKind::kConnect,
                         absl::StrCat("reading the CONNECT answer of ", proxy_name));
    }
    int status = proxy_response.get().result_int();
    if (status / 100 != 2) {
      co_return StepError{LlmErrorKind::kConnect,
                          absl::StrCat(proxy_name, " refused CONNECT with HTTP ", status)};
    }
    // The tunnel carries nothing before our ClientHello: whatever follows the
    // answer was written by the proxy itself, and left in the buffer it would be
    // parsed as the provider's response once TLS is up (a forged answer).
    if (conn.buffer.size() != 0) {
      co_return StepError{
          LlmErrorKind::kConnect,
          absl::StrCat(proxy_name, " sent ", conn.buffer.size(),
                       " unexpected bytes after its CONNECT answer; tunnel refused")};
    }
  }

  if (url.tls) {
    beast::ssl_stream<beast::tcp_stream>& s = *conn.secure;
    error_code ip_ec;
    asio::ip::make_address(url.host, ip_ec);
    if (ip_ec) {  // SNI carries host names only, never IP literals (RFC 6066)
      SSL_set_tlsext_host_name(s.native_handle(), url.host.c_str());
    }
    s.set_verify_mode(ssl::verify_peer);
    s.set_verify_callback(ssl::host_name_verification(url.host));
    tcp_stream.expires_at(OpExpiry(request_.connect_timeout));
    co_await s.async_handshake(ssl::stream_base::client,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec || cancelled_) {
      if (ec == beast::error::timeout || cancelled_) {
        co_return NetError(ec, LlmErrorKind::kTls, "in the TLS handshake");
      }
      long verify = SSL_get_verify_result(s.native_handle());
      std::string detail = ec.message();
      if (verify != X509_V_OK) {
        detail = absl::StrCat("certificate verification failed: ",
                              X509_verify_cert_error_string(verify));
      }
      co_return StepError{LlmErrorKind::kTls,
                          absl::StrCat("TLS handshake with ", url.HostPort(), " failed: ", detail)};
    }
  }
  co_return StepError{};
}

StepError HttpCall::HandleEvent(const SseEvent& event) {
  if (event.data == "[DONE]") {
    saw_done_ = true;
    return {};
  }
  // An error inside a 200 stream: `data: {"error": {...}}` (OpenAI) or an
  // `event: error` (others). A chunk never has a top-level "error" key, and
  // inside a JSON string the quotes would be escaped, so the cheap test holds.
  if (event.event == "error" || absl::StrContains(event.data, "\"error\"")) {
    std::optional<ProviderError> pe = DecodeProviderError(event.data);
    if (pe || event.event == "error") {
      outcome_.provider_error_code = pe ? pe->code : "";
      return {LlmErrorKind::kServerError,
              StreamErrorMessage(event.data, pe ? &*pe : nullptr, request_.api_key)};
    }
  }
  absl::StatusOr<ChatChunk> chunk = DecodeChatChunk(event.data);
  if (!chunk.ok()) {
    return {LlmErrorKind::kMalformed, std::string(chunk.status().message())};
  }
  if (!chunk->model.empty()) {
    outcome_.provider_model = chunk->model;
  }
  if (!chunk->finish_reason.empty()) {
    outcome_.finish_reason = chunk->finish_reason;
  }
  if (chunk->usage) {
    outcome_.usage = *chunk->usage;
  }
  Deliver(chunk->content);
  return {};
}

template <class Stream>
asio::awaitable<StepError> HttpCall::ReadBody(
    Stream& stream, Connection& conn, http::response_parser<http::buffer_body>& parser,
    const std::function<StepError(std::string_view)>& sink, std::function<bool()> stop) {
  char buf[kReadChunk];
  size_t total = 0;
  const size_t cap = shared_->options.max_response_bytes;
  while (!parser.is_done()) {
    parser.get().body().data = buf;
    parser.get().body().size = sizeof buf;
    conn.Tcp().expires_at(OpExpiry(request_.stall_timeout));
    error_code ec;
    co_await http::async_read_some(stream, conn.buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    size_t n = sizeof buf - parser.get().body().size;
    total += n;
    if (total > cap) {
      co_return StepError{LlmErrorKind::kMalformed,
                          absl::StrCat("the provider's response is larger than ", cap,
                                       " bytes (max_response_bytes)")};
    }
    if (n > 0 && !cancelled_) {
      StepError e = sink(std::string_view(buf, n));
      if (!e.ok()) {
        co_return e;
      }
    }
    if (cancelled_) {
      co_return StepError{LlmErrorKind::kCancelled, "cancelled by the caller"};
    }
    if (ec == ssl::error::stream_truncated) {
      // TLS closed without close_notify: fine if the message was delimited by EOF.
      error_code eof_ec;
      parser.put_eof(eof_ec);
      if (!eof_ec && parser.is_done()) {
        break;
      }
    }
    if (ec) {
      if (ec == http::error::partial_message || ec == http::error::end_of_stream ||
          ec == asio::error::eof || ec == ssl::error::stream_truncated ||
          ec == asio::error::connection_reset) {
        co_return StepError{
            LlmErrorKind::kTruncated,
            absl::StrCat("the provider closed the stream early (", ec.message(), ")")};
      }
      co_return NetError(ec, LlmErrorKind::kTruncated, "reading the response");
    }
    if (stop && stop()) {
      break;
    }
  }
  co_return StepError{};
}

template <class Stream>
asio::awaitable<StepError> HttpCall::Exchange(Stream& stream, Connection& conn,
                                              const http::request<http::span_body<const char>>& req,
                                              bool reused, bool& redo_on_fresh, bool& reusable) {
  const HttpLlmClientOptions& options = shared_->options;
  error_code ec;
  conn.Tcp().expires_at(OpExpiry(request_.stall_timeout));
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  auto stale = [&](const error_code& e) {
    return reused && !cancelled_ && e != beast::error::timeout;
  };
  if (ec) {
    redo_on_fresh = stale(ec);
    co_return NetError(ec, LlmErrorKind::kConnect, "sending the request");
  }
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  co_await http::async_read_header(stream, conn.buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    redo_on_fresh = stale(ec);
    co_return NetError(ec, LlmErrorKind::kConnect, "waiting for the response headers");
  }
  const auto& head = parser.get();
  int status = head.result_int();
  outcome_.http_status = status;

  if (status != 200) {
    std::string body;
    StepError e = co_await ReadBody(
        stream, conn, parser,
        [&](std::string_view piece) {
          if (body.size() < options.max_error_body_bytes) {
            body.append(piece.substr(0, options.max_error_body_bytes - body.size()));
          }
          return StepError{};
        },
        nullptr);
    reusable = e.ok() && parser.is_done() && parser.keep_alive();
    if (e.kind == LlmErrorKind::kCancelled || e.kind == LlmErrorKind::kTimeout) {
      co_return e;
    }
    std::optional<ProviderError> pe = DecodeProviderError(body);
    LlmErrorKind kind = KindForHttpStatus(status, pe ? pe->code : "", pe ? pe->message : "");
    outcome_.provider_error_code = pe ? pe->code : "";
    absl::Time now = absl::Now();
    auto header = [&](std::string_view name) {
      auto it = head.find(beast::string_view(name.data(), name.size()));
      return it == head.end() ? std::string_view() : std::string_view(it->value());
    };
    if (status == 429 || status == 503) {
      std::optional<absl::Duration> ra;
      if (auto v = header("retry-after-ms"); !v.empty()) {
        if (auto d = ParseResetDuration(absl::StrCat(std::string(v), "ms"))) {
          ra = d;
        }
      }
      if (!ra) {
        if (auto v = header("retry-after"); !v.empty()) {
          ra = ParseRetryAfter(v, now);
        }
      }
      if (!ra && status == 429) {
        for (auto [remaining, reset] :
             {std::pair{"x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"},
              std::pair{"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}}) {
          if (header(remaining) == "0") {
            if (auto d = ParseResetDuration(header(reset)); d && (!ra || *d > *ra)) {
              ra = d;
            }
          }
        }
      }
      outcome_.retry_after = ra;
    }
    beast::string_view type = head[http::field::content_type];
    StepError error{kind, ErrorResponseMessage(status, std::string_view(type.data(), type.size()),
                                               body, pe ? &*pe : nullptr, request_.api_key)};
    if (pe && status == 429 && IsQuotaExhausted(*pe)) {
      error.permanent = true;
      if (outcome_.provider_error_code.empty()) {
        outcome_.provider_error_code = "insufficient_quota";
      }
    }
    co_return error;
  }

  beast::string_view content_type = head[http::field::content_type];
  bool sse = request_.stream &&
             !absl::StartsWithIgnoreCase(
                 absl::string_view(content_type.data(), content_type.size()), "application/json");
  if (!sse) {
    std::string body;
    StepError e = co_await ReadBody(
        stream, conn, parser,
        [&](std::string_view piece) {
          body.append(piece);
          if (body.size() > options.max_event_bytes) {
            return StepError{LlmErrorKind::kMalformed, "response body exceeds the size limit"};
          }
          return StepError{};
        },
        nullptr);
    if (!e.ok()) {
      co_return e;
    }
    reusable = parser.is_done() && parser.keep_alive();
    absl::StatusOr<ChatCompletion> completion = DecodeChatCompletion(body);
    if (!completion.ok()) {
      co_return StepError{LlmErrorKind::kMalformed, std::string(completion.status().message())};
    }
    outcome_.provider_model = completion->model;
    outcome_.finish_reason = completion->finish_reason;
    if (completion->usage) {
      outcome_.usage = *completion->usage;
    }
    Deliver(completion->content);
    co_return StepError{};
  }

  StepError event_error;
  saw_done_ = false;
  SseParser sse_parser(
      [&](const SseEvent& event) {
        event_error = HandleEvent(event);
        return event_error.ok() && !saw_done_ && !cancelled_;
      },
      options.max_event_bytes);
  StepError e = co_await ReadBody(
      stream, conn, parser,
      [&](std::string_view piece) -> StepError {
        if (saw_done_) {
          return {};  // draining the end of the chunked body so the connection can be reused
        }
        if (absl::Status s = sse_parser.Feed(piece); !s.ok()) {
          return {LlmErrorKind::kMalformed, std::string(s.message())};
        }
        return event_error;
      },
      nullptr);
  if (!e.ok()) {
    if (saw_done_ && e.kind == LlmErrorKind::kTruncated) {
      co_return StepError{};  // the answer is complete; only the connection is lost
    }
    co_return e;
  }
  reusable = parser.is_done() && parser.keep_alive();
  if (!saw_done_ && outcome_.finish_reason.empty()) {
    co_return StepError{LlmErrorKind::kTruncated, "the stream ended before [DONE]"};
  }
  co_return StepError{};
}

class HttpLlmClient : public LlmClient {
 public:
  explicit HttpLlmClient(const HttpLlmClientOptions& options) {
    auto shared = std::make_shared<Shared>();
    shared->options = options;
    shared->proxy = ProxyConfigFromOptions(options);
    ssl::context& ctx = shared->ssl_ctx;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                    ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    // Idle streams (waiting on the model) then hold no 16 KiB+ record buffers.
    SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
    error_code ec;
    if (!options.ca_pem.empty()) {
      ctx.add_certificate_authority(asio::buffer(options.ca_pem), ec);
    }
    if (!options.ca_file.empty()) {
      ctx.load_verify_file(options.ca_file, ec);
    }
    if (options.ca_pem.empty() && options.ca_file.empty()) {
      ctx.set_default_verify_paths(ec);
    }
    shared_ = std::move(shared);
    int n = std::max(1, options.io_threads);
    for (int i = 0; i < n; ++i) {
      workers_.push_back(std::make_shared<Worker>());
      workers_.back()->Run();
    }
  }

  ~HttpLlmClient() override {
    std::vector<std::shared_ptr<HttpCall>> live;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, weak] : calls_) {
        if (auto call = weak.lock()) {
          live.push_back(std::move(call));
        }
      }
    }
    for (auto& call : live) {
      call->Cancel();
    }
    live.clear();
    for (auto& w : workers_) {
      asio::post(w->ioc(), [w = w.get()] { w->DropIdle(); });
      w->Stop();
    }
  }

  std::shared_ptr<LlmCall> Start(CompletionRequest request,
                                 std::function<void(std::string_view)> on_delta,
                                 std::function<void(LlmOutcome)> on_done) override {
    std::shared_ptr<Worker> worker = workers_[next_.fetch_add(1) % workers_.size()];
    uint64_t id = next_id_.fetch_add(1);
    auto finish = [this, id, done = std::move(on_done)](LlmOutcome outcome) {
      {
        absl::MutexLock lock(&mu_);
        calls_.erase(id);
      }
      done(std::move(outcome));
    };
    auto call = std::make_shared<HttpCall>(worker, shared_, std::move(request), std::move(on_delta),
                                           std::move(finish));
    {
      absl::MutexLock lock(&mu_);
      calls_[id] = call;
    }
    asio::co_spawn(worker->ioc(), HttpCall::Run(call), [call](std::exception_ptr e) {
      if (e) {
        std::string why = "internal error in the LLM client";
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          why = absl::StrCat(why, ": ", ex.what());
        }
        call->FailIfUnfinished(why);
      }
    });
    return call;
  }

 private:
  std::shared_ptr<const Shared> shared_;
  std::vector<std::shared_ptr<Worker>> workers_;
  std::atomic<size_t> next_{0};
  std::atomic<uint64_t> next_id_{0};
  absl::Mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<HttpCall>> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<LlmClient> MakeHttpLlmClient(const HttpLlmClientOptions& options) {
  return std::make_unique<HttpLlmClient>(options);
}

}  // namespace aichat::agent
