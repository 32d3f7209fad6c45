// Where the `aichat` CLI keeps its login: `credentials` inside a directory of
// its own ($XDG_CONFIG_HOME/aichat, else ~/.config/aichat) that it creates with
// mode 0700. Tokens are bearer secrets, so the store refuses a directory or a
// file that is a symlink (someone could point it at a place they can read),
// that is not the user's own, or that is not a directory / regular file; it
// tightens the user's own directory to 0700 and file to 0600. Every access goes
// through a descriptor of the directory opened with O_NOFOLLOW, so a swap after
// the check changes nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aichat::cli {

struct Credentials {
  std::string access_token;
  std::string refresh_token;
  int64_t expires_at = 0;  // unix seconds
  std::string email;
  int64_t user_id = 0;
};

class CredentialStore {
 public:
  explicit CredentialStore(std::string dir) : dir_(std::move(dir)) {}
  // $XDG_CONFIG_HOME/aichat, else $HOME/.config/aichat.
  static std::string DefaultDir();

  const std::string& dir() const { return dir_; }
  std::string path() const { return dir_ + "/credentials"; }

  // nullopt when nobody is logged in; FAILED_PRECONDITION naming the path when
  // the directory or the file is unsafe (symlink, someone else's, wrong type).
  absl::StatusOr<std::optional<Credentials>> Load() const;
  // Creates the directory (0700) when missing; writes the file (0600) atomically.
  absl::Status Save(const Credentials& credentials) const;
  // Removes the file; OK when there is none.
  absl::Status Forget() const;

 private:
  // The directory, opened without following a symlink and checked; `create`
  // makes it (and its parent) when missing.
  absl::StatusOr<int> OpenDir(bool create) const;

  std::string dir_;
};

}  // namespace aichat::cli
