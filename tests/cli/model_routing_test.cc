// `aichat models set --deployment/--fallback` parsing and `aichat models` routing lines:
// what is sent to UpsertModel and what an admin reads, without a service.
#include "cli/model_routing.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"

namespace aichat::cli {
namespace {

namespace v1 = agent::v1;

TEST(ParseDeploymentSpec, TakesEveryKey) {
  auto d = ParseDeploymentSpec(
      "name=east,url=https://east.example/v1,key=AICHAT_PROVIDER_KEY_EAST,model=gpt-4o-mini,"
      "weight=2,max=10");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name(), "east");
  EXPECT_EQ(d->base_url(), "https://east.example/v1");
  EXPECT_EQ(d->api_key_env(), "AICHAT_PROVIDER_KEY_EAST");
  EXPECT_EQ(d->provider_model(), "gpt-4o-mini");
  EXPECT_EQ(d->weight(), 2);
  EXPECT_EQ(d->max_concurrency(), 10);
}

TEST(ParseDeploymentSpec, AcceptsTheProtoNamesAndSpaces) {
  auto d = ParseDeploymentSpec(
      " base_url = https://w.example/v1 , api_key_env=OPENAI_API_KEY,provider_model=m,"
      "max_concurrency=0");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->base_url(), "https://w.example/v1");
  EXPECT_EQ(d->api_key_env(), "OPENAI_API_KEY");
  EXPECT_EQ(d->provider_model(), "m");
  EXPECT_EQ(d->max_concurrency(), 0);
  EXPECT_EQ(d->weight(), 0);  // left out: the agent takes 1
  EXPECT_TRUE(d->name().empty());
}

TEST(ParseDeploymentSpec, AUrlKeepsItsEqualsSigns) {
  auto d = ParseDeploymentSpec("url=https://h.example/v1?api-version=2024");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->base_url(), "https://h.example/v1?api-version=2024");
}

// Every error names the flag and what is wrong.
TEST(ParseDeploymentSpec, ErrorsNameTheFlagAndTheKey) {
  struct Case {
    const char* spec;
    const char* says;
  };
  for (const Case& c : {
           Case{"", "empty"},
           Case{"   ", "empty"},
           Case{"url", "\"url\" is not key=value"},
           Case{"weight=2,", "\"\" is not key=value"},
           Case{"region=eu", "unknown key \"region\" (keys: name, url, key, model, weight, max)"},
           Case{"weight=2,weight=3", "weight is given twice"},
           Case{"url=a,base_url=b", "url is given twice"},
           Case{"model=", "model= needs a value"},
           Case{"weight=0", "weight must be a whole number from 1 to 1000"},
           Case{"weight=1001", "weight must be a whole number from 1 to 1000"},
           Case{"weight=two", "weight must be a whole number"},
           Case{"max=-1", "max (calls in flight) must be a whole number from 0"},
           Case{"max=1.5", "max (calls in flight)"},
           Case{"name=East", "name may use a-z, 0-9, . _ -"},
           Case{"name=a-very-long-deployment-name-over-forty-chars", "1 to 40 characters"},
       }) {
    auto d = ParseDeploymentSpec(c.spec);
    ASSERT_FALSE(d.ok()) << c.spec;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << c.spec;
    EXPECT_TRUE(absl::StartsWith(d.status().message(), "--deployment ")) << d.status();
    EXPECT_TRUE(absl::StrContains(d.status().message(), c.says)) << d.status();
  }
}

TEST(DeploymentSpec, ParsesBackToTheSameDeployment) {
  v1::Deployment d;
  d.set_name("west");
  d.set_base_url("https://west.example/v1");
  d.set_api_key_env("AICHAT_PROVIDER_KEY_WEST");
  d.set_provider_model("gpt-4o-mini-2024-07-18");
  d.set_weight(3);
  d.set_max_concurrency(25);
  const std::string spec = DeploymentSpec(d);
  EXPECT_EQ(spec,
            "name=west,url=https://west.example/v1,key=AICHAT_PROVIDER_KEY_WEST,"
            "model=gpt-4o-mini-2024-07-18,weight=3,max=25");
  auto back = ParseDeploymentSpec(spec);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->SerializeAsString(), d.SerializeAsString());
}

