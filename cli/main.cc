// aichat: the command-line client for the aichat services.
#include <iostream>

#include "cli/commands.h"

namespace {

constexpr char kHelp[] = R"(aichat — talk to an aichat suite

Account:   register EMAIL [NAME] | login EMAIL | login --api-key KEY | logout | whoami
           keys [list | create NAME | revoke ID]
Admin:     users [list | role USER_ID admin|user | rate USER_ID RPM]

Global flags: --json (machine-readable output), --server HOST (all services on their default
ports), --user_addr/--conversation_addr/--agent_addr/--usage_addr HOST:PORT.
Environment: AICHAT_HOST, AICHAT_USER_ADDR, AICHAT_CONVERSATION_ADDR, AICHAT_AGENT_ADDR,
AICHAT_USAGE_ADDR. The login is kept in ~/.config/aichat/credentials (mode 0600).
Passwords are read without echo from a terminal, else as one line of standard input.
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace aichat::cli;
  Args args(argv + 1, argv + argc);
  Cli cli(args);
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
  std::cerr << "aichat: unknown command " << cmd << " (aichat help)\n";
  return kUsage;
}
