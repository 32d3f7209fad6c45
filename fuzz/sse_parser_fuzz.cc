// libFuzzer target: SseParser must never crash, and must produce the same
// events whichever way the bytes are split (differential against one Feed).
// Build and run with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "services/ai-agent/llm/sse_parser.h"

namespace {

struct Run {
  std::vector<std::string> events;
  bool ok = true;
};

Run Parse(std::string_view data, const std::vector<size_t>& cuts, size_t limit) {
  Run run;
  aichat::agent::SseParser parser(
      [&](const aichat::agent::SseEvent& e) {
        run.events.push_back(e.event + "|" + e.id + "|" + e.data);
        return true;
      },
      limit);
  size_t prev = 0;
  for (size_t c : cuts) {
    if (!parser.Feed(data.substr(prev, c - prev)).ok()) {
      run.ok = false;
      return run;
    }
    prev = c;
  }
  run.ok = parser.Feed(data.substr(prev)).ok();
  return run;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  if (size < 2) {
    return 0;
  }
  // First byte: how to split; second: the size limit class.
  uint8_t split_seed = bytes[0];
  size_t limit = bytes[1] % 4 == 0 ? 16 : aichat::agent::SseParser::kDefaultMaxEventBytes;
  std::string_view data(reinterpret_cast<const char*>(bytes + 2), size - 2);
  std::vector<size_t> cuts;
  size_t step = 1 + split_seed % 13;
  for (size_t i = step; i < data.size(); i += step + (i % 3)) {
    cuts.push_back(i);
  }
  Run whole = Parse(data, {}, limit);
  Run split = Parse(data, cuts, limit);
  if (whole.ok && split.ok && whole.events != split.events) {
    std::abort();  // the result depends on how the bytes were split
  }
  if (whole.ok != split.ok && limit != 16) {
    std::abort();
  }
  return 0;
}
