#include "common/log.h"

#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace aichat {
namespace {

struct LogState {
  absl::Mutex mu;
  std::string service ABSL_GUARDED_BY(mu) = "aichat";
  std::function<void(std::string_view)> sink ABSL_GUARDED_BY(mu);
};

LogState& State() {
  static auto* const state = new LogState;
  return *state;
}

}  // namespace

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

void SetLogService(std::string_view name) {
  LogState& st = State();
  absl::MutexLock lock(&st.mu);
  st.service = std::string(name);
}

void SetLogSink(std::function<void(std::string_view line)> sink) {
  LogState& st = State();
  absl::MutexLock lock(&st.mu);
  st.sink = std::move(sink);
}

void Log(std::string_view level, std::string_view msg, std::initializer_list<LogField> fields) {
  std::string line = "{\"ts\":";
  AppendJsonString(line,
                   absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()));
  line += ",\"level\":";
  AppendJsonString(line, level);
  LogState& st = State();
  absl::MutexLock lock(&st.mu);
  line += ",\"service\":";
  AppendJsonString(line, st.service);
  line += ",\"msg\":";
  AppendJsonString(line, msg);
  for (const auto& f : fields) {
    line += ',';
    AppendJsonString(line, f.key);
    line += ':';
    std::visit(
        [&line](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string_view>) {
            AppendJsonString(line, v);
          } else if constexpr (std::is_same_v<T, bool>) {
            line += v ? "true" : "false";
          } else if constexpr (std::is_same_v<T, double>) {
            absl::StrAppend(&line, absl::StrFormat("%.3f", v));
          } else {
            absl::StrAppend(&line, v);
          }
        },
        f.value);
  }
  line += "}\n";
  if (st.sink) {
    st.sink(line);
  } else {
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
}

}  // namespace aichat
