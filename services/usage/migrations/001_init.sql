-- The ledger (usage_logs), its per-day rollups, budgets and reservations.
-- Money is integer: prices in micros per million tokens, costs in nanos (USD).

-- One row per turn; event_id is the idempotency key of RecordUsage.
CREATE TABLE usage_logs (
  id                                 bigserial PRIMARY KEY,
  event_id                           text NOT NULL UNIQUE,
  user_id                            bigint NOT NULL,
  conversation_id                    bigint NOT NULL,
  prompt_id                          bigint NOT NULL,
  model                              text NOT NULL,
  provider_model                     text NOT NULL,
  prompt_tokens                      bigint NOT NULL CHECK (prompt_tokens >= 0),
  completion_tokens                  bigint NOT NULL CHECK (completion_tokens >= 0),
  cached_tokens                      bigint NOT NULL CHECK (cached_tokens >= 0 AND cached_tokens <= prompt_tokens),
  input_price_micros_per_mtok        bigint NOT NULL CHECK (input_price_micros_per_mtok >= 0),
  cached_input_price_micros_per_mtok bigint NOT NULL CHECK (cached_input_price_micros_per_mtok >= 0),
  output_price_micros_per_mtok       bigint NOT NULL CHECK (output_price_micros_per_mtok >= 0),
  cost_nanos                         bigint NOT NULL CHECK (cost_nanos >= 0),
  estimated                          boolean NOT NULL,
  outcome                            smallint NOT NULL,
  occurred_at                        timestamptz NOT NULL,
  recorded_at                        timestamptz NOT NULL
);
-- ListUsage (keyset, newest first) and the partial days at the edges of a summary.
CREATE INDEX usage_logs_user_time_idx ON usage_logs (user_id, occurred_at DESC, id DESC);
-- GROUP_BY_USER's partial days (all users).
CREATE INDEX usage_logs_time_idx ON usage_logs (occurred_at);

-- Per user, UTC day and model: exact sums of usage_logs. Serves DAY, MODEL and
-- USER summaries over whole days and the month's spend for budgets.
CREATE TABLE usage_daily (
  user_id           bigint NOT NULL,
  day               date NOT NULL,
  model             text NOT NULL,
  requests          bigint NOT NULL,
  prompt_tokens     bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  cached_tokens     bigint NOT NULL,
  cost_nanos        bigint NOT NULL,
  PRIMARY KEY (user_id, day, model)
);
CREATE INDEX usage_daily_day_idx ON usage_daily (day);

-- Per user, UTC day and conversation: serves CONVERSATION summaries.
CREATE TABLE usage_daily_conversation (
  user_id           bigint NOT NULL,
  day               date NOT NULL,
  conversation_id   bigint NOT NULL,
  requests          bigint NOT NULL,
  prompt_tokens     bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  cached_tokens     bigint NOT NULL,
  cost_nanos        bigint NOT NULL,
  PRIMARY KEY (user_id, day, conversation_id)
);

-- The rollups are maintained by a statement-level trigger, so every insert into
-- usage_logs (RecordUsage, a backfill, a bulk load) updates them in its own
-- transaction: they can never disagree with the ledger. Rows are only ever
-- inserted into usage_logs (never updated or deleted).
CREATE FUNCTION usage_logs_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO usage_daily AS d
      (user_id, day, model, requests, prompt_tokens, completion_tokens, cached_tokens, cost_nanos)
    SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date, model, count(*),
           sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_nanos)
      FROM new_rows GROUP BY 1, 2, 3
      ORDER BY 1, 2, 3
  ON CONFLICT (user_id, day, model) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
    cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens,
    cost_nanos = d.cost_nanos + EXCLUDED.cost_nanos;
  INSERT INTO usage_daily_conversation AS d
      (user_id, day, conversation_id, requests, prompt_tokens, completion_tokens, cached_tokens,
       cost_nanos)
    SELECT user_id, (occurred_at AT TIME ZONE 'UTC')::date, conversation_id, count(*),
           sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_nanos)
      FROM new_rows GROUP BY 1, 2, 3
      ORDER BY 1, 2, 3
  ON CONFLICT (user_id, day, conversation_id) DO UPDATE SET
    requests = d.requests + EXCLUDED.requests,
    prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
    cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens,
    cost_nanos = d.cost_nanos + EXCLUDED.cost_nanos;
  RETURN NULL;
END $$;

CREATE TRIGGER usage_logs_rollup AFTER INSERT ON usage_logs
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION usage_logs_rollup();

-- One row per user that has a limit or has asked for a reservation. The row is
-- also the per-user lock that makes ReserveBudget decisions serial.
-- monthly_limit_nanos 0 = unlimited.
CREATE TABLE budgets (
  user_id             bigint PRIMARY KEY,
  monthly_limit_nanos bigint NOT NULL DEFAULT 0 CHECK (monthly_limit_nanos >= 0),
  updated_at          timestamptz
);

-- Every ReserveBudget decision, kept for a day past its TTL: the idempotency
-- record for repeated calls, the sliding rate window (allowed rows of the last
-- minute) and the money in flight (active rows younger than the TTL).
CREATE TABLE reservations (
  event_id        text PRIMARY KEY,
  user_id         bigint NOT NULL,
  max_cost_nanos  bigint NOT NULL CHECK (max_cost_nanos >= 0),
  allowed         boolean NOT NULL,
  -- active | settled | released | refused; an active row older than the TTL is expired.
  state           text NOT NULL CHECK (state IN ('active', 'settled', 'released', 'refused')),
  reason          smallint NOT NULL,
  message         text NOT NULL,
  retry_at        timestamptz,
  remaining_nanos bigint NOT NULL,
  created_at      timestamptz NOT NULL,
  closed_at       timestamptz
);
CREATE INDEX reservations_user_time_idx ON reservations (user_id, created_at);
