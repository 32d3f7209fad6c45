#include "tests/testing/postgres.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace aichat::testing {
namespace {

constexpr char kBin[] = "/usr/lib/postgresql/15/bin";

std::string AsPostgres(const std::string& cmd) {
  // initdb and postgres refuse to run as root.
  if (geteuid() == 0) return absl::StrCat("runuser -u postgres -- ", cmd);
  return cmd;
}

int Run(const std::string& cmd) { return std::system(cmd.c_str()); }

void AdminExec(const std::string& url, const std::string& sql) {
  PGconn* conn = PQconnectdb(url.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::cerr << "test postgres: cannot connect: " << PQerrorMessage(conn);
    std::abort();
  }
  PGresult* r = PQexec(conn, sql.c_str());
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    std::cerr << "test postgres: " << sql << ": " << PQerrorMessage(conn);
    std::abort();
  }
  PQclear(r);
  PQfinish(conn);
}

}  // namespace

int FreePort() {
  // Below the kernel's ephemeral range: a port bind(0) hands out may go to any outgoing
  // connection once released, and the server restarts on this port in some tests.
  int high = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> high;
  constexpr int kLow = 10000;
  std::random_device seed;
  std::mt19937 rng(seed());
  for (int attempt = 0; attempt < 2000; ++attempt) {
    int port = high - 1 > kLow ? std::uniform_int_distribution<int>(kLow, high - 1)(rng) : 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    socklen_t len = sizeof addr;
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
              getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    close(fd);
    if (ok) return ntohs(addr.sin_port);
  }
  std::cerr << "test postgres: no free port on 127.0.0.1\n";
  std::abort();
}

TestPostgres& TestPostgres::Shared() {
  static TestPostgres* shared = [] {
    const char* port = std::getenv("AICHAT_TEST_PG_PORT");
    int p = 0;
    if (port != nullptr && absl::SimpleAtoi(port, &p) && p > 0) {
      auto* pg = new TestPostgres;
      pg->port_ = p;
      return pg;
    }
    // Owned by a static unique_ptr so the cluster stops at exit.
    static std::unique_ptr<TestPostgres> own = StartPrivate();
    return own.get();
  }();
  return *shared;
}

std::unique_ptr<TestPostgres> TestPostgres::StartPrivate() {
  std::unique_ptr<TestPostgres> pg(new TestPostgres);
  char tmpl[] = "/tmp/aichat-pg-XXXXXX";
  char* dir = mkdtemp(tmpl);
  if (dir == nullptr) {
    std::cerr << "test postgres: mkdtemp failed\n";
    std::abort();
  }
  pg->data_dir_ = dir;
  if (geteuid() == 0) Run(absl::StrCat("chown postgres ", pg->data_dir_));
  std::string initdb = AsPostgres(absl::StrCat(kBin, "/initdb -D ", pg->data_dir_,
                                               "/data -A trust -U postgres --no-sync -E UTF8 "
                                               "--locale=C.UTF-8 > ",
                                               pg->data_dir_, "/initdb.log 2>&1"));
  if (Run(initdb) != 0) {
    std::cerr << "test postgres: initdb failed, see " << pg->data_dir_ << "/initdb.log\n";
    std::abort();
  }
  pg->port_ = FreePort();
  if (auto st = pg->Start(); !st.ok()) {
    std::cerr << "test postgres: " << st.message() << "\n";
    std::abort();
  }
  return pg;
}

absl::Status TestPostgres::Start() {
  if (data_dir_.empty()) return absl::FailedPreconditionError("not our cluster");
  std::string cmd = AsPostgres(absl::StrCat(
      kBin, "/pg_ctl -D ", data_dir_, "/data -l ", data_dir_, "/server.log -w -t 30 -o \"-p ",
      port_, " -c listen_addresses=127.0.0.1 -k ", data_dir_,
      " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300\" "
      "start > /dev/null"));
  if (Run(cmd) != 0) return absl::InternalError("pg_ctl start failed");
  running_ = true;
  return absl::OkStatus();
}

absl::Status TestPostgres::Stop() {
  if (data_dir_.empty()) return absl::FailedPreconditionError("not our cluster");
  std::string cmd =
      AsPostgres(absl::StrCat(kBin, "/pg_ctl -D ", data_dir_, "/data -m fast -w stop > /dev/null"));
  if (Run(cmd) != 0) return absl::InternalError("pg_ctl stop failed");
  running_ = false;
  return absl::OkStatus();
}

TestPostgres::~TestPostgres() {
  if (!data_dir_.empty()) {
    if (running_) {
      Run(AsPostgres(absl::StrCat(kBin, "/pg_ctl -D ", data_dir_,
                                  "/data -m immediate -w stop > /dev/null 2>&1")));
    }
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
  }
}

std::string TestPostgres::admin_url() const {
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/postgres");
}

std::string TestPostgres::CreateDatabase() {
  static std::atomic<int> counter{0};
  std::string name =
      absl::StrCat("t", getpid(), "_", counter++, "_", absl::ToUnixMicros(absl::Now()) % 1000000);
  AdminExec(admin_url(), absl::StrCat("CREATE DATABASE ", name));
  return absl::StrCat("postgresql://postgres@127.0.0.1:", port_, "/", name);
}

}  // namespace aichat::testing
