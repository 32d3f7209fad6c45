// Input checks shared by every service's request validation.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace aichat {

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsValidUtf8(std::string_view s);

// INVALID_ARGUMENT naming `field` unless `value` is valid UTF-8 without NUL
// bytes and at most `max_bytes` long (and not empty when `required`).
absl::Status CheckText(std::string_view field, std::string_view value, size_t max_bytes,
                       bool required);

}  // namespace aichat
