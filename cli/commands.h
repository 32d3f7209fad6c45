// The `aichat` sub-commands. Each takes its words (after the command name) and
// returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "cli/client.h"

namespace aichat::cli {

using Args = std::vector<std::string>;

int Register(Cli& cli, const Args& args);
int Login(Cli& cli, const Args& args);
int Logout(Cli& cli, const Args& args);
int WhoAmI(Cli& cli, const Args& args);
int ApiKeys(Cli& cli, const Args& args);
int Users(Cli& cli, const Args& args);

// commands_conversation.cc
int Conversations(Cli& cli, const Args& args);
// commands_chat.cc (interactive) and commands_send.cc (one-shot)
int Chat(Cli& cli, const Args& args);
int Send(Cli& cli, const Args& args);
int Regen(Cli& cli, const Args& args);
// commands_usage.cc
int UsageReport(Cli& cli, const Args& args);
int BudgetCmd(Cli& cli, const Args& args);
// commands_models.cc
int Models(Cli& cli, const Args& args);

}  // namespace aichat::cli
