// The user service's request checks, apart from the service so that tests and the
// fuzz target (fuzz/user_request_fuzz.cc) run them alone. Each refusal is
// INVALID_ARGUMENT naming the field.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aichat::user {

inline constexpr size_t kMaxEmail = 254;
inline constexpr size_t kMinPasswordChars = 8;
inline constexpr size_t kMaxPasswordBytes = 1024;
inline constexpr size_t kMaxDisplayName = 100;  // characters
inline constexpr size_t kMaxKeyName = 100;

// Trims and lower-cases; INVALID_ARGUMENT naming `email` if it is not an address.
absl::StatusOr<std::string> NormalizeEmail(std::string_view email);

// 8 characters or more, at most 1 KiB, valid UTF-8 without NUL.
absl::Status CheckPassword(std::string_view password);

absl::Status CheckDisplayName(std::string_view display_name);

// The name of an API key: required, at most 100 bytes.
absl::Status CheckKeyName(std::string_view name);

}  // namespace aichat::user
