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

TEST(ConfigTest, ConnectionAgeAndItsGrace) {
  Config c("test");
  AddCommonSettings(c, 1, 2);
  setenv("DATABASE_URL", "postgresql://x", 1);
  setenv("AICHAT_JWT_PUBLIC_KEYS", "k", 1);
  setenv("AICHAT_SHUTDOWN_GRACE", "45s", 1);
  unsetenv("AICHAT_MAX_CONNECTION_AGE");
  unsetenv("AICHAT_MAX_CONNECTION_AGE_GRACE");
  const char* argv[] = {"prog"};
  ASSERT_TRUE(c.Parse(1, const_cast<char**>(argv)).ok());
  auto s = ReadCommonSettings(c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->max_connection_age, absl::Minutes(5));
  EXPECT_EQ(s->max_connection_age_grace, absl::Seconds(45));  // the shutdown grace

  Config d("test");
  AddCommonSettings(d, 1, 2);
  const char* flags[] = {"prog", "--max_connection_age=0", "--max_connection_age_grace=2s"};
  ASSERT_TRUE(d.Parse(3, const_cast<char**>(flags)).ok());
  s = ReadCommonSettings(d);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->max_connection_age, absl::ZeroDuration());
  EXPECT_EQ(s->max_connection_age_grace, absl::Seconds(2));

  Config e("test");
  AddCommonSettings(e, 1, 2);
  const char* bad[] = {"prog", "--max_connection_age=soon"};
  ASSERT_TRUE(e.Parse(2, const_cast<char**>(bad)).ok());
  EXPECT_NE(ReadCommonSettings(e).status().message().find("AICHAT_MAX_CONNECTION_AGE"),
            std::string::npos);
  for (const char* v : {"DATABASE_URL", "AICHAT_JWT_PUBLIC_KEYS", "AICHAT_SHUTDOWN_GRACE"}) {
    unsetenv(v);
  }
}

}  // namespace
}  // namespace aichat
