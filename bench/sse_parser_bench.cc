// Throughput of the streaming hot path: SSE parsing alone, parsing plus chunk
// JSON decoding (what every delta costs the agent), and decoding one chunk.
#include <benchmark/benchmark.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "services/ai-agent/llm/chat_chunk.h"
#include "services/ai-agent/llm/sse_parser.h"

namespace aichat::agent {
namespace {

// One realistic OpenAI content chunk (~230 bytes on the wire), as events.
std::string ChunkEvent(int i) {
  return absl::StrCat(
      "data: {\"id\":\"chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012\",\"object\":\"chat.completion."
      "chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":"
      "\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token",
      i % 100, "\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n");
}

std::string Stream(int events) {
  std::string s;
  for (int i = 0; i < events; ++i) {
    s += ChunkEvent(i);
  }
  s += "data: [DONE]\n\n";
  return s;
}

// Feeds `stream` in `piece`-byte reads, as the socket would deliver it.
void BM_SseParse(benchmark::State& state) {
  const std::string stream = Stream(1000);
  const size_t piece = static_cast<size_t>(state.range(0));
  int64_t events = 0;
  for (auto _ : state) {
    SseParser parser([&](const SseEvent& e) {
      benchmark::DoNotOptimize(e.data.data());
      ++events;
      return true;
    });
    for (size_t off = 0; off < stream.size(); off += piece) {
      benchmark::DoNotOptimize(parser.Feed(std::string_view(stream).substr(off, piece)));
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(events);
}
BENCHMARK(BM_SseParse)->Arg(64)->Arg(1500)->Arg(8192);

// The whole per-delta cost: parse the event, decode the chunk JSON, append.
void BM_SseParseAndDecode(benchmark::State& state) {
  const std::string stream = Stream(1000);
  int64_t deltas = 0;
  for (auto _ : state) {
    std::string content;
    SseParser parser([&](const SseEvent& e) {
      if (e.data == "[DONE]") {
        return false;
      }
      absl::StatusOr<ChatChunk> chunk = DecodeChatChunk(e.data);
      if (chunk.ok()) {
        content += chunk->content;
        ++deltas;
      }
      return true;
    });
    for (size_t off = 0; off < stream.size(); off += 8192) {
      benchmark::DoNotOptimize(parser.Feed(std::string_view(stream).substr(off, 8192)));
    }
    benchmark::DoNotOptimize(content.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(deltas);
}
BENCHMARK(BM_SseParseAndDecode);

void BM_DecodeChatChunk(benchmark::State& state) {
  std::string event = ChunkEvent(7);
  std::string json = event.substr(6, event.size() - 8);
  for (auto _ : state) {
    benchmark::DoNotOptimize(DecodeChatChunk(json));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeChatChunk);

}  // namespace
}  // namespace aichat::agent

BENCHMARK_MAIN();
