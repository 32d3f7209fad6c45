// base64url without padding (RFC 4648 section 5), as JWTs and our opaque tokens use it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace aichat {

std::string Base64UrlEncode(std::string_view data);
// nullopt on any character outside the alphabet or an impossible length.
std::optional<std::string> Base64UrlDecode(std::string_view text);

// Lower-case hex, for storing hashes as text.
std::string HexEncode(std::string_view data);

}  // namespace aichat
