// `aichat usage [daily | models | budget]` (this calendar month, UTC) and the admin's
// `aichat budget set USER_ID USD`.
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "cli/commands.h"

namespace aichat::cli {
namespace {

using usage::v1::UsageService;

constexpr char kUsageUsage[] = "aichat usage [daily | models | budget] [--user USER_ID]";

std::string Row(const std::string& key, const usage::v1::SummaryRow& r) {
  return absl::StrFormat("%-22s %8d %12d %12d %10d %16s\n", key, r.requests(), r.prompt_tokens(),
                         r.completion_tokens(), r.cached_tokens(), FormatUsd(r.cost_nanos()));
}

int Summary(Cli& cli, UsageService::Stub& stub, usage::v1::GroupBy group_by,
            std::optional<int64_t> user_id) {
  absl::CivilMonth month = absl::ToCivilMonth(absl::Now(), absl::UTCTimeZone());
  usage::v1::GetUsageSummaryRequest req;
  if (user_id) req.set_user_id(*user_id);
  req.mutable_from()->set_seconds(absl::ToUnixSeconds(absl::FromCivil(month, absl::UTCTimeZone())));
  req.mutable_to()->set_seconds(
      absl::ToUnixSeconds(absl::FromCivil(month + 1, absl::UTCTimeZone())));
  req.set_group_by(group_by);
  if (group_by == usage::v1::GROUP_BY_MODEL) req.set_order_by(usage::v1::ORDER_BY_COST_DESC);
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  usage::v1::GetUsageSummaryResponse resp;
  auto st = stub.GetUsageSummary(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("usage", st);
  std::string text = absl::StrFormat("Usage in %s (UTC)%s\n%-22s %8s %12s %12s %10s %16s\n",
                                     absl::FormatCivilTime(month).substr(0, 7),
                                     user_id ? absl::StrCat(", user ", *user_id) : "",
                                     group_by == usage::v1::GROUP_BY_DAY ? "day" : "model",
                                     "requests", "prompt tok", "output tok", "cached", "cost");
  for (const auto& r : resp.rows()) absl::StrAppend(&text, Row(r.key(), r));
  absl::StrAppend(&text, Row("total", resp.totals()));
  cli.Print(resp, text);
  return kOk;
}

int ShowBudget(Cli& cli, UsageService::Stub& stub, std::optional<int64_t> user_id) {
  usage::v1::GetBudgetRequest req;
  if (user_id) req.set_user_id(*user_id);
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  usage::v1::Budget b;
  auto st = stub.GetBudget(ctx.get(), req, &b);
  if (!st.ok()) return cli.Fail("usage budget", st);
  std::string text =
      b.unlimited()
          ? absl::StrFormat("User %d: no monthly budget (unlimited). Spent this month: %s.",
                            b.user_id(), FormatUsd(b.spent_nanos()))
          : absl::StrFormat(
                "User %d: monthly budget %s; spent %s, reserved %s, remaining %s; resets %s.",
                b.user_id(), FormatUsd(b.monthly_limit_nanos()), FormatUsd(b.spent_nanos()),
                FormatUsd(b.reserved_nanos()), FormatUsd(b.remaining_nanos()),
                FormatTime(b.resets_at().seconds()));
  cli.Print(b, text);
  return kOk;
}

}  // namespace

int UsageReport(Cli& cli, const Args& in) {
  Args args = in;
  std::string v;
  std::optional<int64_t> user_id;
  if (TakeFlag(args, "user", &v)) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(v, &id)) return cli.Usage(kUsageUsage);
    user_id = id;
  }
  std::string sub = args.empty() ? "daily" : args[0];
  if (args.size() > 1) return cli.Usage(kUsageUsage);
  auto stub = UsageService::NewStub(cli.Channel("usage"));
  if (sub == "daily") return Summary(cli, *stub, usage::v1::GROUP_BY_DAY, user_id);
  if (sub == "models") return Summary(cli, *stub, usage::v1::GROUP_BY_MODEL, user_id);
  if (sub == "budget") return ShowBudget(cli, *stub, user_id);
  return cli.Usage(kUsageUsage);
}

int BudgetCmd(Cli& cli, const Args& args) {
  constexpr char kBudgetUsage[] =
      "aichat budget [show [USER_ID] | set USER_ID USD]   (USD per calendar month; 0 removes "
      "the limit)";
  auto stub = UsageService::NewStub(cli.Channel("usage"));
  int64_t id = 0;
  if (args.empty() || (args[0] == "show" && args.size() == 1)) {
    return ShowBudget(cli, *stub, std::nullopt);
  }
  if (args[0] == "show" && args.size() == 2 && absl::SimpleAtoi(args[1], &id)) {
    return ShowBudget(cli, *stub, id);
  }
  if (args[0] != "set" || args.size() != 3 || !absl::SimpleAtoi(args[1], &id)) {
    return cli.Usage(kBudgetUsage);
  }
  std::optional<int64_t> nanos = ParseDecimal(args[2], 9);
  if (!nanos) {
    std::cerr << "aichat: budget set: " << args[2]
              << " is not an amount in USD (like 5 or 0.25; at most 9 decimals)\n";
    return kInvalid;
  }
  usage::v1::SetBudgetRequest req;
  req.set_user_id(id);
  req.set_monthly_limit_nanos(*nanos);
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  usage::v1::Budget b;
  auto st = stub->SetBudget(ctx.get(), req, &b);
  if (!st.ok()) return cli.Fail("budget set", st);
  cli.Print(b, b.unlimited() ? absl::StrFormat("User %d: budget removed (unlimited).", b.user_id())
                             : absl::StrFormat("User %d: monthly budget %s (remaining %s).",
                                               b.user_id(), FormatUsd(b.monthly_limit_nanos()),
                                               FormatUsd(b.remaining_nanos())));
  return kOk;
}

}  // namespace aichat::cli
