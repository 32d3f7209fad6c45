// Abuse and security tests against the real binaries (tests/faults/faults.py abuse
// starts the suite and passes its addresses in FAULTS_* variables): the IDOR matrix
// over every RPC, token attacks on every service, hostile input on the string
// fields (raw bytes through grpc::GenericStub where the stubs would refuse), a
// slowloris-style client and a client that never reads its stream.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "aichat/agent/v1/agent.grpc.pb.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "aichat/user/v1/user.grpc.pb.h"
#include "common/base64.h"
#include "common/jwt.h"

namespace {

namespace agent = aichat::agent::v1;
namespace conv = aichat::conversation::v1;
namespace usage = aichat::usage::v1;
namespace user = aichat::user::v1;
using grpc::StatusCode;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string KeyFile(const std::string& key) {
  std::ifstream in(Env("FAULTS_STATE_DIR") + "/keys.env");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  }
  return "";
}

// Every secret the tests handle, for the log scan that follows them.
void NoteSecret(const std::string& s) {
  std::ofstream(Env("FAULTS_SECRETS_OUT"), std::ios::app) << s << "\n";
}

std::shared_ptr<grpc::Channel> Chan(const char* env) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);  // so the server's limit is what gets tested
  return grpc::CreateCustomChannel(Env(env), grpc::InsecureChannelCredentials(), args);
}

struct Ctx {
  grpc::ClientContext c;
  explicit Ctx(const std::string& token, int64_t acting = 0, int seconds = 15) {
    if (!token.empty()) c.AddMetadata("authorization", "Bearer " + token);
    if (acting > 0) c.AddMetadata("x-aichat-user-id", std::to_string(acting));
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }
  grpc::ClientContext* operator&() { return &c; }
};

struct Account {
  int64_t id = 0;
  std::string token, refresh, password;
};

class Abuse : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    users_ = user::UserService::NewStub(Chan("FAULTS_USER_ADDR"));
    convs_ = conv::ConversationService::NewStub(Chan("FAULTS_CONV_ADDR"));
    agents_ = agent::AiAgentService::NewStub(Chan("FAULTS_AGENT_ADDR"));
    usages_ = usage::UsageService::NewStub(Chan("FAULTS_USAGE_ADDR"));
    service_token_ = KeyFile("AICHAT_SERVICE_TOKEN");
    admin_ = Make(Env("FAULTS_ADMIN_EMAIL"), Env("FAULTS_ADMIN_PASSWORD"), false);
  }

  static Account Make(const std::string& email, const std::string& password, bool reg = true) {
    Account a;
    a.password = password;
    if (reg) {
      Ctx ctx("");
      user::RegisterRequest req;
      req.set_email(email);
      req.set_password(password);
      user::User u;
      auto st = users_->Register(&ctx, req, &u);
      EXPECT_TRUE(st.ok() || st.error_code() == StatusCode::ALREADY_EXISTS) << st.error_message();
    }
    Ctx ctx("");
    user::LoginRequest req;
    req.set_email(email);
    req.set_password(password);
    user::LoginResponse resp;
    auto st = users_->Login(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << email << ": " << st.error_message();
    a.id = resp.user().id();
    a.token = resp.access_token();
    a.refresh = resp.refresh_token();
    NoteSecret(password);
    NoteSecret(a.token);
    NoteSecret(a.refresh);
    return a;
  }

  static std::string Unique(const std::string& p) {
    static int n = 0;
    return absl::StrCat(p, "-", getpid(), "-", ++n, "@abuse.test");
  }

  int64_t NewConversation(const Account& a, const std::string& title = "mine") {
    Ctx ctx(a.token);
    conv::CreateConversationRequest req;
    req.set_title(title);
    conv::Conversation c;
    EXPECT_TRUE(convs_->CreateConversation(&ctx, req, &c).ok());
    return c.id();
  }

  int64_t MessageCount(const Account& a, int64_t conversation_id) {
    Ctx ctx(a.token);
    conv::GetConversationRequest req;
    req.set_id(conversation_id);
    conv::Conversation c;
    EXPECT_TRUE(convs_->GetConversation(&ctx, req, &c).ok());
    return c.message_count();
  }

  static inline std::unique_ptr<user::UserService::Stub> users_;
  static inline std::unique_ptr<conv::ConversationService::Stub> convs_;
  static inline std::unique_ptr<agent::AiAgentService::Stub> agents_;
  static inline std::unique_ptr<usage::UsageService::Stub> usages_;
  static inline std::string service_token_;
  static inline Account admin_;
};

// One cheap authenticated call per service, with a given token (and acting user).
std::vector<std::pair<std::string, std::function<grpc::Status(const std::string&, int64_t)>>>
EveryService(user::UserService::Stub& u, conv::ConversationService::Stub& c,
             agent::AiAgentService::Stub& a, usage::UsageService::Stub& us) {
  return {
      {"user.GetMe",
       [&](const std::string& t, int64_t act) {
         Ctx ctx(t, act);
         user::User r;
         return u.GetMe(&ctx, user::GetMeRequest(), &r);
       }},
      {"conversation.ListConversations",
       [&](const std::string& t, int64_t act) {
         Ctx ctx(t, act);
         conv::ListConversationsResponse r;
         return c.ListConversations(&ctx, conv::ListConversationsRequest(), &r);
       }},
      {"agent.ListPrompts",
       [&](const std::string& t, int64_t act) {
         Ctx ctx(t, act);
         agent::ListPromptsResponse r;
         return a.ListPrompts(&ctx, agent::ListPromptsRequest(), &r);
       }},
      {"agent.ListModels",
       [&](const std::string& t, int64_t act) {
         Ctx ctx(t, act);
         agent::ListModelsResponse r;
         return a.ListModels(&ctx, agent::ListModelsRequest(), &r);
       }},
      {"usage.GetBudget",
       [&](const std::string& t, int64_t act) {
         Ctx ctx(t, act);
         usage::Budget r;
         return us.GetBudget(&ctx, usage::GetBudgetRequest(), &r);
       }},
  };
}

