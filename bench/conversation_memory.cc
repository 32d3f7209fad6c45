// Peak memory of the conversation service under large reads: starts a throwaway
// PostgreSQL and the real aichat-conversation binary, fills conversations with
// large messages, then has concurrent clients page through them (page_size 500)
// and ask GetContext(max_tokens = INT32_MAX). Reports the service process's peak
// RSS (VmHWM from /proc/<pid>/status) after the fill and after the load.
//
// Usage: conversation_memory [--binary=PATH] [--clients=16] [--conversations=16]
//          [--messages=40] [--content_bytes=262144] [--rounds=3]
// The service inherits this process's environment (e.g. AICHAT_WORKERS).
#include <grpcpp/create_channel.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "tests/testing/helpers.h"
#include "tests/testing/postgres.h"

namespace {

namespace cv1 = aichat::conversation::v1;

std::string Flag(int argc, char** argv, const std::string& name, const std::string& def) {
  const std::string prefix = "--" + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], prefix)) return std::string(argv[i] + prefix.size());
  }
  return def;
}

int IntFlag(int argc, char** argv, const std::string& name, int def) {
  int v = def;
  if (!absl::SimpleAtoi(Flag(argc, argv, name, ""), &v)) v = def;
  return v;
}

// A field of /proc/<pid>/status in KiB (VmHWM, VmRSS); -1 when unreadable.
long StatusKb(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, field + ":")) return std::atol(line.c_str() + field.size() + 1);
  }
  return -1;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "conversation_memory: %s\n", what.c_str());
  std::exit(2);
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token, int64_t acting = 0) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  aichat::testing::Authorize(*ctx, token, acting);
  aichat::testing::SetDeadline(*ctx, absl::Seconds(120));
  return ctx;
}

