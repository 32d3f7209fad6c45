#include "services/user/login_throttle.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace aichat::user {
namespace {

std::string AccountKey(absl::string_view account) { return absl::StrCat("a:", account); }
std::string AddressKey(absl::string_view address) { return absl::StrCat("i:", address); }

}  // namespace

LoginThrottle::LoginThrottle(LoginThrottleOptions options, std::function<absl::Time()> clock)
    : options_(options), clock_(std::move(clock)) {}

absl::Duration LoginThrottle::Wait(absl::string_view account, absl::string_view address) {
  if (options_.exempt_loopback && IsLoopbackAddress(address)) {
    address = "";
  }
  absl::Time now = clock_();
  absl::Duration wait = absl::ZeroDuration();
  absl::MutexLock lock(&mu_);
  for (const std::string& key : {account.empty() ? std::string() : AccountKey(account),
                                 address.empty() ? std::string() : AddressKey(address)}) {
    if (key.empty()) {
      continue;
    }
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.blocked_until > now) {
      wait = std::max(wait, it->second.blocked_until - now);
    }
  }
  return wait;
}

void LoginThrottle::RecordFailure(absl::string_view account, absl::string_view address) {
  if (options_.exempt_loopback && IsLoopbackAddress(address)) {
    address = "";
  }
  absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  if (!account.empty() && options_.free_failures_per_account > 0) {
    Fail(AccountKey(account), options_.free_failures_per_account, now);
  }
  if (!address.empty() && options_.free_failures_per_address > 0) {
    Fail(AddressKey(address), options_.free_failures_per_address, now);
  }
  Trim(now);
}

void LoginThrottle::RecordSuccess(absl::string_view account) {
  absl::MutexLock lock(&mu_);
  entries_.erase(AccountKey(account));
}

void LoginThrottle::Fail(const std::string& key, int free_failures, absl::Time now) {
  Entry& e = entries_[key];
  if (e.failures > 0 && now - e.last_failure >= options_.forget_after) {
    e = Entry{};
  }
  ++e.failures;
  e.last_failure = now;
  int over = e.failures - free_failures;
  if (over > 0) {
    absl::Duration delay = options_.base_delay;
    for (int i = 1; i < over && delay < options_.max_delay; ++i) {
      delay *= 2;
    }
    e.blocked_until = now + std::min(delay, options_.max_delay);
  }
}

void LoginThrottle::Trim(absl::Time now) {
  if (entries_.size() <= options_.max_tracked_keys) {
    return;
  }
  absl::erase_if(entries_, [&](const auto& kv) {
    return kv.second.blocked_until <= now && now - kv.second.last_failure >= options_.forget_after;
  });
  // Still full (a flood from many addresses): forget the stalest half, keeping
  // the keys that failed most recently, which are the ones under attack.
  if (entries_.size() > options_.max_tracked_keys) {
    std::vector<absl::Time> times;
    times.reserve(entries_.size());
    for (const auto& [key, e] : entries_) {
      times.push_back(e.last_failure);
    }
    auto mid = times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2);
    std::nth_element(times.begin(), mid, times.end());
    absl::Time cutoff = *mid;
    absl::erase_if(entries_, [&](const auto& kv) { return kv.second.last_failure < cutoff; });
  }
}

std::string ClientAddress(absl::string_view peer_view) {
  std::string peer = absl::StrReplaceAll(peer_view, {{"%5B", "["}, {"%5D", "]"}});
  absl::string_view p = peer;
  if (absl::StartsWith(p, "ipv4:")) {
    p.remove_prefix(5);
    return std::string(p.substr(0, p.rfind(':')));
  }
  if (absl::StartsWith(p, "ipv6:")) {
    p.remove_prefix(5);
    if (absl::StartsWith(p, "[")) {
      p = p.substr(
          1, p.find(']') == absl::string_view::npos ? absl::string_view::npos : p.find(']') - 1);
    }
    std::string host(p.substr(0, p.find('%')));  // no zone id
    in6_addr a{};
    if (inet_pton(AF_INET6, host.c_str(), &a) != 1) {
      return host;
    }
    if (IN6_IS_ADDR_LOOPBACK(&a)) {
      return "::1";
    }
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
      char v4[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &a.s6_addr[12], v4, sizeof v4);
      return v4;
    }
    std::memset(&a.s6_addr[8], 0, 8);
    char out[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a, out, sizeof out);
    return absl::StrCat(out, "/64");
  }
  if (absl::StartsWith(p, "unix:") || absl::StartsWith(p, "unix-abstract:")) {
    return "unix";
  }
  return std::string(p);
}

bool IsLoopbackAddress(absl::string_view address) {
  return absl::StartsWith(address, "127.") || address == "::1" || address == "unix";
}

}  // namespace aichat::user
