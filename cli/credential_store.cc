// The CLI's credential file; see credential_store.h.
#include "cli/credential_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aichat::cli {
namespace {

constexpr char kFile[] = "credentials";
constexpr char kTmp[] = "credentials.tmp";

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

absl::Status Unsafe(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(
      absl::StrCat(path, " ", why, "; refusing to keep the login there"));
}

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Closes a descriptor when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

std::string CredentialStore::DefaultDir() {
  std::string base = Env("XDG_CONFIG_HOME");
  if (base.empty()) {
    std::string home = Env("HOME");
    base = (home.empty() ? std::string("/tmp") : home) + "/.config";
  }
  return base + "/aichat";
}

absl::StatusOr<int> CredentialStore::OpenDir(bool create) const {
  if (create) {
    std::string parent = dir_.substr(0, dir_.rfind('/'));
    if (!parent.empty()) mkdir(parent.c_str(), 0700);  // ~/.config; may well exist
    if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
      return Errno("cannot create", dir_);
    }
  }
  int fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP || errno == ENOTDIR) {
      struct stat st {};
      if (lstat(dir_.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        return Unsafe(dir_, "is a symlink");
      }
      return Unsafe(dir_, "is not a directory");
    }
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(dir_, " does not exist"));
    return Errno("cannot open", dir_);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    absl::Status s = Errno("cannot stat", dir_);
    close(fd);
    return s;
  }
  if (st.st_uid != geteuid()) {
    close(fd);
    return Unsafe(dir_, "belongs to another user");
  }
  if ((st.st_mode & 077) != 0 && fchmod(fd, 0700) != 0) {
    absl::Status s = Errno("cannot make private (chmod 700)", dir_);
    close(fd);
    return s;
  }
  return fd;
}

absl::StatusOr<std::optional<Credentials>> CredentialStore::Load() const {
  auto dir = OpenDir(/*create=*/false);
  if (absl::IsNotFound(dir.status())) return std::nullopt;
  if (!dir.ok()) return dir.status();
  Fd d{*dir};
  Fd f{openat(d.fd, kFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (f.fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP) return Unsafe(path(), "is a symlink");
    return Errno("cannot read", path());
  }
  struct stat st {};
  if (fstat(f.fd, &st) != 0) return Errno("cannot stat", path());
  if (!S_ISREG(st.st_mode)) return Unsafe(path(), "is not a regular file");
  if (st.st_uid != geteuid()) return Unsafe(path(), "belongs to another user");
  if ((st.st_mode & 077) != 0) (void)fchmod(f.fd, 0600);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(f.fd, buf, sizeof buf)) > 0 && text.size() < (1 << 20)) {
    text.append(buf, static_cast<size_t>(n));
  }
  if (n < 0) return Errno("cannot read", path());
  Credentials c;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) continue;
    absl::string_view k = line.substr(0, eq);
    absl::string_view v = line.substr(eq + 1);
    if (k == "access_token") c.access_token = std::string(v);
    if (k == "refresh_token") c.refresh_token = std::string(v);
    if (k == "expires_at") (void)absl::SimpleAtoi(v, &c.expires_at);
    if (k == "email") c.email = std::string(v);
    if (k == "user_id") (void)absl::SimpleAtoi(v, &c.user_id);
  }
  if (c.access_token.empty()) return std::nullopt;
  return c;
}

absl::Status CredentialStore::Save(const Credentials& c) const {
  auto dir = OpenDir(/*create=*/true);
  if (!dir.ok()) return dir.status();
  Fd d{*dir};
  struct stat st {};
  if (fstatat(d.fd, kFile, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) return Unsafe(path(), "is a symlink");
    if (!S_ISREG(st.st_mode)) return Unsafe(path(), "is not a regular file");
  }
  unlinkat(d.fd, kTmp, 0);  // a leftover of an interrupted save (or a planted symlink)
  Fd f{openat(d.fd, kTmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)};
  if (f.fd < 0) return Errno("cannot write", path() + ".tmp");
  std::string text = absl::StrCat(
      "access_token=", c.access_token, "\nrefresh_token=", c.refresh_token,
      "\nexpires_at=", c.expires_at, "\nemail=", c.email, "\nuser_id=", c.user_id, "\n");
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = write(f.fd, p, left);
    if (n <= 0) {
      absl::Status s = Errno("cannot write", path() + ".tmp");
      unlinkat(d.fd, kTmp, 0);
      return s;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (fsync(f.fd) != 0 || renameat(d.fd, kTmp, d.fd, kFile) != 0) {
    absl::Status s = Errno("cannot save", path());
    unlinkat(d.fd, kTmp, 0);
    return s;
  }
  return absl::OkStatus();
}

absl::Status CredentialStore::Forget() const {
  auto dir = OpenDir(/*create=*/false);
  if (absl::IsNotFound(dir.status())) return absl::OkStatus();
  if (!dir.ok()) return dir.status();
  Fd d{*dir};
  if (unlinkat(d.fd, kFile, 0) != 0 && errno != ENOENT) return Errno("cannot remove", path());
  return absl::OkStatus();
}

}  // namespace aichat::cli