TEST_F(Abuse, IdorMatrixUserBOnUserA) {
  Account a = Make(Unique("idor-a"), "idor-a-Pa55word");
  Account b = Make(Unique("idor-b"), "idor-b-Pa55word");
  int64_t conv_a = NewConversation(a, "a's secret plans");
  // A turn so A has a prompt, messages and (once the outbox runs) usage.
  agent::TurnResult turn;
  {
    Ctx ctx(a.token, 0, 30);
    agent::SendMessageRequest req;
    req.set_conversation_id(conv_a);
    req.set_content("idor body text");
    ASSERT_TRUE(agents_->SendMessage(&ctx, req, &turn).ok());
  }
  user::CreateApiKeyResponse key;
  {
    Ctx ctx(a.token);
    user::CreateApiKeyRequest req;
    req.set_name("a-key");
    ASSERT_TRUE(users_->CreateApiKey(&ctx, req, &key).ok());
    NoteSecret(key.key());
  }
  int64_t before = MessageCount(a, conv_a);

  struct Case {
    const char* name;
    std::function<grpc::Status()> call;
  };
  const std::string& t = b.token;
  std::vector<Case> not_found = {
      {"GetConversation",
       [&] {
         Ctx ctx(t);
         conv::GetConversationRequest r;
         r.set_id(conv_a);
         conv::Conversation o;
         return convs_->GetConversation(&ctx, r, &o);
       }},
      {"UpdateConversation",
       [&] {
         Ctx ctx(t);
         conv::UpdateConversationRequest r;
         r.set_id(conv_a);
         r.set_title("pwned");
         conv::Conversation o;
         return convs_->UpdateConversation(&ctx, r, &o);
       }},
      {"DeleteConversation",
       [&] {
         Ctx ctx(t);
         conv::DeleteConversationRequest r;
         r.set_id(conv_a);
         conv::DeleteConversationResponse o;
         return convs_->DeleteConversation(&ctx, r, &o);
       }},
      {"AppendMessage",
       [&] {
         Ctx ctx(t);
         conv::AppendMessageRequest r;
         r.set_conversation_id(conv_a);
         r.set_role(conv::MESSAGE_ROLE_USER);
         r.set_content("x");
         conv::Message o;
         return convs_->AppendMessage(&ctx, r, &o);
       }},
      {"ListMessages",
       [&] {
         Ctx ctx(t);
         conv::ListMessagesRequest r;
         r.set_conversation_id(conv_a);
         conv::ListMessagesResponse o;
         return convs_->ListMessages(&ctx, r, &o);
       }},
      {"GetContext",
       [&] {
         Ctx ctx(t);
         conv::GetContextRequest r;
         r.set_conversation_id(conv_a);
         r.set_max_tokens(1000);
         conv::GetContextResponse o;
         return convs_->GetContext(&ctx, r, &o);
       }},
      {"SendMessage",
       [&] {
         Ctx ctx(t);
         agent::SendMessageRequest r;
         r.set_conversation_id(conv_a);
         r.set_content("hi");
         agent::TurnResult o;
         return agents_->SendMessage(&ctx, r, &o);
       }},
      {"StreamMessage",
       [&] {
         Ctx ctx(t);
         agent::SendMessageRequest r;
         r.set_conversation_id(conv_a);
         r.set_content("hi");
         auto rd = agents_->StreamMessage(&ctx, r);
         agent::TurnEvent e;
         while (rd->Read(&e)) {
         }
         return rd->Finish();
       }},
      {"RegenerateResponse",
       [&] {
         Ctx ctx(t);
         agent::RegenerateResponseRequest r;
         r.set_conversation_id(conv_a);
         auto rd = agents_->RegenerateResponse(&ctx, r);
         agent::TurnEvent e;
         while (rd->Read(&e)) {
         }
         return rd->Finish();
       }},
      {"GetPrompt",
       [&] {
         Ctx ctx(t);
         agent::GetPromptRequest r;
         r.set_prompt_id(turn.prompt_id());
         agent::Prompt o;
         return agents_->GetPrompt(&ctx, r, &o);
       }},
      {"RevokeApiKey",
       [&] {
         Ctx ctx(t);
         user::RevokeApiKeyRequest r;
         r.set_id(key.api_key().id());
         user::RevokeApiKeyResponse o;
         return users_->RevokeApiKey(&ctx, r, &o);
       }},
  };
  for (auto& c : not_found) {
    EXPECT_EQ(c.call().error_code(), StatusCode::NOT_FOUND) << c.name;
  }
  // Listing A's prompts by conversation: empty or NOT_FOUND, never A's rows.
  {
    Ctx ctx(t);
    agent::ListPromptsRequest r;
    r.set_conversation_id(conv_a);
    agent::ListPromptsResponse o;
    auto st = agents_->ListPrompts(&ctx, r, &o);
    EXPECT_TRUE(st.error_code() == StatusCode::NOT_FOUND || (st.ok() && o.prompts_size() == 0));
  }
  std::vector<Case> denied = {
      // B asking for A's usage, and user on admin RPCs.
      {"ListUsage(A)",
       [&] {
         Ctx ctx(t);
         usage::ListUsageRequest r;
         r.set_user_id(a.id);
         usage::ListUsageResponse o;
         return usages_->ListUsage(&ctx, r, &o);
       }},
      {"GetUsageSummary(A)",
       [&] {
         Ctx ctx(t);
         usage::GetUsageSummaryRequest r;
         r.set_user_id(a.id);
         r.set_group_by(usage::GROUP_BY_DAY);
         usage::GetUsageSummaryResponse o;
         return usages_->GetUsageSummary(&ctx, r, &o);
       }},
      {"GetBudget(A)",
       [&] {
         Ctx ctx(t);
         usage::GetBudgetRequest r;
         r.set_user_id(a.id);
         usage::Budget o;
         return usages_->GetBudget(&ctx, r, &o);
       }},
      {"ListUsers",
       [&] {
         Ctx ctx(t);
         user::ListUsersResponse o;
         return users_->ListUsers(&ctx, user::ListUsersRequest(), &o);
       }},
      {"SetUserRole(self admin)",
       [&] {
         Ctx ctx(t);
         user::SetUserRoleRequest r;
         r.set_user_id(b.id);
         r.set_role(user::ROLE_ADMIN);
         user::User o;
         return users_->SetUserRole(&ctx, r, &o);
       }},
      {"SetUserRateLimit",
       [&] {
         Ctx ctx(t);
         user::SetUserRateLimitRequest r;
         r.set_user_id(b.id);
         r.set_requests_per_minute(100000);
         user::User o;
         return users_->SetUserRateLimit(&ctx, r, &o);
       }},
      {"UpsertModel",
       [&] {
         Ctx ctx(t);
         agent::UpsertModelRequest r;
         r.mutable_model()->set_name("evil");
         r.mutable_model()->set_provider_model("x");
         r.mutable_model()->set_base_url("https://evil.example/v1");
         r.mutable_model()->set_context_window(1000);
         r.mutable_model()->set_max_output_tokens(10);
         agent::ModelConfig o;
         return agents_->UpsertModel(&ctx, r, &o);
       }},
      {"DeleteModel",
       [&] {
         Ctx ctx(t);
         agent::DeleteModelRequest r;
         r.set_name("gpt-4o-mini");
         agent::DeleteModelResponse o;
         return agents_->DeleteModel(&ctx, r, &o);
       }},
      {"SetBudget",
       [&] {
         Ctx ctx(t);
         usage::SetBudgetRequest r;
         r.set_user_id(b.id);
         r.set_monthly_limit_nanos(0);
         usage::Budget o;
         return usages_->SetBudget(&ctx, r, &o);
       }},
      // User on service-only RPCs.
      {"RecordUsage",
       [&] {
         Ctx ctx(t);
         usage::RecordUsageRequest r;
         auto* e = r.mutable_event();
         e->set_event_id("forged-1");
         e->set_user_id(a.id);
         e->set_prompt_id(1);
         e->set_conversation_id(1);
         e->set_model("m");
         e->set_provider_model("m");
         e->set_cost_nanos(1);
         e->set_outcome(usage::OUTCOME_COMPLETED);
         e->mutable_occurred_at()->set_seconds(absl::ToUnixSeconds(absl::Now()));
         usage::RecordUsageResponse o;
         return usages_->RecordUsage(&ctx, r, &o);
       }},
      {"ReserveBudget",
       [&] {
         Ctx ctx(t);
         usage::ReserveBudgetRequest r;
         r.set_user_id(b.id);
         r.set_event_id("forged-2");
         r.set_max_cost_nanos(1);
         usage::ReserveBudgetResponse o;
         return usages_->ReserveBudget(&ctx, r, &o);
       }},
      {"ReleaseBudget",
       [&] {
         Ctx ctx(t);
         usage::ReleaseBudgetRequest r;
         r.set_event_id("forged-2");
         usage::ReleaseBudgetResponse o;
         return usages_->ReleaseBudget(&ctx, r, &o);
       }},
      {"AppendMessage(ASSISTANT)",
       [&] {
         Ctx ctx(t);
         conv::AppendMessageRequest r;
         r.set_conversation_id(NewConversation(b));
         r.set_role(conv::MESSAGE_ROLE_ASSISTANT);
         r.set_content("fake answer");
         conv::Message o;
         return convs_->AppendMessage(&ctx, r, &o);
       }},
  };
  for (auto& c : denied) {
    auto st = c.call();
    EXPECT_EQ(st.error_code(), StatusCode::PERMISSION_DENIED)
        << c.name << ": " << st.error_message();
  }
  // A forged x-aichat-user-id from a user token, on every service.
  for (auto& [name, call] : EveryService(*users_, *convs_, *agents_, *usages_)) {
    EXPECT_EQ(call(b.token, a.id).error_code(), StatusCode::PERMISSION_DENIED) << name;
  }
  EXPECT_EQ(MessageCount(a, conv_a), before);
  Ctx ctx(a.token);
  conv::GetConversationRequest r;
  r.set_id(conv_a);
  conv::Conversation o;
  ASSERT_TRUE(convs_->GetConversation(&ctx, r, &o).ok());
  EXPECT_EQ(o.title(), "a's secret plans");
}

