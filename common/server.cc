#include "common/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <climits>
#include <csignal>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/malformed_request.h"
#include "common/metrics.h"

namespace aichat {
namespace {

// Reads the full names of the registered services ("aichat.user.v1.UserService")
// as the server starts: grpc::Service does not tell them, the initializer does.
class ServiceNamesPlugin : public grpc::ServerBuilderPlugin {
 public:
  explicit ServiceNamesPlugin(std::shared_ptr<std::vector<std::string>> out)
      : out_(std::move(out)) {}
  std::string name() override { return "aichat_service_names"; }
  void InitServer(grpc::ServerInitializer* /*si*/) override {}
  void Finish(grpc::ServerInitializer* si) override { *out_ = *si->GetServiceList(); }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}

 private:
  std::shared_ptr<std::vector<std::string>> out_;
};

class ServiceNamesOption : public grpc::ServerBuilderOption {
 public:
  explicit ServiceNamesOption(std::shared_ptr<std::vector<std::string>> out)
      : out_(std::move(out)) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ServiceNamesPlugin>(out_));
  }

 private:
  std::shared_ptr<std::vector<std::string>> out_;
};

// gRPC takes milliseconds as an int; INT_MAX means no limit.
int ClampedMilliseconds(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, INT_MAX));
}

}  // namespace

ServiceServer::ServiceServer(ServerOptions options)
    : options_(std::move(options)), registry_(std::make_shared<prometheus::Registry>()) {}

ServiceServer::~ServiceServer() {
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s != nullptr) {
      s->Shutdown(std::chrono::system_clock::now());
      s->Wait();
    }
  }
}

void ServiceServer::AddService(grpc::Service* service) { services_.push_back(service); }

absl::Status ServiceServer::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto credentials = MakeServerCredentials(options_.tls);
  if (!credentials.ok()) return credentials.status();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, *credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  // Drop connections whose peer vanished without closing (keepalive pings).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // A second process on the same port must fail, not silently share traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  if (options_.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               ClampedMilliseconds(options_.max_connection_age));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               ClampedMilliseconds(options_.max_connection_age_grace));
  }
  for (auto* s : services_) builder.RegisterService(s);
  auto metrics = std::make_shared<GrpcServerMetrics>(*registry_);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
  InstallProtobufLogHandler();
  creators.push_back(MakeMalformedRequestInterceptorFactory());  // first: the others see its status
  creators.push_back(MakeServerInterceptorFactory(metrics));
  builder.experimental().SetInterceptorCreators(std::move(creators));
  auto service_names = std::make_shared<std::vector<std::string>>();
  builder.SetOption(std::make_unique<ServiceNamesOption>(service_names));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options_.listen,
        options_.tls.enabled() ? " (or AICHAT_TLS_CERT and AICHAT_TLS_KEY do not match)" : ""));
  }
  if (!options_.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(options_.health_listen, grpc::InsecureServerCredentials(),
                                    &health_port_);
    health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    health_server_ = health_builder.BuildAndStart();
    if (health_server_ == nullptr || health_port_ == 0) {
      health_server_.reset();
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.health_listen));
    }
  }
  // Health answers SERVING for "" and for each service by its full name, as
  // Kubernetes probes with `service:` ask; Shutdown() turns them all NOT_SERVING.
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    grpc::HealthCheckServiceInterface* health = s ? s->GetHealthCheckService() : nullptr;
    for (const std::string& service : health ? *service_names : std::vector<std::string>{}) {
      health->SetServingStatus(service, true);
    }
  }
  if (!options_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen);
      exposer_->RegisterCollectable(registry_);
      auto ports = exposer_->GetListeningPorts();
      metrics_port_ = ports.empty() ? 0 : ports.front();
    } catch (const std::exception& e) {
      server_->Shutdown(std::chrono::system_clock::now());
      server_.reset();
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", options_.metrics_listen, ": ", e.what()));
    }
  }
  LogInfo("listening",
          {{"grpc_port", port_},
           {"metrics_port", metrics_port_},
           {"health_port", health_port_},
           {"listen", options_.listen},
           {"tls", options_.tls.enabled()},
           {"mutual_tls", !options_.tls.client_ca_file.empty()},
           {"max_connection_age_ms", absl::ToInt64Milliseconds(options_.max_connection_age)}});
  return absl::OkStatus();
}

void ServiceServer::Shutdown() {
  if (server_ == nullptr) return;
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (auto* health = s ? s->GetHealthCheckService() : nullptr; health != nullptr) {
      health->Shutdown();  // every service answers NOT_SERVING from now on
    }
  }
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.shutdown_grace));
  server_->Shutdown(deadline);
  server_->Wait();
  server_.reset();
  if (health_server_ != nullptr) {
    health_server_->Shutdown(std::chrono::system_clock::now());
    health_server_->Wait();
    health_server_.reset();
  }
  LogInfo("stopped");
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  LogInfo("shutting down", {{"signal", sig}});
  return sig;
}

}  // namespace aichat
