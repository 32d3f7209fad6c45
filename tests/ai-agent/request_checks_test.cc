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
  EXPECT_NE(std::string(st.message()).find("model.output_price_micros_per_mtok"), std::string::npos);
  m.set_output_price_micros_per_mtok(0);
  m.set_input_price_micros_per_mtok(-1);
  EXPECT_NE(std::string(ValidateModelConfig(m).message()).find("model.input_price"),
            std::string::npos);
}

}  // namespace
}  // namespace aichat::agent