std::string B64(const std::string& s) { return aichat::Base64UrlEncode(s); }

TEST_F(Abuse, TokenAttacksOnEveryService) {
  Account a = Make(Unique("tok"), "tok-Pa55word-xyz");
  auto parts = std::vector<std::string>(absl::StrSplit(a.token, '.'));
  ASSERT_EQ(parts.size(), 3u);
  int64_t now = absl::ToUnixSeconds(absl::Now());
  std::string claims = absl::StrCat(R"({"sub":")", a.id, R"(","role":"admin","rpm":20,"iat":)", now,
                                    R"(,"exp":)", now + 600, R"(,"jti":"x"})");
  std::string pub = KeyFile("AICHAT_JWT_PUBLIC_KEYS");
  pub = pub.substr(0, pub.find(','));
  auto hs256 = [&](const std::string& secret) {
    std::string input = B64(R"({"alg":"HS256","typ":"JWT"})") + "." + B64(claims);
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
    return input + "." + B64(std::string(reinterpret_cast<char*>(mac), len));
  };
  auto signer = aichat::TokenSigner::Create(KeyFile("AICHAT_JWT_SIGNING_KEY"));
  ASSERT_TRUE(signer.ok());
  auto sign = [&](absl::Time iat, absl::Time exp) {
    aichat::TokenClaims c;
    c.user_id = a.id;
    c.issued_at = iat;
    c.expires_at = exp;
    return signer->Sign(c);
  };
  auto other = aichat::TokenSigner::Create(aichat::GenerateKeyPair().private_key);
  aichat::TokenClaims oc;
  oc.user_id = a.id;
  oc.issued_at = absl::Now();
  oc.expires_at = absl::Now() + absl::Minutes(5);
  std::string payload_admin = B64(claims);
  std::vector<std::pair<std::string, std::string>> attacks = {
      {"missing", ""},
      {"garbage", "not-a-jwt"},
      {"alg none", B64(R"({"alg":"none","typ":"JWT"})") + "." + B64(claims) + "."},
      {"alg none, kept signature", B64(R"({"alg":"none"})") + "." + parts[1] + "." + parts[2]},
      {"HS256 with the public key (b64)", hs256(pub)},
      {"HS256 with the public key (raw)", hs256(aichat::Base64UrlDecode(pub).value_or(""))},
      {"expired", sign(absl::Now() - absl::Hours(2), absl::Now() - absl::Hours(1))},
      {"not yet valid", sign(absl::Now() + absl::Hours(1), absl::Now() + absl::Hours(2))},
      {"tampered payload (role admin)", parts[0] + "." + payload_admin + "." + parts[2]},
      {"signature stripped", parts[0] + "." + parts[1] + "."},
      {"another key", other->Sign(oc)},
      {"huge", std::string(7000, 'A') + "." + std::string(7000, 'B') + "." + "C"},
  };
  for (auto& [name, call] : EveryService(*users_, *convs_, *agents_, *usages_)) {
    auto good = call(a.token, 0);
    // The previous method's last attack (a header over the limit) may have made the
    // server drop that HTTP/2 connection ("Socket closed" on the next call on the same
    // channel); a client retries UNAVAILABLE, and so does this probe, once.
    if (good.error_code() == StatusCode::UNAVAILABLE) good = call(a.token, 0);
    EXPECT_TRUE(good.ok()) << name << " rejects a good token: " << good.error_code() << " "
                           << good.error_message();
    for (auto& [attack, token] : attacks) {
      auto st = call(token, 0);
      // A 14 kB token is over gRPC's header limit: refused before any handler runs.
      if (attack == "huge" && st.error_code() == StatusCode::RESOURCE_EXHAUSTED) continue;
      EXPECT_EQ(st.error_code(), StatusCode::UNAUTHENTICATED)
          << name << " with " << attack << ": " << st.error_message();
    }
  }
  // Revoked refresh token reuse: rotation invalidates the old one, Logout the new one.
  auto refresh = [&](const std::string& r) {
    Ctx ctx("");
    user::RefreshRequest req;
    req.set_refresh_token(r);
    user::LoginResponse resp;
    auto st = users_->Refresh(&ctx, req, &resp);
    NoteSecret(resp.refresh_token());
    NoteSecret(resp.access_token());
    return std::make_pair(st, resp.refresh_token());
  };
  auto [st1, r2] = refresh(a.refresh);
  ASSERT_TRUE(st1.ok()) << st1.error_message();
  EXPECT_EQ(refresh(a.refresh).first.error_code(), StatusCode::UNAUTHENTICATED) << "reuse";
  {
    Ctx ctx("");
    user::LogoutRequest req;
    req.set_refresh_token(r2);
    user::LogoutResponse resp;
    EXPECT_TRUE(users_->Logout(&ctx, req, &resp).ok());
  }
  EXPECT_EQ(refresh(r2).first.error_code(), StatusCode::UNAUTHENTICATED) << "after logout";
}

