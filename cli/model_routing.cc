#include "cli/model_routing.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace aichat::cli {
namespace {

namespace v1 = agent::v1;

constexpr char kKeys[] = "name, url, key, model, weight, max";
// Upper bounds the agent enforces (request_checks.cc); checked here so that the error
// names the flag rather than a field of the request.
constexpr int32_t kMaxWeight = 1000;
constexpr int32_t kMaxConcurrency = 1000000;
constexpr size_t kMaxNameChars = 40;

absl::Status Bad(absl::string_view spec, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--deployment ", spec, ": ", why));
}

// The short key for a key of either spelling; empty when unknown.
absl::string_view Canonical(absl::string_view key) {
  if (key == "name" || key == "url" || key == "key" || key == "model" || key == "weight" ||
      key == "max") {
    return key;
  }
  if (key == "base_url") {
    return "url";
  }
  if (key == "api_key_env") {
    return "key";
  }
  if (key == "provider_model") {
    return "model";
  }
  if (key == "max_concurrency") {
    return "max";
  }
  return {};
}

bool ValidName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxNameChars) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

std::string NameAt(const v1::Deployment& d, int index) {
  return d.name().empty() ? absl::StrCat("d", index + 1) : d.name();
}

std::string StateText(const v1::DeploymentState& s) {
  return absl::StrFormat("%-9s %3d in flight", s.circuit().empty() ? "closed" : s.circuit(),
                         s.in_flight());
}

// What an operator should notice about a deployment's state, if anything.
std::string StateNotes(const v1::DeploymentState& s) {
  std::vector<std::string> notes;
  if (s.consecutive_failures() > 0) {
    notes.push_back(absl::StrCat(s.consecutive_failures(), " failures in a row"));
  }
  if (s.has_cooldown_until() && s.cooldown_until().seconds() > 0) {
    notes.push_back(
        absl::StrCat("cooling down (429) until ",
                     absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                                      absl::FromUnixSeconds(s.cooldown_until().seconds()),
                                      absl::UTCTimeZone())));
  }
  return notes.empty() ? "" : absl::StrCat("  (", absl::StrJoin(notes, "; "), ")");
}

bool Quiet(const v1::DeploymentState& s) {
  return (s.circuit().empty() || s.circuit() == "closed") && s.in_flight() == 0 &&
         s.consecutive_failures() == 0 && s.cooldown_until().seconds() == 0;
}

}  // namespace

absl::StatusOr<v1::Deployment> ParseDeploymentSpec(absl::string_view spec) {
  if (absl::StripAsciiWhitespace(spec).empty()) {
    return Bad("\"\"",
               absl::StrCat("empty; give key=value pairs separated by commas (keys: ", kKeys, ")"));
  }
  v1::Deployment d;
  std::vector<absl::string_view> seen;
  for (absl::string_view item : absl::StrSplit(spec, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return Bad(spec, absl::StrCat("\"", item, "\" is not key=value (keys: ", kKeys,
                                    "; a value cannot contain a comma)"));
    }
    const absl::string_view given = absl::StripAsciiWhitespace(item.substr(0, eq));
    const absl::string_view value = absl::StripAsciiWhitespace(item.substr(eq + 1));
    const absl::string_view key = Canonical(given);
    if (key.empty()) {
      return Bad(spec, absl::StrCat("unknown key \"", given, "\" (keys: ", kKeys, ")"));
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      return Bad(spec, absl::StrCat(key, " is given twice"));
    }
    seen.push_back(key);
    if (value.empty()) {
      return Bad(spec,
                 absl::StrCat(key, "= needs a value (leave ", key, " out to use the model's own)"));
    }
    if (key == "name") {
      if (!ValidName(value)) {
        return Bad(spec, "name may use a-z, 0-9, . _ - (1 to 40 characters)");
      }
      d.set_name(std::string(value));
    } else if (key == "url") {
      d.set_base_url(std::string(value));
    } else if (key == "key") {
      d.set_api_key_env(std::string(value));
    } else if (key == "model") {
      d.set_provider_model(std::string(value));
    } else if (key == "weight") {
      int32_t w = 0;
      if (!absl::SimpleAtoi(value, &w) || w < 1 || w > kMaxWeight) {
        return Bad(spec, absl::StrCat("weight must be a whole number from 1 to ", kMaxWeight));
      }
      d.set_weight(w);
    } else {  // max
      int32_t n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > kMaxConcurrency) {
        return Bad(spec, absl::StrCat("max (calls in flight) must be a whole number from 0 (no "
                                      "cap) to ",
                                      kMaxConcurrency));
      }
      d.set_max_concurrency(n);
    }
  }
  return d;
}

