// File: Debian's Abseil has its own string_view, distinct from std::string_view (see
// STACK.md); the HTTP API's code speaks std::string_view and converts at calls into
// Abseil's string functions with Av().
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace aichat::agent {

inline absl::string_view Av(std::string_view s) { return {s.data(), s.size()}; }
inline std::string_view Sv(absl::string_view s) { return {s.data(), s.size()}; }

}  // namespace aichat::agent
