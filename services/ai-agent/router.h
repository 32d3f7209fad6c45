// Picks the deployment a provider call goes to and keeps each deployment's health, as
// this replica sees it (replicas do not share it: each learns on its own within a few
// calls). Among the deployments that may be called now — circuit closed (or half-open
// with no probe out), no 429 cooldown, under max_concurrency — it takes the one with
// the fewest calls in flight for its weight, breaking ties at random by weight.
// Connect errors, 5xx, timeouts and broken streams count as failures: after
// `failures_to_open` in a row the circuit opens for `open_for`, then one probe call
// decides (success closes it, failure opens it again). A 429 cools the deployment
// down for its Retry-After (or a default); running out of quota for longer.
// An open circuit is a reason to go elsewhere, not to refuse: when no deployment of any
// candidate model may be called, the turn asks again with `open_ok` and calls an open one
// (a single-deployment model without fallbacks keeps working the moment its provider is
// back). Cooldowns and max_concurrency hold even then.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/ai-agent/agent_store.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
}  // namespace prometheus

namespace aichat::agent {

struct RouterOptions {
  int failures_to_open = 3;
  absl::Duration open_for = absl::Seconds(30);
  absl::Duration default_cooldown = absl::Seconds(10);  // a 429 without Retry-After
  absl::Duration quota_cooldown = absl::Minutes(5);     // insufficient_quota
};

// Where one call goes. Report it exactly once.
struct Route {
  std::string model;  // the model whose deployment this is
  int index = 0;      // in DeploymentsOf(model)
  DeploymentRecord deployment;
  bool probe = false;  // the one call of a half-open circuit
};

enum class CallResult {
  kOk,
  kFailed,          // connect, TLS, 5xx, timeout, stall, broken stream, 401/403/404
  kRateLimited,     // 429
  kQuotaExhausted,  // 429 insufficient_quota
  kNeutral,         // says nothing of the deployment: cancelled, 400, the caller's deadline
};

struct DeploymentHealth {
  std::string circuit = "closed";  // closed | open | half_open
  int in_flight = 0;
  std::optional<absl::Time> cooldown_until;
  int consecutive_failures = 0;
};

class Router {
 public:
  explicit Router(RouterOptions options = {}, prometheus::Registry* registry = nullptr);

  // The deployments of `m`: its own, or its base_url/api_key_env/provider_model as one.
  // Empty fields of a deployment are filled from the model; names default to d1, d2...
  static std::vector<DeploymentRecord> DeploymentsOf(const ModelRecord& m);

  // A deployment of `m` not in `tried` that may be called now; nullopt if none. With
  // `open_ok`, deployments whose circuit is open (or whose probe is out) count as callable.
  std::optional<Route> Pick(const ModelRecord& m, const std::vector<int>& tried, absl::Time now,
                            bool open_ok = false);
  void Report(const Route& route, CallResult result, std::optional<absl::Duration> retry_after,
              absl::Time now);
  DeploymentHealth Health(const std::string& model, const std::string& deployment, absl::Time now);

 private:
  struct State {
    int in_flight = 0;
    int failures = 0;
    absl::Time open_until = absl::InfinitePast();  // open while now < open_until
    bool half_open_probe_out = false;
    bool tripped = false;  // opened and not yet closed by a good probe
    absl::Time cooldown_until = absl::InfinitePast();
  };
  using Key = std::pair<std::string, std::string>;  // model, deployment name
  static std::string Circuit(const State& s, absl::Time now);
  void Publish(const Key& key, const State& s, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const RouterOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<Key, State> states_ ABSL_GUARDED_BY(mu_);
  absl::BitGen rng_ ABSL_GUARDED_BY(mu_);

  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Gauge>* circuit_ = nullptr;
  prometheus::Family<prometheus::Gauge>* in_flight_ = nullptr;
};

}  // namespace aichat::agent