std::string DeploymentSpec(const v1::Deployment& d) {
  std::vector<std::string> parts;
  if (!d.name().empty()) {
    parts.push_back(absl::StrCat("name=", d.name()));
  }
  if (!d.base_url().empty()) {
    parts.push_back(absl::StrCat("url=", d.base_url()));
  }
  if (!d.api_key_env().empty()) {
    parts.push_back(absl::StrCat("key=", d.api_key_env()));
  }
  if (!d.provider_model().empty()) {
    parts.push_back(absl::StrCat("model=", d.provider_model()));
  }
  if (d.weight() > 0) {
    parts.push_back(absl::StrCat("weight=", d.weight()));
  }
  if (d.max_concurrency() > 0) {
    parts.push_back(absl::StrCat("max=", d.max_concurrency()));
  }
  return absl::StrJoin(parts, ",");
}

bool HasOnlyImpliedDeployment(const v1::ModelConfig& m) {
  if (m.deployments_size() != 1) {
    return false;
  }
  const v1::Deployment& d = m.deployments(0);
  return (d.name().empty() || d.name() == "d1") && d.base_url().empty() &&
         d.api_key_env().empty() && d.provider_model().empty() && d.weight() <= 1 &&
         d.max_concurrency() == 0;
}

absl::Status ApplyRouting(const RoutingFlags& flags, v1::ModelConfig* m) {
  if (flags.no_deployments && !flags.deployments.empty()) {
    return absl::InvalidArgumentError("--no-deployments and --deployment exclude each other");
  }
  if (flags.no_fallbacks && !flags.fallbacks.empty()) {
    return absl::InvalidArgumentError("--no-fallbacks and --fallback exclude each other");
  }
  if (HasOnlyImpliedDeployment(*m)) {
    m->clear_deployments();
  }
  for (v1::Deployment& d : *m->mutable_deployments()) {
    d.clear_state();
  }
  if (flags.no_deployments) {
    m->clear_deployments();
  }
  if (!flags.deployments.empty()) {
    std::vector<v1::Deployment> parsed;
    for (const std::string& spec : flags.deployments) {
      auto d = ParseDeploymentSpec(spec);
      if (!d.ok()) {
        return d.status();
      }
      const int i = static_cast<int>(parsed.size());
      const std::string name = NameAt(*d, i);
      for (int j = 0; j < i; ++j) {
        if (NameAt(parsed[j], j) == name) {
          return Bad(
              spec, absl::StrCat("deployment ", i + 1, " is named \"", name, "\" like deployment ",
                                 j + 1, " (names differ; unnamed ones are d1, d2... by position)"));
        }
      }
      parsed.push_back(*std::move(d));
    }
    m->clear_deployments();
    for (v1::Deployment& d : parsed) {
      *m->add_deployments() = std::move(d);
    }
  }
  if (flags.no_fallbacks) {
    m->clear_fallbacks();
  }
  if (!flags.fallbacks.empty()) {
    for (size_t i = 0; i < flags.fallbacks.size(); ++i) {
      const std::string& f = flags.fallbacks[i];
      if (f.empty()) {
        return absl::InvalidArgumentError("--fallback needs a model name");
      }
      if (f == m->name()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--fallback ", f, ": a model cannot fall back to itself"));
      }
      for (size_t j = 0; j < i; ++j) {
        if (flags.fallbacks[j] == f) {
          return absl::InvalidArgumentError(absl::StrCat("--fallback ", f, " is given twice"));
        }
      }
    }
    m->clear_fallbacks();
    for (const std::string& f : flags.fallbacks) {
      m->add_fallbacks(f);
    }
  }
  return absl::OkStatus();
}

std::string RoutingLines(const v1::ModelConfig& m) {
  if (m.deployments_size() == 0) {
    return "";
  }
  const bool implied = HasOnlyImpliedDeployment(m);
  std::string out;
  // A model on its own settings gets a line only when its state is worth a look, so that
  // the usual listing of single-deployment models stays one line each.
  const bool quiet = implied && Quiet(m.deployments(0).state());
  for (int i = 0; i < m.deployments_size() && !quiet; ++i) {
    const v1::Deployment& d = m.deployments(i);
    std::string settings = implied ? "" : DeploymentSpec(d);
    if (settings.empty()) {
      settings = "(the model's own settings)";
    }
    absl::StrAppend(&out, "  deployment ", absl::StrFormat("%-12s ", NameAt(d, i)));
    if (d.has_state()) {
      absl::StrAppend(&out, StateText(d.state()), "  ");
    }
    absl::StrAppend(&out, settings, d.has_state() ? StateNotes(d.state()) : "", "\n");
  }
  if (m.fallbacks_size() > 0) {
    absl::StrAppend(&out, "  fallbacks  ", absl::StrJoin(m.fallbacks(), ", "), "\n");
  }
  return out;
}

}  // namespace aichat::cli
