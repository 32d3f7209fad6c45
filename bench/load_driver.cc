// aichat-bench: a load driver for the aichat services (and, for comparison, for any
// OpenAI-compatible HTTP endpoint). gRPC callback API: no thread per call.
//
//   aichat-bench --target=send|stream|getme|append|list|record|http
//                [--mode=closed --concurrency=N | --mode=open --rate=R]
//                --duration=10 --warmup=2 [--json_out=FILE] ...
//
// Setup: with --keys_env (the suite's keys.env: AICHAT_JWT_SIGNING_KEY and
// AICHAT_SERVICE_TOKEN) it registers one user through the user service and mints that
// user's access token locally (rpm claim 0 = no per-user rate limit, so the bench
// measures the service, not the limiter); without it, it registers and logs in. Then it
// creates the conversations the calls use. Latency is measured from the moment a call
// was due (open loop: its scheduled time, so a stalled server cannot hide its queue),
// throughput from calls that finished inside the measured window.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
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
#include "bench/http_load.h"
#include "bench/proc_cpu.h"
#include "common/jwt.h"

namespace aichat::bench {
namespace {

namespace av1 = agent::v1;
namespace cv1 = conversation::v1;
namespace uv1 = usage::v1;
namespace usv1 = user::v1;

constexpr char kHelp[] = R"(usage: aichat-bench --target=TARGET [flags]
targets:
  send      AiAgentService.SendMessage (a whole turn)      stream  AiAgentService.StreamMessage
  getme     UserService.GetMe                              append  ConversationService.AppendMessage
  list      ConversationService.ListMessages (page of 50)  record  UsageService.RecordUsage
  http      POST an OpenAI chat completion to --http_url (the provider straight, or a gateway)
load:
  --mode=closed|open       closed: --concurrency callers, each sends when its last call ends;
                           open: --rate calls per second whatever the answers (default closed)
  --concurrency=N          closed-loop callers (default 16)
  --rate=R                 open-loop arrivals per second
  --max_inflight=N         open loop: calls beyond this are counted as CLIENT_OVERLOAD (100000)
  --duration=S             measured seconds (default 10); --warmup=S before it (default 2)
  --deadline=S             per-call deadline (default 60)
  --channels=N             gRPC channels (TCP connections), calls spread over them (default 4)
  --ramp=S                 closed loop: start the callers evenly over S seconds (default 0)
setup:
  --user_addr, --conversation_addr, --agent_addr, --usage_addr  (127.0.0.1:5005{1,2,3,4})
  --keys_env=FILE          the suite's keys.env (mint tokens locally)
  --conversations=N        conversations the turns and appends spread over
                           (default: concurrency, 64 in open mode)
  --users=N                with --keys_env: spread the conversations over N users (default:
                           one per conversation); --rpm=N their rate limit claim (6000)
  --content=TEXT           the user message (default "hello from the load driver")
  --turns_per_conversation=N  send/stream: each conversation takes N turns, then the next
                           one is used (bounds the context; needs enough --conversations)
  --model=NAME             model for turns (default: the default model)
http target:
  --http_url=http://127.0.0.1:PORT/v1/chat/completions
  --http_header=NAME:VALUE (repeatable)   --http_stream=true|false (default true)
  --http_model=NAME (default gpt-4o-mini) --io_threads=N (default 1)
  --http_aichat=stateless|bound   aichat's OpenAI-compatible API: the setup above (a user,
                           tokens minted from --keys_env, --users, --rpm), each request with
                           its user's token; bound: each bound to one of --conversations
                           (x-aichat-conversation-id), --turns_per_conversation as for stream
output:
  --cpu=NAME:PID[+],...    CPU of these processes over the measured window (PID+ adds its
                           descendants and what they used, e.g. the postmaster), and the
                           driver's own, per call and per delta
  --json_out=FILE          results as JSON;  --label=TEXT  a name stored in the JSON
  --quiet                  no table
)";

// ---------- flags

std::map<std::string, std::string> g_flags;
std::vector<std::string> g_headers;

std::string Flag(const std::string& name, const std::string& def) {
  auto it = g_flags.find(name);
  return it == g_flags.end() ? def : it->second;
}
double FlagD(const std::string& name, double def) {
  auto it = g_flags.find(name);
  return it == g_flags.end() ? def : std::atof(it->second.c_str());
}

// ---------- clock and recording

using Clock = std::chrono::steady_clock;
Clock::time_point g_t0;
double Now() { return std::chrono::duration<double>(Clock::now() - g_t0).count(); }

class Recorder {
 public:
  Recorder(double window_start, double window_end) : ws_(window_start), we_(window_end) {}
  bool InWindow(double t) const { return t >= ws_ && t < we_; }

