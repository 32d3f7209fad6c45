// Prometheus metrics every service exports: the gRPC server metrics named as the
// Prometheus community's go-grpc-prometheus does, plus helpers for services'
// own metrics. A server interceptor records them and writes the per-request log line.
#pragma once

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace aichat {

class GrpcServerMetrics {
 public:
  explicit GrpcServerMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& started;
  prometheus::Family<prometheus::Counter>& handled;
  prometheus::Family<prometheus::Histogram>& handling_seconds;
  prometheus::Family<prometheus::Counter>& msg_received;
  prometheus::Family<prometheus::Counter>& msg_sent;
};

// Latency buckets in seconds, from sub-millisecond (cached reads) to minutes (streams).
prometheus::Histogram::BucketBoundaries LatencyBuckets();

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeServerInterceptorFactory(
    std::shared_ptr<GrpcServerMetrics> metrics);

}  // namespace aichat
