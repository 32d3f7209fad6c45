// A 10,000-message conversation: GetContext returns exactly the right tail and
// reads only about its window's rows (PostgreSQL's per-transaction statistics),
// and the latency of ListMessages and GetContext is printed (measured, never
// asserted).
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

  // What one GetContext statement read: the change in the backend's statistics
  // counters around it (they are not flushed inside a transaction block).
  struct Reads {
    int64_t messages = 0;      // in the window
    int64_t index_tuples = 0;  // returned by messages_window_idx (walk and fetch)
    int64_t heap_rows = 0;     // message rows fetched from the table by index scans
    int64_t seq_scans = 0;     // of messages
  };
  Reads ContextReads(int64_t id, int32_t max_tokens) {
    constexpr char kCounters[] =
        "SELECT pg_stat_get_xact_tuples_returned('messages_window_idx'::regclass), "
        "idx_tup_fetch, seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'messages'";
    Reads out;
    absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
      auto before = conn.Exec(kCounters);
      if (!before.ok()) return before.status();
      auto r = conn.Exec(kContextSql,
                         {id, kAlice, int64_t{max_tokens}, int64_t{3 << 20}, kMessageFramingBytes});
      if (!r.ok()) return r.status();
      out.messages = r->rows() - 1;
      auto after = conn.Exec(kCounters);
      if (!after.ok()) return after.status();
      out.index_tuples = after->Int(0, 0) - before->Int(0, 0);
      out.heap_rows = after->Int(0, 1) - before->Int(0, 1);
      out.seq_scans = after->Int(0, 2) - before->Int(0, 2);
      return absl::OkStatus();
    });
    EXPECT_TRUE(st.ok()) << st;
    return out;
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

  // A small window reads about its own rows, never the conversation: the walk
  // stops one row past the window (an index-only scan, but a page not yet marked
  // all-visible costs a heap visit) and the contents of the window alone are
  // fetched; with the plans PostgreSQL picks first and the generic one it may
  // switch to after five runs.
  for (int run = 0; run < 8; ++run) {
    for (int32_t budget : {100, 8000}) {
      Reads r = ContextReads(id, budget);
      ASSERT_EQ(r.messages, kMessages + 1 - expected_tail(budget).first) << "budget " << budget;
      EXPECT_EQ(r.seq_scans, 0) << "budget " << budget;
      EXPECT_LE(r.index_tuples, 2 * r.messages + 1) << "budget " << budget;
      EXPECT_LE(r.heap_rows, 2 * r.messages + 1) << "budget " << budget;
      if (run == 0) {
        std::printf("[reads] max_tokens=%d: %lld messages, %lld index tuples, %lld rows\n", budget,
                    static_cast<long long>(r.messages), static_cast<long long>(r.index_tuples),
                    static_cast<long long>(r.heap_rows));
      }
    }
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
