#include "services/user/user_checks.h"

#include "absl/strings/ascii.h"
#include "common/validate.h"

namespace aichat::user {

absl::StatusOr<std::string> NormalizeEmail(std::string_view raw) {
  std::string email(absl::StripAsciiWhitespace(absl::string_view(raw.data(), raw.size())));
  absl::AsciiStrToLower(&email);
  if (auto st = CheckText("email", email, kMaxEmail, true); !st.ok()) return st;
  auto at = email.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == email.size() ||
      email.find('@', at + 1) != std::string::npos) {
    return absl::InvalidArgumentError("email must look like name@example.com");
  }
  if (auto st = CheckNoSpaceOrControl("email", email); !st.ok()) return st;
  return email;
}

absl::Status CheckPassword(std::string_view password) {
  if (auto st = CheckText("password", password, kMaxPasswordBytes, true); !st.ok()) return st;
  if (CountCodePoints(password) < kMinPasswordChars) {
    return absl::InvalidArgumentError("password must be at least 8 characters");
  }
  return absl::OkStatus();
}

absl::Status CheckDisplayName(std::string_view display_name) {
  return CheckTextChars("display_name", display_name, kMaxDisplayName, false);
}

absl::Status CheckKeyName(std::string_view name) {
  return CheckText("name", name, kMaxKeyName, true);
}

}  // namespace aichat::user