// --- hostile input ---

// A length-delimited protobuf field, by hand.
std::string Field(int number, const std::string& bytes) {
  std::string out;
  auto varint = [&](uint64_t v) {
    while (v >= 0x80) {
      out += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out += static_cast<char>(v);
  };
  varint((static_cast<uint64_t>(number) << 3) | 2);
  varint(bytes.size());
  return out + bytes;
}
std::string VarintField(int number, uint64_t v) {
  std::string out(1, static_cast<char>(number << 3));
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  return out + static_cast<char>(v);
}

grpc::Status Raw(std::shared_ptr<grpc::Channel> ch, const std::string& method,
                 const std::string& token, const std::string& body, int64_t acting = 0) {
  grpc::GenericStub stub(ch);
  grpc::Slice slice(body);
  grpc::ByteBuffer req(&slice, 1), resp;
  Ctx ctx(token, acting);
  grpc::Status out;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  stub.UnaryCall(&ctx.c, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status st) {
    std::lock_guard<std::mutex> l(mu);
    out = st;
    done = true;
    cv.notify_one();
  });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  return out;
}

const std::vector<std::pair<std::string, std::string>>& HostileValues() {
  static const auto* v = new std::vector<std::pair<std::string, std::string>>{
      {"invalid UTF-8", std::string("ab\xff\xfe\xc0\x80", 6)},
      {"lone surrogate", std::string("\xed\xa0\x80", 3)},
      {"NUL byte", std::string("a\0b", 3)},
      {"huge (2 MiB)", std::string(2 << 20, 'x')},
      {"oversized (5 MiB, over the gRPC limit)", std::string(5 << 20, 'y')},
  };
  return *v;
}

