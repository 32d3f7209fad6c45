// The server bootstrap: health, reflection, /metrics with gRPC server metrics.
#include "common/server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "common/grpc_channel.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/fakes/test_certificate.h"
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

// PEM files of a throwaway CA and a certificate it signed for 127.0.0.1 and
// localhost, good for a server and for a client of mutual TLS.
struct CertFiles {
  std::string ca, cert, key;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/aichat-tls-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CertFiles Make(const std::string& name, const std::string& dns_name = "localhost") {
    auto made = fakes::MakeTestCertificate({dns_name}, {"127.0.0.1"});
    EXPECT_TRUE(made.ok()) << made.status();
    CertFiles f{dir_ + "/" + name + "-ca.pem", dir_ + "/" + name + ".pem",
                dir_ + "/" + name + "-key.pem"};
    std::ofstream(f.ca) << made->ca_pem;
    std::ofstream(f.cert) << made->cert_pem;
    std::ofstream(f.key) << made->key_pem;
    return f;
  }

  // A health check over `channel`: its status code.
  static grpc::StatusCode Check(const std::shared_ptr<grpc::Channel>& channel,
                                const std::string& service = "") {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    testing::SetDeadline(ctx, absl::Seconds(5));
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::Status st = health->Check(&ctx, req, &resp);
    if (st.ok() && resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      return grpc::StatusCode::UNKNOWN;
    }
    return st.error_code();
  }

  std::string dir_;
};

