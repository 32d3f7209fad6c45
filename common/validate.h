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

// Code points in valid UTF-8 (bytes that do not continue a sequence).
size_t CountCodePoints(std::string_view s);

// CheckText with the limit in characters (code points) rather than bytes.
absl::Status CheckTextChars(std::string_view field, std::string_view value, size_t max_chars,
                            bool required);

// INVALID_ARGUMENT naming `field` if `value` holds a space or an ASCII control character
// (names, identifiers and addresses).
absl::Status CheckNoSpaceOrControl(std::string_view field, std::string_view value);

}  // namespace aichat
