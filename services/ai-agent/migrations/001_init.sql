-- The ai-agent's own state: model configurations, one row per chat turn
-- (ai_prompts) and the transactional outbox of usage events (usage_outbox).
-- Money is integer: prices in micros (USD) per million tokens, costs in nanos.

-- What clients may ask for. `name` may be an alias; `provider_model` is what goes
-- upstream and what the prices belong to. API keys never live here, only the
-- name of the environment variable that holds one.
CREATE TABLE ai_model_configs (
  name                               text PRIMARY KEY,
  provider_model                     text NOT NULL,
  base_url                           text NOT NULL DEFAULT '',  -- '' = OPENAI_BASE_URL
  api_key_env                        text NOT NULL DEFAULT 'OPENAI_API_KEY',
  input_price_micros_per_mtok        bigint NOT NULL CHECK (input_price_micros_per_mtok >= 0),
  cached_input_price_micros_per_mtok bigint NOT NULL CHECK (cached_input_price_micros_per_mtok >= 0),
  output_price_micros_per_mtok       bigint NOT NULL CHECK (output_price_micros_per_mtok >= 0),
  context_window                     integer NOT NULL CHECK (context_window > 0),
  max_output_tokens                  integer NOT NULL CHECK (max_output_tokens > 0),
  default_temperature                double precision NOT NULL DEFAULT 1.0,
  enabled                            boolean NOT NULL DEFAULT true,
  is_default                         boolean NOT NULL DEFAULT false,
  use_max_tokens_param               boolean NOT NULL DEFAULT false,
  updated_at                         timestamptz NOT NULL DEFAULT now()
);
-- At most one default model.
CREATE UNIQUE INDEX ai_model_configs_one_default ON ai_model_configs (is_default) WHERE is_default;

-- One row per turn, from PENDING to a terminal status. Prices and limits are a
-- snapshot taken when the turn started: a later price change never rewrites it.
CREATE TABLE ai_prompts (
  id                                 bigserial PRIMARY KEY,
  user_id                            bigint NOT NULL,
  conversation_id                    bigint NOT NULL,
  status                             text NOT NULL DEFAULT 'PENDING' CHECK (status IN (
                                       'PENDING', 'STREAMING', 'COMPLETED', 'FAILED',
                                       'CANCELLED', 'RATE_LIMITED', 'BUDGET_EXCEEDED')),
  idempotency_key                    text,  -- NULL when the client sent none
  event_id                           text NOT NULL UNIQUE,  -- the usage event / reservation id
  model                              text NOT NULL,
  provider_model                     text NOT NULL,
  reported_model                     text NOT NULL DEFAULT '',  -- what the provider said it ran
  input_price_micros_per_mtok        bigint NOT NULL,
  cached_input_price_micros_per_mtok bigint NOT NULL,
  output_price_micros_per_mtok       bigint NOT NULL,
  context_window                     integer NOT NULL,
  max_output_tokens                  integer NOT NULL,
  user_message_id                    bigint,
  response_message_id                bigint,
  replaces_message_id                bigint,  -- the answer a regeneration replaces
  prompt_tokens                      bigint NOT NULL DEFAULT 0,
  completion_tokens                  bigint NOT NULL DEFAULT 0,
  cached_tokens                      bigint NOT NULL DEFAULT 0,
  estimated                          boolean NOT NULL DEFAULT false,
  cost_nanos                         bigint NOT NULL DEFAULT 0,
  finish_reason                      text NOT NULL DEFAULT '',
  error                              text NOT NULL DEFAULT '',
  response_text                      text NOT NULL DEFAULT '',
  latency_ms                         bigint NOT NULL DEFAULT 0,
  ttft_ms                            bigint NOT NULL DEFAULT 0,
  created_at                         timestamptz NOT NULL DEFAULT now(),
  completed_at                       timestamptz,
  CONSTRAINT ai_prompts_idempotency_key UNIQUE (user_id, idempotency_key)
);
-- ListPrompts: the caller's newest first, optionally within one conversation.
CREATE INDEX ai_prompts_user_idx ON ai_prompts (user_id, id DESC);
CREATE INDEX ai_prompts_user_conversation_idx ON ai_prompts (user_id, conversation_id, id DESC);

-- Usage events committed with the turn that produced them, delivered to
-- usage.RecordUsage by the outbox publisher and deleted once acknowledged.
-- Publishers lease rows (locked_until) instead of holding row locks across RPCs.
CREATE TABLE usage_outbox (
  id              bigserial PRIMARY KEY,
  event_id        text NOT NULL UNIQUE,
  payload         text NOT NULL,  -- base64url of a serialized aichat.usage.v1.UsageEvent
  created_at      timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  attempts        integer NOT NULL DEFAULT 0,
  locked_until    timestamptz,
  last_error      text NOT NULL DEFAULT ''
);
CREATE INDEX usage_outbox_due_idx ON usage_outbox (next_attempt_at, id);
