// The ai-agent's own Prometheus metrics (DESIGN.md section 6): LLM requests by
// model and outcome, time to first token, duration, tokens, cost, the agent's
// overhead per turn, active streams and turns by final status. Label values are
// bounded: model names come from the admin-managed configuration.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

namespace aichat::agent {

class AgentMetrics {
 public:
  explicit AgentMetrics(prometheus::Registry& registry);

  void LlmRequest(const std::string& model, const std::string& outcome);
  void TimeToFirstToken(const std::string& model, double seconds);
  void LlmDuration(const std::string& model, double seconds);
  void Tokens(const std::string& model, int64_t prompt, int64_t completion, int64_t cached);
  void Cost(const std::string& model, int64_t nanos);
  void Overhead(double seconds);
  void Turn(const std::string& status);
  // A turn of `model` moved on to its fallback `to` (every deployment failed first).
  void Fallback(const std::string& model, const std::string& to);
  prometheus::Gauge& active_streams() { return active_streams_; }
  prometheus::Counter& reservations_skipped() { return reservations_skipped_; }

 private:
  prometheus::Family<prometheus::Counter>& llm_requests_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& llm_duration_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Counter>& cost_;
  prometheus::Histogram& overhead_;
  prometheus::Family<prometheus::Counter>& turns_;
  prometheus::Family<prometheus::Counter>& fallbacks_;
  prometheus::Gauge& active_streams_;
  prometheus::Counter& reservations_skipped_;
};

}  // namespace aichat::agent
