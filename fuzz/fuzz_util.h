// Shared properties of the request-validator fuzz targets: a refusal is
// INVALID_ARGUMENT and its message names the field; accepted text is strict UTF-8
// without NUL and within its limit. A broken property aborts (libFuzzer reports it).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <string_view>

#include "absl/status/status.h"
#include "common/validate.h"

namespace aichat::fuzz {

inline void Require(bool property) {
  if (!property) std::abort();
}

// Debian's Abseil has its own string_view; the fuzz targets speak std::string_view.
inline std::string_view Message(const absl::Status& st) {
  return std::string_view(st.message().data(), st.message().size());
}

inline void RequireRefusal(const absl::Status& st, std::string_view field) {
  Require(st.code() == absl::StatusCode::kInvalidArgument);
  Require(Message(st).find(field) != std::string_view::npos);
}

inline bool IsCleanText(std::string_view s, size_t max_bytes) {
  return s.size() <= max_bytes && s.find('\0') == std::string_view::npos && IsValidUtf8(s);
}

inline bool HasSpaceOrControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7F) return true;
  }
  return false;
}

// Differential: accepted exactly when `want_ok`, and a refusal names `field`.
inline void RequireVerdict(const absl::Status& st, bool want_ok, std::string_view field) {
  Require(st.ok() == want_ok);
  if (!st.ok()) RequireRefusal(st, field);
}

}  // namespace aichat::fuzz
