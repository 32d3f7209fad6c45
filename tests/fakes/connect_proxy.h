// An HTTP CONNECT forward proxy for tests, on plain sockets: it tunnels each
// client to 127.0.0.1:<port of the CONNECT target>. It can also play a hostile
// proxy that appends bytes (e.g. a forged HTTP response) right after its
// "200 Connection established" answer, in the same write, as an attacker on
// the path would, to prove the client never reads them as the provider's reply.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace aichat::fakes {

struct ConnectProxyOptions {
  // Sent in the same write as the CONNECT answer; empty for an honest proxy.
  std::string after_established;
};

class ConnectProxy {
 public:
  explicit ConnectProxy(ConnectProxyOptions options = {});
  ~ConnectProxy();  // closes the listener and every tunnel, joins the threads
  ConnectProxy(const ConnectProxy&) = delete;
  ConnectProxy& operator=(const ConnectProxy&) = delete;

  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:PORT"
  // The request line of every CONNECT received, in order.
  std::vector<std::string> request_lines() const;

 private:
  void Accept();
  void Serve(int client);

  ConnectProxyOptions options_;
  int listener_ = -1;
  int port_ = 0;
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
  std::vector<int> open_fds_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> tunnels_ ABSL_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace aichat::fakes
