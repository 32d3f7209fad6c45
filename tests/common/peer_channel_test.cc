// Peer channels over several replicas: round_robin over an address list, the
// retry policy for idempotent calls (and only for them), the service config
// gRPC really uses, and servers closing aged connections without failing calls.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "common/grpc_channel.h"
#include "common/server.h"
#include "tests/testing/helpers.h"

namespace aichat {
namespace {

namespace cv1 = conversation::v1;

// One replica of a conversation service that answers with its own number.
// GetContext and CreateConversation fail UNAVAILABLE while `broken` is set, as a
// replica on its way out would; GetConversation with id = N answers after N ms.
class Replica final : public cv1::ConversationService::CallbackService {
 public:
  explicit Replica(int number, ServerOptions options = {}) : number_(number) {
    options.name = "conversation";
    if (options.listen.empty()) {
      options.listen = "127.0.0.1:0";
    }
    server_ = std::make_unique<ServiceServer>(std::move(options));
    server_->AddService(this);
  }
  ~Replica() override {
    server_->Shutdown();
    absl::MutexLock lock(&mu_);
    for (auto& t : delayed_) {
      t.join();
    }
  }
  void Start() { ASSERT_TRUE(server_->Start().ok()); }
  std::string address() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  std::atomic<bool> broken{false};
  std::atomic<int> calls{0};

  std::set<std::string> peers() const {
    absl::MutexLock lock(&mu_);
    return peers_;
  }

  grpc::ServerUnaryReactor* GetConversation(grpc::CallbackServerContext* ctx,
                                            const cv1::GetConversationRequest* req,
                                            cv1::Conversation* resp) override {
    Count(ctx);
    resp->set_id(number_);
    auto* reactor = ctx->DefaultReactor();
    if (req->id() <= 1) {
      reactor->Finish(grpc::Status::OK);
    } else {
      absl::MutexLock lock(&mu_);
      delayed_.emplace_back([reactor, ms = req->id()] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        reactor->Finish(grpc::Status::OK);
      });
    }
    return reactor;
  }

  grpc::ServerUnaryReactor* GetContext(grpc::CallbackServerContext* ctx,
                                       const cv1::GetContextRequest* /*req*/,
                                       cv1::GetContextResponse* resp) override {
    return Answer(ctx, resp->mutable_conversation());
  }

  grpc::ServerUnaryReactor* CreateConversation(grpc::CallbackServerContext* ctx,
                                               const cv1::CreateConversationRequest* /*req*/,
                                               cv1::Conversation* resp) override {
    return Answer(ctx, resp);
  }

 private:
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, cv1::Conversation* out) {
    Count(ctx);
    out->set_id(number_);
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(broken ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "going away")
                           : grpc::Status::OK);
    return reactor;
  }

  void Count(grpc::CallbackServerContext* ctx) {
    calls.fetch_add(1);
    absl::MutexLock lock(&mu_);
    peers_.insert(ctx->peer());  // the client's address: a new port is a new connection
  }

  const int number_;
  std::unique_ptr<ServiceServer> server_;
  mutable absl::Mutex mu_;
  std::set<std::string> peers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> delayed_ ABSL_GUARDED_BY(mu_);
};

std::string List(const Replica& a, const Replica& b) {
  return absl::StrCat("ipv4:", a.address(), ",", b.address());
}

template <typename Call>
grpc::Status Unary(Call call) {
  grpc::ClientContext ctx;
  testing::SetDeadline(ctx, absl::Seconds(10));
  return call(&ctx);
}

TEST(PeerChannelTest, RoundRobinSpreadsCallsOverAnAddressList) {
  Replica a(1);
  Replica b(2);
  a.Start();
  b.Start();
  auto channel = MakePeerChannel(List(a, b), {});
  auto stub = cv1::ConversationService::NewStub(channel);
  for (int i = 0; i < 20; ++i) {
    cv1::Conversation out;
    ASSERT_TRUE(Unary([&](grpc::ClientContext* ctx) {
                  return stub->GetConversation(ctx, cv1::GetConversationRequest(), &out);
                }).ok());
  }
  // round_robin alternates over READY replicas; both connect at the first call.
  EXPECT_GE(a.calls, 8);
  EXPECT_GE(b.calls, 8);
  EXPECT_EQ(a.calls + b.calls, 20);
  // The service config was accepted (a rejected one would leave pick_first and "{}").
  EXPECT_EQ(channel->GetLoadBalancingPolicyName(), "round_robin");
  EXPECT_EQ(channel->GetServiceConfigJSON(), PeerServiceConfig({}));
}

