// A real PostgreSQL for tests. The test script starts one throwaway cluster and
// exports AICHAT_TEST_PG_PORT; without it (running a test binary by hand) the
// first test starts a private cluster under /tmp and stops it at exit. Every
// test gets fresh databases from CreateDatabase().
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"

namespace aichat::testing {

class TestPostgres {
 public:
  // The shared server for this process.
  static TestPostgres& Shared();
  // A cluster of this test's own, e.g. to stop and start it mid-test.
  static std::unique_ptr<TestPostgres> StartPrivate();

  ~TestPostgres();

  // CREATE DATABASE with a unique name; returns its connection URL.
  std::string CreateDatabase();
  std::string admin_url() const;
  int port() const { return port_; }

  // Only for clusters this process started.
  absl::Status Stop();
  absl::Status Start();

 private:
  TestPostgres() = default;
  std::string data_dir_;  // empty when the server is not ours
  int port_ = 0;
  bool running_ = false;
};

// A free TCP port on 127.0.0.1, below the ephemeral range (bound and released).
int FreePort();

}  // namespace aichat::testing