// A model as an admin's ListModels returns it: no deployments of its own, so the agent
// shows its own settings as "d1", with state.
v1::ModelConfig ListedWithoutDeployments() {
  v1::ModelConfig m;
  m.set_name("gpt-4o-mini");
  m.set_provider_model("gpt-4o-mini");
  v1::Deployment* d = m.add_deployments();
  d->set_name("d1");
  d->set_weight(1);
  d->mutable_state()->set_circuit("closed");
  return m;
}

TEST(ApplyRouting, WithoutFlagsDropsTheImpliedDeploymentAndKeepsTheRest) {
  v1::ModelConfig m = ListedWithoutDeployments();
  m.add_fallbacks("gpt-4o");
  ASSERT_TRUE(HasOnlyImpliedDeployment(m));
  ASSERT_TRUE(ApplyRouting({}, &m).ok());
  EXPECT_EQ(m.deployments_size(), 0);
  ASSERT_EQ(m.fallbacks_size(), 1);
  EXPECT_EQ(m.fallbacks(0), "gpt-4o");
}

TEST(ApplyRouting, WithoutFlagsKeepsRealDeploymentsWithoutTheirState) {
  v1::ModelConfig m;
  m.set_name("fast");
  for (const char* name : {"east", "west"}) {
    v1::Deployment* d = m.add_deployments();
    d->set_name(name);
    d->set_base_url(std::string("https://") + name + ".example/v1");
    d->set_weight(1);
    d->mutable_state()->set_circuit("open");
    d->mutable_state()->set_consecutive_failures(3);
  }
  ASSERT_FALSE(HasOnlyImpliedDeployment(m));
  ASSERT_TRUE(ApplyRouting({}, &m).ok());
  ASSERT_EQ(m.deployments_size(), 2);
  EXPECT_EQ(m.deployments(1).base_url(), "https://west.example/v1");
  EXPECT_FALSE(m.deployments(0).has_state());
  EXPECT_FALSE(m.deployments(1).has_state());
}

TEST(ApplyRouting, GivenFlagsReplaceInOrder) {
  v1::ModelConfig m = ListedWithoutDeployments();
  m.add_fallbacks("old");
  RoutingFlags f;
  f.deployments = {"name=east,url=https://east.example/v1,weight=2,max=10",
                   "url=https://west.example/v1,key=AICHAT_PROVIDER_KEY_WEST"};
  f.fallbacks = {"gpt-4o", "gpt-4.1-mini"};
  ASSERT_TRUE(ApplyRouting(f, &m).ok());
  ASSERT_EQ(m.deployments_size(), 2);
  EXPECT_EQ(m.deployments(0).name(), "east");
  EXPECT_EQ(m.deployments(0).weight(), 2);
  EXPECT_EQ(m.deployments(0).max_concurrency(), 10);
  EXPECT_EQ(m.deployments(1).name(), "");  // the agent names it d2
  EXPECT_EQ(m.deployments(1).api_key_env(), "AICHAT_PROVIDER_KEY_WEST");
  ASSERT_EQ(m.fallbacks_size(), 2);
  EXPECT_EQ(m.fallbacks(0), "gpt-4o");
  EXPECT_EQ(m.fallbacks(1), "gpt-4.1-mini");
}

TEST(ApplyRouting, NoDeploymentsAndNoFallbacksClear) {
  v1::ModelConfig m;
  m.set_name("fast");
  m.add_deployments()->set_base_url("https://east.example/v1");
  m.add_fallbacks("gpt-4o");
  RoutingFlags f;
  f.no_deployments = true;
  f.no_fallbacks = true;
  ASSERT_TRUE(ApplyRouting(f, &m).ok());
  EXPECT_EQ(m.deployments_size(), 0);
  EXPECT_EQ(m.fallbacks_size(), 0);
}