TEST_F(Abuse, HostileStringsAreRefusedAndNothingIsWritten) {
  Account a = Make(Unique("hostile"), "hostile-Pa55word");
  int64_t cid = NewConversation(a);
  auto conv_ch = Chan("FAULTS_CONV_ADDR");
  auto agent_ch = Chan("FAULTS_AGENT_ADDR");
  auto user_ch = Chan("FAULTS_USER_ADDR");
  auto usage_ch = Chan("FAULTS_USAGE_ADDR");
  struct Target {
    std::shared_ptr<grpc::Channel> ch;
    std::string method, token;
    std::function<std::string(const std::string&)> body;
    int64_t acting = 0;
  };
  const std::string C = "/aichat.conversation.v1.ConversationService/";
  const std::string A = "/aichat.agent.v1.AiAgentService/";
  const std::string U = "/aichat.user.v1.UserService/";
  const std::string S = "/aichat.usage.v1.UsageService/";
  auto cidf = VarintField(1, cid);
  std::vector<Target> targets = {
      {conv_ch, C + "CreateConversation", a.token, [](auto v) { return Field(1, v); }},
      {conv_ch, C + "CreateConversation", a.token, [](auto v) { return Field(2, v); }},
      {conv_ch, C + "CreateConversation", a.token, [](auto v) { return Field(3, v); }},
      {conv_ch, C + "UpdateConversation", a.token, [&](auto v) { return cidf + Field(2, v); }},
      {conv_ch, C + "UpdateConversation", a.token, [&](auto v) { return cidf + Field(4, v); }},
      {conv_ch, C + "AppendMessage", a.token,
       [&](auto v) { return cidf + VarintField(2, 1) + Field(3, v); }},
      {conv_ch, C + "ListMessages", a.token, [&](auto v) { return cidf + Field(3, v); }},
      {conv_ch, C + "ListConversations", a.token, [](auto v) { return Field(2, v); }},
      {agent_ch, A + "SendMessage", a.token, [&](auto v) { return cidf + Field(2, v); }},
      {agent_ch, A + "SendMessage", a.token,
       [&](auto v) { return cidf + Field(2, "hi") + Field(3, v); }},
      {agent_ch, A + "SendMessage", a.token,
       [&](auto v) { return cidf + Field(2, "hi") + Field(4, v); }},
      {agent_ch, A + "ListPrompts", a.token, [](auto v) { return Field(3, v); }},
      {agent_ch, A + "DeleteModel", admin_.token, [](auto v) { return Field(1, v); }},
      {agent_ch, A + "UpsertModel", admin_.token,
       [](auto v) {
         return Field(1, Field(1, v) + Field(2, "p") + VarintField(8, 1000) + VarintField(9, 10));
       }},
      {agent_ch, A + "UpsertModel", admin_.token,
       [](auto v) {
         return Field(
             1, Field(1, "hostile-m") + Field(2, v) + VarintField(8, 1000) + VarintField(9, 10));
       }},
      {agent_ch, A + "UpsertModel", admin_.token,
       [](auto v) {
         return Field(1, Field(1, "hostile-m") + Field(2, "p") + Field(3, v) +
                             VarintField(8, 1000) + VarintField(9, 10));
       }},
      {agent_ch, A + "UpsertModel", admin_.token,
       [](auto v) {
         return Field(1, Field(1, "hostile-m") + Field(2, "p") + Field(4, v) +
                             VarintField(8, 1000) + VarintField(9, 10));
       }},
      {user_ch, U + "Register", "", [](auto v) { return Field(1, v) + Field(2, "longenough1"); }},
      {user_ch, U + "Register", "",
       [](auto v) { return Field(1, "hostile-reg@abuse.test") + Field(2, v); }},
      {user_ch, U + "Register", "",
       [](auto v) {
         return Field(1, "hostile-reg2@abuse.test") + Field(2, "longenough1") + Field(3, v);
       }},
      {user_ch, U + "Login", "", [](auto v) { return Field(1, v) + Field(2, "whatever12"); }},
      {user_ch, U + "Login", "", [](auto v) { return Field(1, "a@b.c") + Field(2, v); }},
      {user_ch, U + "Login", "", [](auto v) { return Field(3, v); }},
      {user_ch, U + "Refresh", "", [](auto v) { return Field(1, v); }},
      {user_ch, U + "Logout", "", [](auto v) { return Field(1, v); }},
      {user_ch, U + "CreateApiKey", a.token, [](auto v) { return Field(1, v); }},
      {user_ch, U + "ListUsers", admin_.token, [](auto v) { return Field(2, v); }},
      {usage_ch, S + "ReserveBudget", service_token_,
       [&](auto v) { return VarintField(1, a.id) + Field(2, v) + VarintField(3, 1); }},
      {usage_ch, S + "ReleaseBudget", service_token_, [](auto v) { return Field(1, v); }},
      {usage_ch, S + "ListUsage", a.token, [](auto v) { return Field(5, v); }},
      {usage_ch, S + "RecordUsage", service_token_,
       [&](auto v) {
         return Field(1, Field(1, v) + VarintField(2, a.id) + VarintField(3, 1) +
                             VarintField(4, 1) + Field(5, "m") + Field(6, "m") +
                             VarintField(15, 1) +
                             Field(16, VarintField(1, absl::ToUnixSeconds(absl::Now()))));
       }},
      {usage_ch, S + "RecordUsage", service_token_,
       [&](auto v) {
         return Field(1, Field(1, "hostile-ev") + VarintField(2, a.id) + VarintField(3, 1) +
                             VarintField(4, 1) + Field(5, v) + Field(6, "m") + VarintField(15, 1) +
                             Field(16, VarintField(1, absl::ToUnixSeconds(absl::Now()))));
       }},
  };
  int64_t before = MessageCount(a, cid);
  for (const auto& t : targets) {
    for (const auto& [what, value] : HostileValues()) {
      auto st = Raw(t.ch, t.method, t.token, t.body(value), t.acting);
      bool oversized = value.size() > (4 << 20);
      // Refused: INVALID_ARGUMENT (validation), INTERNAL (the server cannot parse
      // invalid UTF-8 in a proto3 string), RESOURCE_EXHAUSTED (over the size limit);
      // UNAUTHENTICATED / NOT_FOUND for secrets and ids that match nothing.
      // Logout of a token that matches nothing is a no-op OK by design (nothing written).
      if (t.method == U + "Logout" && st.ok()) continue;
      // Invalid UTF-8 in a proto3 string never reaches a handler (protobuf refuses to
      // parse it); common/malformed_request turns gRPC's bare UNIMPLEMENTED into
      // INVALID_ARGUMENT naming the field.
      if (what.find("UTF-8") != std::string::npos || what.find("surrogate") != std::string::npos) {
        EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << t.method << " " << what;
        EXPECT_NE(st.error_message().find("must be valid UTF-8"), std::string::npos)
            << t.method << " " << what << ": " << st.error_message();
        continue;
      }
      bool refused = st.error_code() == StatusCode::INVALID_ARGUMENT ||
                     st.error_code() == StatusCode::INTERNAL ||
                     st.error_code() == StatusCode::RESOURCE_EXHAUSTED ||
                     st.error_code() == StatusCode::UNAUTHENTICATED ||
                     st.error_code() == StatusCode::NOT_FOUND;
      EXPECT_TRUE(refused) << t.method << " " << what << ": " << st.error_code() << " "
                           << st.error_message().substr(0, 200);
      if (oversized) {
        EXPECT_EQ(st.error_code(), StatusCode::RESOURCE_EXHAUSTED) << t.method;
      }
      if (st.error_code() == StatusCode::INVALID_ARGUMENT) {
        EXPECT_FALSE(st.error_message().empty()) << t.method;
      }
    }
  }
  EXPECT_EQ(MessageCount(a, cid), before);
  // Nothing hostile was stored: A's conversations are the one made above.
  Ctx ctx(a.token);
  conv::ListConversationsResponse list;
  ASSERT_TRUE(convs_->ListConversations(&ctx, conv::ListConversationsRequest(), &list).ok());
  EXPECT_EQ(list.conversations_size(), 1);
}

