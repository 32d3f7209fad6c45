#include "common/malformed_request.h"

#include <google/protobuf/stubs/logging.h>

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace aichat {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Protobuf parses a request on the thread that then runs the interceptors' receive
// hook, so the field it complained about is handed over through this.
thread_local std::string last_utf8_field;

void OnProtobufLog(google::protobuf::LogLevel level, const char* /*filename*/, int /*line*/,
                   const std::string& message) {
  // "String field 'pkg.Message.field' contains invalid UTF-8 data when parsing …"
  constexpr std::string_view kPrefix = "String field '";
  if (message.rfind(kPrefix, 0) == 0 && message.find("when parsing") != std::string::npos) {
    auto end = message.find('\'', kPrefix.size());
    if (end != std::string::npos) {
      last_utf8_field = message.substr(kPrefix.size(), end - kPrefix.size());
      return;  // answered to the caller as INVALID_ARGUMENT; not worth a log line each
    }
  }
  std::string_view text(message);
  if (level >= google::protobuf::LOGLEVEL_ERROR) {
    LogError("protobuf", {{"detail", text}});
  } else {
    LogWarn("protobuf", {{"detail", text}});
  }
}

std::string RefusalMessage(const std::string& full_field) {
  if (full_field.empty()) {
    return "the request is not a valid protobuf message for this method";
  }
  auto dot = full_field.rfind('.');
  std::string field = dot == std::string::npos ? full_field : full_field.substr(dot + 1);
  return absl::StrCat(field, " must be valid UTF-8 (", full_field, ")");
}

class MalformedRequestInterceptor : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      malformed_ = true;
      field_ = std::move(last_utf8_field);
      last_utf8_field.clear();
    }
    if (malformed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status st = methods->GetSendStatus();
      // gRPC's own answer to an unparsable request; anything else came from a handler.
      if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED && st.error_message().empty()) {
        methods->ModifySendStatus(
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, RefusalMessage(field_)));
      }
    }
    methods->Proceed();
  }

 private:
  bool malformed_ = false;
  std::string field_;
};

class MalformedRequestInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* /*info*/) override {
    return new MalformedRequestInterceptor;
  }
};

}  // namespace

void InstallProtobufLogHandler() {
  static std::once_flag once;
  std::call_once(once, [] { google::protobuf::SetLogHandler(&OnProtobufLog); });
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeMalformedRequestInterceptorFactory() {
  return std::make_unique<MalformedRequestInterceptorFactory>();
}

}  // namespace aichat
