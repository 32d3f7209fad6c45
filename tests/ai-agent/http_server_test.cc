// The HTTP/1.1 listener alone (services/ai-agent/http/http_server.h), over real sockets on
// port 0: keep-alive, streamed answers written from other threads, a client that leaves,
// bounded requests, timeouts, metrics by route template. And the API-key cache of the HTTP
// authenticator, with a fake user service.
#include "services/ai-agent/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "services/ai-agent/http/http_auth.h"
#include "tests/testing/helpers.h"

namespace aichat::agent {
namespace {

// A blocking client socket.
class Client {
 public:
  explicit Client(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ~Client() { Close(); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  void Send(std::string_view s) {
    ASSERT_EQ(send(fd_, s.data(), s.size(), MSG_NOSIGNAL), s.size());
  }
  // Reads until `until` appears, the peer closes, or the timeout passes.
  std::string Read(std::string_view until, absl::Duration timeout = absl::Seconds(5)) {
    const absl::Time end = absl::Now() + timeout;
    while (until.empty() || got_.find(until) == std::string::npos) {
      pollfd p{fd_, POLLIN, 0};
      int ms = static_cast<int>(absl::ToInt64Milliseconds(end - absl::Now()));
      if (ms <= 0 || poll(&p, 1, ms) <= 0) break;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      got_.append(buf, static_cast<size_t>(n));
    }
    return got_;
  }
  bool closed() const { return closed_; }
  void Clear() { got_.clear(); }

 private:
  int fd_ = -1;
  std::string got_;
  bool closed_ = false;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void Start(HttpHandler handler, HttpServerOptions o = {}) {
    o.listen = "127.0.0.1:0";
    auto s = HttpServer::Start(o, std::move(handler), &registry_);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = *std::move(s);
  }
  std::string Metrics() { return prometheus::TextSerializer().Serialize(registry_.Collect()); }
  // The server counts a request once its answer is written, a moment after the client
  // has read it: poll.
  bool MetricsShow(std::string_view needle) {
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (Metrics().find(needle) == std::string::npos) {
      if (absl::Now() > until) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }
  prometheus::Registry registry_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, KeepAliveAndWholeAnswers) {
  Start([](HttpRequest r, std::shared_ptr<HttpExchange> ex) {
    ex->SetRoute("/echo/{x}");
    ex->Respond(200, {{"content-type", "text/plain"}},
                absl::StrCat(r.method, " ", r.path, " ", r.query, " ",
                             std::string(r.Header("x-test")), " ", r.body));
  });
  Client c(server_->port());
  c.Send("POST /echo/1?a=b HTTP/1.1\r\nHost: x\r\nX-Test: one\r\nContent-Length: 4\r\n\r\nbody");
  EXPECT_NE(c.Read("body").find("POST /echo/1 a=b one body"), std::string::npos);
  c.Clear();
  c.Send("GET /echo/2 HTTP/1.1\r\nHost: x\r\n\r\n");  // the same connection
  std::string second = c.Read("GET /echo/2");
  EXPECT_NE(second.find("HTTP/1.1 200"), std::string::npos);
  EXPECT_FALSE(c.closed());
  EXPECT_TRUE(MetricsShow(R"(http_requests_total{code="200",method="POST",route="/echo/{x}"} 1)"))
      << Metrics();
  EXPECT_TRUE(
      MetricsShow(R"(http_request_duration_seconds_count{method="GET",route="/echo/{x}"} 1)"));
}

TEST_F(HttpServerTest, StreamsWrittenFromAnotherThread) {
  std::thread writer;
  Start([&writer](HttpRequest, std::shared_ptr<HttpExchange> ex) {
    writer = std::thread([ex] {
      ex->StartStream(200, {{"content-type", "text/event-stream"}});
      for (int i = 0; i < 3; ++i) {
        ex->Write(absl::StrCat("data: ", i, "\n\n"));
        absl::SleepFor(absl::Milliseconds(20));
      }
      ex->End();
    });
  });
  Client c(server_->port());
  c.Send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = c.Read("0\r\n\r\n");
  writer.join();
  EXPECT_NE(got.find("Transfer-Encoding: chunked"), std::string::npos) << got;
  for (int i = 0; i < 3; ++i) EXPECT_NE(got.find(absl::StrCat("data: ", i)), std::string::npos);
  EXPECT_TRUE(got.ends_with("0\r\n\r\n"));
}

TEST_F(HttpServerTest, AClientThatLeavesIsNoticedBeforeAnyAnswer) {
  absl::Notification gone;
  std::shared_ptr<HttpExchange> held;
  Start([&](HttpRequest, std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&gone] { gone.Notify(); });
    held = ex;  // answered never
  });
  {
    Client c(server_->port());
    c.Send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(5)));
  held->Respond(200, {}, "too late");  // dropped, harmlessly
}

TEST_F(HttpServerTest, AClientThatSendsMoreThenLeavesIsNoticedToo) {
  absl::Notification gone;
  std::shared_ptr<HttpExchange> held;
  Start([&](HttpRequest, std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&gone] { gone.Notify(); });
    held = ex;  // answered never
  });
  {
    Client c(server_->port());
    c.Send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    absl::SleepFor(absl::Milliseconds(50));
    c.Send("GET /next HTTP/1.1\r\n");  // part of a pipelined request, then away
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(5)));
  held->Respond(200, {}, "too late");
}