  void Finish(double at, double latency_s, const std::string& code) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    if (code == "OK") {
      ok_++;
      latency_.push_back(latency_s);
    } else {
      errors_[code]++;
    }
  }
  void FirstDelta(double at, double since_start_s) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    ttfd_.push_back(since_start_s);
  }
  void Gap(double at, double gap_s) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    gaps_.push_back(gap_s);
  }
  void Deltas(double at, int64_t n) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    deltas_ += n;
  }
  // The prompt tokens of a finished turn: the context size it sent.
  void PromptTokens(double at, int64_t n) {
    if (!InWindow(at)) return;
    std::lock_guard<std::mutex> l(mu_);
    prompt_tokens_ += n;
    ++turns_with_usage_;
  }
  int64_t prompt_tokens_ = 0;
  int64_t turns_with_usage_ = 0;

  std::mutex mu_;
  double ws_, we_;
  int64_t ok_ = 0;
  int64_t deltas_ = 0;
  std::map<std::string, int64_t> errors_;
  std::vector<double> latency_, ttfd_, gaps_;
};

std::string CodeName(grpc::StatusCode c) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  int i = static_cast<int>(c);
  return i >= 0 && i <= 16 ? kNames[i] : absl::StrCat("CODE_", i);
}

// ---------- setup state

struct Setup {
  std::vector<std::shared_ptr<grpc::Channel>> user_ch, conv_ch, agent_ch, usage_ch;
  std::string user_token;                // the registered user
  std::vector<std::string> user_tokens;  // --users tokens; conversation i belongs to i % n
  std::string service_token;
  int64_t user_id = 0;
  std::vector<int64_t> conversations;
  const std::string& TokenFor(size_t conversation_index) const {
    return user_tokens[conversation_index % user_tokens.size()];
  }
};

std::vector<std::shared_ptr<grpc::Channel>> Channels(const std::string& addr, int n) {
  std::vector<std::shared_ptr<grpc::Channel>> out;
  for (int i = 0; i < n; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("aichat.bench.channel", i);  // distinct args: distinct connections
    args.SetMaxReceiveMessageSize(64 << 20);
    out.push_back(grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
  }
  return out;
}

void Die(const std::string& what) {
  std::cerr << "aichat-bench: " << what << "\n";
  std::exit(2);
}

std::map<std::string, std::string> ReadEnvFile(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  if (!in) Die("cannot read " + path);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos || line[0] == '#') continue;
    out[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return out;
}

void AddAuth(grpc::ClientContext* ctx, const std::string& token, double deadline_s) {
  ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000)));
}

