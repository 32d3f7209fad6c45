#include "services/ai-agent/request_checks.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/money.h"
#include "common/validate.h"

namespace aichat::agent {
namespace {

bool IsModelNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':' || c == '/' || c == '@';
}

bool IsLoopback(std::string_view host) {
  if (host == "localhost" || host == "::1") return true;
  if (!host.starts_with("127.")) return false;
  // An IPv4 address, not a name that starts like one (127.example.com).
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

bool HostAllowed(std::string_view host, const std::vector<std::string>& hosts) {
  if (hosts.empty()) return true;
  for (const auto& h : hosts) {
    if (h.starts_with("*.")) {
      if (host.ends_with(std::string_view(h).substr(1))) return true;
    } else if (host == h) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool IsProviderKeyVariable(std::string_view name) {
  constexpr std::string_view kPrefix = "AICHAT_PROVIDER_KEY_";
  if (name == "OPENAI_API_KEY") return true;
  if (!name.starts_with(kPrefix) || name.size() == kPrefix.size() || name.size() > 100) {
    return false;
  }
  for (char c : name.substr(kPrefix.size())) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

absl::Status CheckProviderUrl(const std::string& field, std::string_view url,
                              const ProviderPolicy& policy) {
  std::string_view rest;
  bool https;
  if (url.starts_with("https://")) {
    https = true;
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    https = false;
    rest = url.substr(7);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(field, " must start with https:// or http://"));
  }
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not carry credentials"));
  }
  std::string_view host = authority;
  if (host.starts_with("[")) {
    size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(field, " has an invalid host"));
    }
    host = host.substr(1, close - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    int port = 0;
    std::string_view digits = host.substr(colon + 1);
    if (!absl::SimpleAtoi(absl::string_view(digits.data(), digits.size()), &port) || port < 1 ||
        port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(field, " has an invalid port"));
    }
    host = host.substr(0, colon);
  }
  std::string lower = absl::AsciiStrToLower(absl::string_view(host.data(), host.size()));
  if (lower.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " has no host"));
  if (!https && !policy.allow_plain_http && !IsLoopback(lower)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field,
        " may use http:// only for a loopback address (the key would cross the network "
        "in clear); use https://"));
  }
  if (!IsLoopback(lower) && !HostAllowed(lower, policy.hosts)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " names a host that is not among the allowed provider hosts"));
  }
  return absl::OkStatus();
}

absl::Status ValidateTurnRequest(const TurnRequest& r) {
  if (r.stateless) {
    // The caller's messages are the whole context.
    if (r.conversation_id != 0 || r.regenerate) {
      return absl::InvalidArgumentError("a stateless turn names no conversation");
    }
    if (r.messages.empty()) {
      return absl::InvalidArgumentError("messages must hold at least one message");
    }
    if (r.messages.size() > kMaxStatelessMessages) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages may hold at most ", kMaxStatelessMessages, " messages"));
    }
    size_t total = 0;
    for (size_t i = 0; i < r.messages.size(); ++i) {
      const auto& [role, content] = r.messages[i];
      const std::string field = absl::StrCat("messages[", i, "]");
      if (role != "system" && role != "user" && role != "assistant" && role != "developer") {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ".role must be system, developer, user or assistant"));
      }
      if (auto st = CheckText(field + ".content", content, kMaxContentBytes, false); !st.ok()) {
        return st;
      }
      total += content.size();
    }
    if (total > kMaxStatelessBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages hold more than ", kMaxStatelessBytes, " bytes of content"));
    }
  } else {
    if (r.conversation_id <= 0) {
      return absl::InvalidArgumentError("conversation_id must be positive");
    }
    if (!r.regenerate) {
      if (auto st = CheckText("content", r.content, kMaxContentBytes, true); !st.ok()) return st;
    }
  }
  if (auto st = CheckText("model", r.model, kMaxModelBytes, false); !st.ok()) return st;
  if (auto st = CheckText("idempotency_key", r.idempotency_key, kMaxIdempotencyKeyBytes, false);
      !st.ok()) {
    return st;
  }
  if (r.max_output_tokens.has_value() && *r.max_output_tokens < 1) {
    return absl::InvalidArgumentError("max_output_tokens must be at least 1");
  }
  if (r.temperature.has_value() && !(*r.temperature >= 0.0 && *r.temperature <= 2.0)) {
    return absl::InvalidArgumentError("temperature must be between 0 and 2");
  }
  return absl::OkStatus();
}