TEST_F(Abuse, SqlMetacharactersAreStoredLiterally) {
  Account a = Make(Unique("sql"), "sql-Pa55word-123");
  const std::string evil = "x'); DROP TABLE conversations; -- \" \\ %_ $1 ;SELECT pg_sleep(10)";
  int64_t cid = NewConversation(a, evil);
  Ctx ctx(a.token);
  conv::GetConversationRequest r;
  r.set_id(cid);
  conv::Conversation o;
  ASSERT_TRUE(convs_->GetConversation(&ctx, r, &o).ok());
  EXPECT_EQ(o.title(), evil);
  Ctx ctx2("");
  user::LoginRequest lr;
  lr.set_email("' OR '1'='1");
  lr.set_password("' OR '1'='1");
  user::LoginResponse resp;
  auto st = users_->Login(&ctx2, lr, &resp);
  EXPECT_TRUE(st.error_code() == StatusCode::UNAUTHENTICATED ||
              st.error_code() == StatusCode::INVALID_ARGUMENT);
}

TEST_F(Abuse, DeeplyNestedMessagesAreRefusedCleanly) {
  // 20k nested groups of an unknown field: the parser's recursion limit must hold.
  std::string nested;
  for (int i = 0; i < 20000; ++i) nested += "\x9b\x06";  // field 99, start group (2 bytes)
  Account a = Make(Unique("nest"), "nest-Pa55word-1");
  for (const char* m :
       {"/aichat.conversation.v1.ConversationService/CreateConversation",
        "/aichat.agent.v1.AiAgentService/ListPrompts", "/aichat.user.v1.UserService/GetMe",
        "/aichat.usage.v1.UsageService/ListUsage"}) {
    std::string addr = std::string(m).find("conversation") != std::string::npos ? "FAULTS_CONV_ADDR"
                       : std::string(m).find("agent") != std::string::npos   ? "FAULTS_AGENT_ADDR"
                       : std::string(m).find("user.v1") != std::string::npos ? "FAULTS_USER_ADDR"
                                                                             : "FAULTS_USAGE_ADDR";
    auto st = Raw(Chan(addr.c_str()), m, a.token, nested);
    EXPECT_NE(st.error_code(), StatusCode::OK) << m;
    EXPECT_NE(st.error_code(), StatusCode::UNAVAILABLE) << m << " crashed?";
  }
  // ...and every service still answers.
  for (auto& [name, call] : EveryService(*users_, *convs_, *agents_, *usages_)) {
    EXPECT_TRUE(call(a.token, 0).ok()) << name;
  }
}

