// The ai-agent service's schema, compiled in from migrations/*.sql.
#pragma once

#include <vector>

#include "common/migrations.h"

namespace aichat::agent {
const std::vector<aichat::Migration>& Migrations();
}
