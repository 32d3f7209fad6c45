// A request that does not parse — above all a proto3 `string` field holding invalid
// UTF-8, which protobuf refuses before any handler can check it — gets
// INVALID_ARGUMENT naming the field instead of what gRPC's callback API answers by
// itself (UNIMPLEMENTED with an empty message, which reads as "no such method").
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <memory>

namespace aichat {

// Routes protobuf's own log lines through the JSON log and remembers, per thread,
// the field of the last invalid-UTF-8 refusal. Idempotent; ServiceServer calls it.
void InstallProtobufLogHandler();

// The interceptor: on a request whose message failed to parse it rewrites the
// status the call ends with. Register it before the metrics interceptor so that
// logs and metrics see the final status.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeMalformedRequestInterceptorFactory();

}  // namespace aichat
