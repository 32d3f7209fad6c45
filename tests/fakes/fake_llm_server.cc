// The fake OpenAI-compatible provider: Beast server, one I/O thread, one
// coroutine pair per connection (a reader that notices the client going away
// at once, and a responder). See fake_llm_server.h for the behaviour.
#include "tests/fakes/fake_llm_server.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <deque>
#include <list>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "tests/fakes/fake_directives.h"
#include "tests/fakes/test_certificate.h"

namespace aichat::fakes {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using beast::error_code;

namespace {

constexpr auto kRedirect = [](error_code& ec) {
  return asio::redirect_error(asio::use_awaitable, ec);
};
constexpr int64_t kCreated = 1700000000;
constexpr const char* kMaxTokenKeys[] = {"max_completion_tokens", "max_tokens"};

// State of one connection shared by its reader and responder coroutines.
struct SessionState {
  explicit SessionState(asio::any_io_executor ex) : wait_timer(ex), idle_signal(ex) {}
  virtual ~SessionState() = default;
  virtual void Close() = 0;
  asio::steady_timer wait_timer;   // delays, stalls and holds of the responder
  asio::steady_timer idle_signal;  // wakes the reader when a response is done
  int64_t id = 0;
  bool responding = false;
  bool peer_gone = false;
  bool closing = false;
};

template <class Stream>
struct Session : SessionState {
  Session(Stream&& s, asio::any_io_executor ex) : SessionState(ex), stream(std::move(s)) {}
  Stream stream;
  beast::flat_buffer buffer;
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream); }
  void Close() override {
    closing = true;
    Tcp().close();
    wait_timer.cancel();
    idle_signal.cancel();
  }
};

std::string ErrorBody(std::string_view message, std::string_view type, std::string_view code) {
  json::object err{{"message", message}, {"type", type}, {"param", nullptr}};
  err["code"] = code.empty() ? json::value(nullptr) : json::value(code);
  return json::serialize(json::object{{"error", std::move(err)}});
}

std::string_view DefaultType(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "invalid_request_error";
    case 403:
      return "permission_denied";
    case 404:
      return "invalid_request_error";
    case 429:
      return "requests";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

// Cut points inside one SSE event that break naive parsers: inside the JSON
// content string, inside a multi-byte UTF-8 character, between CR and LF and
// between the two line ends that close the event.
std::vector<std::string_view> AwkwardPieces(std::string_view ev) {
  std::vector<size_t> cuts;
  if (size_t c = ev.find("\"content\":\""); c != std::string_view::npos) {
    cuts.push_back(std::min(ev.size(), c + 12));
  }
  for (size_t i = 0; i < ev.size(); ++i) {
    if (static_cast<unsigned char>(ev[i]) >= 0xC0) {
      cuts.push_back(i + 1);
      break;
    }
  }
  if (size_t cr = ev.find('\r'); cr != std::string_view::npos) {
    cuts.push_back(cr + 1);
  }
  if (ev.size() > 1) {
    cuts.push_back(ev.size() - 1);
  }
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::string_view> out;
  size_t prev = 0;
  for (size_t c : cuts) {
    if (c > prev && c < ev.size()) {
      out.push_back(ev.substr(prev, c - prev));
      prev = c;
    }
  }
  out.push_back(ev.substr(prev));
  return out;
}

}  // namespace

class FakeLlmServer::Impl {
 public:
  explicit Impl(FakeLlmOptions options) : options_(std::move(options)) {}
  ~Impl() { Stop(); }

