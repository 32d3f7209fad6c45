// The usage service's schema, compiled in from migrations/*.sql.
#pragma once

#include <vector>

#include "common/migrations.h"

namespace aichat::usage {
const std::vector<aichat::Migration>& Migrations();
}
