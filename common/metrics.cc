#include "common/metrics.h"

#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "common/auth.h"
#include "common/log.h"
#include "common/status.h"

namespace aichat {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;

const char* TypeName(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unary";
}

class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(ServerRpcInfo* info, GrpcServerMetrics* metrics)
      : info_(info), metrics_(metrics), start_(absl::Now()) {
    absl::string_view full = info->method() != nullptr ? info->method() : "";
    // "/pkg.Service/Method"
    if (!full.empty() && full[0] == '/') full.remove_prefix(1);
    auto slash = full.find('/');
    service_ = std::string(full.substr(0, slash));
    method_ = slash == absl::string_view::npos ? "" : std::string(full.substr(slash + 1));
    type_ = TypeName(info->type());
    metrics_->started.Add(Labels()).Increment();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      metrics_->msg_received.Add(Labels()).Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      metrics_->msg_sent.Add(Labels()).Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Finish(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  std::map<std::string, std::string> Labels() const {
    return {{"grpc_service", service_}, {"grpc_method", method_}, {"grpc_type", type_}};
  }

  void Finish(const grpc::Status& status) {
    double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
    const char* code = GrpcCodeName(status.error_code());
    auto labels = Labels();
    metrics_->handling_seconds.Add(labels, LatencyBuckets()).Observe(seconds);
    labels["grpc_code"] = code;
    metrics_->handled.Add(labels).Increment();
    int64_t user = CallAnnotations::Get().TakeUser(info_->server_context());
    // Health checks are polled constantly; logging them would drown everything else.
    if (service_ == "grpc.health.v1.Health") return;
    LogInfo("request", {{"method", method_},
                        {"grpc_service", service_},
                        {"code", code},
                        {"latency_ms", seconds * 1000.0},
                        {"user_id", user}});
  }

  ServerRpcInfo* info_;
  GrpcServerMetrics* metrics_;
  absl::Time start_;
  std::string service_;
  std::string method_;
  std::string type_;
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(std::shared_ptr<GrpcServerMetrics> metrics)
      : metrics_(std::move(metrics)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new MetricsInterceptor(info, metrics_.get());
  }

 private:
  std::shared_ptr<GrpcServerMetrics> metrics_;
};

}  // namespace

GrpcServerMetrics::GrpcServerMetrics(prometheus::Registry& registry)
    : started(prometheus::BuildCounter()
                  .Name("grpc_server_started_total")
                  .Help("Total number of RPCs started on the server.")
                  .Register(registry)),
      handled(prometheus::BuildCounter()
                  .Name("grpc_server_handled_total")
                  .Help("Total number of RPCs completed on the server, regardless of success or "
                        "failure.")
                  .Register(registry)),
      handling_seconds(prometheus::BuildHistogram()
                           .Name("grpc_server_handling_seconds")
                           .Help("Histogram of response latency (seconds) of gRPC that had been "
                                 "application-level handled by the server.")
                           .Register(registry)),
      msg_received(prometheus::BuildCounter()
                       .Name("grpc_server_msg_received_total")
                       .Help("Total number of RPC stream messages received on the server.")
                       .Register(registry)),
      msg_sent(prometheus::BuildCounter()
                   .Name("grpc_server_msg_sent_total")
                   .Help("Total number of gRPC stream messages sent by the server.")
                   .Register(registry)) {}

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,    1,     2.5,    5,     10,   30,    60,   120};
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeServerInterceptorFactory(
    std::shared_ptr<GrpcServerMetrics> metrics) {
  return std::make_unique<MetricsInterceptorFactory>(std::move(metrics));
}

}  // namespace aichat
