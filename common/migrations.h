// Versioned schema migrations, applied at start-up in one transaction under a
// PostgreSQL advisory lock so that replicas starting together apply each once.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace aichat {

class PgPool;

struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

// Applies the migrations not yet recorded in `schema_migrations`, in version
// order. Returns how many were applied through `applied` when non-null.
absl::Status ApplyMigrations(PgPool& pool, const std::vector<Migration>& migrations,
                             int* applied = nullptr);

}  // namespace aichat