void DoSetup(Setup& s, const std::string& target, int n_conversations) {
  int channels = static_cast<int>(FlagD("channels", 4));
  s.user_ch = Channels(Flag("user_addr", "127.0.0.1:50051"), channels);
  s.conv_ch = Channels(Flag("conversation_addr", "127.0.0.1:50052"), channels);
  s.agent_ch = Channels(Flag("agent_addr", "127.0.0.1:50053"), channels);
  s.usage_ch = Channels(Flag("usage_addr", "127.0.0.1:50054"), channels);

  std::string keys_file = Flag("keys_env", "");
  std::map<std::string, std::string> keys;
  if (!keys_file.empty()) keys = ReadEnvFile(keys_file);
  if (target == "record") {
    if (keys.count("AICHAT_SERVICE_TOKEN")) {
      s.service_token = keys["AICHAT_SERVICE_TOKEN"];
    } else if (keys.count("AICHAT_JWT_SIGNING_KEY")) {
      auto signer = TokenSigner::Create(keys["AICHAT_JWT_SIGNING_KEY"]);
      if (!signer.ok()) Die(std::string(signer.status().message()));
      TokenClaims c;
      c.role = Role::kService;
      c.issued_at = absl::Now();
      c.expires_at = c.issued_at + absl::Hours(2);
      s.service_token = signer->Sign(c);
    } else {
      Die("--target=record needs --keys_env with AICHAT_SERVICE_TOKEN or the signing key");
    }
  }

  // A fresh user for this run.
  auto ustub = usv1::UserService::NewStub(s.user_ch[0]);
  std::string email =
      absl::StrCat("bench-", absl::ToUnixMicros(absl::Now()), "-", getpid(), "@bench.invalid");
  std::string password = "bench-password-123";
  {
    usv1::RegisterRequest req;
    req.set_email(email);
    req.set_password(password);
    req.set_display_name("load driver");
    usv1::User u;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto st = ustub->Register(&ctx, req, &u);
    if (!st.ok()) Die("Register: " + CodeName(st.error_code()) + " " + st.error_message());
    s.user_id = u.id();
  }
  if (keys.count("AICHAT_JWT_SIGNING_KEY")) {
    auto signer = TokenSigner::Create(keys["AICHAT_JWT_SIGNING_KEY"]);
    if (!signer.ok()) Die(std::string(signer.status().message()));
    TokenClaims c;
    c.user_id = s.user_id;
    c.role = Role::kUser;
    c.requests_per_minute = static_cast<int32_t>(FlagD("rpm", 6000));
    c.issued_at = absl::Now();
    c.expires_at = c.issued_at + absl::Hours(2);
    s.user_token = signer->Sign(c);
    // Further users are synthetic ids (only the user service would know them, and no
    // other service asks it): load spread over tenants as in production, so one user's
    // rate window is not the bottleneck.
    int users = std::max(1, static_cast<int>(FlagD("users", std::max(1, n_conversations))));
    s.user_tokens.push_back(s.user_token);
    for (int i = 1; i < users; ++i) {
      c.user_id = 1000000000LL + s.user_id * 100000 + i;
      c.token_id.clear();
      s.user_tokens.push_back(signer->Sign(c));
    }
  } else {
    usv1::LoginRequest req;
    req.set_email(email);
    req.set_password(password);
    usv1::LoginResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto st = ustub->Login(&ctx, req, &resp);
    if (!st.ok()) Die("Login: " + CodeName(st.error_code()) + " " + st.error_message());
    s.user_token = resp.access_token();
    s.user_tokens.push_back(s.user_token);
  }

  bool needs_conv =
      target == "send" || target == "stream" || target == "append" || target == "list";
  if (!needs_conv) return;
  if (target == "list") n_conversations = 1;
  // Create the conversations concurrently (10,000 of them for the streams scenario).
  s.conversations.assign(n_conversations, 0);
  std::mutex mu;
  std::condition_variable cv;
  int pending = 0, next = 0, failed = 0;
  std::string model = Flag("model", "");
  auto launch = [&](auto&& self) -> void {
    // Called with mu held.
    while (pending < 64 && next < n_conversations) {
      int i = next++;
      pending++;
      struct Call {
        grpc::ClientContext ctx;
        cv1::CreateConversationRequest req;
        cv1::Conversation resp;
        std::unique_ptr<cv1::ConversationService::Stub> stub;
      };
      auto* c = new Call;
      c->stub = cv1::ConversationService::NewStub(s.conv_ch[i % s.conv_ch.size()]);
      AddAuth(&c->ctx, s.user_tokens[i % s.user_tokens.size()], 30);
      c->req.set_title(absl::StrCat("bench ", i));
      if (!model.empty()) c->req.set_model(model);
      c->stub->async()->CreateConversation(
          &c->ctx, &c->req, &c->resp, [&, c, i, self](grpc::Status st) {
            std::lock_guard<std::mutex> l(mu);
            if (st.ok())
              s.conversations[i] = c->resp.id();
            else if (failed++ == 0)
              std::cerr << "CreateConversation: " << st.error_message() << "\n";
            delete c;
            pending--;
            self(self);
            cv.notify_all();
          });
    }
  };
  {
    std::unique_lock<std::mutex> l(mu);
    launch(launch);
    cv.wait(l, [&] { return pending == 0 && next == n_conversations; });
  }
  if (failed > 0) Die(absl::StrCat(failed, " conversations could not be created"));
  if (target == "list") {
    // A page worth of history to read back.
    auto cstub = cv1::ConversationService::NewStub(s.conv_ch[0]);
    for (int i = 0; i < 50; ++i) {
      cv1::AppendMessageRequest req;
      req.set_conversation_id(s.conversations[0]);
      req.set_role(cv1::MESSAGE_ROLE_USER);
      req.set_content(absl::StrCat("history message ", i, " with a few words in it"));
      cv1::Message m;
      grpc::ClientContext ctx;
      AddAuth(&ctx, s.user_token, 30);
      auto st = cstub->AppendMessage(&ctx, req, &m);
      if (!st.ok()) Die("AppendMessage: " + st.error_message());
    }
  }
}

// ---------- calls

struct Env {
  Setup* setup;
  Recorder* rec;
  std::string target;
  std::string content;
  std::string model;
  double deadline_s;
  std::atomic<int64_t> seq{0};
  std::atomic<int64_t> turn_seq{0};
  int64_t turns_per_conversation = 0;
  int64_t callers = 0;  // closed loop: slots are callers, each with its own turn count
  std::unique_ptr<std::atomic<int64_t>[]> slot_turns;
  std::atomic<int64_t> inflight{0};
  std::vector<std::unique_ptr<av1::AiAgentService::Stub>> agent;
  std::vector<std::unique_ptr<cv1::ConversationService::Stub>> conv;
  std::vector<std::unique_ptr<usv1::UserService::Stub>> user;
  std::vector<std::unique_ptr<uv1::UsageService::Stub>> usage;
  std::string run_id;
};

