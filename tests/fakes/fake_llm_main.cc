// aichat-fake-llm: the fake OpenAI-compatible provider as a standalone binary,
// for running the suite offline and for load tests. Prints
// "listening https://HOST:PORT/v1" as its first line; exits 0 on SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include "tests/fakes/fake_llm_server.h"

namespace {

constexpr char kUsage[] = R"(usage: aichat-fake-llm [flags]
  --listen=HOST:PORT        address to bind (default 127.0.0.1:0, 0 = any free port)
  --tls | --plain           HTTPS with a throwaway CA (default) or plain HTTP
  --cert_out=PATH           write the CA certificate (PEM) clients should trust
  --api_key=KEY             require "Authorization: Bearer KEY" (default: any)
  --answer_tokens=N         tokens per answer (default 8)
  --first_token_delay_ms=N  wait before answering (bench: time to first token)
  --tokens_per_second=X     pace the stream (bench)
  --delay_ms=N              wait between chunks
  --split=none|awkward|bytes  how SSE bytes are cut into writes (default awkward)
  --crlf                    CRLF line endings
  --instant                 bench mode: --split=none, no delays
Directives and the control API are described in tests/fakes/fake_llm_server.h.
)";

bool Flag(std::string_view arg, std::string_view name, std::string* value) {
  if (arg.rfind(name, 0) != 0) {
    return false;
  }
  std::string_view rest = arg.substr(name.size());
  if (rest.empty()) {
    value->clear();
    return true;
  }
  if (rest.front() != '=') {
    return false;
  }
  *value = std::string(rest.substr(1));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  aichat::fakes::FakeLlmOptions options;
  std::string cert_out;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string v;
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else if (Flag(arg, "--listen", &v)) {
      size_t colon = v.rfind(':');
      if (colon == std::string::npos) {
        std::cerr << "--listen wants HOST:PORT\n";
        return 2;
      }
      options.host = v.substr(0, colon);
      options.port = std::atoi(v.c_str() + colon + 1);
    } else if (arg == "--tls") {
      options.tls = true;
    } else if (arg == "--plain") {
      options.tls = false;
    } else if (Flag(arg, "--cert_out", &v)) {
      cert_out = v;
    } else if (Flag(arg, "--api_key", &v)) {
      options.api_key = v;
    } else if (Flag(arg, "--answer_tokens", &v)) {
      options.answer_tokens = std::atoi(v.c_str());
    } else if (Flag(arg, "--first_token_delay_ms", &v)) {
      options.first_token_delay_ms = std::atoi(v.c_str());
    } else if (Flag(arg, "--tokens_per_second", &v)) {
      options.tokens_per_second = std::atof(v.c_str());
    } else if (Flag(arg, "--delay_ms", &v)) {
      options.delay_ms = std::atoi(v.c_str());
    } else if (Flag(arg, "--split", &v)) {
      options.split = v;
    } else if (arg == "--crlf") {
      options.crlf = true;
    } else if (arg == "--instant") {
      options.split = "none";
      options.delay_ms = 0;
      options.first_token_delay_ms = 0;
      options.tokens_per_second = 0;
    } else {
      std::cerr << "unknown flag " << arg << "\n" << kUsage;
      return 2;
    }
  }
  if (options.host != "127.0.0.1" && options.host != "0.0.0.0") {
    options.cert_ip_addresses.push_back(options.host);
  }
  // Block the signals before any thread starts so only sigwait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = aichat::fakes::FakeLlmServer::Start(options);
  if (!server.ok()) {
    std::cerr << "aichat-fake-llm: " << server.status() << "\n";
    return 1;
  }
  if (!cert_out.empty()) {
    std::ofstream out(cert_out, std::ios::trunc);
    out << (*server)->ca_pem();
    if (!out) {
      std::cerr << "aichat-fake-llm: cannot write " << cert_out << "\n";
      return 1;
    }
  }
  std::cout << "listening " << (*server)->base_url() << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  (*server)->Stop();
  return 0;
}
