// The CLI's credential store on a real file system: private directory and file,
// and no symlink (directory, file or temporary file) can redirect the tokens.
#include "cli/credential_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace aichat::cli {
namespace {

namespace fs = std::filesystem;

class CredentialStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/aichat-cred-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    base_ = tmpl;
  }
  void TearDown() override { fs::remove_all(base_); }

  static mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 0777;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  Credentials Sample() const { return {"acc-SECRET", "rt_SECRET", 1700000000, "a@x.io", 7}; }

  std::string base_;
};

TEST_F(CredentialStoreTest, SavesIntoAPrivateDirectoryItCreates) {
  CredentialStore store(base_ + "/config/aichat");
  auto none = store.Load();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store.Save(Sample()).ok());
  EXPECT_EQ(Mode(base_ + "/config/aichat"), 0700u);
  EXPECT_EQ(Mode(store.path()), 0600u);
  auto loaded = store.Load();
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_EQ((*loaded)->access_token, "acc-SECRET");
  EXPECT_EQ((*loaded)->refresh_token, "rt_SECRET");
  EXPECT_EQ((*loaded)->expires_at, 1700000000);
  EXPECT_EQ((*loaded)->user_id, 7);
  ASSERT_TRUE(store.Forget().ok());
  EXPECT_FALSE(fs::exists(store.path()));
  EXPECT_TRUE(store.Forget().ok());  // nothing to forget is fine
}

TEST_F(CredentialStoreTest, TightensItsOwnLooseDirectoryAndFile) {
  fs::create_directories(base_ + "/aichat");
  chmod((base_ + "/aichat").c_str(), 0755);
  CredentialStore store(base_ + "/aichat");
  ASSERT_TRUE(store.Save(Sample()).ok());
  EXPECT_EQ(Mode(base_ + "/aichat"), 0700u);
  chmod(store.path().c_str(), 0644);
  ASSERT_TRUE(store.Load().ok());
  EXPECT_EQ(Mode(store.path()), 0600u);
}

TEST_F(CredentialStoreTest, RefusesASymlinkedDirectory) {
  fs::create_directories(base_ + "/elsewhere");
  fs::create_directory_symlink(base_ + "/elsewhere", base_ + "/aichat");
  CredentialStore store(base_ + "/aichat");
  absl::Status saved = store.Save(Sample());
  EXPECT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(saved.message().find("symlink"), std::string::npos) << saved;
  EXPECT_TRUE(fs::is_empty(base_ + "/elsewhere"));
  EXPECT_EQ(store.Load().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.Forget().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CredentialStoreTest, RefusesASymlinkedFile) {
  CredentialStore store(base_ + "/aichat");
  ASSERT_TRUE(store.Save(Sample()).ok());
  fs::remove(store.path());
  std::ofstream(base_ + "/readable-by-others") << "";
  fs::create_symlink(base_ + "/readable-by-others", store.path());
  absl::Status saved = store.Save(Sample());
  EXPECT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(saved.message().find("symlink"), std::string::npos) << saved;
  EXPECT_EQ(Read(base_ + "/readable-by-others"), "");
  EXPECT_EQ(store.Load().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CredentialStoreTest, APlantedTemporaryFileDoesNotRedirectTheWrite) {
  CredentialStore store(base_ + "/aichat");
  ASSERT_TRUE(store.Save(Sample()).ok());
  std::ofstream(base_ + "/target") << "";
  fs::create_symlink(base_ + "/target", store.path() + ".tmp");
  ASSERT_TRUE(store.Save(Sample()).ok());
  EXPECT_EQ(Read(base_ + "/target"), "");
  EXPECT_FALSE(fs::is_symlink(store.path()));
  EXPECT_EQ(Mode(store.path()), 0600u);
}

TEST_F(CredentialStoreTest, RefusesADirectoryOfAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to hand the directory to another user";
  fs::create_directories(base_ + "/aichat");
  ASSERT_EQ(chown((base_ + "/aichat").c_str(), 65534, 65534), 0);
  CredentialStore store(base_ + "/aichat");
  absl::Status saved = store.Save(Sample());
  EXPECT_EQ(saved.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(saved.message().find("another user"), std::string::npos) << saved;
}

}  // namespace
}  // namespace aichat::cli