// One call. `slot` picks the channel and conversation; `due` is when the call was due
// (its latency starts there); `done` runs once it ended.
using Done = std::function<void()>;

template <typename Req, typename Resp>
struct UnaryCall {
  grpc::ClientContext ctx;
  Req req;
  Resp resp;
};

// The conversation a turn goes to: the caller's own, or with --turns_per_conversation
// the caller's next one after every N of its turns (so contexts stay small and of a
// known size, and no two callers share a conversation or its user at once).
size_t ConversationFor(Env* env, int64_t slot) {
  const size_t n = env->setup->conversations.size();
  if (env->turns_per_conversation <= 0) return slot % n;
  if (env->callers <= 0 || slot >= env->callers) {  // open loop: spread by arrival
    return (env->turn_seq.fetch_add(1) / env->turns_per_conversation) % n;
  }
  int64_t k = env->slot_turns[slot].fetch_add(1) / env->turns_per_conversation;
  return (slot + k * env->callers) % n;
}

class StreamCall : public grpc::ClientReadReactor<av1::TurnEvent> {
 public:
  StreamCall(Env* env, int64_t slot, double due, Done done)
      : env_(env), due_(due), done_(std::move(done)) {
    auto& convs = env->setup->conversations;
    size_t conv = ConversationFor(env, slot);
    AddAuth(&ctx_, env->setup->TokenFor(conv), env->deadline_s);
    req_.set_conversation_id(convs[conv]);
    req_.set_content(env->content);
    if (!env->model.empty()) req_.set_model(env->model);
    env->agent[slot % env->agent.size()]->async()->StreamMessage(&ctx_, &req_, this);
    StartRead(&ev_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    if (ev_.has_delta()) {
      double t = Now();
      if (last_delta_ < 0) {
        env_->rec->FirstDelta(t, t - due_);
      } else {
        env_->rec->Gap(t, t - last_delta_);
      }
      last_delta_ = t;
      env_->rec->Deltas(t, 1);
    } else if (ev_.has_completed()) {
      completed_ = true;
      env_->rec->PromptTokens(Now(), ev_.completed().usage().prompt_tokens());
    }
    StartRead(&ev_);
  }
  void OnDone(const grpc::Status& s) override {
    double t = Now();
    std::string code = CodeName(s.error_code());
    if (s.ok() && !completed_) code = "OK_WITHOUT_COMPLETED";
    env_->rec->Finish(t, t - due_, code);
    Done d = std::move(done_);
    delete this;
    d();
  }

 private:
  Env* env_;
  double due_;
  Done done_;
  grpc::ClientContext ctx_;
  av1::SendMessageRequest req_;
  av1::TurnEvent ev_;
  double last_delta_ = -1;
  bool completed_ = false;
};

template <typename C>
std::function<void(grpc::Status)> Finisher(Env* env, C* c, double due, Done done) {
  return [env, c, due, done = std::move(done)](grpc::Status st) {
    double t = Now();
    env->rec->Finish(t, t - due, CodeName(st.error_code()));
    Done d = done;  // this closure dies with the call
    delete c;
    d();
  };
}

void StartCall(Env* env, int64_t slot, double due, Done done) {
  const std::string& t = env->target;
  if (t == "stream") {
    new StreamCall(env, slot, due, std::move(done));
    return;
  }
  if (t == "send") {
    auto* c = new UnaryCall<av1::SendMessageRequest, av1::TurnResult>;
    auto& convs = env->setup->conversations;
    size_t conv = ConversationFor(env, slot);
    AddAuth(&c->ctx, env->setup->TokenFor(conv), env->deadline_s);
    c->req.set_conversation_id(convs[conv]);
    c->req.set_content(env->content);
    if (!env->model.empty()) c->req.set_model(env->model);
    auto finish = Finisher(env, c, due, std::move(done));
    env->agent[slot % env->agent.size()]->async()->SendMessage(
        &c->ctx, &c->req, &c->resp, [env, c, finish = std::move(finish)](grpc::Status st) {
          if (st.ok()) env->rec->PromptTokens(Now(), c->resp.usage().prompt_tokens());
          finish(std::move(st));
        });
  } else if (t == "getme") {
    auto* c = new UnaryCall<usv1::GetMeRequest, usv1::User>;
    AddAuth(&c->ctx, env->setup->user_token, env->deadline_s);
    env->user[slot % env->user.size()]->async()->GetMe(&c->ctx, &c->req, &c->resp,
                                                       Finisher(env, c, due, std::move(done)));
  } else if (t == "append") {
    auto* c = new UnaryCall<cv1::AppendMessageRequest, cv1::Message>;
    auto& convs = env->setup->conversations;
    AddAuth(&c->ctx, env->setup->TokenFor(slot % convs.size()), env->deadline_s);
    c->req.set_conversation_id(convs[slot % convs.size()]);
    c->req.set_role(cv1::MESSAGE_ROLE_USER);
    c->req.set_content(env->content);
    env->conv[slot % env->conv.size()]->async()->AppendMessage(
        &c->ctx, &c->req, &c->resp, Finisher(env, c, due, std::move(done)));
  } else if (t == "list") {
    auto* c = new UnaryCall<cv1::ListMessagesRequest, cv1::ListMessagesResponse>;
    AddAuth(&c->ctx, env->setup->user_token, env->deadline_s);
    c->req.set_conversation_id(env->setup->conversations[0]);
    c->req.set_page_size(50);
    env->conv[slot % env->conv.size()]->async()->ListMessages(
        &c->ctx, &c->req, &c->resp, Finisher(env, c, due, std::move(done)));
  } else if (t == "record") {
    auto* c = new UnaryCall<uv1::RecordUsageRequest, uv1::RecordUsageResponse>;
    AddAuth(&c->ctx, env->setup->service_token, env->deadline_s);
    auto* e = c->req.mutable_event();
    e->set_event_id(absl::StrCat("bench-", env->run_id, "-", env->seq.fetch_add(1)));
    // Spread over --users tenants: one user's rollup rows would serialize every call.
    int64_t users = std::max<int64_t>(1, static_cast<int64_t>(FlagD("users", 64)));
    e->set_user_id(slot % users == 0 ? env->setup->user_id
                                     : 1000000000LL + env->setup->user_id * 100000 + slot % users);
    e->set_conversation_id(1);
    e->set_prompt_id(1);
    e->set_model("gpt-4o-mini");
    e->set_provider_model("gpt-4o-mini");
    e->set_prompt_tokens(10);
    e->set_completion_tokens(8);
    e->set_input_price_micros_per_mtok(150000);
    e->set_output_price_micros_per_mtok(600000);
    e->set_cost_nanos((10 * 150000 + 8 * 600000 + 500) / 1000);
    e->set_outcome(uv1::OUTCOME_COMPLETED);
    int64_t us = absl::ToUnixMicros(absl::Now());
    e->mutable_occurred_at()->set_seconds(us / 1000000);
    e->mutable_occurred_at()->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
    env->usage[slot % env->usage.size()]->async()->RecordUsage(
        &c->ctx, &c->req, &c->resp, Finisher(env, c, due, std::move(done)));
  } else {
    Die("unknown target " + t);
  }
}

// ---------- statistics and output

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  if (i > 0) --i;
  return v[std::min(i, v.size() - 1)];
}

