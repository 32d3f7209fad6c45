#include "bench/http_load.h"

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <memory>
#include <sstream>
#include <string_view>
#include <thread>

namespace aichat::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

struct Shared {
  const HttpLoadTarget* target;
  const std::function<double()>* now;
  const std::function<bool()>* keep_going;
  const std::function<void(const HttpResult&)>* report;
  std::string request_bytes;  // serialized once; every request is the same
  // With per-request headers: request_bytes cut before the blank line that ends the headers.
  std::string head;
  std::string rest;  // "\r\n" + the body
};

// Counts SSE events ("data:" at a line start) across read boundaries.
struct EventScanner {
  char prev = '\n';
  int matched = 0;   // chars of "data:" matched at a line start
  std::string tail;  // last bytes, to find "[DONE]" across reads
  template <typename F>
  void Feed(std::string_view s, F&& on_event) {
    static constexpr std::string_view kData = "data:";
    for (char c : s) {
      if (matched >= 0 && matched < 5) {
        bool at_start = matched > 0 || prev == '\n';
        if (at_start && c == kData[matched]) {
          if (++matched == 5) {
            on_event();
            matched = -1;
          }
        } else {
          matched = c == '\n' ? 0 : -1;
        }
      } else if (c == '\n') {
        matched = 0;
      }
      prev = c;
    }
    tail.append(s);
    if (tail.size() > 64) tail.erase(0, tail.size() - 64);
  }
};

asio::awaitable<void> Caller(std::shared_ptr<Shared> sh) {
  auto ex = co_await asio::this_coro::executor;
  const auto& t = *sh->target;
  tcp::endpoint ep(asio::ip::make_address(t.host), static_cast<unsigned short>(t.port));
  std::unique_ptr<tcp::socket> sock;
  beast::flat_buffer buf;
  std::vector<char> body(16 * 1024);
  while ((*sh->keep_going)()) {
    HttpResult r;
    r.start_s = (*sh->now)();
    bool reuse = false;
    try {
      if (!sock) {
        sock = std::make_unique<tcp::socket>(ex);
        co_await sock->async_connect(ep, asio::use_awaitable);
        sock->set_option(tcp::no_delay(true));
        buf.clear();
      }
      if (t.per_request_headers) {
        std::string bytes = sh->head + t.per_request_headers() + sh->rest;
        co_await asio::async_write(*sock, asio::buffer(bytes), asio::use_awaitable);
      } else {
        co_await asio::async_write(*sock, asio::buffer(sh->request_bytes), asio::use_awaitable);
      }
      http::response_parser<http::buffer_body> p;
      p.body_limit(boost::none);
      co_await http::async_read_header(*sock, buf, p, asio::use_awaitable);
      r.http_status = p.get().result_int();
      EventScanner scan;
      while (!p.is_done()) {
        p.get().body().data = body.data();
        p.get().body().size = body.size();
        auto [ec, n] =
            co_await http::async_read(*sock, buf, p, asio::as_tuple(asio::use_awaitable));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) throw boost::system::system_error(ec);
        size_t got = body.size() - p.get().body().size;
        if (got > 0) {
          double at = (*sh->now)();
          if (r.first_byte_s < 0) r.first_byte_s = at;
          scan.Feed(std::string_view(body.data(), got), [&] { r.event_s.push_back(at); });
        }
      }
      r.done_marker = scan.tail.find("[DONE]") != std::string::npos || r.event_s.empty();
      reuse = p.get().keep_alive();
    } catch (const std::exception& e) {
      if (r.http_status == 0) {
        r.error = e.what();
      } else {
        r.done_marker = false;
      }
    }
    r.end_s = (*sh->now)();
    if (!reuse && sock) {
      beast::error_code ignored;
      sock->shutdown(tcp::socket::shutdown_both, ignored);
      sock->close(ignored);
      sock.reset();
    }
    (*sh->report)(r);
    if (r.http_status == 0) {
      // Do not spin on a dead endpoint.
      asio::steady_timer timer(ex, std::chrono::milliseconds(10));
      co_await timer.async_wait(asio::use_awaitable);
    }
  }
}

}  // namespace

void RunHttpClosedLoop(const HttpLoadTarget& target, int connections, int io_threads,
                       const std::function<double()>& now, const std::function<bool()>& keep_going,
                       const std::function<void(const HttpResult&)>& report) {
  auto sh = std::make_shared<Shared>();
  sh->target = &target;
  sh->now = &now;
  sh->keep_going = &keep_going;
  sh->report = &report;
  http::request<http::string_body> req{http::verb::post, target.path, 11};
  req.set(http::field::host, target.host + ":" + std::to_string(target.port));
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "text/event-stream, application/json");
  req.keep_alive(true);
  for (const auto& [k, v] : target.headers) req.set(k, v);
  req.body() = target.body;
  req.prepare_payload();
  std::ostringstream os;
  os << req;
  sh->request_bytes = os.str();
  const size_t end = sh->request_bytes.find("\r\n\r\n") + 2;
  sh->head = sh->request_bytes.substr(0, end);
  sh->rest = sh->request_bytes.substr(end);

  io_threads = std::max(1, io_threads);
  std::vector<std::unique_ptr<asio::io_context>> ios;
  for (int i = 0; i < io_threads; ++i) ios.push_back(std::make_unique<asio::io_context>(1));
  for (int i = 0; i < connections; ++i) {
    asio::co_spawn(*ios[i % io_threads], Caller(sh), asio::detached);
  }
  std::vector<std::thread> threads;
  for (auto& io : ios) threads.emplace_back([&io] { io->run(); });
  for (auto& t : threads) t.join();
}

}  // namespace aichat::bench