// Text that compresses like prose does, so the fill stays quick.
std::string Content(int n, size_t bytes) {
  std::string s = absl::StrCat("message ", n, ": ");
  static const std::string kWords = "the quick brown fox jumps over the lazy dog ";
  while (s.size() < bytes) s += kWords;
  s.resize(bytes);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string binary = Flag(argc, argv, "binary", AICHAT_CONVERSATION_BINARY);
  const int clients = IntFlag(argc, argv, "clients", 16);
  const int n_conv = IntFlag(argc, argv, "conversations", 16);
  const int n_msg = IntFlag(argc, argv, "messages", 40);
  const int content_bytes = IntFlag(argc, argv, "content_bytes", 262144);
  const int rounds = IntFlag(argc, argv, "rounds", 3);

  // Everything that forks happens before gRPC starts threads.
  std::string db = aichat::testing::TestPostgres::Shared().CreateDatabase();
  aichat::testing::TestKeys keys;
  const int port = aichat::testing::FreePort();
  pid_t child = fork();
  if (child < 0) Die("fork failed");
  if (child == 0) {
    setenv("AICHAT_LISTEN", absl::StrCat("127.0.0.1:", port).c_str(), 1);
    setenv("AICHAT_METRICS_LISTEN", "", 1);
    setenv("DATABASE_URL", db.c_str(), 1);
    setenv("AICHAT_JWT_PUBLIC_KEYS", keys.public_keys()[0].c_str(), 1);
    if (std::getenv("BENCH_SERVICE_LOG") == nullptr) freopen("/dev/null", "w", stderr);
    execl(binary.c_str(), binary.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  auto stop_child = [child] {
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
  };

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                           grpc::InsecureChannelCredentials(), args);
  auto stub = cv1::ConversationService::NewStub(channel);
  const std::string service = keys.ServiceToken();

  // Poll until the service answers (it applies migrations first).
  std::vector<int64_t> conversations;
  const absl::Time ready_by = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < n_conv; ++i) {
    cv1::CreateConversationRequest req;
    req.set_title(absl::StrCat("big ", i));
    req.set_system_prompt("You answer briefly.");
    cv1::Conversation c;
    grpc::Status st;
    do {
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(1));
      st = stub->CreateConversation(Ctx(service, 1000 + i).get(), req, &c);
    } while (st.error_code() == grpc::StatusCode::UNAVAILABLE && absl::Now() < ready_by);
    if (!st.ok()) {
      stop_child();
      Die("CreateConversation: " + st.error_message());
    }
    conversations.push_back(c.id());
  }
  const long rss_idle = StatusKb(child, "VmHWM");

  // Fill as the agent would (service token, exempt from the users' append rate).
  std::atomic<bool> failed{false};
  std::vector<std::thread> fillers;
  for (int f = 0; f < 4; ++f) {
    fillers.emplace_back([&, f] {
      for (int i = f; i < n_conv * n_msg && !failed; i += 4) {
        const int conv = i % n_conv;
        cv1::AppendMessageRequest req;
        req.set_conversation_id(conversations[conv]);
        req.set_role(cv1::MESSAGE_ROLE_USER);
        req.set_content(Content(i, content_bytes));
        req.set_token_count(content_bytes / 4);
        cv1::Message m;
        auto st = stub->AppendMessage(Ctx(service, 1000 + conv).get(), req, &m);
        if (!st.ok()) {
          std::fprintf(stderr, "AppendMessage: %s\n", st.error_message().c_str());
          failed = true;
        }
      }
    });
  }
  for (auto& t : fillers) t.join();
  if (failed) {
    stop_child();
    Die("the fill failed");
  }
  const long rss_filled = StatusKb(child, "VmHWM");

  // The load: every client pages through its conversation and asks for the
  // largest context, `rounds` times.
  std::atomic<long> pages{0}, listed{0}, contexts{0}, context_messages{0}, errors{0};
  std::atomic<long> max_page_bytes{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> loaders;
  for (int c = 0; c < clients; ++c) {
    loaders.emplace_back([&, c] {
      const int conv = c % n_conv;
      const std::string token = keys.Token(1000 + conv);
      for (int r = 0; r < rounds; ++r) {
        std::string page_token;
        do {
          cv1::ListMessagesRequest req;
          req.set_conversation_id(conversations[conv]);
          req.set_page_size(500);
          req.set_page_token(page_token);
          cv1::ListMessagesResponse resp;
          auto st = stub->ListMessages(Ctx(token).get(), req, &resp);
          if (!st.ok()) {
            ++errors;
            break;
          }
          long bytes = 0;
          for (const auto& m : resp.messages()) bytes += m.content().size();
          long seen = max_page_bytes.load();
          while (bytes > seen && !max_page_bytes.compare_exchange_weak(seen, bytes)) {
          }
          ++pages;
          listed += resp.messages_size();
          page_token = resp.next_page_token();
        } while (!page_token.empty());
        cv1::GetContextRequest req;
        req.set_conversation_id(conversations[conv]);
        req.set_max_tokens(INT32_MAX);
        cv1::GetContextResponse resp;
        auto st = stub->GetContext(Ctx(token).get(), req, &resp);
        if (!st.ok()) {
          ++errors;
          continue;
        }
        ++contexts;
        context_messages += resp.messages_size();
      }
    });
  }
  for (auto& t : loaders) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const long hwm = StatusKb(child, "VmHWM");
  const long rss = StatusKb(child, "VmRSS");
  stop_child();

  std::printf(
      "conversation_memory: %d clients x %d rounds over %d conversations of %d messages x %d "
      "bytes\n",
      clients, rounds, n_conv, n_msg, content_bytes);
  std::printf(
      "  service peak RSS (VmHWM): idle %.1f MiB, after fill %.1f MiB, after load %.1f MiB\n",
      rss_idle / 1024.0, rss_filled / 1024.0, hwm / 1024.0);
  std::printf("  service RSS at the end: %.1f MiB\n", rss / 1024.0);
  std::printf(
      "  %ld ListMessages pages (%ld messages, largest page %.2f MiB), %ld GetContext calls "
      "(%.1f messages each), %ld errors, %.1f s\n",
      pages.load(), listed.load(), max_page_bytes.load() / 1048576.0, contexts.load(),
      contexts > 0 ? double(context_messages) / contexts : 0.0, errors.load(), seconds);
  std::printf("{\"vmhwm_kib\": %ld, \"vmhwm_fill_kib\": %ld, \"errors\": %ld}\n", hwm, rss_filled,
              errors.load());
  return errors == 0 ? 0 : 1;
}