struct Dist {
  int64_t n = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};
Dist Summarize(std::vector<double>& v) {
  Dist d;
  std::sort(v.begin(), v.end());
  d.n = static_cast<int64_t>(v.size());
  if (v.empty()) return d;
  double sum = 0;
  for (double x : v) sum += x;
  d.mean = sum / v.size();
  d.p50 = Pct(v, 50);
  d.p90 = Pct(v, 90);
  d.p99 = Pct(v, 99);
  d.p999 = Pct(v, 99.9);
  d.max = v.back();
  return d;
}

std::string DistJson(const Dist& d) {
  std::ostringstream o;
  o.precision(6);
  o << std::fixed << "{\"n\": " << d.n << ", \"mean_ms\": " << d.mean * 1e3
    << ", \"p50_ms\": " << d.p50 * 1e3 << ", \"p90_ms\": " << d.p90 * 1e3
    << ", \"p99_ms\": " << d.p99 * 1e3 << ", \"p999_ms\": " << d.p999 * 1e3
    << ", \"max_ms\": " << d.max * 1e3 << "}";
  return o.str();
}

std::string JsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

void PrintRow(const char* name, const Dist& d) {
  std::printf("  %-18s %9lld %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", name,
              static_cast<long long>(d.n), d.mean * 1e3, d.p50 * 1e3, d.p90 * 1e3, d.p99 * 1e3,
              d.p999 * 1e3, d.max * 1e3);
}

}  // namespace

