#include "cli/turn.h"

#include <google/protobuf/util/json_util.h>

#include <ostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace aichat::cli {
namespace {

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

}  // namespace

TurnOutcome StreamTurn(grpc::ClientReaderInterface<agent::v1::TurnEvent>& reader, std::ostream* out,
                       bool json_events) {
  TurnOutcome o;
  agent::v1::TurnEvent ev;
  bool completed = false;
  while (reader.Read(&ev)) {
    if (json_events && out != nullptr) {
      *out << ToJson(ev) << "\n" << std::flush;
    }
    if (ev.has_delta()) {
      o.answered = true;
      if (!json_events && out != nullptr) *out << ev.delta().text() << std::flush;
    } else if (ev.has_completed()) {
      o.result = ev.completed();
      completed = true;
    }
  }
  o.status = reader.Finish();
  if (o.status.ok() && !completed) {
    o.status = grpc::Status(grpc::StatusCode::INTERNAL, "the answer stream ended without a result");
  }
  return o;
}

std::string TurnFooter(const agent::v1::TurnResult& r) {
  const auto& u = r.usage();
  std::string in = absl::StrCat(u.prompt_tokens(), " tokens in");
  if (u.cached_tokens() > 0) absl::StrAppend(&in, " (", u.cached_tokens(), " cached)");
  return absl::StrFormat("[%s · %s, %d out%s · %s]", r.model(), in, u.completion_tokens(),
                         u.estimated() ? " (estimated)" : "", FormatUsd(r.cost_nanos()));
}

std::string TurnJson(int64_t conversation_id, const agent::v1::TurnResult& r) {
  return absl::StrCat("{\"conversation_id\":\"", conversation_id, "\",\"turn\":", ToJson(r), "}");
}

}  // namespace aichat::cli
