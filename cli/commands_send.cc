// `aichat send` (one chat turn for scripts) and `aichat regen` (answer the last message
// again). The answer goes to stdout as it streams; the footer with tokens and cost goes to
// stderr, so `answer=$(aichat send "...")` captures only the answer.
#include <iostream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "cli/commands.h"
#include "cli/turn.h"

namespace aichat::cli {
namespace {

constexpr absl::Duration kTurnDeadline = absl::Minutes(10);

// Prints the outcome of a streamed turn; returns the exit code.
int Finish(Cli& cli, const std::string& what, int64_t conversation_id, const TurnOutcome& o) {
  if (!cli.json() && o.answered) std::cout << "\n" << std::flush;
  if (!o.status.ok()) return cli.Fail(what, o.status);
  if (cli.json()) {
    std::cout << TurnJson(conversation_id, o.result) << "\n";
  } else {
    std::cerr << "[conversation " << conversation_id << "] " << TurnFooter(o.result) << "\n";
  }
  return kOk;
}

}  // namespace

std::string TitleFrom(const std::string& text) {
  std::string line(absl::StripAsciiWhitespace(text.substr(0, text.find('\n'))));
  if (line.size() > 60) {
    size_t cut = 57;
    while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
    line = line.substr(0, cut) + "...";
  }
  return line;
}

int64_t NewConversation(Cli& cli, const std::string& first_message, int* code) {
  auto ctx = cli.Context(true);
  if (!ctx) {
    *code = kAuth;
    return 0;
  }
  conversation::v1::CreateConversationRequest req;
  req.set_title(TitleFrom(first_message));
  conversation::v1::Conversation resp;
  auto st = conversation::v1::ConversationService::NewStub(cli.Channel("conversation"))
                ->CreateConversation(ctx.get(), req, &resp);
  if (!st.ok()) {
    *code = cli.Fail("new conversation", st);
    return 0;
  }
  return resp.id();
}

int Send(Cli& cli, const Args& in) {
  constexpr char kSendUsage[] =
      "aichat send [--conversation ID] [--model M] [--max-output-tokens N] [TEXT...] "
      "(reads standard input without TEXT)";
  Args args = in;
  std::string v;
  agent::v1::SendMessageRequest req;
  int64_t conversation_id = 0;
  if (TakeFlag(args, "conversation", &v) && !absl::SimpleAtoi(v, &conversation_id)) {
    return cli.Usage(kSendUsage);
  }
  if (TakeFlag(args, "model", &v)) req.set_model(v);
  if (TakeFlag(args, "max-output-tokens", &v)) {
    int n = 0;
    if (!absl::SimpleAtoi(v, &n)) return cli.Usage(kSendUsage);
    req.set_max_output_tokens(n);
  }
  if (TakeFlag(args, "idempotency-key", &v)) req.set_idempotency_key(v);
  for (const auto& a : args) {
    if (absl::StartsWith(a, "--")) return cli.Usage(kSendUsage);
  }
  std::string text = absl::StrJoin(args, " ");
  if (args.empty()) {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (absl::StripAsciiWhitespace(text).empty()) return cli.Usage(kSendUsage);
  req.set_content(text);
  if (conversation_id == 0) {
    int code = kOk;
    conversation_id = NewConversation(cli, text, &code);
    if (conversation_id == 0) return code;
  }
  req.set_conversation_id(conversation_id);
  auto ctx = cli.Context(true, kTurnDeadline);
  if (!ctx) return kAuth;
  auto reader =
      agent::v1::AiAgentService::NewStub(cli.Channel("ai-agent"))->StreamMessage(ctx.get(), req);
  return Finish(cli, "send", conversation_id,
                StreamTurn(*reader, cli.json() ? nullptr : &std::cout, false));
}

int Regen(Cli& cli, const Args& in) {
  constexpr char kSendUsage[] = "aichat regen CONVERSATION [--model M]";
  Args args = in;
  std::string v;
  agent::v1::RegenerateResponseRequest req;
  if (TakeFlag(args, "model", &v)) req.set_model(v);
  int64_t conversation_id = 0;
  if (args.size() != 1 || !absl::SimpleAtoi(args[0], &conversation_id)) {
    return cli.Usage(kSendUsage);
  }
  req.set_conversation_id(conversation_id);
  auto ctx = cli.Context(true, kTurnDeadline);
  if (!ctx) return kAuth;
  auto reader = agent::v1::AiAgentService::NewStub(cli.Channel("ai-agent"))
                    ->RegenerateResponse(ctx.get(), req);
  return Finish(cli, "regen", conversation_id,
                StreamTurn(*reader, cli.json() ? nullptr : &std::cout, false));
}

}  // namespace aichat::cli