TEST_F(HttpServerTest, BoundedRequestsAndTimeouts) {
  HttpServerOptions o;
  o.max_body_bytes = 1000;
  o.max_header_bytes = 2000;
  o.read_timeout = absl::Milliseconds(300);
  o.idle_timeout = absl::Milliseconds(600);
  std::atomic<int> calls{0};
  Start(
      [&calls](HttpRequest, std::shared_ptr<HttpExchange> ex) {
        ++calls;
        ex->Respond(200, {}, "ok");
      },
      o);
  {
    Client c(server_->port());
    c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    EXPECT_NE(c.Read("").find("HTTP/1.1 413"), std::string::npos);
    EXPECT_TRUE(c.closed());
  }
  {
    Client c(server_->port());
    c.Send(absl::StrCat("GET /x HTTP/1.1\r\nX-Big: ", std::string(3000, 'a'), "\r\n\r\n"));
    EXPECT_NE(c.Read("").find("HTTP/1.1 431"), std::string::npos);
  }
  {
    Client c(server_->port());
    c.Send("GARBAGE\r\n\r\n");
    EXPECT_NE(c.Read("").find("HTTP/1.1 400"), std::string::npos);
  }
  {
    Client c(server_->port());
    c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");  // stalls
    const absl::Time start = absl::Now();
    c.Read("", absl::Seconds(5));
    EXPECT_TRUE(c.closed());
    EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  }
  {
    Client c(server_->port());  // says nothing at all
    const absl::Time start = absl::Now();
    c.Read("", absl::Seconds(5));
    EXPECT_TRUE(c.closed());
    EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  }
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(HttpServerTest, BodiesBeingReceivedAreBoundedTogether) {
  HttpServerOptions o;
  o.max_body_bytes = 1000;
  o.max_receiving_body_bytes = 1500;
  Start([](HttpRequest r, std::shared_ptr<HttpExchange> ex) { ex->Respond(200, {}, r.body); }, o);
  Client slow(server_->port());
  slow.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc");  // and stalls
  absl::SleepFor(absl::Milliseconds(100));
  {
    Client c(server_->port());
    c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n");
    const std::string got = c.Read("");
    EXPECT_NE(got.find("HTTP/1.1 503"), std::string::npos) << got;
    EXPECT_NE(got.find("\"type\":\"server_error\""), std::string::npos) << got;
  }
  {
    Client c(server_->port());  // small enough for what is left
    c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    EXPECT_NE(c.Read("hello").find("HTTP/1.1 200"), std::string::npos);
  }
  slow.Send(std::string(997, 'z'));  // the first body completes and frees its share
  EXPECT_NE(slow.Read(std::string(10, 'z')).find("HTTP/1.1 200"), std::string::npos);
  Client c(server_->port());
  c.Send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n" + std::string(800, 'y'));
  EXPECT_NE(c.Read(std::string(10, 'y')).find("HTTP/1.1 200"), std::string::npos);
}

TEST_F(HttpServerTest, HeadIsAnsweredWithoutABody) {
  Start([](HttpRequest, std::shared_ptr<HttpExchange> ex) { ex->Respond(200, {}, "hello"); });
  Client c(server_->port());
  c.Send("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string got = c.Read("hello");
  // One body in all, the GET's: the HEAD answer says its length and sends none.
  EXPECT_NE(got.find("Content-Length: 5"), std::string::npos) << got;
  EXPECT_EQ(got.find("hello"), got.rfind("hello")) << got;
  const size_t second = got.find("HTTP/1.1 200", got.find("HTTP/1.1 200") + 1);
  ASSERT_NE(second, std::string::npos) << got;
  EXPECT_GT(got.find("hello"), second) << got;  // the body follows the GET's head
}

TEST_F(HttpServerTest, ShutdownFinishesAnswersUnderWayThenCutsTheRest) {
  std::shared_ptr<HttpExchange> held;
  absl::Notification got;
  Start([&](HttpRequest, std::shared_ptr<HttpExchange> ex) {
    held = ex;
    got.Notify();
  });
  Client idle(server_->port());
  Client busy(server_->port());
  busy.Send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(5)));
  server_->BeginShutdown();
  idle.Read("", absl::Seconds(3));
  EXPECT_TRUE(idle.closed());  // idle keep-alive connections go at once
  held->Respond(200, {}, "finished");
  std::string answer = busy.Read("finished");
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  server_->Shutdown(absl::Now() + absl::Seconds(2));
}