// --- slow and stuck clients ---

int64_t RssKb(const std::string& service) {
  std::ifstream pidf(Env("FAULTS_STATE_DIR") + "/run/" + service + ".pid");
  int pid = 0;
  pidf >> pid;
  std::ifstream st("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(st, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

int64_t AgentRssKb() { return RssKb("ai-agent"); }

bool QuickTurn(const Account& a, int64_t cid, int seconds) {
  Ctx ctx(a.token, 0, seconds);
  agent::SendMessageRequest req;
  req.set_conversation_id(cid);
  req.set_content("are you there");
  agent::TurnResult out;
  static auto stub = agent::AiAgentService::NewStub(Chan("FAULTS_AGENT_ADDR"));
  return stub->SendMessage(&ctx, req, &out).ok();
}

TEST_F(Abuse, SlowlorisDoesNotStarveOthers) {
  Account a = Make(Unique("slow"), "slow-Pa55word-1");
  int64_t cid = NewConversation(a);
  std::string addr = Env("FAULTS_AGENT_ADDR");
  int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  std::vector<int> fds;
  for (int i = 0; i < 64; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) fds.push_back(fd);
  }
  ASSERT_GT(fds.size(), 32u);
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  int ok = 0;
  // Drip the preface a byte at a time over ~3 s while real calls go on.
  for (size_t i = 0; i < 12; ++i) {
    for (int fd : fds) (void)!send(fd, preface.data() + i, 1, MSG_NOSIGNAL);
    if (QuickTurn(a, cid, 10)) ++ok;
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  for (int fd : fds) close(fd);
  EXPECT_EQ(ok, 12) << "calls failed while 64 slow clients held connections";
}

TEST_F(Abuse, ClientThatNeverReadsHasBoundedMemory) {
  Account a = Make(Unique("noread"), "noread-Pa55word");
  int64_t cid = NewConversation(a);
  Account b = Make(Unique("noread-b"), "noread-b-Pa55word");
  int64_t cid_b = NewConversation(b);
  ASSERT_TRUE(QuickTurn(b, cid_b, 20));
  int64_t rss0 = AgentRssKb();
  ASSERT_GT(rss0, 0);
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<agent::TurnEvent>>> readers;
  for (int i = 0; i < 4; ++i) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + a.token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    agent::SendMessageRequest req;
    req.set_conversation_id(cid);
    req.set_content(absl::StrCat("flood ", i, " words words words [[fake:tokens=16000]]"));
    req.set_max_output_tokens(16000);
    readers.push_back(agents_->StreamMessage(ctx.get(), req));  // never Read()
    ctxs.push_back(std::move(ctx));
  }
  int64_t peak = rss0;
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    peak = std::max(peak, AgentRssKb());
  }
  EXPECT_TRUE(QuickTurn(b, cid_b, 10)) << "another client was starved";
  peak = std::max(peak, AgentRssKb());
  std::cerr << "ai-agent RSS " << rss0 << " kB before, peak " << peak << " kB with 4 unread "
            << "16000-token streams\n";
  EXPECT_LT(peak - rss0, 64 * 1024) << "RSS grew by more than 64 MiB";
  for (auto& c : ctxs) c->TryCancel();
  for (auto& r : readers) (void)r->Finish();
}

// --- hardening: secrets, memory, idempotency waiters, login floods ---

