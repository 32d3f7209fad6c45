// One streamed chat turn as every chat command shows it: the answer printed as its deltas
// arrive, then a footer with tokens and cost. Shared by `chat`, `send` and `regen`.
#pragma once

#include <grpcpp/support/sync_stream.h>

#include <iosfwd>
#include <memory>
#include <string>

#include "aichat/agent/v1/agent.grpc.pb.h"
#include "cli/client.h"

namespace aichat::cli {

struct TurnOutcome {
  grpc::Status status;  // OK only when the stream ended with a `completed` event
  agent::v1::TurnResult result;
  bool answered = false;  // at least one delta was printed
};

// Reads the stream to its end. With `json_events`, every event goes to `out` as one JSON
// object a line; otherwise the deltas' text goes to `out` as it comes (nothing else: the
// caller prints the footer). `out` may be null: print nothing.
TurnOutcome StreamTurn(grpc::ClientReaderInterface<agent::v1::TurnEvent>& reader, std::ostream* out,
                       bool json_events);

// "[gpt-4o-mini · 31 tokens in (3 cached), 8 out · $0.000009450]"
std::string TurnFooter(const agent::v1::TurnResult& r);

// The TurnResult as one JSON line, with the conversation id in front.
std::string TurnJson(int64_t conversation_id, const agent::v1::TurnResult& r);

// The title of a conversation started by its first message: its first line, shortened.
std::string TitleFrom(const std::string& text);

// Creates a conversation titled after its first message; 0 (and *code set, the error
// printed) on failure. In commands_send.cc.
int64_t NewConversation(Cli& cli, const std::string& first_message, int* code);

}  // namespace aichat::cli
