// The server bootstrap: health, reflection, /metrics with gRPC server metrics.
#include "common/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aichat/user/v1/user.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/testing/helpers.h"

namespace aichat {
namespace {

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, n);
  close(fd);
  return out;
}

TEST(ServerTest, HealthReflectionAndMetrics) {
  testing::LogCapture logs;
  ServiceServer server({.name = "test", .listen = "127.0.0.1:0", .metrics_listen = "127.0.0.1:0"});
  ASSERT_TRUE(server.Start().ok());
  ASSERT_GT(server.port(), 0);
  ASSERT_GT(server.metrics_port(), 0);
  auto channel = testing::LocalChannel(server.port());

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext hctx;
  grpc::health::v1::HealthCheckRequest hreq;
  grpc::health::v1::HealthCheckResponse hresp;
  ASSERT_TRUE(health->Check(&hctx, hreq, &hresp).ok());
  EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext rctx;
  auto stream = reflection->ServerReflectionInfo(&rctx);
  grpc::reflection::v1alpha::ServerReflectionRequest rreq;
  rreq.set_list_services("");
  ASSERT_TRUE(stream->Write(rreq));
  grpc::reflection::v1alpha::ServerReflectionResponse rresp;
  ASSERT_TRUE(stream->Read(&rresp));
  stream->WritesDone();
  std::vector<std::string> names;
  for (const auto& s : rresp.list_services_response().service()) names.push_back(s.name());
  EXPECT_NE(std::find(names.begin(), names.end(), "grpc.reflection.v1alpha.ServerReflection"),
            names.end());
  EXPECT_TRUE(stream->Finish().ok());

  std::string metrics = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_NE(metrics.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Check\","
                         "grpc_service=\"grpc.health.v1.Health\",grpc_type=\"unary\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("grpc_server_handling_seconds_bucket"), std::string::npos);
  EXPECT_NE(metrics.find("grpc_server_started_total"), std::string::npos);
  // The reflection call is logged as one JSON line; health checks are not.
  EXPECT_TRUE(logs.Contains("\"method\":\"ServerReflectionInfo\""));
  EXPECT_FALSE(logs.Contains("\"method\":\"Check\""));

  server.Shutdown();
  grpc::ClientContext after;
  testing::SetDeadline(after, absl::Seconds(2));
  EXPECT_FALSE(health->Check(&after, hreq, &hresp).ok());
}

// Kubernetes gRPC probes with `service: aichat.user.v1.UserService` ask for the
// service by its full name; the default health service knows only "" unless told.
TEST(ServerTest, HealthAnswersForEachServiceByItsFullName) {
  aichat::user::v1::UserService::CallbackService user_service;
  ServiceServer server({.name = "user", .listen = "127.0.0.1:0", .metrics_listen = ""});
  server.AddService(&user_service);
  ASSERT_TRUE(server.Start().ok());
  auto health = grpc::health::v1::Health::NewStub(testing::LocalChannel(server.port()));
  auto check = [&](const std::string& name, grpc::health::v1::HealthCheckResponse* resp) {
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx, absl::Seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(name);
    return health->Check(&ctx, req, resp);
  };
  for (const char* name : {"", "aichat.user.v1.UserService"}) {
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = check(name, &resp);
    ASSERT_TRUE(st.ok()) << name << ": " << st.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << name;
  }
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(check("aichat.nope.v1.Nope", &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  server.Shutdown();
}

TEST(ServerTest, BusyPortIsAClearError) {
  ServiceServer a({.name = "a", .listen = "127.0.0.1:0", .metrics_listen = ""});
  ASSERT_TRUE(a.Start().ok());
  ServiceServer b(
      {.name = "b", .listen = "127.0.0.1:" + std::to_string(a.port()), .metrics_listen = ""});
  auto st = b.Start();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("cannot listen"), std::string::npos);
}

}  // namespace
}  // namespace aichat
