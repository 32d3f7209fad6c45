// Parsing of the fake provider's `[[fake:...]]` directives; see fake_directives.h.
#include "tests/fakes/fake_directives.h"

#include <cstdlib>

namespace aichat::fakes {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int ToInt(std::string_view v) { return std::atoi(std::string(v).c_str()); }

}  // namespace

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) {
      ++i;
    }
    size_t start = i;
    while (i < text.size() && !IsSpace(text[i])) {
      ++i;
    }
    if (i > start) {
      out.emplace_back(text.substr(start, i - start));
    }
  }
  return out;
}

void ApplyDirective(std::string_view text, FakeBehavior& b) {
  for (const std::string& item : Words(text)) {
    std::string_view kv = item;
    size_t eq = kv.find('=');
    std::string_view key = kv.substr(0, eq);
    std::string_view value = eq == std::string_view::npos ? "" : kv.substr(eq + 1);
    if (key == "status") {
      b.status = ToInt(value);
    } else if (key == "code") {
      b.code = value;
    } else if (key == "type") {
      b.type = value;
    } else if (key == "html") {
      b.html = true;
    } else if (key == "echo_auth") {
      b.echo_auth = ToInt(value);
    } else if (key == "error_after") {
      b.error_after = ToInt(value);
    } else if (key == "error_event") {
      b.error_event = true;
    } else if (key == "message") {
      b.message = value;
    } else if (key == "retry_after") {
      b.retry_after = std::atof(std::string(value).c_str());
    } else if (key == "hangup") {
      b.hangup = true;
    } else if (key == "drop_after") {
      b.drop_after = ToInt(value);
    } else if (key == "stall_after") {
      b.stall_after = ToInt(value);
    } else if (key == "hold_last") {
      b.hold_last = true;
    } else if (key == "slow_start_ms") {
      b.slow_start_ms = ToInt(value);
    } else if (key == "delay_ms") {
      b.delay_ms = ToInt(value);
    } else if (key == "no_usage") {
      b.no_usage = true;
    } else if (key == "malformed") {
      b.malformed = true;
    } else if (key == "tokens") {
      b.tokens = ToInt(value);
    } else if (key == "cached") {
      b.cached = ToInt(value);
    } else if (key == "model") {
      b.model = value;
    } else if (key == "crlf") {
      b.crlf = true;
    } else if (key == "split") {
      b.split = value;
    }
  }
}

std::string StripDirectives(std::string_view text, std::vector<std::string>* found) {
  std::string out;
  for (;;) {
    size_t open = text.find("[[fake:");
    if (open == std::string_view::npos) {
      break;
    }
    size_t close = text.find("]]", open);
    if (close == std::string_view::npos) {
      break;
    }
    out.append(text.substr(0, open));
    if (found != nullptr) {
      found->emplace_back(text.substr(open + 7, close - open - 7));
    }
    text.remove_prefix(close + 2);
  }
  out.append(text);
  return out;
}

}  // namespace aichat::fakes
