#include "services/ai-agent/router.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace aichat::agent {

Router::Router(RouterOptions options, prometheus::Registry* registry) : options_(options) {
  if (registry == nullptr) return;
  requests_ = &prometheus::BuildCounter()
                   .Name("aichat_llm_deployment_requests_total")
                   .Help("Provider calls by model, deployment and result")
                   .Register(*registry);
  circuit_ = &prometheus::BuildGauge()
                  .Name("aichat_llm_deployment_circuit_state")
                  .Help("Circuit of a deployment on this replica: 0 closed, 1 half-open, 2 open")
                  .Register(*registry);
  in_flight_ = &prometheus::BuildGauge()
                    .Name("aichat_llm_deployment_in_flight")
                    .Help("Provider calls in flight per deployment on this replica")
                    .Register(*registry);
}

std::vector<DeploymentRecord> Router::DeploymentsOf(const ModelRecord& m) {
  std::vector<DeploymentRecord> out = m.deployments;
  if (out.empty()) out.push_back(DeploymentRecord{});
  for (size_t i = 0; i < out.size(); ++i) {
    DeploymentRecord& d = out[i];
    if (d.name.empty()) d.name = absl::StrCat("d", i + 1);
    if (d.base_url.empty()) d.base_url = m.base_url;
    if (d.api_key_env.empty()) d.api_key_env = m.api_key_env;
    if (d.provider_model.empty()) d.provider_model = m.provider_model;
    if (d.weight <= 0) d.weight = 1;
  }
  return out;
}

std::string Router::Circuit(const State& s, absl::Time now) {
  if (!s.tripped) return "closed";
  return now < s.open_until ? "open" : "half_open";
}

std::optional<Route> Router::Pick(const ModelRecord& m, const std::vector<int>& tried,
                                  absl::Time now, bool open_ok) {
  std::vector<DeploymentRecord> ds = DeploymentsOf(m);
  absl::MutexLock lock(&mu_);
  // Usable now, with their load per unit of weight.
  struct Candidate {
    int index;
    double load;
    bool probe;
  };
  std::vector<Candidate> usable;
  for (int i = 0; i < static_cast<int>(ds.size()); ++i) {
    if (std::find(tried.begin(), tried.end(), i) != tried.end()) continue;
    State& s = states_[Key{m.name, ds[i].name}];
    if (now < s.cooldown_until) continue;
    bool probe = false;
    if (s.tripped) {
      if (now < s.open_until || s.half_open_probe_out) {  // open, or probe out
        if (!open_ok) continue;
      } else {
        probe = true;
      }
    }
    if (ds[i].max_concurrency > 0 && s.in_flight >= ds[i].max_concurrency) continue;
    usable.push_back({i, static_cast<double>(s.in_flight) / ds[i].weight, probe});
  }
  if (usable.empty()) return std::nullopt;
  double least = usable[0].load;
  for (const auto& c : usable) least = std::min(least, c.load);
  int64_t total = 0;
  for (const auto& c : usable) total += c.load == least ? ds[c.index].weight : 0;
  int64_t draw = absl::Uniform<int64_t>(rng_, 0, total);
  const Candidate* chosen = nullptr;
  for (const auto& c : usable) {
    if (c.load != least) continue;
    draw -= ds[c.index].weight;
    if (draw < 0) {
      chosen = &c;
      break;
    }
  }
  if (chosen == nullptr) chosen = &usable.back();
  Key key{m.name, ds[chosen->index].name};
  State& s = states_[key];
  ++s.in_flight;
  if (chosen->probe) s.half_open_probe_out = true;
  Publish(key, s, now);
  return Route{m.name, chosen->index, ds[chosen->index], chosen->probe};
}

void Router::Report(const Route& route, CallResult result,
                    std::optional<absl::Duration> retry_after, absl::Time now) {
  Key key{route.model, route.deployment.name};
  absl::MutexLock lock(&mu_);
  State& s = states_[key];
  s.in_flight = std::max(0, s.in_flight - 1);
  if (route.probe) s.half_open_probe_out = false;
  const char* label = "neutral";
  switch (result) {
    case CallResult::kOk:
      label = "ok";
      s.failures = 0;
      s.tripped = false;
      break;
    case CallResult::kFailed:
      label = "failed";
      ++s.failures;
      if (route.probe || s.failures >= options_.failures_to_open) {
        s.tripped = true;
        s.open_until = now + options_.open_for;
      }
      break;
    case CallResult::kRateLimited:
      label = "rate_limited";
      s.cooldown_until = now + retry_after.value_or(options_.default_cooldown);
      break;
    case CallResult::kQuotaExhausted:
      label = "quota_exhausted";
      s.cooldown_until =
          now + std::max(options_.quota_cooldown, retry_after.value_or(absl::ZeroDuration()));
      break;
    case CallResult::kNeutral:
      break;
  }
  if (requests_ != nullptr) {
    requests_
        ->Add({{"model", route.model}, {"deployment", route.deployment.name}, {"result", label}})
        .Increment();
  }
  Publish(key, s, now);
}

DeploymentHealth Router::Health(const std::string& model, const std::string& deployment,
                                absl::Time now) {
  absl::MutexLock lock(&mu_);
  DeploymentHealth h;
  auto it = states_.find(Key{model, deployment});
  if (it == states_.end()) return h;
  const State& s = it->second;
  h.circuit = Circuit(s, now);
  h.in_flight = s.in_flight;
  if (now < s.cooldown_until) h.cooldown_until = s.cooldown_until;
  h.consecutive_failures = s.failures;
  return h;
}

void Router::Publish(const Key& key, const State& s, absl::Time now) {
  if (circuit_ == nullptr) return;
  const std::string c = Circuit(s, now);
  const prometheus::Labels labels{{"model", key.first}, {"deployment", key.second}};
  circuit_->Add(labels).Set(c == "closed" ? 0 : c == "half_open" ? 1 : 2);
  in_flight_->Add(labels).Set(s.in_flight);
}

}  // namespace aichat::agent
