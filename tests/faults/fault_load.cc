// aichat-fault-load: the load half of the fault suite (tests/faults/faults.py is
// the other half: it starts the suite, injects faults and checks invariants).
//
//   aichat-fault-load register EMAIL PASSWORD          (user service at $FAULTS_USER_ADDR)
//   aichat-fault-load load [--flags]                   steady concurrent chat turns
//
// `load` logs in an admin, registers/logs in --users users with a high rate limit,
// gives each caller its own conversation and then runs --callers threads doing
// chat turns (alternating StreamMessage and SendMessage, every call with a
// deadline) against the --agents addresses round-robin until --duration_s passes
// or --max_turns turns were started. Each call becomes one JSON line in --out,
// so the checker can match what the client saw against the databases. Message
// contents carry the turn's idempotency key, so the provider's request log can
// be matched too. It exits non-zero only if it could not set up.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "aichat/agent/v1/agent.grpc.pb.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "aichat/usage/v1/usage.grpc.pb.h"
#include "aichat/user/v1/user.grpc.pb.h"

namespace {

namespace agent = aichat::agent::v1;
namespace conv = aichat::conversation::v1;
namespace usage = aichat::usage::v1;
namespace user = aichat::user::v1;
using Clock = std::chrono::steady_clock;

struct Flags {
  std::string user_addr, conv_addr, usage_addr;
  std::vector<std::string> agents;
  std::string admin_email, admin_password, out = "/dev/stdout", ready_file, tag = "t";
  int users = 4, callers = 8, duration_s = 20, max_turns = 1000000, deadline_s = 20;
  int max_output_tokens = 0;  // 0: the model's
  int64_t budget_nanos = -1;  // >= 0: one user, this monthly budget, a new conversation per turn
  std::string content_words = "alpha beta gamma delta";
  std::string directive;     // appended to every message, e.g. [[fake:delay_ms=30]]
  int retry_same_key_s = 0;  // > 0: a failed turn is sent again with its key for this long
};

std::string Json(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

void Auth(grpc::ClientContext& ctx, const std::string& token, int seconds) {
  ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

std::shared_ptr<grpc::Channel> Chan(const std::string& addr) {
  return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
}

// Setup calls retry for a while: the suite may still be settling.
template <typename F>
grpc::Status Retry(F f) {
  grpc::Status st;
  for (int i = 0; i < 50; ++i) {
    st = f();
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE &&
        st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return st;
}

bool Check(const grpc::Status& st, const char* what) {
  if (!st.ok()) {
    std::cerr << "fault-load: " << what << ": " << st.error_code() << " " << st.error_message()
              << "\n";
  }
  return st.ok();
}

std::string Login(user::UserService::Stub& users, const std::string& email,
                  const std::string& password, int64_t* id) {
  user::LoginResponse resp;
  auto st = Retry([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    user::LoginRequest req;
    req.set_email(email);
    req.set_password(password);
    return users.Login(&ctx, req, &resp);
  });
  if (!Check(st, "login")) return "";
  if (id != nullptr) *id = resp.user().id();
  return resp.access_token();
}

bool Register(user::UserService::Stub& users, const std::string& email,
              const std::string& password) {
  auto st = Retry([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    user::RegisterRequest req;
    req.set_email(email);
    req.set_password(password);
    user::User u;
    return users.Register(&ctx, req, &u);
  });
  return st.ok() || st.error_code() == grpc::StatusCode::ALREADY_EXISTS || Check(st, "register");
}

struct Caller {
  int64_t user_id = 0;
  std::string token;
  int64_t conversation_id = 0;
};

class Load {
 public:
  explicit Load(Flags f) : f_(std::move(f)), out_(f_.out, std::ios::app) {}

  int Run() {
    auto users = user::UserService::NewStub(Chan(f_.user_addr));
    auto convs = conv::ConversationService::NewStub(Chan(f_.conv_addr));
    std::string admin = Login(*users, f_.admin_email, f_.admin_password, nullptr);
    if (admin.empty()) return 2;
    int nusers = f_.budget_nanos >= 0 ? 1 : f_.users;
    std::vector<Caller> accounts;
    for (int i = 0; i < nusers; ++i) {
      std::string email = absl::StrCat("load-", f_.tag, "-", i, "@faults.test");
      std::string password = "pw-" + f_.tag + "-secret";
      if (!Register(*users, email, password)) return 2;
      int64_t id = 0;
      if (Login(*users, email, password, &id).empty()) return 2;
      auto st = Retry([&] {
        grpc::ClientContext ctx;
        Auth(ctx, admin, 10);
        user::SetUserRateLimitRequest req;
        req.set_user_id(id);
        req.set_requests_per_minute(100000);
        user::User u;
        return users->SetUserRateLimit(&ctx, req, &u);
      });
      if (!Check(st, "SetUserRateLimit")) return 2;
      Caller c;
      c.user_id = id;
      c.token = Login(*users, email, password, nullptr);  // the new rpm is a claim
      if (f_.budget_nanos >= 0) {
        auto ust = usage::UsageService::NewStub(Chan(f_.usage_addr));
        st = Retry([&] {
          grpc::ClientContext ctx;
          Auth(ctx, admin, 10);
          usage::SetBudgetRequest req;
          req.set_user_id(id);
          req.set_monthly_limit_nanos(f_.budget_nanos);
          usage::Budget b;
          return ust->SetBudget(&ctx, req, &b);
        });
        if (!Check(st, "SetBudget")) return 2;
      }
      accounts.push_back(c);
    }
    for (int i = 0; i < f_.callers; ++i) {
      Caller c = accounts[i % accounts.size()];
      if (f_.budget_nanos < 0) {
        c.conversation_id = NewConversation(*convs, c.token);
        if (c.conversation_id == 0) return 2;
      }
      callers_.push_back(c);
    }
    if (!f_.ready_file.empty()) std::ofstream(f_.ready_file) << "ready\n";
    auto until = Clock::now() + std::chrono::seconds(f_.duration_s);
    std::vector<std::thread> threads;
    for (int i = 0; i < f_.callers; ++i) {
      threads.emplace_back([this, i, until] { Worker(i, until); });
    }
    for (auto& t : threads) t.join();
    std::cerr << "fault-load: " << started_.load() << " turns\n";
    return 0;
  }

 private:
  int64_t NewConversation(conv::ConversationService::Stub& convs, const std::string& token) {
    conv::Conversation c;
    auto st = Retry([&] {
      grpc::ClientContext ctx;
      Auth(ctx, token, 10);
      conv::CreateConversationRequest req;
      req.set_title("fault load");
      return convs.CreateConversation(&ctx, req, &c);
    });
    Check(st, "CreateConversation");
    return st.ok() ? c.id() : 0;
  }

  void Worker(int i, Clock::time_point until) {
    Caller me = callers_[i];
    auto convs = conv::ConversationService::NewStub(Chan(f_.conv_addr));
    std::vector<std::unique_ptr<agent::AiAgentService::Stub>> stubs;
    for (const auto& a : f_.agents) stubs.push_back(agent::AiAgentService::NewStub(Chan(a)));
    for (int n = 0; Clock::now() < until; ++n) {
      int turn = started_.fetch_add(1);
      if (turn >= f_.max_turns) return;
      if (f_.budget_nanos >= 0) {
        me.conversation_id = NewConversation(*convs, me.token);
        if (me.conversation_id == 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          continue;
        }
      }
      std::string key = absl::StrCat(f_.tag, "-", i, "-", n);
      agent::SendMessageRequest req;
      req.set_conversation_id(me.conversation_id);
      req.set_content(absl::StrCat("turn ", key, " ", f_.content_words, f_.directive));
      req.set_idempotency_key(key);
      if (f_.max_output_tokens > 0) req.set_max_output_tokens(f_.max_output_tokens);
      bool stream = (i + n) % 2 == 0;
      size_t which = (i + n) % stubs.size();
      // Back off after a failure, as a real client would: a dead peer must not turn
      // the load into a tight loop of instant UNAVAILABLEs.
      if (OneTurn(*stubs[which], me, req, stream, f_.agents[which]) == grpc::StatusCode::OK) {
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      if (f_.retry_same_key_s <= 0) continue;
      // As a careful client does: the same request, the same key, until it is answered
      // (a saved answer comes back; nothing is charged twice) or refused for good.
      auto give_up = Clock::now() + std::chrono::seconds(f_.retry_same_key_s);
      while (Clock::now() < give_up) {
        auto code = OneTurn(*stubs[which], me, req, stream, f_.agents[which]);
        if (code == grpc::StatusCode::OK || code == grpc::StatusCode::ABORTED ||
            code == grpc::StatusCode::INVALID_ARGUMENT ||
            code == grpc::StatusCode::FAILED_PRECONDITION || code == grpc::StatusCode::NOT_FOUND) {
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
    }
  }

  grpc::StatusCode OneTurn(agent::AiAgentService::Stub& stub, const Caller& me,
                           const agent::SendMessageRequest& req, bool stream,
                           const std::string& addr) {
    auto t0 = Clock::now();
    auto wall0 = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    agent::TurnResult result;
    grpc::Status st;
    int64_t started_prompt = 0;
    std::string deltas;
    bool completed = false;
    // A call that met the agent's connection-age GOAWAY before anything came back is
    // made again at once with its key, as gRPC's transparent retry means to (it
    // misses the race now and then in 1.51); such a call is counted once.
    int goaway_retries = 0;
    for (;;) {
      grpc::ClientContext ctx;
      Auth(ctx, me.token, f_.deadline_s);
      if (stream) {
        auto reader = stub.StreamMessage(&ctx, req);
        agent::TurnEvent ev;
        while (reader->Read(&ev)) {
          if (ev.has_started()) started_prompt = ev.started().prompt_id();
          if (ev.has_delta()) deltas += ev.delta().text();
          if (ev.has_completed()) {
            result = ev.completed();
            completed = true;
          }
        }
        st = reader->Finish();
      } else {
        st = stub.SendMessage(&ctx, req, &result);
        completed = st.ok();
      }
      const bool refused_connection = st.error_code() == grpc::StatusCode::UNAVAILABLE &&
                                      absl::StrContains(st.error_message(), "GOAWAY") &&
                                      started_prompt == 0 && deltas.empty();
      if (!refused_connection || goaway_retries == 3) break;
      ++goaway_retries;
    }
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
    std::string line = absl::StrCat(
        "{\"key\":", Json(req.idempotency_key()), ",\"user_id\":", me.user_id,
        ",\"conversation_id\":", req.conversation_id(), ",\"stream\":", stream ? "true" : "false",
        ",\"agent\":", Json(addr), ",\"code\":", static_cast<int>(st.error_code()),
        ",\"message\":", Json(st.error_message()), ",\"ms\":", ms, ",\"t0\":", wall0,
        ",\"t1\":", wall0 + ms, ",\"deadline_ms\":", f_.deadline_s * 1000,
        ",\"completed_event\":", completed ? "true" : "false",
        ",\"started_prompt\":", started_prompt, ",\"deltas\":", Json(deltas),
        ",\"goaway_retries\":", goaway_retries, ",\"prompt_id\":", result.prompt_id(),
        ",\"response_message_id\":", result.response_message_id(),
        ",\"user_message_id\":", result.user_message_id(), ",\"text\":", Json(result.text()),
        ",\"cost_nanos\":", result.cost_nanos(),
        ",\"prompt_tokens\":", result.usage().prompt_tokens(),
        ",\"completion_tokens\":", result.usage().completion_tokens(),
        ",\"cached_tokens\":", result.usage().cached_tokens(), "}\n");
    std::lock_guard<std::mutex> lock(mu_);
    out_ << line << std::flush;
    return st.error_code();
  }

  Flags f_;
  std::ofstream out_;
  std::mutex mu_;
  std::vector<Caller> callers_;
  std::atomic<int> started_{0};
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (a.rfind("--", 0) != 0 || eq == std::string::npos) return false;
    std::string k = a.substr(2, eq - 2), v = a.substr(eq + 1);
    if (k == "user_addr")
      f.user_addr = v;
    else if (k == "conv_addr")
      f.conv_addr = v;
    else if (k == "usage_addr")
      f.usage_addr = v;
    else if (k == "agents")
      f.agents = absl::StrSplit(v, ',', absl::SkipEmpty());
    else if (k == "admin_email")
      f.admin_email = v;
    else if (k == "admin_password")
      f.admin_password = v;
    else if (k == "out")
      f.out = v;
    else if (k == "ready_file")
      f.ready_file = v;
    else if (k == "tag")
      f.tag = v;
    else if (k == "users")
      f.users = std::stoi(v);
    else if (k == "callers")
      f.callers = std::stoi(v);
    else if (k == "duration_s")
      f.duration_s = std::stoi(v);
    else if (k == "max_turns")
      f.max_turns = std::stoi(v);
    else if (k == "deadline_s")
      f.deadline_s = std::stoi(v);
    else if (k == "max_output_tokens")
      f.max_output_tokens = std::stoi(v);
    else if (k == "budget_nanos")
      f.budget_nanos = std::stoll(v);
    else if (k == "content_words")
      f.content_words = v;
    else if (k == "directive")
      f.directive = v;
    else if (k == "retry_same_key_s")
      f.retry_same_key_s = std::stoi(v);
    else
      return false;
  }
  return !f.agents.empty() && !f.user_addr.empty() && !f.conv_addr.empty();
}

}  // namespace

int main(int argc, char** argv) {
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "register" && argc == 5) {
    auto users = user::UserService::NewStub(Chan(argv[2]));
    return Register(*users, argv[3], argv[4]) ? 0 : 2;
  }
  Flags f;
  if (cmd != "load" || !ParseFlags(argc, argv, f)) {
    std::cerr << "usage: aichat-fault-load register USER_ADDR EMAIL PASSWORD\n"
                 "       aichat-fault-load load --user_addr=A --conv_addr=A --agents=A[,A..] "
                 "--admin_email=E --admin_password=P [--usage_addr=A --budget_nanos=N] "
                 "[--users --callers --duration_s --max_turns --deadline_s --out --ready_file "
                 "--tag --max_output_tokens --content_words --directive]\n";
    return 2;
  }
  return Load(std::move(f)).Run();
}
