#include "services/ai-agent/agent_metrics.h"

#include "common/metrics.h"

namespace aichat::agent {
namespace {

prometheus::Histogram::BucketBoundaries OverheadBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
}

}  // namespace

AgentMetrics::AgentMetrics(prometheus::Registry& registry)
    : llm_requests_(prometheus::BuildCounter()
                        .Name("aichat_llm_requests_total")
                        .Help("Provider calls by model and outcome (ok or the error kind)")
                        .Register(registry)),
      ttft_(prometheus::BuildHistogram()
                .Name("aichat_llm_time_to_first_token_seconds")
                .Help("From sending the provider request to the first content delta")
                .Register(registry)),
      llm_duration_(prometheus::BuildHistogram()
                        .Name("aichat_llm_request_duration_seconds")
                        .Help("Provider call duration, retries included")
                        .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("aichat_llm_tokens_total")
                  .Help("Tokens charged, by model and kind (prompt, completion, cached)")
                  .Register(registry)),
      cost_(prometheus::BuildCounter()
                .Name("aichat_llm_cost_nanos_total")
                .Help("Cost charged in billionths of a USD, by model")
                .Register(registry)),
      overhead_(prometheus::BuildHistogram()
                    .Name("aichat_agent_overhead_seconds")
                    .Help("Per turn: total time minus time waiting on the provider")
                    .Register(registry)
                    .Add({}, OverheadBuckets())),
      turns_(prometheus::BuildCounter()
                 .Name("aichat_turns_total")
                 .Help("Chat turns by final prompt status")
                 .Register(registry)),
      fallbacks_(prometheus::BuildCounter()
                     .Name("aichat_llm_fallbacks_total")
                     .Help("Turns that moved on to a fallback model, by model and fallback")
                     .Register(registry)),
      active_streams_(prometheus::BuildGauge()
                          .Name("aichat_active_streams")
                          .Help("Turns in flight (streaming and unary)")
                          .Register(registry)
                          .Add({})),
      reservations_skipped_(prometheus::BuildCounter()
                                .Name("aichat_budget_reservations_skipped_total")
                                .Help("Turns admitted without a budget reservation because the "
                                      "usage service was unavailable (fail-open)")
                                .Register(registry)
                                .Add({})) {}

void AgentMetrics::LlmRequest(const std::string& model, const std::string& outcome) {
  llm_requests_.Add({{"model", model}, {"outcome", outcome}}).Increment();
}

void AgentMetrics::TimeToFirstToken(const std::string& model, double seconds) {
  ttft_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void AgentMetrics::LlmDuration(const std::string& model, double seconds) {
  llm_duration_.Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}

void AgentMetrics::Tokens(const std::string& model, int64_t prompt, int64_t completion,
                          int64_t cached) {
  tokens_.Add({{"model", model}, {"kind", "prompt"}}).Increment(double(prompt));
  tokens_.Add({{"model", model}, {"kind", "completion"}}).Increment(double(completion));
  tokens_.Add({{"model", model}, {"kind", "cached"}}).Increment(double(cached));
}

void AgentMetrics::Cost(const std::string& model, int64_t nanos) {
  cost_.Add({{"model", model}}).Increment(double(nanos));
}

void AgentMetrics::Overhead(double seconds) { overhead_.Observe(seconds); }

void AgentMetrics::Turn(const std::string& status) { turns_.Add({{"status", status}}).Increment(); }

void AgentMetrics::Fallback(const std::string& model, const std::string& to) {
  fallbacks_.Add({{"model", model}, {"fallback", to}}).Increment();
}

}  // namespace aichat::agent
