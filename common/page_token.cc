#include "common/page_token.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base64.h"

namespace aichat {
namespace {
constexpr absl::string_view kPrefix = "p1\x1f";
}

std::string EncodePageToken(const std::vector<std::string>& parts) {
  return Base64UrlEncode(absl::StrCat(kPrefix, absl::StrJoin(parts, "\x1f")));
}

absl::StatusOr<std::vector<std::string>> DecodePageToken(std::string_view token,
                                                         size_t expected_parts) {
  auto raw = Base64UrlDecode(token);
  if (!raw.has_value() || !absl::StartsWith(*raw, kPrefix)) {
    return absl::InvalidArgumentError("page_token is invalid");
  }
  std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(*raw).substr(kPrefix.size()), '\x1f');
  if (parts.size() != expected_parts) {
    return absl::InvalidArgumentError("page_token is invalid");
  }
  return parts;
}

absl::StatusOr<int> NormalizePageSize(int page_size) {
  if (page_size == 0) return 50;
  if (page_size < 0 || page_size > 500) {
    return absl::InvalidArgumentError("page_size must be between 0 and 500");
  }
  return page_size;
}

}  // namespace aichat