TEST_F(Abuse, AnAdminCannotSendAnotherSecretOrAKeyAnywhere) {
  auto upsert = [&](const std::string& key_env, const std::string& url) {
    Ctx ctx(admin_.token);
    agent::UpsertModelRequest req;
    auto* m = req.mutable_model();
    m->set_name("exfil");
    m->set_provider_model("gpt-4o-mini");
    m->set_api_key_env(key_env);
    m->set_base_url(url);
    m->set_context_window(1000);
    m->set_max_output_tokens(100);
    m->set_enabled(true);
    agent::ModelConfig out;
    return agents_->UpsertModel(&ctx, req, &out);
  };
  for (const char* secret : {"AICHAT_SERVICE_TOKEN", "AICHAT_JWT_SIGNING_KEY", "DATABASE_URL"}) {
    auto st = upsert(secret, "https://attacker.example/v1");
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << secret;
    EXPECT_NE(st.error_message().find("api_key_env"), std::string::npos) << st.error_message();
  }
  auto plain = upsert("OPENAI_API_KEY", "http://attacker.example/v1");
  EXPECT_EQ(plain.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(plain.error_message().find("base_url"), std::string::npos);
  // Users never see where keys go.
  Account u = Make(Unique("models"), "models-Pa55word");
  Ctx ctx(u.token);
  agent::ListModelsResponse list;
  ASSERT_TRUE(agents_->ListModels(&ctx, agent::ListModelsRequest(), &list).ok());
  for (const auto& m : list.models()) {
    EXPECT_TRUE(m.api_key_env().empty() && m.base_url().empty() && m.deployments().empty())
        << m.name();
  }
}

TEST_F(Abuse, LargeMessagesAreReadBackInBoundedPagesAndMemory) {
  Account a = Make(Unique("big"), "big-Pa55word-1");
  int64_t cid = NewConversation(a);
  const std::string big(250 * 1024, 'x');
  int appended = 0;
  for (int i = 0; i < 20; ++i) {  // the per-user append burst
    Ctx ctx(a.token);
    conv::AppendMessageRequest req;
    req.set_conversation_id(cid);
    req.set_role(conv::MESSAGE_ROLE_USER);
    req.set_content(big);
    conv::Message m;
    appended += convs_->AppendMessage(&ctx, req, &m).ok();
  }
  ASSERT_GE(appended, 10);
  const int64_t rss0 = RssKb("conversation");
  int64_t peak = rss0;
  std::vector<std::thread> readers;
  std::mutex mu;
  int pages = 0, seen = 0;
  bool over_budget = false;
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&] {
      for (int round = 0; round < 3; ++round) {
        std::string token;
        do {
          Ctx ctx(a.token);
          conv::ListMessagesRequest req;
          req.set_conversation_id(cid);
          req.set_page_size(500);
          req.set_page_token(token);
          conv::ListMessagesResponse resp;
          if (!convs_->ListMessages(&ctx, req, &resp).ok()) return;
          std::lock_guard<std::mutex> l(mu);
          ++pages;
          seen += resp.messages_size();
          over_budget |= resp.ByteSizeLong() > (4u << 20);
          token = resp.next_page_token();
        } while (!token.empty());
      }
    });
  }
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    peak = std::max(peak, RssKb("conversation"));
  }
  for (auto& t : readers) t.join();
  peak = std::max(peak, RssKb("conversation"));
  std::cerr << "conversation RSS " << rss0 << " kB before, peak " << peak << " kB; " << pages
            << " pages, " << seen << " messages read by 8 readers\n";
  EXPECT_FALSE(over_budget);
  EXPECT_EQ(seen, 8 * 3 * appended);  // every message once per pass, in bounded pages
  EXPECT_LT(peak - rss0, 256 * 1024) << "RSS grew by more than 256 MiB";
}

TEST_F(Abuse, AFloodOfRetriesOnOneKeyWaitsBoundedAndCostsOneTurn) {
  Account a = Make(Unique("waiters"), "waiters-Pa55word");
  int64_t cid = NewConversation(a);
  agent::SendMessageRequest req;
  req.set_conversation_id(cid);
  req.set_content("slow one [[fake:delay_ms=150]]");
  req.set_idempotency_key("flood-key");
  std::mutex mu;
  std::map<StatusCode, int> codes;
  std::vector<std::thread> calls;
  for (int i = 0; i < 24; ++i) {
    calls.emplace_back([&, i] {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));  // first one runs
      Ctx ctx(a.token, 0, 30);
      agent::TurnResult out;
      auto st = agents_->SendMessage(&ctx, req, &out);
      std::lock_guard<std::mutex> l(mu);
      ++codes[st.error_code()];
    });
  }
  for (auto& t : calls) t.join();
  std::cerr << "24 calls on one key: OK " << codes[StatusCode::OK] << ", RESOURCE_EXHAUSTED "
            << codes[StatusCode::RESOURCE_EXHAUSTED] << "\n";
  EXPECT_GE(codes[StatusCode::OK], 5);                  // the turn and the waiters allowed
  EXPECT_GE(codes[StatusCode::RESOURCE_EXHAUSTED], 1);  // the rest turned away at once
  EXPECT_EQ(codes[StatusCode::OK] + codes[StatusCode::RESOURCE_EXHAUSTED], 24);
  EXPECT_EQ(MessageCount(a, cid), 2);  // one turn: one question, one answer
}

TEST_F(Abuse, FailedLoginsAreThrottledPerAccount) {
  const std::string email = Unique("login");
  {
    Ctx ctx("");
    user::RegisterRequest req;
    req.set_email(email);
    req.set_password("login-Pa55word-right");
    user::User u;
    ASSERT_TRUE(users_->Register(&ctx, req, &u).ok());
  }
  int throttled = 0;
  for (int i = 0; i < 12; ++i) {
    Ctx ctx("");
    user::LoginRequest req;
    req.set_email(email);
    req.set_password("wrong-password-" + std::to_string(i));
    user::LoginResponse resp;
    auto st = users_->Login(&ctx, req, &resp);
    EXPECT_TRUE(st.error_code() == StatusCode::UNAUTHENTICATED ||
                st.error_code() == StatusCode::RESOURCE_EXHAUSTED)
        << st.error_message();
    throttled += st.error_code() == StatusCode::RESOURCE_EXHAUSTED;
  }
  EXPECT_GE(throttled, 5) << "failed logins were never throttled";
  // Even the right password waits out the backoff (no guessing through it)...
  Ctx ctx("");
  user::LoginRequest req;
  req.set_email(email);
  req.set_password("login-Pa55word-right");
  user::LoginResponse resp;
  EXPECT_EQ(users_->Login(&ctx, req, &resp).error_code(), StatusCode::RESOURCE_EXHAUSTED);
  // ...while other accounts log in as usual.
  Ctx other("");
  user::LoginRequest oreq;
  oreq.set_email(Env("FAULTS_ADMIN_EMAIL"));
  oreq.set_password(Env("FAULTS_ADMIN_PASSWORD"));
  EXPECT_TRUE(users_->Login(&other, oreq, &resp).ok());
}

}  // namespace
