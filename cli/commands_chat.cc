// `aichat chat [CONVERSATION]`: an interactive prompt. Each line is one turn whose answer
// streams token by token, followed by its tokens and cost. Ctrl-C during an answer cancels
// that answer (the server keeps the partial text and charges what was used) and returns to
// the prompt; Ctrl-D or /quit leaves.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "cli/commands.h"
#include "cli/turn.h"

namespace aichat::cli {
namespace {

constexpr char kHelp[] =
    "Type a message and press Enter. Ctrl-C stops the answer being written; "
    "/regen answers your last message again; Ctrl-D or /quit leaves.\n";

// The answer in flight, so that Ctrl-C can cancel it. SIGINT is blocked in every thread and
// taken by one thread with sigwait(): TryCancel is not async-signal-safe, so it must not run
// in a signal handler.
class Interrupts {
 public:
  // Call before any other thread starts (gRPC's included) so they all inherit the mask.
  static std::shared_ptr<Interrupts> Start() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    auto self = std::make_shared<Interrupts>();
    std::thread([self, set] {
      for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) == 0) self->OnInterrupt();
      }
    }).detach();
    return self;
  }

  void SetActive(grpc::ClientContext* ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = ctx;
  }

 private:
  void OnInterrupt() {
    std::lock_guard<std::mutex> lock(mu_);
    if (active_ != nullptr) {
      active_->TryCancel();
    } else {
      std::cerr << "\n(Ctrl-D or /quit to leave)\n";
    }
  }

  std::mutex mu_;
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
};

int ShowConversation(Cli& cli, int64_t id) {
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  conversation::v1::GetConversationRequest req;
  req.set_id(id);
  conversation::v1::Conversation conv;
  auto st = conversation::v1::ConversationService::NewStub(cli.Channel("conversation"))
                ->GetConversation(ctx.get(), req, &conv);
  if (!st.ok()) return cli.Fail("chat", st);
  if (!cli.json()) {
    std::cout << "Conversation " << conv.id() << ": "
              << (conv.title().empty() ? "(untitled)" : conv.title()) << " ("
              << conv.message_count() << " messages; aichat conversations show " << conv.id()
              << ")\n";
  }
  return kOk;
}

}  // namespace

int Chat(Cli& cli, const Args& in) {
  constexpr char kChatUsage[] = "aichat chat [CONVERSATION] [--model M]";
  Args args = in;
  std::string model;
  bool has_model = TakeFlag(args, "model", &model);
  int64_t conversation_id = 0;
  if (args.size() > 1 || (args.size() == 1 && !absl::SimpleAtoi(args[0], &conversation_id))) {
    return cli.Usage(kChatUsage);
  }
  auto interrupts = Interrupts::Start();
  auto stub = agent::v1::AiAgentService::NewStub(cli.Channel("ai-agent"));
  if (conversation_id != 0) {
    if (int code = ShowConversation(cli, conversation_id); code != kOk) return code;
  }
  const bool tty = isatty(STDIN_FILENO) != 0;
  if (!cli.json()) std::cout << kHelp;
  int last = kOk;
  std::string line;
  for (;;) {
    if (tty && !cli.json()) std::cout << "\nyou> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    std::string text(absl::StripAsciiWhitespace(line));
    if (text.empty()) continue;
    if (text == "/quit" || text == "/exit") break;
    if (text == "/help") {
      std::cout << kHelp;
      continue;
    }
    const bool regen = text == "/regen";
    if (!regen && text[0] == '/') {
      std::cout << "Unknown command " << text << " (/help)\n";
      continue;
    }
    if (conversation_id == 0) {
      if (regen) {
        std::cout << "Nothing to regenerate yet.\n";
        continue;
      }
      int code = kOk;
      conversation_id = NewConversation(cli, text, &code);
      if (conversation_id == 0) return code;
      if (!cli.json()) std::cout << "(conversation " << conversation_id << ")\n";
    }
    auto ctx = cli.Context(true, absl::Minutes(10));
    if (!ctx) return kAuth;
    std::unique_ptr<grpc::ClientReaderInterface<agent::v1::TurnEvent>> reader;
    if (regen) {
      agent::v1::RegenerateResponseRequest req;
      req.set_conversation_id(conversation_id);
      if (has_model) req.set_model(model);
      reader = stub->RegenerateResponse(ctx.get(), req);
    } else {
      agent::v1::SendMessageRequest req;
      req.set_conversation_id(conversation_id);
      req.set_content(text);
      if (has_model) req.set_model(model);
      reader = stub->StreamMessage(ctx.get(), req);
    }
    interrupts->SetActive(ctx.get());
    TurnOutcome o = StreamTurn(*reader, &std::cout, cli.json());
    interrupts->SetActive(nullptr);
    if (!cli.json() && o.answered) std::cout << "\n";
    if (o.status.ok()) {
      if (!cli.json()) std::cout << TurnFooter(o.result) << "\n" << std::flush;
      last = kOk;
    } else if (o.status.error_code() == grpc::StatusCode::CANCELLED) {
      std::cout << "[answer cancelled]\n" << std::flush;
      last = kCancelled;
    } else {
      std::cout << std::flush;
      last = cli.Fail(regen ? "regen" : "chat", o.status);
    }
  }
  if (tty && !cli.json()) std::cout << "\n";
  // A session's exit code is that of its last turn, so a script piping lines in can tell.
  return last == kCancelled ? kOk : last;
}

}  // namespace aichat::cli
