// Runs a unary callback handler's blocking body on the worker pool and finishes
// the reactor with its status, so gRPC's callback threads never block on libpq.
#pragma once

#include <grpcpp/server_context.h>
#include <grpcpp/support/server_callback.h>

#include "common/status.h"
#include "common/worker_pool.h"

namespace aichat {

template <typename Fn>
grpc::ServerUnaryReactor* RunUnary(grpc::CallbackServerContext* ctx, WorkerPool& pool, Fn&& fn) {
  auto* reactor = ctx->DefaultReactor();
  pool.Submit([reactor, ctx, fn = std::forward<Fn>(fn)]() mutable {
    if (ctx->IsCancelled()) {
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
      return;
    }
    reactor->Finish(ToGrpcStatus(fn()));
  });
  return reactor;
}

}  // namespace aichat
