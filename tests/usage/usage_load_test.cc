#include <gtest/gtest.h>
TEST(UsageLoad, Placeholder) { GTEST_SKIP(); }
