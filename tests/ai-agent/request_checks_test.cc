// The rules for where the agent may send a provider key (hardening: no admin can route
// another secret of the agent, or a key, to a URL of their choosing).
#include "services/ai-agent/request_checks.h"

#include <gtest/gtest.h>

namespace aichat::agent {
namespace {

TEST(ProviderKeyVariableTest, OnlyTheProviderKeyNamespace) {
  EXPECT_TRUE(IsProviderKeyVariable("OPENAI_API_KEY"));
  EXPECT_TRUE(IsProviderKeyVariable("AICHAT_PROVIDER_KEY_AZURE"));
  EXPECT_TRUE(IsProviderKeyVariable("AICHAT_PROVIDER_KEY_LOCAL_2"));
  for (const char* secret : {"AICHAT_SERVICE_TOKEN", "AICHAT_JWT_SIGNING_KEY", "DATABASE_URL",
                             "HOME", "AICHAT_PROVIDER_KEY_", "AICHAT_PROVIDER_KEY_lower",
                             "AICHAT_PROVIDER_KEY_A-B", "OPENAI_API_KEY2", ""}) {
    EXPECT_FALSE(IsProviderKeyVariable(secret)) << secret;
  }
}

TEST(ProviderUrlTest, HttpsAnywhereHttpOnlyOnLoopback) {
  ProviderPolicy open;
  EXPECT_TRUE(CheckProviderUrl("u", "https://api.openai.com/v1", open).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "https://llm.example:8443/v1", open).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "http://127.0.0.1:8000/v1", open).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "http://localhost:8000/v1", open).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "http://[::1]:8000/v1", open).ok());
  for (const char* bad : {"http://evil.example/v1", "http://127.evil.example/v1",
                          "http://10.0.0.5:8000/v1", "ftp://x/v1", "https://user:pw@host/v1",
                          "https://:443/v1", "https://host:99999/v1", "javascript:alert(1)"}) {
    auto st = CheckProviderUrl("model.base_url", bad, open);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(std::string(st.message()).rfind("model.base_url", 0), 0u) << st.message();
  }
  ProviderPolicy http{.allow_plain_http = true};
  EXPECT_TRUE(CheckProviderUrl("u", "http://llm.internal:8000/v1", http).ok());
}

TEST(ProviderUrlTest, TheOperatorsHostListHolds) {
  ProviderPolicy listed{.hosts = {"api.openai.com", "*.openai.azure.com"}};
  EXPECT_TRUE(CheckProviderUrl("u", "https://api.openai.com/v1", listed).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "https://team.openai.azure.com/v1", listed).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "https://API.OpenAI.com/v1", listed).ok());
  EXPECT_TRUE(CheckProviderUrl("u", "http://127.0.0.1:9/v1", listed).ok());  // loopback
  EXPECT_FALSE(CheckProviderUrl("u", "https://attacker.example/v1", listed).ok());
  EXPECT_FALSE(CheckProviderUrl("u", "https://openai.azure.com.attacker.example/v1", listed).ok());
}

TEST(ValidateModelConfigTest, ASecretOfTheAgentCannotBeNamed) {
  v1::ModelConfig m;
  m.set_name("exfil");
  m.set_provider_model("gpt-4o-mini");
  m.set_context_window(1000);
  m.set_max_output_tokens(100);
  m.set_default_temperature(1);
  EXPECT_TRUE(ValidateModelConfig(m).ok());
  m.set_api_key_env("AICHAT_SERVICE_TOKEN");
  auto st = ValidateModelConfig(m);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("model.api_key_env"), std::string::npos);
  m.set_api_key_env("AICHAT_PROVIDER_KEY_TEAM");
  m.set_base_url("http://attacker.example/v1");
  st = ValidateModelConfig(m);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("model.base_url"), std::string::npos);
  m.set_base_url("https://attacker.example/v1");
  EXPECT_TRUE(ValidateModelConfig(m).ok());
  EXPECT_FALSE(ValidateModelConfig(m, ProviderPolicy{.hosts = {"api.openai.com"}}).ok());
}

TEST(ValidateModelConfigTest, DeploymentsAreCheckedFieldByField) {
  v1::ModelConfig m;
  m.set_name("routed");
  m.set_context_window(1000);
  m.set_max_output_tokens(100);
  m.set_default_temperature(1);
  m.add_deployments()->set_base_url("https://a.example/v1");
  m.add_deployments()->set_name("d1");  // the first one's implied name
  auto st = ValidateModelConfig(m);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("model.deployments[1].name"), std::string::npos);
  m.mutable_deployments(1)->set_name("west");
  EXPECT_TRUE(ValidateModelConfig(m).ok());
  m.mutable_deployments(1)->set_weight(1001);
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.deployments[1].weight"),
            std::string::npos);
  m.mutable_deployments(1)->set_weight(2);
  m.mutable_deployments(0)->set_api_key_env("AICHAT_SERVICE_TOKEN");
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.deployments[0].api_key_env"),
            std::string::npos);
  m.mutable_deployments(0)->set_api_key_env("");
  m.mutable_deployments(0)->set_base_url("http://attacker.example/v1");
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.deployments[0].base_url"),
            std::string::npos);
  m.mutable_deployments(0)->set_base_url("");
  m.add_fallbacks("routed");
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.fallbacks[0]"),
            std::string::npos);
}

TEST(CheckFallbacksTest, FallbacksExistAreEnabledAndNeverCycle) {
  auto model = [](std::string name, std::vector<std::string> fallbacks, bool enabled = true) {
    ModelRecord r;
    r.name = std::move(name);
    r.fallbacks = std::move(fallbacks);
    r.enabled = enabled;
    return r;
  };
  std::vector<ModelRecord> saved = {model("a", {}), model("b", {"c"}), model("c", {}),
                                    model("off", {}, false)};
  v1::ModelConfig m;
  m.set_name("a");
  m.add_fallbacks("b");
  EXPECT_TRUE(CheckFallbacks(m, saved).ok());
  m.add_fallbacks("nope");
  EXPECT_NE(std::string(CheckFallbacks(m, saved).message()).find("model.fallbacks[1]"),
            std::string::npos);
  m.set_fallbacks(1, "off");
  EXPECT_NE(std::string(CheckFallbacks(m, saved).message()).find("disabled"), std::string::npos);
  // c -> a while a -> b -> c: a cycle through the saved models.
  m.mutable_fallbacks()->RemoveLast();
  saved[2].fallbacks = {"a"};
  EXPECT_NE(std::string(CheckFallbacks(m, saved).message()).find("cycle"), std::string::npos);
}

TEST(ValidateModelConfigTest, PricesStayInTheRangeTheLedgerAccepts) {
  v1::ModelConfig m;
  m.set_name("priced");
  m.set_context_window(1000);
  m.set_max_output_tokens(100);
  m.set_default_temperature(1);
  m.set_output_price_micros_per_mtok(kMaxPriceMicrosPerMtok);
  EXPECT_TRUE(ValidateModelConfig(m).ok());
  m.set_output_price_micros_per_mtok(kMaxPriceMicrosPerMtok + 1);
  auto st = ValidateModelConfig(m);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("model.output_price_micros_per_mtok"),
            std::string::npos);
  m.set_output_price_micros_per_mtok(0);
  m.set_input_price_micros_per_mtok(-1);
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.input_price"),
            std::string::npos);
}

}  // namespace
}  // namespace aichat::agent