  absl::Status Init() {
    if (options_.tls) {
      absl::StatusOr<TestCertificate> cert =
          MakeTestCertificate(options_.cert_dns_names, options_.cert_ip_addresses);
      if (!cert.ok()) {
        return cert.status();
      }
      cert_ = *std::move(cert);
      ssl_ctx_.emplace(ssl::context::tls_server);
      error_code ec;
      ssl_ctx_->use_certificate_chain(asio::buffer(cert_.cert_pem), ec);
      if (!ec) {
        ssl_ctx_->use_private_key(asio::buffer(cert_.key_pem), ssl::context::pem, ec);
      }
      if (ec) {
        return absl::InternalError(absl::StrCat("fake TLS setup: ", ec.message()));
      }
    }
    error_code ec;
    tcp::endpoint ep(asio::ip::make_address(options_.host, ec),
                     static_cast<uint16_t>(options_.port));
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("bad listen host ", options_.host));
    }
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return absl::UnavailableError(absl::StrCat("fake cannot listen: ", ec.message()));
    }
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(ioc_, Accept(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
    return absl::OkStatus();
  }

  void Stop() {
    if (stopped_.exchange(true)) {
      return;
    }
    // Close the listener and every connection on the I/O thread, then stop it.
    asio::post(ioc_, [this] {
      error_code ec;
      acceptor_.close(ec);
      for (std::weak_ptr<SessionState>& w : sessions_) {
        if (auto s = w.lock()) {
          s->Close();
        }
      }
      ioc_.stop();
    });
    if (thread_.joinable()) {
      thread_.join();
    }
  }

  int port() const { return port_; }
  std::string base_url() const {
    return absl::StrCat(options_.tls ? "https://" : "http://", options_.host, ":", port_, "/v1");
  }
  const std::string& ca_pem() const { return cert_.ca_pem; }

  void Script(std::vector<std::string> directives) {
    absl::MutexLock lock(&mu_);
    for (std::string& d : directives) {
      script_.push_back(std::move(d));
    }
  }
  std::vector<RecordedRequest> Requests() const {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  FakeLlmStats Stats() const {
    FakeLlmStats s;
    s.connections_accepted = connections_.load();
    s.disconnects_mid_stream = disconnects_.load();
    s.completion_requests = completions_.load();
    s.active_responses = active_.load();
    s.held = held_count_.load();
    return s;
  }
  void Reset() {
    {
      absl::MutexLock lock(&mu_);
      script_.clear();
      log_.clear();
    }
    connections_ = 0;
    disconnects_ = 0;
    completions_ = 0;
    Release();
  }
  void Release() {
    asio::post(ioc_, [this] {
      for (asio::steady_timer* t : held_) {
        t->cancel();
      }
    });
  }

 private:
  asio::awaitable<void> Accept() {
    for (;;) {
      error_code ec;
      tcp::socket socket = co_await acceptor_.async_accept(kRedirect(ec));
      if (ec) {
        if (!acceptor_.is_open() || ec == asio::error::operation_aborted) {
          co_return;
        }
        continue;  // e.g. out of file descriptors: keep serving the others
      }
      socket.set_option(tcp::no_delay(true), ec);
      int64_t id = ++connections_;
      sessions_.remove_if([](const std::weak_ptr<SessionState>& w) { return w.expired(); });
      if (ssl_ctx_) {
        auto s = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
            beast::ssl_stream<beast::tcp_stream>(beast::tcp_stream(std::move(socket)), *ssl_ctx_),
            ioc_.get_executor());
        s->id = id;
        sessions_.push_back(s);
        asio::co_spawn(ioc_, ReadLoop(s), asio::detached);
      } else {
        auto s = std::make_shared<Session<beast::tcp_stream>>(beast::tcp_stream(std::move(socket)),
                                                              ioc_.get_executor());
        s->id = id;
        sessions_.push_back(s);
        asio::co_spawn(ioc_, ReadLoop(s), asio::detached);
      }
    }
  }

  template <class S>
  asio::awaitable<void> ReadLoop(std::shared_ptr<S> s) {
    error_code ec;
    if constexpr (!std::is_same_v<decltype(s->stream), beast::tcp_stream>) {
      s->Tcp().expires_after(std::chrono::seconds(30));
      co_await s->stream.async_handshake(ssl::stream_base::server, kRedirect(ec));
      s->Tcp().expires_never();
      if (ec) {
        co_return;
      }
    }
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 << 20);
      co_await http::async_read(s->stream, s->buffer, parser, kRedirect(ec));
      if (ec) {
        if (s->responding && !s->closing) {
          s->peer_gone = true;
          ++disconnects_;
          s->wait_timer.cancel();
        }
        co_return;
      }
      while (s->responding) {  // a pipelined request waits for the current answer
        s->idle_signal.expires_at(asio::steady_timer::time_point::max());
        co_await s->idle_signal.async_wait(kRedirect(ec));
      }
      if (s->closing) {
        co_return;
      }
      s->responding = true;
      asio::co_spawn(ioc_, Respond(s, parser.release()), asio::detached);
    }
  }

  template <class S>
  asio::awaitable<void> Respond(std::shared_ptr<S> s, http::request<http::string_body> req) {
    ++active_;
    co_await Handle(*s, req);
    --active_;
    s->responding = false;
    s->idle_signal.cancel();
    if (s->closing || s->peer_gone) {
      error_code ec;
      s->Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
      s->Tcp().close();
    }
  }

  // Waits `ms` (or until cancelled); false if the client went away.
  template <class S>
  asio::awaitable<bool> Sleep(S& s, std::chrono::steady_clock::time_point until) {
    error_code ec;
    s.wait_timer.expires_at(until);
    co_await s.wait_timer.async_wait(kRedirect(ec));
    co_return !s.peer_gone && !stopped_;
  }

  template <class S>
  asio::awaitable<void> WriteSimple(S& s, const http::request<http::string_body>& req, int status,
                                    std::string body,
                                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::server, "aichat-fake-llm");
    for (auto& [k, v] : headers) {
      res.set(k, v);
    }
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    error_code ec;
    co_await http::async_write(s.stream, res, kRedirect(ec));
    if (ec || !req.keep_alive()) {
      s.closing = true;
    }
  }

  template <class S>
  asio::awaitable<void> Handle(S& s, const http::request<http::string_body>& req) {
    std::string path(req.target());
    if (path.rfind("/_fake/", 0) == 0) {
      co_await WriteSimple(s, req, 200, Control(req.method(), path, req.body()));
      co_return;
    }
    if (path != "/v1/chat/completions" && path != "/chat/completions") {
      co_await WriteSimple(s, req, 404,
                           ErrorBody(absl::StrCat("Unknown request URL: ", path),
                                     "invalid_request_error", "unknown_url"));
      co_return;
    }
    ++completions_;
    std::string auth_state = "absent";
    std::string presented;
    if (auto it = req.find(http::field::authorization); it != req.end()) {
      std::string_view v = it->value();
      presented = v.rfind("Bearer ", 0) == 0 ? std::string(v.substr(7)) : std::string(v);
      auth_state =
          options_.api_key.empty() || presented == options_.api_key ? "matched" : "mismatched";
    }
    FakeBehavior b;
    {
      absl::MutexLock lock(&mu_);
      RecordedRequest r;
      r.method = std::string(req.method_string());
      r.path = path;
      for (const auto& f : req) {
        if (f.name() != http::field::authorization) {
          r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
        }
      }
      r.authorization = auth_state;
      r.body = req.body();
      r.connection = s.id;
      log_.push_back(std::move(r));
      if (!script_.empty()) {
        ApplyDirective(script_.front(), b);
        script_.pop_front();
      }
    }
    if (req.method() != http::verb::post) {
      co_await WriteSimple(s, req, 405, ErrorBody("Use POST", "invalid_request_error", ""));
      co_return;
    }
    if (!options_.api_key.empty() && auth_state != "matched") {
      // Like OpenAI, the message quotes the key it got: clients must not leak it.
      co_await WriteSimple(
          s, req, 401,
          ErrorBody(absl::StrCat("Incorrect API key provided: ", presented,
                                 ". You can find your API key at https://example.invalid."),
                    "invalid_request_error", "invalid_api_key"));
      co_return;
    }
    error_code jec;
    json::value body = json::parse(req.body(), jec);
    const json::array* messages = nullptr;
    if (!jec && body.is_object()) {
      if (auto* m = body.as_object().if_contains("messages"); m != nullptr && m->is_array()) {
        messages = &m->as_array();
      }
    }
    if (messages == nullptr) {
      co_await WriteSimple(s, req, 400,
                           ErrorBody("We could not parse the JSON body of your request.",
                                     "invalid_request_error", ""));
      co_return;
    }
    const json::object& o = body.as_object();
    // Directives from the last user message; the prompt token rule.
    int64_t prompt_tokens = 3;
    std::string last_user;
    for (const json::value& m : *messages) {
      if (!m.is_object()) {
        continue;
      }
      const json::value* content = m.as_object().if_contains("content");
      std::string_view text = content != nullptr && content->is_string()
                                  ? std::string_view(content->get_string())
                                  : std::string_view();
      prompt_tokens += 4 + static_cast<int64_t>(Words(text).size());
      const json::value* role = m.as_object().if_contains("role");
      if (role != nullptr && role->is_string() && role->get_string() == "user") {
        last_user = std::string(text);
      }
    }
    std::vector<std::string> directives;
    std::vector<std::string> words = Words(StripDirectives(last_user, &directives));
    for (const std::string& d : directives) {
      ApplyDirective(d, b);
    }
    if (words.empty()) {
      words.push_back("ok");
    }
    auto now = std::chrono::steady_clock::now();
    int slow_start = b.slow_start_ms >= 0 ? b.slow_start_ms : options_.first_token_delay_ms;
    if (slow_start > 0 && !co_await Sleep(s, now + std::chrono::milliseconds(slow_start))) {
      co_return;
    }
    if (b.hangup) {
      s.closing = true;
      co_return;
    }
    if (b.status != 0) {
      std::vector<std::pair<std::string, std::string>> headers;
      if (b.status == 429) {
        headers.emplace_back("x-ratelimit-limit-requests", "60");
        headers.emplace_back("x-ratelimit-remaining-requests", "0");
        headers.emplace_back("x-ratelimit-reset-requests",
                             absl::StrCat(b.retry_after.value_or(0.02), "s"));
      }
      if (b.retry_after) {
        headers.emplace_back("retry-after", absl::StrCat(*b.retry_after));
      }
      std::string message = b.message;
      if (message.empty()) {
        message = b.code == "context_length_exceeded"
                      ? "This model's maximum context length is 128000 tokens. However, your "
                        "messages resulted in 130000 tokens. Please reduce the length of the "
                        "messages."
                  : b.status == 404 ? "The model does not exist or you do not have access to it."
                  : b.status == 429 ? "Rate limit reached for requests. Please try again later."
                                    : absl::StrCat("The fake provider returns HTTP ", b.status);
      }
      std::string code = b.code;
      if (code.empty() && b.status == 404) code = "model_not_found";
      if (code.empty() && b.status == 429) code = "rate_limit_exceeded";
      std::string type = b.type.empty() ? std::string(DefaultType(b.status)) : b.type;
      std::string error_body = ErrorBody(message, type, code);
      if (b.html) {
        headers.emplace_back("content-type", "text/html; charset=utf-8");
        error_body = absl::StrCat(
            "<!DOCTYPE html>\n<html><head><title>", b.status,
            " Bad Gateway</title></head>\n<body><h1>Bad Gateway</h1><p>The origin returned an "
            "invalid response.</p><hr><address>fake-cdn</address></body></html>\n");
      } else if (b.echo_auth >= 0) {
        headers.emplace_back("content-type", "text/plain");
        error_body = absl::StrCat(std::string(static_cast<size_t>(b.echo_auth), 'x'),
                                  "Authorization: Bearer ", presented, "\n");
      }
      co_await WriteSimple(s, req, b.status, std::move(error_body), std::move(headers));
      co_return;
    }

    int n = b.tokens >= 0 ? b.tokens : options_.answer_tokens;
    std::string finish = "stop";
    for (const char* key : kMaxTokenKeys) {
      if (const json::value* mt = o.if_contains(key); mt != nullptr && mt->is_int64()) {
        if (mt->as_int64() > 0 && mt->as_int64() < n) {
          n = static_cast<int>(mt->as_int64());
          finish = "length";
        }
      }
    }
    std::vector<std::string> tokens;
    for (int i = 0; i < n; ++i) {
      tokens.push_back(words[i % words.size()] + (i + 1 < n ? " " : ""));
    }
    std::string model = b.model;
    if (model.empty()) {
      const json::value* m = o.if_contains("model");
      model = m != nullptr && m->is_string() ? std::string(m->get_string()) : "fake";
    }
    int64_t request_no = completions_.load();
    std::string id = absl::StrCat("chatcmpl-fake", request_no);
    auto usage = [&](int completion) {
      int64_t cached = std::min<int64_t>(b.cached, prompt_tokens);
      return json::object{
          {"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", prompt_tokens + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}, {"audio_tokens", 0}}},
          {"completion_tokens_details",
           {{"reasoning_tokens", 0},
            {"audio_tokens", 0},
            {"accepted_prediction_tokens", 0},
            {"rejected_prediction_tokens", 0}}}};
    };
    const json::value* stream_v = o.if_contains("stream");
    bool stream = stream_v != nullptr && stream_v->is_bool() && stream_v->as_bool();
    if (!stream) {
      std::string text;
      for (const std::string& t : tokens) text += t;
      json::object completion{
          {"id", id},
          {"object", "chat.completion"},
          {"created", kCreated},
          {"model", model},
          {"choices",
           json::array{json::object{
               {"index", 0},
               {"message", {{"role", "assistant"}, {"content", text}, {"refusal", nullptr}}},
               {"logprobs", nullptr},
               {"finish_reason", finish}}}},
          {"system_fingerprint", "fp_fake"}};
      if (!b.no_usage) {
        completion["usage"] = usage(n);
      }
      co_await WriteSimple(s, req, 200, json::serialize(completion));
      co_return;
    }

    bool include_usage = false;
    if (const json::value* so = o.if_contains("stream_options"); so != nullptr && so->is_object()) {
      const json::value* iu = so->as_object().if_contains("include_usage");
      include_usage = iu != nullptr && iu->is_bool() && iu->as_bool();
    }
    bool crlf = b.crlf.value_or(options_.crlf);
    std::string split = b.split.empty() ? options_.split : b.split;
    std::string eol = crlf ? "\r\n" : "\n";
    int delay_ms = b.delay_ms >= 0 ? b.delay_ms
                   : options_.tokens_per_second > 0
                       ? static_cast<int>(1000.0 / options_.tokens_per_second)
                       : options_.delay_ms;
    auto chunk_json = [&](json::value delta, json::value finish_reason) {
      json::object c{{"id", id},
                     {"object", "chat.completion.chunk"},
                     {"created", kCreated},
                     {"model", model},
                     {"system_fingerprint", "fp_fake"},
                     {"choices", json::array{json::object{{"index", 0},
                                                          {"delta", std::move(delta)},
                                                          {"logprobs", nullptr},
                                                          {"finish_reason", finish_reason}}}}};
      if (include_usage) {
        c["usage"] = nullptr;
      }
      return absl::StrCat("data: ", json::serialize(c), eol, eol);
    };

    http::response<http::empty_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "text/event-stream; charset=utf-8");
    res.set(http::field::cache_control, "no-cache");
    res.set(http::field::server, "aichat-fake-llm");
    res.keep_alive(req.keep_alive());
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    error_code ec;
    co_await http::async_write_header(s.stream, sr, kRedirect(ec));
    if (ec) {
      s.closing = true;
      co_return;
    }
    auto write_event = [&](const std::string& ev) -> asio::awaitable<bool> {
      std::vector<std::string_view> pieces;
      if (split == "bytes") {
        for (size_t i = 0; i < ev.size(); ++i) pieces.push_back(std::string_view(ev).substr(i, 1));
      } else if (split == "awkward") {
        pieces = AwkwardPieces(ev);
      } else {
        pieces.push_back(ev);
      }
      for (std::string_view p : pieces) {
        error_code wec;
        co_await asio::async_write(s.stream, http::make_chunk(asio::buffer(p.data(), p.size())),
                                   kRedirect(wec));
        if (wec || s.peer_gone) {
          s.closing = true;
          co_return false;
        }
      }
      co_return true;
    };
    auto pause = [&]() -> asio::awaitable<bool> {
      if (delay_ms <= 0) co_return true;
      co_return co_await Sleep(
          s, std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms));
    };

    if (split == "awkward" && !co_await write_event(absl::StrCat(": keep-alive", eol, eol))) {
      co_return;
    }
    // (Events are built outside co_await expressions: g++ 12 mishandles
    // initializer lists that live across a suspension point.)
    std::string role_event = chunk_json(
        json::object{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr);
    if (!co_await write_event(role_event)) {
      co_return;
    }
    int sent = 0;
    for (int i = 0; i < n; ++i) {
      if (i == b.drop_after || i == b.stall_after) {
        break;
      }
      if (i == b.error_after) {
        std::string error_event = absl::StrCat(
            b.error_event ? absl::StrCat("event: error", eol) : std::string(), "data: ",
            ErrorBody(b.message.empty() ? "The server had an error while processing your request."
                                        : b.message,
                      b.type.empty() ? "server_error" : b.type, b.code),
            eol, eol);
        if (co_await write_event(error_event)) {
          co_await asio::async_write(s.stream, http::make_chunk_last(), kRedirect(ec));
        }
        if (ec || !req.keep_alive()) {
          s.closing = true;
        }
        co_return;
      }
      if (i + 1 == n && b.hold_last) {
        held_.push_back(&s.wait_timer);
        ++held_count_;
        bool alive = co_await Sleep(s, asio::steady_timer::time_point::max());
        held_.remove(&s.wait_timer);
        --held_count_;
        if (!alive) {
          co_return;
        }
      } else if (i > 0 && !co_await pause()) {
        co_return;
      }
      bool last = i + 1 == n;
      std::string event = chunk_json(json::object{{"content", tokens[i]}},
                                     last ? json::value(finish) : json::value(nullptr));
      if (!co_await write_event(event)) {
        co_return;
      }
      ++sent;
      if (b.malformed && i == 0) {
        if (!co_await write_event(absl::StrCat(
                "data: {\"id\":\"", id, "\",\"choices\":[{\"delta\":{\"content\":\"x", eol, eol))) {
          co_return;
        }
      }
    }
    if (sent < n && b.stall_after >= 0 && sent == b.stall_after) {
      co_await Sleep(s, asio::steady_timer::time_point::max());  // until the client leaves
      s.closing = true;
      co_return;
    }
    if (sent < n) {  // drop_after: cut the connection mid-answer
      s.closing = true;
      co_return;
    }
    if (include_usage && !b.no_usage) {
      json::object u{
          {"id", id},         {"object", "chat.completion.chunk"}, {"created", kCreated},
          {"model", model},   {"system_fingerprint", "fp_fake"},   {"choices", json::array{}},
          {"usage", usage(n)}};
      if (!co_await write_event(absl::StrCat("data: ", json::serialize(u), eol, eol))) {
        co_return;
      }
    }
    if (!co_await write_event(absl::StrCat("data: [DONE]", eol, eol))) {
      co_return;
    }
    co_await asio::async_write(s.stream, http::make_chunk_last(), kRedirect(ec));
    if (ec || !req.keep_alive()) {
      s.closing = true;
    }
  }

  std::string Control(http::verb method, const std::string& path, const std::string& body) {
    if (path == "/_fake/requests") {
      json::array arr;
      for (const RecordedRequest& r : Requests()) {
        json::object headers;
        for (const auto& [k, v] : r.headers) headers[k] = v;
        arr.push_back(json::object{{"method", r.method},
                                   {"path", r.path},
                                   {"headers", std::move(headers)},
                                   {"authorization", r.authorization},
                                   {"body", r.body},
                                   {"connection", r.connection}});
      }
      return json::serialize(json::object{{"requests", std::move(arr)}});
    }
    if (path == "/_fake/stats") {
      FakeLlmStats st = Stats();
      return json::serialize(json::object{{"connections_accepted", st.connections_accepted},
                                          {"disconnects_mid_stream", st.disconnects_mid_stream},
                                          {"completion_requests", st.completion_requests},
                                          {"active_responses", st.active_responses},
                                          {"held", st.held}});
    }
    if (method == http::verb::post && path == "/_fake/reset") {
      Reset();
      return "{}";
    }
    if (method == http::verb::post && path == "/_fake/release") {
      Release();
      return "{}";
    }
    if (method == http::verb::post && path == "/_fake/script") {
      error_code ec;
      json::value v = json::parse(body, ec);
      std::vector<std::string> directives;
      if (!ec && v.is_object()) {
        const json::object& o = v.as_object();
        if (auto* d = o.if_contains("directives"); d != nullptr && d->is_array()) {
          for (const json::value& x : d->as_array()) {
            if (x.is_string()) directives.emplace_back(x.get_string());
          }
        }
        if (auto* d = o.if_contains("directive"); d != nullptr && d->is_string()) {
          int64_t count = 1;
          if (auto* c = o.if_contains("count"); c != nullptr && c->is_int64()) {
            count = c->as_int64();
          }
          for (int64_t i = 0; i < count; ++i) directives.emplace_back(d->get_string());
        }
      }
      size_t n = directives.size();
      Script(std::move(directives));
      return json::serialize(json::object{{"queued", n}});
    }
    return ErrorBody("unknown control endpoint", "invalid_request_error", "");
  }

  FakeLlmOptions options_;
  TestCertificate cert_;
  asio::io_context ioc_{1};
  std::optional<ssl::context> ssl_ctx_;
  tcp::acceptor acceptor_{ioc_};
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopped_{false};
  std::atomic<int64_t> connections_{0};
  std::atomic<int64_t> disconnects_{0};
  std::atomic<int64_t> completions_{0};
  std::atomic<int64_t> active_{0};
  std::atomic<int64_t> held_count_{0};
  std::list<asio::steady_timer*> held_;              // I/O thread only
  std::list<std::weak_ptr<SessionState>> sessions_;  // I/O thread only
  mutable absl::Mutex mu_;
  std::deque<std::string> script_ ABSL_GUARDED_BY(mu_);
  std::vector<RecordedRequest> log_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<FakeLlmServer>> FakeLlmServer::Start(FakeLlmOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = impl->Init(); !s.ok()) {
    return s;
  }
  return std::unique_ptr<FakeLlmServer>(new FakeLlmServer(std::move(impl)));
}

FakeLlmServer::FakeLlmServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FakeLlmServer::~FakeLlmServer() = default;
int FakeLlmServer::port() const { return impl_->port(); }
std::string FakeLlmServer::base_url() const { return impl_->base_url(); }
const std::string& FakeLlmServer::ca_pem() const { return impl_->ca_pem(); }
void FakeLlmServer::Script(std::vector<std::string> d) { impl_->Script(std::move(d)); }
std::vector<RecordedRequest> FakeLlmServer::Requests() const { return impl_->Requests(); }
FakeLlmStats FakeLlmServer::Stats() const { return impl_->Stats(); }
void FakeLlmServer::Reset() { impl_->Reset(); }
void FakeLlmServer::Release() { impl_->Release(); }
void FakeLlmServer::Stop() { impl_->Stop(); }

}  // namespace aichat::fakes