TEST_F(TlsTest, TlsListenerAndChannel) {
  CertFiles server_cert = Make("server");
  ServiceServer server({.name = "tls",
                        .listen = "127.0.0.1:0",
                        .metrics_listen = "",
                        .tls = {.cert_file = server_cert.cert, .key_file = server_cert.key}});
  ASSERT_TRUE(server.Start().ok());
  std::string target = absl::StrCat("127.0.0.1:", server.port());
  EXPECT_EQ(Check(MakePeerChannel(target, {.tls_ca_file = server_cert.ca, .tls = true})),
            grpc::StatusCode::OK);
  // The name in the certificate is checked: localhost is in it, other.example is not.
  EXPECT_EQ(
      Check(MakePeerChannel(
          target, {.tls_ca_file = server_cert.ca, .tls = true, .tls_server_name = "localhost"})),
      grpc::StatusCode::OK);
  EXPECT_EQ(Check(MakePeerChannel(
                target,
                {.tls_ca_file = server_cert.ca, .tls = true, .tls_server_name = "other.example"})),
            grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA, or speaks plaintext, gets nowhere.
  CertFiles other = Make("other");
  EXPECT_EQ(Check(MakePeerChannel(target, {.tls_ca_file = other.ca, .tls = true})),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check(MakePeerChannel(target, {})), grpc::StatusCode::UNAVAILABLE);
  server.Shutdown();
}

// Peers dial dns:///<headless Service>:<port> (or an address list locally): the name
// checked in the certificate is the target's host, so certificates must carry it.
TEST_F(TlsTest, ReplicaTargetsAreCheckedAgainstTheCertificate) {
  CertFiles server_cert = Make("server");  // localhost and 127.0.0.1
  ServiceServer server({.name = "tls",
                        .listen = "127.0.0.1:0",
                        .metrics_listen = "",
                        .tls = {.cert_file = server_cert.cert, .key_file = server_cert.key}});
  ASSERT_TRUE(server.Start().ok());
  const PeerChannelOptions tls = {.tls_ca_file = server_cert.ca, .tls = true};
  const std::string dns = absl::StrCat("dns:///localhost:", server.port());
  EXPECT_EQ(Check(MakePeerChannel(dns, tls)), grpc::StatusCode::OK);
  CertFiles headless = Make("headless", "aichat-usage-headless");
  ServiceServer other({.name = "tls",
                       .listen = "127.0.0.1:0",
                       .metrics_listen = "",
                       .tls = {.cert_file = headless.cert, .key_file = headless.key}});
  ASSERT_TRUE(other.Start().ok());
  EXPECT_EQ(Check(MakePeerChannel(absl::StrCat("dns:///localhost:", other.port()),
                                  {.tls_ca_file = headless.ca, .tls = true})),
            grpc::StatusCode::UNAVAILABLE);  // localhost is not in that certificate
  // An address list has no host name: name the one to check.
  const std::string list =
      absl::StrCat("ipv4:127.0.0.1:", server.port(), ",127.0.0.1:", server.port());
  PeerChannelOptions named = tls;
  named.tls_server_name = "localhost";
  EXPECT_EQ(Check(MakePeerChannel(list, named)), grpc::StatusCode::OK);
  other.Shutdown();
  server.Shutdown();
}

TEST_F(TlsTest, MutualTlsRefusesAClientWithoutAnAcceptedCertificate) {
  CertFiles server_cert = Make("server");
  CertFiles client_cert = Make("client");  // its own CA: the one the server trusts for clients
  CertFiles stranger = Make("stranger");
  ServiceServer server({.name = "mtls",
                        .listen = "127.0.0.1:0",
                        .metrics_listen = "",
                        .tls = {.cert_file = server_cert.cert,
                                .key_file = server_cert.key,
                                .client_ca_file = client_cert.ca}});
  ASSERT_TRUE(server.Start().ok());
  std::string target = absl::StrCat("127.0.0.1:", server.port());
  EXPECT_EQ(Check(MakePeerChannel(target, {.tls_ca_file = server_cert.ca,
                                           .tls_cert_file = client_cert.cert,
                                           .tls_key_file = client_cert.key,
                                           .tls = true})),
            grpc::StatusCode::OK);
  EXPECT_EQ(Check(MakePeerChannel(target, {.tls_ca_file = server_cert.ca, .tls = true})),
            grpc::StatusCode::UNAVAILABLE);  // no certificate
  EXPECT_EQ(Check(MakePeerChannel(target, {.tls_ca_file = server_cert.ca,
                                           .tls_cert_file = stranger.cert,
                                           .tls_key_file = stranger.key,
                                           .tls = true})),
            grpc::StatusCode::UNAVAILABLE);  // a certificate the server does not trust
  server.Shutdown();
}

TEST_F(TlsTest, PlaintextHealthListenerForProbes) {
  CertFiles server_cert = Make("server");
  aichat::user::v1::UserService::CallbackService user_service;
  ServiceServer server({.name = "user",
                        .listen = "127.0.0.1:0",
                        .metrics_listen = "",
                        .tls = {.cert_file = server_cert.cert, .key_file = server_cert.key},
                        .health_listen = "127.0.0.1:0"});
  server.AddService(&user_service);
  ASSERT_TRUE(server.Start().ok());
  ASSERT_GT(server.health_port(), 0);
  auto probe = testing::LocalChannel(server.health_port());
  EXPECT_EQ(Check(probe), grpc::StatusCode::OK);
  EXPECT_EQ(Check(probe, "aichat.user.v1.UserService"), grpc::StatusCode::OK);
  // Only health there: the service itself is not reachable in plaintext.
  auto stub = aichat::user::v1::UserService::NewStub(probe);
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx, absl::Seconds(5));
  aichat::user::v1::User me;
  EXPECT_EQ(stub->GetMe(&ctx, {}, &me).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  server.Shutdown();
}

TEST_F(TlsTest, BadTlsSettingsAreClearErrors) {
  CertFiles c = Make("server");
  struct Case {
    ServerTlsFiles files;
    std::string names;
  } cases[] = {
      {{.cert_file = c.cert}, "AICHAT_TLS_KEY"},
      {{.client_ca_file = c.ca}, "AICHAT_TLS_CLIENT_CA"},
      {{.cert_file = c.cert, .key_file = dir_ + "/missing.pem"}, "AICHAT_TLS_KEY"},
      {{.cert_file = c.cert, .key_file = c.key, .client_ca_file = dir_}, "AICHAT_TLS_CLIENT_CA"},
  };
  for (const Case& k : cases) {
    ServiceServer server(
        {.name = "bad", .listen = "127.0.0.1:0", .metrics_listen = "", .tls = k.files});
    absl::Status st = server.Start();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << k.names;
    EXPECT_NE(st.message().find(k.names), std::string::npos) << st;
  }
  EXPECT_EQ(CheckPeerChannelOptions({.tls_cert_file = c.cert, .tls = true}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckPeerChannelOptions({.tls_ca_file = dir_ + "/missing.pem", .tls = true}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckPeerChannelOptions({.tls_ca_file = c.ca, .tls = true}).ok());
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