int Main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kHelp;
      return 0;
    }
    if (a.rfind("--", 0) != 0) Die("unexpected argument " + a);
    a = a.substr(2);
    auto eq = a.find('=');
    std::string k = eq == std::string::npos ? a : a.substr(0, eq);
    std::string v = eq == std::string::npos ? "true" : a.substr(eq + 1);
    if (k == "http_header")
      g_headers.push_back(v);
    else
      g_flags[k] = v;
  }
  g_t0 = Clock::now();
  const std::string target = Flag("target", "");
  if (target.empty()) Die("--target is required (--help)");
  const std::string mode = Flag("mode", "closed");
  const int concurrency = static_cast<int>(FlagD("concurrency", 16));
  const double rate = FlagD("rate", 0);
  const double duration = FlagD("duration", 10);
  const double warmup = FlagD("warmup", 2);
  const bool quiet = g_flags.count("quiet") > 0;
  if (mode != "closed" && mode != "open") Die("--mode is closed or open");
  if (mode == "open" && rate <= 0) Die("--mode=open needs --rate");
  if (mode == "open" && target == "http") Die("--target=http runs closed loop only");

  Setup setup;
  double setup_s = 0;
  const std::string http_aichat = Flag("http_aichat", "");
  if (!http_aichat.empty() && http_aichat != "stateless" && http_aichat != "bound") {
    Die("--http_aichat is stateless or bound");
  }
  if (target == "http" && !http_aichat.empty()) {
    // The same setup as the gRPC targets: bound requests need the conversations.
    int nconv = static_cast<int>(FlagD("conversations", concurrency));
    double t = Now();
    DoSetup(setup, http_aichat == "bound" ? "stream" : "http", std::max(1, nconv));
    setup_s = Now() - t;
  }
  if (target != "http") {
    int nconv = static_cast<int>(FlagD("conversations", mode == "open" ? 64 : concurrency));
    double t = Now();
    DoSetup(setup, target, std::max(1, nconv));
    setup_s = Now() - t;
    if (!quiet) {
      std::fprintf(stderr, "setup: user %lld, %zu conversations in %.1f s\n",
                   static_cast<long long>(setup.user_id), setup.conversations.size(), setup_s);
    }
  }

  const double start = Now();
  const double window_start = start + warmup;
  const double window_end = window_start + duration;
  Recorder rec(window_start, window_end);
  int64_t peak_inflight = 0;
  int64_t issued = 0;
  // CPU of the named processes (and the driver) over the measured window.
  std::vector<CpuTarget> cpu_targets = ParseCpuTargets(Flag("cpu", ""));
  std::vector<double> cpu_before, cpu_after;
  std::thread cpu_sampler([&] {
    auto sleep_until = [](double t) {
      double wait = t - Now();
      if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    };
    sleep_until(window_start);
    cpu_before = SampleCpuSeconds(cpu_targets);
    sleep_until(window_end);
    cpu_after = SampleCpuSeconds(cpu_targets);
  });

  if (target == "http") {
    std::string url = Flag("http_url", "");
    // http://HOST:PORT/PATH
    if (url.rfind("http://", 0) != 0) Die("--http_url must be http://HOST:PORT/PATH");
    std::string rest = url.substr(7);
    auto slash = rest.find('/');
    std::string hostport = rest.substr(0, slash);
    HttpLoadTarget ht;
    ht.path = slash == std::string::npos ? "/" : rest.substr(slash);
    auto colon = hostport.rfind(':');
    ht.host = hostport.substr(0, colon);
    ht.port = colon == std::string::npos ? 80 : std::atoi(hostport.c_str() + colon + 1);
    for (const auto& h : g_headers) {
      auto c = h.find(':');
      if (c == std::string::npos) Die("--http_header wants NAME:VALUE");
      ht.headers.emplace_back(h.substr(0, c), h.substr(c + 1));
    }
    bool stream = Flag("http_stream", "true") == "true";
    ht.body = absl::StrCat(
        "{\"model\":\"", Flag("http_model", "gpt-4o-mini"),
        "\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"",
        JsonEscape(Flag("content", "hello from the load driver")), "\"}],",
        "\"max_completion_tokens\":4096,\"temperature\":1,\"stream\":", stream ? "true" : "false",
        stream ? ",\"stream_options\":{\"include_usage\":true}" : "", "}");
    std::atomic<int64_t> turn_seq{0};
    const int64_t turns_per_conversation = static_cast<int64_t>(FlagD("turns_per_conversation", 0));
    if (!http_aichat.empty()) {
      // Each request as the gRPC stream target sends it: the next conversation (bound)
      // or user (stateless) in turn, with that user's token.
      ht.per_request_headers = [&setup, &turn_seq, turns_per_conversation,
                                bound = http_aichat == "bound"]() {
        const int64_t seq = turn_seq.fetch_add(1);
        if (!bound) {
          return absl::StrCat("authorization: Bearer ", setup.TokenFor(static_cast<size_t>(seq)),
                              "\r\n");
        }
        const size_t n = setup.conversations.size();
        const size_t conv =
            static_cast<size_t>((turns_per_conversation > 0 ? seq / turns_per_conversation : seq) %
                                static_cast<int64_t>(n));
        return absl::StrCat("authorization: Bearer ", setup.TokenFor(conv),
                            "\r\nx-aichat-conversation-id: conv_", setup.conversations[conv],
                            "\r\n");
      };
    }
    std::atomic<int64_t> n{0};
    RunHttpClosedLoop(
        ht, concurrency, static_cast<int>(FlagD("io_threads", 1)), Now,
        [&] { return Now() < window_end; },
        [&](const HttpResult& r) {
          n++;
          std::string code = r.http_status == 0     ? "CONNECT_ERROR"
                             : r.http_status != 200 ? absl::StrCat("HTTP_", r.http_status)
                             : !r.done_marker       ? "TRUNCATED"
                                                    : "OK";
          if (code == "CONNECT_ERROR" && rec.InWindow(r.end_s) && rec.errors_.empty()) {
            std::cerr << "http: " << r.error << "\n";
          }
          rec.Finish(r.end_s, r.end_s - r.start_s, code);
          if (r.first_byte_s >= 0) rec.FirstDelta(r.first_byte_s, r.first_byte_s - r.start_s);
          for (size_t i = 1; i < r.event_s.size(); ++i) {
            rec.Gap(r.event_s[i], r.event_s[i] - r.event_s[i - 1]);
          }
          if (!r.event_s.empty()) rec.Deltas(r.end_s, static_cast<int64_t>(r.event_s.size()));
        });
    issued = n;
  } else {
    Env env;
    env.setup = &setup;
    env.rec = &rec;
    env.target = target;
    env.content = Flag("content", "hello from the load driver");
    env.model = Flag("model", "");
    env.deadline_s = FlagD("deadline", 60);
    env.turns_per_conversation = static_cast<int64_t>(FlagD("turns_per_conversation", 0));
    if (mode == "closed") {
      env.callers = concurrency;
      env.slot_turns = std::make_unique<std::atomic<int64_t>[]>(concurrency);
    }
    env.run_id = absl::StrCat(absl::ToUnixMicros(absl::Now()), "-", getpid());
    for (auto& ch : setup.agent_ch) env.agent.push_back(av1::AiAgentService::NewStub(ch));
    for (auto& ch : setup.conv_ch) env.conv.push_back(cv1::ConversationService::NewStub(ch));
    for (auto& ch : setup.user_ch) env.user.push_back(usv1::UserService::NewStub(ch));
    for (auto& ch : setup.usage_ch) env.usage.push_back(uv1::UsageService::NewStub(ch));

    std::mutex mu;
    std::condition_variable cv;
    std::atomic<int64_t> n_issued{0};
    std::atomic<int64_t> peak{0};
    auto track_start = [&] {
      int64_t f = ++env.inflight;
      int64_t p = peak.load();
      while (f > p && !peak.compare_exchange_weak(p, f)) {
      }
      n_issued++;
    };
    auto track_end = [&] {
      if (--env.inflight == 0) {
        std::lock_guard<std::mutex> l(mu);
        cv.notify_all();
      }
    };
    // Each closed-loop caller: issue, and on completion issue again while the window lasts.
    // (Declared here: it must outlive the calls in flight.)
    std::function<void(int64_t)> loop;
    if (mode == "closed") {
      const double ramp = FlagD("ramp", 0);
      loop = [&](int64_t slot) {
        if (Now() >= window_end) {
          track_end();
          return;
        }
        n_issued++;
        StartCall(&env, slot, Now(), [&, slot] { loop(slot); });
      };
      for (int i = 0; i < concurrency; ++i) {
        if (ramp > 0) {
          double due = start + ramp * i / concurrency;
          double wait = due - Now();
          if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        }
        ++env.inflight;
        peak = std::max<int64_t>(peak.load(), env.inflight.load());
        loop(i);
      }
    } else {
      const int64_t max_inflight = static_cast<int64_t>(FlagD("max_inflight", 100000));
      int64_t i = 0;
      while (true) {
        double due = start + i / rate;
        if (due >= window_end) break;
        double wait = due - Now();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        if (env.inflight.load() >= max_inflight) {
          rec.Finish(Now(), 0, "CLIENT_OVERLOAD");
        } else {
          track_start();
          StartCall(&env, i, due, track_end);
        }
        ++i;
      }
    }
    // Wait for what is in flight (bounded by the call deadline).
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait_for(l, std::chrono::duration<double>(env.deadline_s + 5),
                  [&] { return env.inflight.load() == 0; });
    }
    if (env.inflight.load() != 0) {
      std::fprintf(stderr, "aichat-bench: %lld calls still in flight at exit\n",
                   static_cast<long long>(env.inflight.load()));
      std::fflush(nullptr);
      std::_Exit(3);
    }
    peak_inflight = peak.load();
    issued = n_issued.load();
  }

  cpu_sampler.join();
  // ---------- report
  std::lock_guard<std::mutex> l(rec.mu_);
  std::vector<std::pair<std::string, double>> cpu_ms;  // per process, over the window
  for (size_t i = 0; i < cpu_after.size() && i < cpu_before.size(); ++i) {
    cpu_ms.emplace_back(i < cpu_targets.size() ? cpu_targets[i].name : "driver",
                        (cpu_after[i] - cpu_before[i]) * 1e3);
  }
  Dist lat = Summarize(rec.latency_);
  Dist ttfd = Summarize(rec.ttfd_);
  Dist gaps = Summarize(rec.gaps_);
  int64_t errors = 0;
  for (auto& [k, v] : rec.errors_) errors += v;
  double throughput = rec.ok_ / duration;
  std::string concurrency_s =
      mode == "closed" ? absl::StrCat(concurrency) : absl::StrCat("open ", rate, "/s");
  if (!quiet) {
    std::printf("target %s, %s, %.0f s measured after %.0f s warm-up\n", target.c_str(),
                mode == "closed" ? absl::StrCat(concurrency, " callers (closed loop)").c_str()
                                 : absl::StrCat(rate, " calls/s (open loop)").c_str(),
                duration, warmup);
    std::printf("  ok %lld, errors %lld, throughput %.1f/s", static_cast<long long>(rec.ok_),
                static_cast<long long>(errors), throughput);
    if (rec.deltas_ > 0) std::printf(", deltas %.1f/s", rec.deltas_ / duration);
    std::printf("\n");
    for (auto& [k, v] : rec.errors_) {
      std::printf("  error %-20s %lld\n", k.c_str(), static_cast<long long>(v));
    }
    std::printf("  %-18s %9s %9s %9s %9s %9s %9s %9s\n", "ms", "n", "mean", "p50", "p90", "p99",
                "p99.9", "max");
    PrintRow("latency", lat);
    if (ttfd.n > 0) PrintRow(target == "http" ? "first body byte" : "first delta", ttfd);
    if (gaps.n > 0) PrintRow(target == "http" ? "inter-event gap" : "inter-delta gap", gaps);
    if (rec.turns_with_usage_ > 0) {
      std::printf("  context: %.1f prompt tokens per turn\n",
                  static_cast<double>(rec.prompt_tokens_) / rec.turns_with_usage_);
    }
    if (!cpu_ms.empty() && rec.ok_ > 0) {
      double total = 0;
      std::printf("  CPU ms per call:");
      for (const auto& [name, ms] : cpu_ms) {
        std::printf(" %s %.3f", name.c_str(), ms / rec.ok_);
        total += ms;
      }
      std::printf(", total %.3f\n", total / rec.ok_);
    }
  }
  std::string json_out = Flag("json_out", "");
  if (!json_out.empty()) {
    std::ofstream o(json_out);
    o << "{\n  \"label\": \"" << JsonEscape(Flag("label", target)) << "\",\n"
      << "  \"target\": \"" << target << "\",\n  \"mode\": \"" << mode << "\",\n"
      << "  \"concurrency\": " << (mode == "closed" ? concurrency : 0) << ",\n"
      << "  \"rate\": " << rate << ",\n  \"duration_s\": " << duration
      << ",\n  \"warmup_s\": " << warmup << ",\n  \"setup_s\": " << setup_s
      << ",\n  \"issued\": " << issued << ",\n  \"ok\": " << rec.ok_
      << ",\n  \"errors\": " << errors << ",\n  \"errors_by_code\": {";
    bool first = true;
    for (auto& [k, v] : rec.errors_) {
      o << (first ? "" : ", ") << "\"" << k << "\": " << v;
      first = false;
    }
    o << "},\n  \"throughput_per_s\": " << throughput
      << ",\n  \"deltas_per_s\": " << rec.deltas_ / duration
      << ",\n  \"peak_inflight\": " << peak_inflight << ",\n  \"latency\": " << DistJson(lat)
      << ",\n  \"first_delta\": " << DistJson(ttfd)
      << ",\n  \"inter_delta_gap\": " << DistJson(gaps) << ",\n  \"prompt_tokens_per_turn\": "
      << (rec.turns_with_usage_ > 0
              ? static_cast<double>(rec.prompt_tokens_) / rec.turns_with_usage_
              : 0.0)
      << ",\n  \"deltas\": " << rec.deltas_ << ",\n  \"cpu_ms\": {";
    first = true;
    for (const auto& [name, ms] : cpu_ms) {
      o << (first ? "" : ", ") << "\"" << name << "\": " << ms;
      first = false;
    }
    o << "}\n}\n";
  }
  return 0;
}

}  // namespace aichat::bench

int main(int argc, char** argv) { return aichat::bench::Main(argc, argv); }
