// The start-up steps every service's main() takes the same way: the command line,
// the database with its migrations, and the server options from the common settings.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/migrations.h"
#include "common/pg.h"
#include "common/server.h"

namespace aichat {

// Says "<program>: <message>" on stderr; returns the exit code of a failed start (2).
int StartupFailure(std::string_view program, const absl::Status& status);

// Parses the command line of a service that only serves. An exit code when main()
// should return now (0 after --help; 2 after saying what is wrong with a flag or an
// argument other than "serve"), nothing when it should go on. First switches absl's
// run-time Mutex deadlock detection off for the process (bootstrap.cc says why).
std::optional<int> ParseServeCommandLine(Config& config, int argc, char** argv,
                                         std::string_view program);

// The service's connection pool, sized by the common settings, with its migrations
// applied (UNAVAILABLE "migrations: ..." when they cannot be).
absl::StatusOr<std::unique_ptr<PgPool>> OpenDatabase(const CommonSettings& settings,
                                                     const std::vector<Migration>& migrations);

ServerOptions ServerOptionsFrom(std::string name, const CommonSettings& settings);

}  // namespace aichat