absl::Status ValidateModelConfig(const v1::ModelConfig& m, const ProviderPolicy& policy) {
  if (m.name().empty() || m.name().size() > 100) {
    return absl::InvalidArgumentError("model.name must be 1 to 100 characters");
  }
  for (char c : m.name()) {
    if (!IsModelNameChar(c)) {
      return absl::InvalidArgumentError("model.name may use letters, digits and - _ . : / @");
    }
  }
  if (auto st = CheckText("model.provider_model", m.provider_model(), 200, false); !st.ok()) {
    return st;
  }
  if (auto st = CheckText("model.base_url", m.base_url(), 500, false); !st.ok()) return st;
  if (!m.base_url().empty()) {
    if (auto st = CheckProviderUrl("model.base_url", m.base_url(), policy); !st.ok()) return st;
  }
  if (!m.api_key_env().empty() && !IsProviderKeyVariable(m.api_key_env())) {
    return absl::InvalidArgumentError(
        "model.api_key_env must be OPENAI_API_KEY or a variable named AICHAT_PROVIDER_KEY_<NAME> "
        "(A-Z, 0-9, _)");
  }
  for (int i = 0; i < m.deployments_size(); ++i) {
    const v1::Deployment& d = m.deployments(i);
    const std::string f = absl::StrCat("model.deployments[", i, "]");
    if (!d.name().empty()) {
      bool ok = d.name().size() <= 40;
      for (char c : d.name()) {
        ok &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      }
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat(f, ".name may use a-z, 0-9, . _ - (1 to 40 characters)"));
      }
    }
    if (auto st = CheckText(f + ".base_url", d.base_url(), 500, false); !st.ok()) return st;
    if (!d.base_url().empty()) {
      if (auto st = CheckProviderUrl(f + ".base_url", d.base_url(), policy); !st.ok()) return st;
    }
    if (!d.api_key_env().empty() && !IsProviderKeyVariable(d.api_key_env())) {
      return absl::InvalidArgumentError(absl::StrCat(
          f, ".api_key_env must be OPENAI_API_KEY or a variable named AICHAT_PROVIDER_KEY_<NAME>"));
    }
    if (auto st = CheckText(f + ".provider_model", d.provider_model(), 200, false); !st.ok()) {
      return st;
    }
    if (d.weight() < 0 || d.weight() > 1000) {
      return absl::InvalidArgumentError(absl::StrCat(f, ".weight must be 1 to 1000"));
    }
    if (d.max_concurrency() < 0 || d.max_concurrency() > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat(f, ".max_concurrency must be 0 (no cap) to 1000000"));
    }
  }
  absl::flat_hash_map<std::string, int> names;
  for (int i = 0; i < m.deployments_size(); ++i) {
    // Unnamed ones are d1, d2… by position; a name is a deployment's circuit and metrics.
    std::string name =
        m.deployments(i).name().empty() ? absl::StrCat("d", i + 1) : m.deployments(i).name();
    if (!names.emplace(name, i).second) {
      return absl::InvalidArgumentError(absl::StrCat("model.deployments[", i, "].name \"", name,
                                                     "\" is already the name of deployments[",
                                                     names[name], "]"));
    }
  }
  if (m.deployments_size() > 32) {
    return absl::InvalidArgumentError("model.deployments may hold at most 32 deployments");
  }
  if (m.fallbacks_size() > 8) {
    return absl::InvalidArgumentError("model.fallbacks may name at most 8 models");
  }
  for (int i = 0; i < m.fallbacks_size(); ++i) {
    if (m.fallbacks(i) == m.name()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.fallbacks[", i, "] names the model itself"));
    }
  }
  for (auto [field, v] :
       {std::pair{"model.input_price_micros_per_mtok", m.input_price_micros_per_mtok()},
        std::pair{"model.cached_input_price_micros_per_mtok",
                  m.cached_input_price_micros_per_mtok()},
        std::pair{"model.output_price_micros_per_mtok", m.output_price_micros_per_mtok()}}) {
    // The same range the ledger accepts: a turn's usage event is never refused for it.
    if (v < 0 || v > kMaxPriceMicrosPerMtok) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be 0 to ", kMaxPriceMicrosPerMtok, " (USD 10,000 per 1M)"));
    }
  }
  if (m.context_window() < 2) {
    return absl::InvalidArgumentError("model.context_window must be at least 2");
  }
  if (m.max_output_tokens() < 1 || m.max_output_tokens() >= m.context_window()) {
    return absl::InvalidArgumentError(
        "model.max_output_tokens must be at least 1 and less than context_window");
  }
  if (!(m.default_temperature() >= 0 && m.default_temperature() <= 2)) {
    return absl::InvalidArgumentError("model.default_temperature must be between 0 and 2");
  }
  return absl::OkStatus();
}

}  // namespace aichat::agent

namespace aichat::agent {

absl::Status CheckFallbacks(const v1::ModelConfig& m, const std::vector<ModelRecord>& saved) {
  absl::flat_hash_map<std::string, const ModelRecord*> by_name;
  for (const auto& r : saved) by_name[r.name] = &r;
  for (int i = 0; i < m.fallbacks_size(); ++i) {
    auto it = by_name.find(m.fallbacks(i));
    if (it == by_name.end() || it->first == m.name()) {
      if (it == by_name.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.fallbacks[", i, "]: no model \"", m.fallbacks(i), "\""));
      }
    } else if (!it->second->enabled) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.fallbacks[", i, "]: model \"", m.fallbacks(i), "\" is disabled"));
    }
  }
  // No cycle: walk the fallbacks from `m`, with `m`'s new list in place of its old one.
  auto next = [&](const std::string& name) -> std::vector<std::string> {
    if (name == m.name()) return {m.fallbacks().begin(), m.fallbacks().end()};
    auto it = by_name.find(name);
    return it == by_name.end() ? std::vector<std::string>{} : it->second->fallbacks;
  };
  std::vector<std::string> stack = next(m.name());
  absl::flat_hash_map<std::string, bool> seen;
  while (!stack.empty()) {
    std::string name = stack.back();
    stack.pop_back();
    if (name == m.name()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.fallbacks: following the fallbacks comes back to \"", m.name(), "\" (a cycle)"));
    }
    if (seen[name]) continue;
    seen[name] = true;
    for (auto& n : next(name)) stack.push_back(n);
  }
  return absl::OkStatus();
}

}  // namespace aichat::agent
