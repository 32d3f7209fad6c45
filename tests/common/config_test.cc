#include "common/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace aichat {
namespace {

TEST(ConfigTest, FlagsOverrideEnvironmentOverrideDefaults) {
  setenv("AICHAT_TEST_A", "from-env", 1);
  setenv("AICHAT_TEST_B", "from-env", 1);
  Config c("test");
  c.Add("a", "AICHAT_TEST_A", "def", "a");
  c.Add("b", "AICHAT_TEST_B", "def", "b");
  c.Add("c", "AICHAT_TEST_C_UNSET", "def", "c");
  const char* argv[] = {"prog", "--b=from-flag", "sub", "word"};
  auto r = c.Parse(4, const_cast<char**>(argv));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_EQ(c.Get("a"), "from-env");
  EXPECT_EQ(c.Get("b"), "from-flag");
  EXPECT_EQ(c.Get("c"), "def");
  EXPECT_EQ(c.positional(), (std::vector<std::string>{"sub", "word"}));
}

TEST(ConfigTest, BadValuesAndUnknownFlagsAreClearErrors) {
  Config c("test");
  c.Add("n", "AICHAT_TEST_N_UNSET", "abc", "n");
  c.Add("d", "AICHAT_TEST_D_UNSET", "10 parsecs", "d");
  const char* argv[] = {"prog", "--nope=1"};
  auto r = c.Parse(2, const_cast<char**>(argv));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("--nope"), std::string::npos);
  EXPECT_NE(c.GetInt("n", 0, 10).status().message().find("AICHAT_TEST_N_UNSET"), std::string::npos);
  EXPECT_FALSE(c.GetDuration("d").ok());
}

TEST(ConfigTest, HelpNeverPrintsSecrets) {
  setenv("AICHAT_TEST_SECRET", "hunter2-secret", 1);
  Config c("test");
  c.Add("key", "AICHAT_TEST_SECRET", "default-secret", "a key", /*secret=*/true);
  EXPECT_EQ(c.HelpText().find("default-secret"), std::string::npos);
  EXPECT_NE(c.HelpText().find("AICHAT_TEST_SECRET"), std::string::npos);
}

TEST(ConfigTest, CommonSettingsNeedDatabaseAndKeys) {
  Config c("test");
  AddCommonSettings(c, 1, 2);
  unsetenv("DATABASE_URL");
  const char* argv[] = {"prog"};
  ASSERT_TRUE(c.Parse(1, const_cast<char**>(argv)).ok());
  EXPECT_NE(ReadCommonSettings(c).status().message().find("DATABASE_URL"), std::string::npos);
}

}  // namespace
}  // namespace aichat
