// The bootstrap every service uses: gRPC server with health and reflection, the
// metrics/log interceptor, the Prometheus /metrics endpoint, and graceful
// shutdown (NOT_SERVING first, then in-flight calls get a grace period).
#pragma once

#include <grpcpp/server.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/tls.h"

namespace prometheus {
class Registry;
class Exposer;
}  // namespace prometheus

namespace grpc {
class Service;
}

namespace aichat {

struct ServerOptions {
  std::string name;            // "user", "conversation", ...
  std::string listen;          // host:port; port 0 picks a free one
  std::string metrics_listen;  // empty: no /metrics endpoint
  absl::Duration shutdown_grace = absl::Seconds(30);
  int max_message_bytes = 4 << 20;
  ServerTlsFiles tls;         // empty: plaintext (see common/tls.h)
  std::string health_listen;  // plaintext, health only (Kubernetes probes); empty: none
  // A client connection is closed (GOAWAY) after about this long (gRPC adds ±10%
  // jitter), so that clients look their peers up again and spread over replicas
  // that came since; zero: never.
  absl::Duration max_connection_age = absl::Minutes(5);
  // Calls still running on a connection past its age get this long to finish.
  absl::Duration max_connection_age_grace = absl::Seconds(30);
};

class ServiceServer {
 public:
  explicit ServiceServer(ServerOptions options);
  ~ServiceServer();

  // The registry the gRPC metrics live in; services add their own metrics here.
  prometheus::Registry& registry() { return *registry_; }
  std::shared_ptr<prometheus::Registry> shared_registry() { return registry_; }

  // Must be called before Start; the service must outlive the server.
  void AddService(grpc::Service* service);

  absl::Status Start();
  int port() const { return port_; }
  int health_port() const { return health_port_; }
  int metrics_port() const { return metrics_port_; }

  // Health goes NOT_SERVING, new calls are refused, in-flight calls have until
  // the grace period ends; then the rest are cancelled. Returns when done.
  void Shutdown();

 private:
  ServerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::vector<grpc::Service*> services_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // the plaintext health-only listener
  int port_ = 0;
  int health_port_ = 0;
  int metrics_port_ = 0;
};

// Call first thing in main, before any thread starts, so that SIGTERM/SIGINT
// reach WaitForTerminationSignal instead of killing the process.
void BlockTerminationSignals();
// Blocks until SIGTERM or SIGINT; returns the signal number.
int WaitForTerminationSignal();

}  // namespace aichat
