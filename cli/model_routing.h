// Where a model is served, as `aichat models set` takes it and `aichat models` shows it:
// `--deployment SPEC` (repeatable) and `--fallback NAME` (repeatable), `--no-deployments`
// and `--no-fallbacks`. A SPEC is comma-separated key=value pairs, every key optional:
//   name=east,url=https://east.example/v1,key=AICHAT_PROVIDER_KEY_EAST,model=gpt-4o-mini,weight=2,max=10
// (the proto's names base_url, api_key_env, provider_model and max_concurrency are accepted
// too). A key left out is the model's own setting; a value cannot contain a comma.
// No I/O here, so tests call it directly.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "aichat/agent/v1/agent.pb.h"

namespace aichat::cli {

// The routing flags of one `models set`, in the order given.
struct RoutingFlags {
  std::vector<std::string> deployments;  // --deployment SPEC
  std::vector<std::string> fallbacks;    // --fallback NAME
  bool no_deployments = false;           // --no-deployments
  bool no_fallbacks = false;             // --no-fallbacks
};

// One --deployment SPEC; INVALID_ARGUMENT naming the flag and the key otherwise.
absl::StatusOr<agent::v1::Deployment> ParseDeploymentSpec(absl::string_view spec);

// `d`'s settings in --deployment syntax (what was set; no state). Parses back to `d`.
std::string DeploymentSpec(const agent::v1::Deployment& d);

// True when `m` lists exactly the one deployment an admin's ListModels adds for a model
// without deployments (its own settings as "d1"): sending it back would change nothing
// the agent does, but would store a deployment nobody asked for.
bool HasOnlyImpliedDeployment(const agent::v1::ModelConfig& m);

// Turns a listed config into what `models set` sends: the implied deployment and every
// deployment's state (output only) dropped, then the flags applied. Given --deployment
// flags replace the deployments, given --fallback flags the fallbacks; none keeps them.
absl::Status ApplyRouting(const RoutingFlags& flags, agent::v1::ModelConfig* m);

// Lines under a model in `aichat models` for admins, each starting with two spaces: one
// per deployment (this replica's state when the listing has it, then its settings) and
// the fallbacks when there are any. A model without deployments of its own gets a line for
// its implied one only when that is not closed and idle. Empty when the listing shows no
// deployments (users).
std::string RoutingLines(const agent::v1::ModelConfig& m);

}  // namespace aichat::cli