TEST(ApplyRouting, RejectsContradictionsDuplicatesAndItself) {
  struct Case {
    RoutingFlags flags;
    const char* says;
  };
  RoutingFlags both_d;
  both_d.no_deployments = true;
  both_d.deployments = {"url=https://a.example/v1"};
  RoutingFlags both_f;
  both_f.no_fallbacks = true;
  both_f.fallbacks = {"gpt-4o"};
  RoutingFlags same_name;
  same_name.deployments = {"name=east", "name=east,weight=2"};
  RoutingFlags positional_clash;  // the first, unnamed, is d1
  positional_clash.deployments = {"url=https://a.example/v1", "name=d1"};
  RoutingFlags twice;
  twice.fallbacks = {"gpt-4o", "gpt-4o"};
  RoutingFlags itself;
  itself.fallbacks = {"fast"};
  RoutingFlags bad_spec;
  bad_spec.deployments = {"url=https://a.example/v1", "weight=x"};
  for (const Case& c : {
           Case{both_d, "--no-deployments and --deployment"},
           Case{both_f, "--no-fallbacks and --fallback"},
           Case{same_name, "--deployment name=east,weight=2: deployment 2 is named \"east\""},
           Case{positional_clash, "deployment 2 is named \"d1\" like deployment 1"},
           Case{twice, "--fallback gpt-4o is given twice"},
           Case{itself, "--fallback fast: a model cannot fall back to itself"},
           Case{bad_spec, "--deployment weight=x: weight must be"},
       }) {
    v1::ModelConfig m;
    m.set_name("fast");
    auto st = ApplyRouting(c.flags, &m);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_TRUE(absl::StrContains(st.message(), c.says)) << st;
  }
}

TEST(RoutingLines, UsersSeeNothingMore) {
  v1::ModelConfig m;
  m.set_name("fast");
  m.add_fallbacks("gpt-4o");  // a user's listing has no deployments
  EXPECT_EQ(RoutingLines(m), "");
}

TEST(RoutingLines, AdminsSeeStateSettingsAndFallbacks) {
  v1::ModelConfig m;
  m.set_name("fast");
  v1::Deployment* east = m.add_deployments();
  east->set_name("east");
  east->set_base_url("https://east.example/v1");
  east->set_weight(2);
  east->set_max_concurrency(10);
  east->mutable_state()->set_circuit("closed");
  east->mutable_state()->set_in_flight(4);
  v1::Deployment* west = m.add_deployments();
  west->set_name("west");
  west->set_weight(1);
  west->set_api_key_env("AICHAT_PROVIDER_KEY_WEST");
  west->mutable_state()->set_circuit("open");
  west->mutable_state()->set_consecutive_failures(3);
  west->mutable_state()->mutable_cooldown_until()->set_seconds(1796000000);
  m.add_fallbacks("gpt-4o");
  m.add_fallbacks("gpt-4.1-mini");
  EXPECT_EQ(RoutingLines(m),
            "  deployment east         closed      4 in flight  "
            "name=east,url=https://east.example/v1,weight=2,max=10\n"
            "  deployment west         open        0 in flight  "
            "name=west,key=AICHAT_PROVIDER_KEY_WEST,weight=1  (3 failures in a row; cooling down "
            "(429) until 2026-11-30 00:53:20 UTC)\n"
            "  fallbacks  gpt-4o, gpt-4.1-mini\n");
}

TEST(RoutingLines, AQuietImpliedDeploymentIsLeftOut) {
  v1::ModelConfig m = ListedWithoutDeployments();
  EXPECT_EQ(RoutingLines(m), "");
  m.add_fallbacks("gpt-4o");
  EXPECT_EQ(RoutingLines(m), "  fallbacks  gpt-4o\n");
}

TEST(RoutingLines, AnImpliedDeploymentInTroubleIsTheModelsOwnSettings) {
  v1::ModelConfig m = ListedWithoutDeployments();
  m.mutable_deployments(0)->mutable_state()->set_circuit("half_open");
  m.mutable_deployments(0)->mutable_state()->set_in_flight(1);
  EXPECT_EQ(RoutingLines(m),
            "  deployment d1           half_open   1 in flight  (the model's own settings)\n");
}

}  // namespace
}  // namespace aichat::cli
