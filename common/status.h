// The one place where absl::Status becomes grpc::Status (the RPC edge).
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace aichat {

// Same code, same message. INTERNAL and UNKNOWN messages are replaced by a
// generic text so that no internal detail reaches a client.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The reverse, for statuses that come back from peer services.
absl::Status FromGrpcStatus(const grpc::Status& status);

// "OK", "NOT_FOUND", ... for logs and metric labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace aichat
