// libFuzzer target for the text check every request validator uses
// (common/validate.h: IsValidUtf8, CheckText): differential against a plain
// reference UTF-8 decoder, and CheckText's promises (NUL, length, required).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/validate.h"

namespace {

// Reference: RFC 3629 well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool ReferenceUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    int n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  bool valid = aichat::IsValidUtf8(s);
  if (valid != ReferenceUtf8(s)) std::abort();
  size_t max = size == 0 ? 0 : data[0] % 64;
  bool required = size > 1 && (data[1] & 1);
  auto st = aichat::CheckText("field", s, max, required);
  bool has_nul = s.find('\0') != std::string_view::npos;
  bool want_ok = valid && !has_nul && s.size() <= max && !(required && s.empty());
  if (st.ok() != want_ok) std::abort();
  if (!st.ok() && (st.code() != absl::StatusCode::kInvalidArgument ||
                   st.message().find("field") == std::string_view::npos)) {
    std::abort();  // must be INVALID_ARGUMENT naming the field
  }
  return 0;
}
