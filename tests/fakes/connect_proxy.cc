// A CONNECT proxy for tests (honest or hostile); see connect_proxy.h.
#include "tests/fakes/connect_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace aichat::fakes {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n <= 0) {
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

ConnectProxy::ConnectProxy(ConnectProxyOptions options) : options_(std::move(options)) {
  listener_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(0);
  bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  listen(listener_, 16);
  socklen_t len = sizeof addr;
  getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { Accept(); });
}

ConnectProxy::~ConnectProxy() {
  std::vector<std::thread> tunnels;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : open_fds_) {
      shutdown(fd, SHUT_RDWR);  // wakes the tunnels' poll()
    }
  }
  shutdown(listener_, SHUT_RDWR);  // wakes accept()
  acceptor_.join();
  close(listener_);
  {
    absl::MutexLock lock(&mu_);
    tunnels.swap(tunnels_);
  }
  for (std::thread& t : tunnels) {
    t.join();
  }
}

std::string ConnectProxy::url() const { return absl::StrCat("http://127.0.0.1:", port_); }

std::vector<std::string> ConnectProxy::request_lines() const {
  absl::MutexLock lock(&mu_);
  return lines_;
}

void ConnectProxy::Accept() {
  for (;;) {
    int client = accept(listener_, nullptr, nullptr);
    if (client < 0) {
      return;
    }
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      close(client);
      return;
    }
    open_fds_.push_back(client);
    tunnels_.emplace_back([this, client] { Serve(client); });
  }
}

void ConnectProxy::Serve(int client) {
  int upstream = -1;
  auto finish = [&] {
    absl::MutexLock lock(&mu_);
    for (int fd : {client, upstream}) {
      if (fd >= 0) {
        open_fds_.erase(std::remove(open_fds_.begin(), open_fds_.end(), fd), open_fds_.end());
        close(fd);
      }
    }
  };
  std::string head;
  char buf[4096];
  while (head.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = read(client, buf, sizeof buf);
    if (n <= 0) {
      finish();
      return;
    }
    head.append(buf, static_cast<size_t>(n));
  }
  std::string line = head.substr(0, head.find("\r\n"));
  {
    absl::MutexLock lock(&mu_);
    lines_.push_back(line);
  }
  // "CONNECT host:PORT HTTP/1.1": every target is served on loopback.
  std::string target = line.substr(8, line.find(' ', 8) - 8);
  int port = std::atoi(target.substr(target.rfind(':') + 1).c_str());
  upstream = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(port);
  {
    absl::MutexLock lock(&mu_);
    open_fds_.push_back(upstream);
  }
  if (connect(upstream, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const char bad[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
    (void)WriteAll(client, bad, sizeof bad - 1);
    finish();
    return;
  }
  std::string answer =
      absl::StrCat("HTTP/1.1 200 Connection established\r\n\r\n", options_.after_established);
  if (!WriteAll(client, answer.data(), answer.size())) {
    finish();
    return;
  }
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, 30000) <= 0) {
      break;
    }
    int from = (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : 1;
    ssize_t n = read(fds[from].fd, buf, sizeof buf);
    if (n <= 0 || !WriteAll(fds[1 - from].fd, buf, static_cast<size_t>(n))) {
      break;
    }
  }
  finish();
}

}  // namespace aichat::fakes
