// Memory held per open LLM stream: forks the fake provider into a child
// process (before any thread exists), opens N streaming calls that the fake
// holds open mid-answer, and reports the client's RSS growth per stream (and
// the fake's). Usage: llm_stream_memory [N=1000] [--plain]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/ai-agent/llm/llm_client.h"
#include "tests/fakes/fake_llm_server.h"

namespace {

long RssKb(pid_t pid) {
  std::ifstream in(pid == 0 ? std::string("/proc/self/status")
                            : absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::atol(line.c_str() + 6);
    }
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 && argv[1][0] != '-' ? std::atoi(argv[1]) : 1000;
  bool tls = !(argc > 2 && std::strcmp(argv[2], "--plain") == 0);
  rlimit lim;
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);

  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) {
    return 1;
  }
  pid_t child = fork();
  if (child == 0) {
    aichat::fakes::FakeLlmOptions options;
    options.tls = tls;
    options.split = "none";
    auto fake = aichat::fakes::FakeLlmServer::Start(options);
    if (!fake.ok()) {
      _exit(1);
    }
    std::string info = absl::StrCat((*fake)->base_url(), "\n", (*fake)->ca_pem());
    uint32_t len = info.size();
    (void)!write(pipe_fds[1], &len, sizeof len);
    (void)!write(pipe_fds[1], info.data(), len);
    pause();
    _exit(0);
  }
  uint32_t len = 0;
  if (read(pipe_fds[0], &len, sizeof len) != sizeof len) {
    return 1;
  }
  std::string info(len, '\0');
  for (size_t got = 0; got < len;) {
    ssize_t r = read(pipe_fds[0], info.data() + got, len - got);
    if (r <= 0) return 1;
    got += r;
  }
  std::string base_url = info.substr(0, info.find('\n'));
  std::string ca = info.substr(info.find('\n') + 1);

  aichat::agent::HttpLlmClientOptions options;
  options.ca_pem = ca;
  options.https_proxy = options.http_proxy = options.no_proxy = "";
  auto client = aichat::agent::MakeHttpLlmClient(options);
  // Warm up (TLS context, first allocations) before measuring.
  std::atomic<int> done{0};
  aichat::agent::CompletionRequest warm;
  warm.base_url = base_url;
  warm.model = "m";
  warm.messages = {{"user", "warm up"}};
  client->Start(warm, [](std::string_view) {}, [&](aichat::agent::LlmOutcome) { ++done; });
  while (done.load() == 0) absl::SleepFor(absl::Milliseconds(5));

  long client_before = RssKb(0);
  long fake_before = RssKb(child);
  std::atomic<int> first_deltas{0};
  std::vector<std::shared_ptr<aichat::agent::LlmCall>> calls;
  absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    aichat::agent::CompletionRequest r = warm;
    r.messages = {{"user", "a typical short question for the model [[fake:hold_last tokens=4]]"}};
    auto got_first = std::make_shared<bool>(false);
    calls.push_back(client->Start(
        r,
        [&first_deltas, got_first](std::string_view) {
          if (!*got_first) {
            *got_first = true;
            ++first_deltas;
          }
        },
        [&](aichat::agent::LlmOutcome) { ++done; }));
  }
  while (first_deltas.load() < n && absl::Now() - start < absl::Seconds(120)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::Duration open_time = absl::Now() - start;
  long client_after = RssKb(0);
  long fake_after = RssKb(child);
  std::printf("streams open mid-answer: %d of %d (%s, opened in %s)\n", first_deltas.load(), n,
              tls ? "TLS" : "plain HTTP", absl::FormatDuration(open_time).c_str());
  std::printf("client RSS: %ld KiB -> %ld KiB = %.1f KiB per open stream\n", client_before,
              client_after, static_cast<double>(client_after - client_before) / n);
  std::printf("fake   RSS: %ld KiB -> %ld KiB = %.1f KiB per open stream\n", fake_before,
              fake_after, static_cast<double>(fake_after - fake_before) / n);
  for (auto& c : calls) c->Cancel();
  while (done.load() < n + 1) absl::SleepFor(absl::Milliseconds(5));
  client.reset();
  kill(child, SIGTERM);
  waitpid(child, nullptr, 0);
  return first_deltas.load() == n ? 0 : 1;
}
