// libFuzzer target for the user service's request checks (services/user/user_checks.h:
// NormalizeEmail, CheckPassword, CheckDisplayName, CheckKeyName), what Register, Login
// and CreateApiKey run before anything else. Differential against the documented rules.
#include <fuzzer/FuzzedDataProvider.h>

#include <string>

#include "fuzz/fuzz_util.h"
#include "services/user/user_checks.h"

using aichat::fuzz::HasSpaceOrControl;
using aichat::fuzz::IsCleanText;
using aichat::fuzz::Require;
using aichat::fuzz::RequireRefusal;
using aichat::fuzz::RequireVerdict;
namespace user = aichat::user;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::string email = in.ConsumeRandomLengthString(400);
  std::string password = in.ConsumeRandomLengthString(1100);
  std::string display_name = in.ConsumeRandomLengthString(500);
  std::string key_name = in.ConsumeRemainingBytesAsString();

  auto normalized = user::NormalizeEmail(email);
  if (normalized.ok()) {
    const std::string& e = *normalized;
    Require(!e.empty() && IsCleanText(e, user::kMaxEmail) && !HasSpaceOrControl(e));
    size_t at = e.find('@');
    Require(at != std::string::npos && at > 0 && at + 1 < e.size() &&
            e.find('@', at + 1) == std::string::npos);
    for (char c : e) Require(!(c >= 'A' && c <= 'Z'));
    auto again = user::NormalizeEmail(e);  // idempotent: a stored address logs in again
    Require(again.ok() && *again == e);
  } else {
    RequireRefusal(normalized.status(), "email");
  }

  bool password_ok = !password.empty() && IsCleanText(password, user::kMaxPasswordBytes) &&
                     aichat::CountCodePoints(password) >= user::kMinPasswordChars;
  RequireVerdict(user::CheckPassword(password), password_ok, "password");

  bool name_ok = IsCleanText(display_name, 4 * user::kMaxDisplayName) &&
                 aichat::CountCodePoints(display_name) <= user::kMaxDisplayName;
  RequireVerdict(user::CheckDisplayName(display_name), name_ok, "display_name");

  RequireVerdict(user::CheckKeyName(key_name),
                 !key_name.empty() && IsCleanText(key_name, user::kMaxKeyName), "name");
  return 0;
}