TEST(PeerChannelTest, IdempotentCallsAreRetriedOnAnotherReplica) {
  Replica a(1);
  Replica b(2);
  a.Start();
  b.Start();
  a.broken = true;
  PeerChannelOptions options = WithIdempotentRetries({});
  auto channel = MakePeerChannel(List(a, b), options);
  auto stub = cv1::ConversationService::NewStub(channel);
  int created_unavailable = 0;
  for (int i = 0; i < 10; ++i) {
    cv1::GetContextResponse ctx_out;
    grpc::Status st = Unary([&](grpc::ClientContext* ctx) {
      return stub->GetContext(ctx, cv1::GetContextRequest(), &ctx_out);
    });
    ASSERT_TRUE(st.ok()) << i << ": " << st.error_message();
    EXPECT_EQ(ctx_out.conversation().id(), 2);
    cv1::Conversation created;
    st = Unary([&](grpc::ClientContext* ctx) {
      return stub->CreateConversation(ctx, cv1::CreateConversationRequest(), &created);
    });
    // Not idempotent, so never retried: about every other one lands on the broken replica.
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      ++created_unavailable;
    }
  }
  EXPECT_GE(created_unavailable, 3);
  EXPECT_EQ(channel->GetServiceConfigJSON(), PeerServiceConfig(options));
  EXPECT_NE(PeerServiceConfig(options).find("\"retryPolicy\""), std::string::npos);

  // Without the option nothing is retried.
  auto plain = cv1::ConversationService::NewStub(MakePeerChannel(List(a, b), {}));
  int failed = 0;
  for (int i = 0; i < 10; ++i) {
    cv1::GetContextResponse out;
    if (!Unary([&](grpc::ClientContext* ctx) {
           return plain->GetContext(ctx, cv1::GetContextRequest(), &out);
         }).ok()) {
      ++failed;
    }
  }
  EXPECT_GE(failed, 3);
}

TEST(PeerChannelTest, RetriesStopAtThreeAttempts) {
  Replica a(1);
  Replica b(2);
  a.Start();
  b.Start();
  a.broken = true;
  b.broken = true;
  auto stub =
      cv1::ConversationService::NewStub(MakePeerChannel(List(a, b), WithIdempotentRetries({})));
  cv1::GetContextResponse out;
  grpc::Status st = Unary([&](grpc::ClientContext* ctx) {
    return stub->GetContext(ctx, cv1::GetContextRequest(), &out);
  });
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(a.calls + b.calls, 3);
}

// A replica that dies and comes back on the same address gets calls again by
// itself (the address list of a local run never changes).
TEST(PeerChannelTest, ARestartedReplicaGetsCallsAgain) {
  auto a = std::make_unique<Replica>(1);
  Replica b(2);
  a->Start();
  b.Start();
  const std::string a_address = a->address();
  auto stub = cv1::ConversationService::NewStub(
      MakePeerChannel(absl::StrCat("ipv4:", a_address, ",", b.address()), {}));
  auto call = [&] {
    cv1::Conversation out;
    return Unary([&](grpc::ClientContext* ctx) {
      return stub->GetConversation(ctx, cv1::GetConversationRequest(), &out);
    });
  };
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(call().ok());
  }
  a.reset();
  // Long enough for several reconnection attempts to fail.
  for (const absl::Time down_until = absl::Now() + absl::Seconds(3); absl::Now() < down_until;) {
    EXPECT_TRUE(call().ok());
    absl::SleepFor(absl::Milliseconds(20));
  }
  Replica again(3, {.listen = a_address});
  again.Start();
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (again.calls == 0 && absl::Now() < until) {
    EXPECT_TRUE(call().ok());
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_GT(again.calls, 0);
}

// A server closes connections older than its maximum age (GOAWAY); a call that
// is running then finishes within the grace, and the client reconnects by itself.
TEST(PeerChannelTest, AgedConnectionsCloseWithoutFailingCalls) {
  Replica a(1, {.max_connection_age = absl::Milliseconds(500),
                .max_connection_age_grace = absl::Seconds(5)});
  a.Start();
  auto stub = cv1::ConversationService::NewStub(MakePeerChannel(a.address(), {}));
  auto get = [&](int64_t delay_ms) {
    cv1::GetConversationRequest req;
    req.set_id(delay_ms);
    cv1::Conversation out;
    return Unary([&](grpc::ClientContext* ctx) { return stub->GetConversation(ctx, req, &out); });
  };
  // Started on the first connection, still running when that connection ages out.
  std::thread slow([&] { EXPECT_TRUE(get(1500).ok()); });
  const absl::Time until = absl::Now() + absl::Seconds(3);
  int calls = 0;
  while (absl::Now() < until) {
    grpc::Status st = get(0);
    ASSERT_TRUE(st.ok()) << calls << ": " << st.error_message();
    ++calls;
    absl::SleepFor(absl::Milliseconds(20));
  }
  slow.join();
  // About one connection per 0.5 s (±10% jitter) over 3 s.
  EXPECT_GE(a.peers().size(), 3u) << calls << " calls";
}

}  // namespace
}  // namespace aichat
