// A 10,000-message conversation: GetContext returns exactly the right tail and
// answers from messages_context_idx (EXPLAIN on the database), and the latency
// of ListMessages and GetContext is printed (measured, never asserted).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/conversation/conversation_fixture.h"

namespace aichat::conversation {
namespace {

constexpr int kMessages = 10000;

int32_t TokensOf(int position) { return 5 + (position * 37) % 60; }

class ConversationScaleTest : public ConversationFixture {
 protected:
  // Appends through the RPC, from a few clients at once; each message's content
  // names its position's token count so the expected tail is known.
  int64_t FillConversation() {
    auto conv = MustCreate(alice_, "long", std::string("You answer briefly."));
    constexpr int kClients = 4;
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        for (int i = c; i < kMessages; i += kClients) {
          v1::Message m;
          auto st = Append(service_token_, kAlice, conv.id(), v1::MESSAGE_ROLE_USER,
                           absl::StrCat("message ", i, " ", std::string(40 + i % 200, 'x')), 1, &m);
          ASSERT_TRUE(st.ok()) << st.error_message();
        }
      });
    }
    for (auto& t : clients) t.join();
    // Positions were handed out in commit order; give each its known token count.
    EXPECT_TRUE(pool_
                    ->Exec("UPDATE messages SET token_count = 5 + (position * 37) % 60, "
                           "token_count_estimated = false WHERE conversation_id = $1",
                           {conv.id()})
                    .ok());
    EXPECT_TRUE(pool_->Exec("VACUUM ANALYZE messages").ok());
    return conv.id();
  }

  std::vector<std::string> Explain(const std::string& params, bool generic) {
    auto lease = pool_->Acquire();
    EXPECT_TRUE(lease.ok());
    PgConn& conn = **lease;
    EXPECT_TRUE(conn.ExecScript(absl::StrCat("SET plan_cache_mode = ",
                                             generic ? "force_generic_plan" : "auto"))
                    .ok());
    EXPECT_TRUE(conn.ExecScript(absl::StrCat("PREPARE context_scan(bigint, bigint, integer) AS ",
                                             kContextScanSql))
                    .ok());
    auto plan = conn.Exec(
        absl::StrCat("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) EXECUTE context_scan(", params, ")"));
    EXPECT_TRUE(plan.ok()) << plan.status();
    std::vector<std::string> lines;
    for (int i = 0; plan.ok() && i < plan->rows(); ++i) lines.push_back(plan->String(i, 0));
    EXPECT_TRUE(conn.ExecScript("DEALLOCATE context_scan; RESET plan_cache_mode").ok());
    return lines;
  }
};

struct Stats {
  double p50_us, p95_us, p99_us, mean_us;
};

template <typename Fn>
Stats Measure(int iterations, Fn&& fn) {
  for (int i = 0; i < 20; ++i) fn();  // warm up connections and prepared statements
  std::vector<double> us;
  us.reserve(iterations);
  for (int i = 0; i < iterations; ++i) {
    absl::Time start = absl::Now();
    fn();
    us.push_back(absl::ToDoubleMicroseconds(absl::Now() - start));
  }
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  auto at = [&](double q) { return us[std::min(us.size() - 1, size_t(q * us.size()))]; };
  return {at(0.50), at(0.95), at(0.99), sum / us.size()};
}

void Print(const char* what, const Stats& s) {
  std::printf("[latency] %-44s p50 %7.0f us  p95 %7.0f us  p99 %7.0f us  mean %7.0f us\n", what,
              s.p50_us, s.p95_us, s.p99_us, s.mean_us);
}

TEST_F(ConversationScaleTest, TenThousandMessages) {
  // Keep the 10,000 request log lines out of the output; the numbers are the point.
  aichat::testing::LogCapture quiet;
  const int64_t id = FillConversation();
  const int32_t system_tokens = EstimateTokens("You answer briefly.");

  // The expected window for a budget: newest first while the tokens fit.
  auto expected_tail = [&](int32_t max_tokens) {
    int64_t used = system_tokens;
    int first = kMessages + 1;
    while (first > 1 && used + TokensOf(first - 1) <= max_tokens) {
      used += TokensOf(--first);
    }
    return std::make_pair(first, used);
  };
  for (int32_t budget : {1, 100, 8000, 128000, 1000000}) {
    v1::GetContextResponse resp;
    ASSERT_TRUE(Context(alice_, id, budget, &resp).ok());
    auto [first, used] = expected_tail(budget);
    ASSERT_EQ(resp.messages_size(), kMessages + 1 - first) << "budget " << budget;
    for (int i = 0; i < resp.messages_size(); ++i) {
      ASSERT_EQ(resp.messages(i).position(), first + i);
      ASSERT_EQ(resp.messages(i).token_count(), TokensOf(first + i));
    }
    EXPECT_EQ(resp.token_count(), used) << "budget " << budget;
    EXPECT_EQ(resp.truncated(), first > 1) << "budget " << budget;
  }

  // The per-batch scan reads only the index, never the whole table: both the
  // plan PostgreSQL picks for the first executions and the generic plan it may
  // switch to later.
  for (bool generic : {false, true}) {
    auto plan = Explain(absl::StrCat(id, ", 9223372036854775807, 128"), generic);
    std::string text;
    for (const auto& l : plan) absl::StrAppend(&text, l, "\n");
    std::printf("[plan%s]\n%s", generic ? " generic" : "", text.c_str());
    EXPECT_NE(text.find("Index Only Scan using messages_context_idx on messages"),
              std::string::npos)
        << text;
    EXPECT_EQ(text.find("Seq Scan"), std::string::npos) << text;
    EXPECT_NE(text.find("rows=128 loops=1)"), std::string::npos) << text;
  }

  // Latencies over loopback gRPC, one client, as the agent calls them.
  const int kIterations = 300;
  std::string middle_token;
  {
    v1::ListMessagesResponse r;
    std::string token;
    for (int page = 0; page < 100; ++page) {  // 100 pages of 50: position 5000
      ASSERT_TRUE(ListMessages(alice_, id, 50, token, &r).ok());
      token = r.next_page_token();
    }
    middle_token = token;
  }
  Print("ListMessages page_size=50, first page", Measure(kIterations, [&] {
          v1::ListMessagesResponse r;
          ASSERT_TRUE(ListMessages(alice_, id, 50, "", &r).ok());
          ASSERT_EQ(r.messages_size(), 50);
        }));
  Print("ListMessages page_size=50, from position 5000", Measure(kIterations, [&] {
          v1::ListMessagesResponse r;
          ASSERT_TRUE(ListMessages(alice_, id, 50, middle_token, &r).ok());
          ASSERT_EQ(r.messages(0).position(), 5001);
        }));
  for (int32_t budget : {8000, 128000}) {
    size_t n = 0;
    auto stats = Measure(kIterations, [&] {
      v1::GetContextResponse r;
      ASSERT_TRUE(Context(service_token_, id, budget, &r, kAlice).ok());
      n = r.messages_size();
    });
    Print(absl::StrCat("GetContext max_tokens=", budget, " (", n, " messages)").c_str(), stats);
  }
  int appended = 0;
  Print("AppendMessage to the 10,000-message conversation", Measure(kIterations, [&] {
          MustAppend(alice_, id, absl::StrCat("more ", appended++), 10);
        }));
}

}  // namespace
}  // namespace aichat::conversation
