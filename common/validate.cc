#include "common/validate.h"

#include "absl/strings/str_cat.h"

namespace aichat {

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

absl::Status CheckText(std::string_view field_sv, std::string_view value, size_t max_bytes,
                       bool required) {
  std::string field(field_sv);
  if (required && value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  }
  if (value.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is too long (", value.size(), " bytes; at most ", max_bytes, ")"));
  }
  if (value.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not contain NUL bytes"));
  }
  if (!IsValidUtf8(value)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be valid UTF-8"));
  }
  return absl::OkStatus();
}

size_t CountCodePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;
  }
  return n;
}

absl::Status CheckTextChars(std::string_view field, std::string_view value, size_t max_chars,
                            bool required) {
  // A code point is at most 4 bytes; the byte check first bounds the work.
  if (auto st = CheckText(field, value, max_chars * 4, required); !st.ok()) return st;
  if (CountCodePoints(value) > max_chars) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " must be at most ", max_chars, " characters"));
  }
  return absl::OkStatus();
}

absl::Status CheckNoSpaceOrControl(std::string_view field, std::string_view value) {
  for (unsigned char c : value) {
    if (c <= 0x20 || c == 0x7F) {
      return absl::InvalidArgumentError(
          absl::StrCat(std::string(field), " must not contain spaces or control characters"));
    }
  }
  return absl::OkStatus();
}

}  // namespace aichat