TEST_F(HttpServerTest, AnAnswerStillWaitingAtTheDeadlineIsCutOffAndItsClientCountsAsGone) {
  std::shared_ptr<HttpExchange> held;
  absl::Notification got, gone;
  Start([&](HttpRequest, std::shared_ptr<HttpExchange> ex) {
    ex->OnClientGone([&gone] { gone.Notify(); });
    held = ex;
    got.Notify();
  });
  Client busy(server_->port());
  busy.Send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(5)));
  server_->Shutdown(absl::Now() + absl::Milliseconds(200));  // never answered
  EXPECT_TRUE(gone.HasBeenNotified());                       // its turn would be cancelled
  busy.Read("", absl::Seconds(3));
  EXPECT_TRUE(busy.closed());
}

// ---- the API-key cache

class FakeUsers final : public UserPeer {
 public:
  explicit FakeUsers(const testing::TestKeys& keys) : keys_(keys) {}
  void LoginWithApiKey(const std::string& key, absl::Time,
                       std::function<void(absl::StatusOr<ApiKeyLogin>)> done) override {
    ++logins;
    if (key != "aik_good") return done(absl::UnauthenticatedError("invalid API key"));
    done(ApiKeyLogin{keys_.Token(42, Role::kUser, 7, absl::Minutes(15)),
                     absl::Now() + absl::Minutes(15)});
  }
  std::atomic<int> logins{0};

 private:
  const testing::TestKeys& keys_;
};

TEST(HttpAuthTest, KeysAreExchangedOnceAndRefusalsRemembered) {
  testing::TestKeys keys;
  auto verifier = TokenVerifier::Create(keys.public_keys());
  ASSERT_TRUE(verifier.ok());
  FakeUsers users(keys);
  HttpAuthenticator auth(&*verifier, &users);
  auto call = [&](std::string header, std::string acting = "") {
    absl::StatusOr<Caller> out = absl::UnknownError("not called");
    auth.Authenticate(header, acting, [&out](absl::StatusOr<Caller> c) { out = std::move(c); });
    return out;
  };
  for (int i = 0; i < 3; ++i) {
    auto c = call("Bearer aik_good");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->user_id, 42);
    EXPECT_EQ(c->requests_per_minute, 7);
  }
  EXPECT_EQ(users.logins.load(), 1);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(call("Bearer aik_bad").status().code(), absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(users.logins.load(), 2);
  EXPECT_EQ(call("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(call("Basic abc").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(call("Bearer not.a.jwt").status().code(), absl::StatusCode::kUnauthenticated);
  auto token = call("Bearer " + keys.Token(5));
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->user_id, 5);
  // The acting-user header only from a service token.
  EXPECT_EQ(call("Bearer " + keys.Token(5), "9").status().code(),
            absl::StatusCode::kPermissionDenied);
  auto acting = call("Bearer " + keys.ServiceToken(), "9");
  ASSERT_TRUE(acting.ok());
  EXPECT_EQ(acting->user_id, 9);
  // Without a user service, keys are refused (tokens still work).
  HttpAuthenticator tokens_only(&*verifier, nullptr);
  absl::StatusOr<Caller> out = absl::UnknownError("");
  tokens_only.Authenticate("Bearer aik_good", "", [&out](absl::StatusOr<Caller> c) { out = c; });
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnauthenticated);
}

}  // namespace
}  // namespace aichat::agent
