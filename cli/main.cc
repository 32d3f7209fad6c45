// aichat: the command-line client for the aichat services.
#include <iostream>

#include "cli/commands.h"

namespace {

constexpr char kHelp[] = R"(aichat — talk to an aichat suite

Account:   register EMAIL [NAME] | login EMAIL | login --api-key KEY | logout | whoami
           keys [list | create NAME | revoke ID]
Chat:      chat [CONVERSATION] [--model M]    interactive; answers stream as they are written,
                                              Ctrl-C stops an answer, /regen, Ctrl-D or /quit
           send [--conversation ID] [--model M] [--max-output-tokens N] [TEXT...]
                                              one turn (TEXT or standard input); the answer on
                                              stdout, tokens and cost on stderr
           regen CONVERSATION                 answer the last message again
           conversations [list | new [--title T] [--model M] [--system S] | show ID |
                          rename ID TITLE | delete ID]
Usage:     usage [daily | models | budget] [--user USER_ID]   this calendar month (UTC)
           models [list [--all]]              models and prices (USD per million tokens); admins
                                              also see deployments, their state and fallbacks
Admin:     users [list | role USER_ID admin|user | rate USER_ID RPM]
           budget [show [USER_ID] | set USER_ID USD]          monthly; 0 removes the limit
           models set NAME [--provider-model M] [--input-price USD] [--output-price USD]
                  [--cached-price USD] [--context N] [--max-output N] [--base-url URL]
                  [--api-key-env VAR] [--default] [--disabled]
                  [--deployment SPEC]... [--no-deployments] [--fallback MODEL]... [--no-fallbacks]
                  SPEC: name=N,url=URL,key=VAR,model=M,weight=1..1000,max=CALLS (any subset;
                  left out: the model's own); given deployments or fallbacks replace the old
           models delete NAME

Global flags: --json (machine-readable output), --server HOST (all services on their default
ports), --user_addr/--conversation_addr/--agent_addr/--usage_addr HOST:PORT, --tls (TLS with
the system roots), --ca FILE (TLS trusting this CA; implies --tls), --cert FILE --key FILE
(a client certificate, for services that require mutual TLS), --tls_server_name NAME (the
name to check in the server's certificate, e.g. through a port-forward).
Environment: AICHAT_HOST, AICHAT_USER_ADDR, AICHAT_CONVERSATION_ADDR, AICHAT_AGENT_ADDR,
AICHAT_USAGE_ADDR, AICHAT_TLS=1, AICHAT_TLS_CA, AICHAT_TLS_CLIENT_CERT, AICHAT_TLS_CLIENT_KEY,
AICHAT_TLS_SERVER_NAME. The login is kept in ~/.config/aichat/credentials (mode 0600, in a
directory of its own with mode 0700; a symlink or another user's file there is refused).
Passwords are read without echo from a terminal, else as one line of standard input.

Exit codes: 0 ok, 1 error, 2 usage, 3 not logged in / not allowed, 4 not found,
5 rate limit or budget reached, 6 service or provider unavailable, 7 invalid input.
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace aichat::cli;
  Args args(argv + 1, argv + argc);
  Cli cli(args);
  if (auto tls = cli.CheckTls(); !tls.ok()) {
    std::cerr << "aichat: TLS: " << tls.message() << "\n";
    return kUsage;
  }
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::cout << kHelp;
    return args.empty() ? kUsage : kOk;
  }
  std::string cmd = args[0];
  Args rest(args.begin() + 1, args.end());
  if (cmd == "register") return Register(cli, rest);
  if (cmd == "login") return Login(cli, rest);
  if (cmd == "logout") return Logout(cli, rest);
  if (cmd == "whoami") return WhoAmI(cli, rest);
  if (cmd == "keys") return ApiKeys(cli, rest);
  if (cmd == "users") return Users(cli, rest);
  if (cmd == "conversations" || cmd == "conv") return Conversations(cli, rest);
  if (cmd == "chat") return Chat(cli, rest);
  if (cmd == "send") return Send(cli, rest);
  if (cmd == "regen") return Regen(cli, rest);
  if (cmd == "usage") return UsageReport(cli, rest);
  if (cmd == "budget") return BudgetCmd(cli, rest);
  if (cmd == "models") return Models(cli, rest);
  std::cerr << "aichat: unknown command " << cmd << " (aichat help)\n";
  return kUsage;
}
