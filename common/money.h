// Money is integer (DESIGN.md section 4): prices in millionths of a USD per
// million tokens, costs in billionths of a USD (nanos).
#pragma once

#include <cstdint>

namespace aichat {

// The largest price the ledger accepts (USD 10,000 per million tokens). The agent
// refuses a model config above it, so no turn can produce an event usage refuses.
inline constexpr int64_t kMaxPriceMicrosPerMtok = 10'000'000'000;

struct Prices {
  int64_t input_micros_per_mtok = 0;
  int64_t cached_input_micros_per_mtok = 0;
  int64_t output_micros_per_mtok = 0;
};

// tokens * micros/Mtok = 1e-12 USD units ("picos"); /1000 gives nanos, rounded
// half up, once per turn. 128-bit intermediate: no overflow for any int64 input.
// cached_tokens are counted inside prompt_tokens (OpenAI's convention) and are
// clamped to it.
inline int64_t CostNanos(int64_t prompt_tokens, int64_t cached_tokens, int64_t completion_tokens,
                         const Prices& p) {
  if (cached_tokens > prompt_tokens) {
    cached_tokens = prompt_tokens;
  }
  __int128 picos = static_cast<__int128>(prompt_tokens - cached_tokens) * p.input_micros_per_mtok +
                   static_cast<__int128>(cached_tokens) * p.cached_input_micros_per_mtok +
                   static_cast<__int128>(completion_tokens) * p.output_micros_per_mtok;
  __int128 nanos = (picos + 500) / 1000;
  if (nanos > INT64_MAX) {
    return INT64_MAX;
  }
  return static_cast<int64_t>(nanos);
}

}  // namespace aichat
