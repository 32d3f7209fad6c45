// `aichat models`: the enabled models and their prices (admins also see each model's
// deployments with this replica's view of their health, and its fallbacks); admin:
// `models set` (create or change one; unspecified settings keep their current values) and
// `models delete`.
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "aichat/agent/v1/agent.grpc.pb.h"
#include "cli/commands.h"
#include "cli/model_routing.h"

namespace aichat::cli {
namespace {

using agent::v1::AiAgentService;

constexpr char kSetUsage[] =
    "aichat models set NAME [--provider-model M] [--input-price USD] [--output-price USD] "
    "[--cached-price USD] [--context TOKENS] [--max-output TOKENS] [--base-url URL] "
    "[--api-key-env VAR] [--default] [--disabled] [--deployment SPEC]... [--no-deployments] "
    "[--fallback MODEL]... [--no-fallbacks]   (prices in USD per million tokens; SPEC: "
    "key=value,... with keys name, url, key, model, weight, max, e.g. "
    "name=east,url=https://east.example/v1,key=AICHAT_PROVIDER_KEY_EAST,weight=2,max=10)";

std::string ModelLine(const agent::v1::ModelConfig& m) {
  return absl::StrFormat("%-20s %-22s %10s %10s %10s %9d %9d  %s%s", m.name(), m.provider_model(),
                         FormatPrice(m.input_price_micros_per_mtok()),
                         FormatPrice(m.cached_input_price_micros_per_mtok()),
                         FormatPrice(m.output_price_micros_per_mtok()), m.context_window(),
                         m.max_output_tokens(), m.is_default() ? "default " : "",
                         m.enabled() ? "" : "disabled");
}

int List(Cli& cli, AiAgentService::Stub& stub, bool include_disabled) {
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  agent::v1::ListModelsRequest req;
  req.set_include_disabled(include_disabled);
  agent::v1::ListModelsResponse resp;
  auto st = stub.ListModels(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("models", st);
  std::string text =
      absl::StrFormat("%-20s %-22s %10s %10s %10s %9s %9s\n", "model", "provider model", "input/M",
                      "cached/M", "output/M", "context", "max out");
  for (const auto& m : resp.models()) {
    absl::StrAppend(&text, ModelLine(m), "\n", RoutingLines(m));
  }
  cli.Print(resp, text);
  return kOk;
}

// "--flag USD" as micro-USD per million tokens; false (and a message) when malformed.
bool TakePrice(Args& args, const std::string& flag, int64_t* out, bool* bad) {
  std::string v;
  if (!TakeFlag(args, flag, &v)) return false;
  auto micros = ParseDecimal(v, 6);
  if (!micros) {
    std::cerr << "aichat: models set: --" << flag << " " << v
              << " is not a price in USD per million tokens (like 0.15; at most 6 decimals)\n";
    *bad = true;
    return false;
  }
  *out = *micros;
  return true;
}

bool TakeInt(Args& args, const std::string& flag, int32_t* out, bool* bad) {
  std::string v;
  if (!TakeFlag(args, flag, &v)) return false;
  if (!absl::SimpleAtoi(v, out) || *out < 0) {
    std::cerr << "aichat: models set: --" << flag << " " << v << " is not a token count\n";
    *bad = true;
    return false;
  }
  return true;
}

int Set(Cli& cli, AiAgentService::Stub& stub, Args args) {
  if (args.empty() || absl::StartsWith(args[0], "--")) return cli.Usage(kSetUsage);
  std::string name = args[0];
  args.erase(args.begin());
  // Start from the current configuration so that `models set gpt-4o --default` changes only
  // what it names.
  agent::v1::ModelConfig m;
  {
    auto ctx = cli.Context(true);
    if (!ctx) return kAuth;
    agent::v1::ListModelsRequest req;
    req.set_include_disabled(true);
    agent::v1::ListModelsResponse resp;
    auto st = stub.ListModels(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("models set", st);
    bool found = false;
    for (const auto& existing : resp.models()) {
      if (existing.name() == name) {
        m = existing;
        found = true;
      }
    }
    if (!found) m.set_provider_model(name);
  }
  m.set_name(name);
  m.clear_updated_at();
  bool bad = false;
  std::string v;
  int64_t price = 0;
  int32_t n = 0;
  if (TakeFlag(args, "provider-model", &v)) m.set_provider_model(v);
  if (TakeFlag(args, "base-url", &v)) m.set_base_url(v);
  if (TakeFlag(args, "api-key-env", &v)) m.set_api_key_env(v);
  if (TakePrice(args, "input-price", &price, &bad)) m.set_input_price_micros_per_mtok(price);
  if (TakePrice(args, "output-price", &price, &bad)) m.set_output_price_micros_per_mtok(price);
  if (TakePrice(args, "cached-price", &price, &bad)) {
    m.set_cached_input_price_micros_per_mtok(price);
  }
  if (TakeInt(args, "context", &n, &bad)) m.set_context_window(n);
  if (TakeInt(args, "max-output", &n, &bad)) m.set_max_output_tokens(n);
  if (TakeSwitch(args, "default")) m.set_is_default(true);
  m.set_enabled(!TakeSwitch(args, "disabled"));
  RoutingFlags routing;
  while (TakeFlag(args, "deployment", &v)) {
    routing.deployments.push_back(v);
  }
  while (TakeFlag(args, "fallback", &v)) {
    routing.fallbacks.push_back(v);
  }
  routing.no_deployments = TakeSwitch(args, "no-deployments");
  routing.no_fallbacks = TakeSwitch(args, "no-fallbacks");
  if (auto st = ApplyRouting(routing, &m); !st.ok()) {
    std::cerr << "aichat: models set: " << st.message() << "\n";
    bad = true;
  }
  if (bad) return kInvalid;
  if (!args.empty()) return cli.Usage(kSetUsage);
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  agent::v1::UpsertModelRequest req;
  *req.mutable_model() = m;
  agent::v1::ModelConfig resp;
  auto st = stub.UpsertModel(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("models set", st);
  cli.Print(resp, absl::StrCat(ModelLine(resp), "\n", RoutingLines(resp)));
  return kOk;
}

}  // namespace

int Models(Cli& cli, const Args& in) {
  Args args = in;
  bool all = TakeSwitch(args, "all");
  auto stub = AiAgentService::NewStub(cli.Channel("ai-agent"));
  if (args.empty() || (args[0] == "list" && args.size() == 1)) return List(cli, *stub, all);
  if (args[0] == "set") return Set(cli, *stub, Args(args.begin() + 1, args.end()));
  if (args[0] == "delete" && args.size() == 2) {
    auto ctx = cli.Context(true);
    if (!ctx) return kAuth;
    agent::v1::DeleteModelRequest req;
    req.set_name(args[1]);
    agent::v1::DeleteModelResponse resp;
    auto st = stub->DeleteModel(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("models delete", st);
    cli.Print(resp, "Deleted model " + args[1] + ".");
    return kOk;
  }
  return cli.Usage("aichat models [list [--all]] | models set NAME ... | models delete NAME");
}

}  // namespace aichat::cli
