// Opaque page tokens for keyset pagination: the last row's sort key, encoded so
// clients do not depend on its shape.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace aichat {

std::string EncodePageToken(const std::vector<std::string>& parts);
// INVALID_ARGUMENT "page_token is invalid" for anything EncodePageToken did not make
// with `expected_parts` parts.
absl::StatusOr<std::vector<std::string>> DecodePageToken(std::string_view token,
                                                         size_t expected_parts);

// page_size 0 -> 50; 1..500 ok; else INVALID_ARGUMENT naming page_size.
absl::StatusOr<int> NormalizePageSize(int page_size);

}  // namespace aichat
