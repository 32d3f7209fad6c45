-- ReserveBudget's decision as one server-side function: the service calls it with
-- one statement (one round trip, one implicit transaction) instead of a dozen
-- statements between BEGIN and COMMIT. It decides exactly as the store used to:
-- the user's budgets row serialises decisions, a repeated event_id replays the
-- stored decision, old decisions are pruned, then the rate window and the budget
-- are checked and the decision is stored. Money is bigint, sums and comparisons
-- numeric: never floating point.

-- "$1.50", "$0.000000123": at least two decimals, no trailing zeros beyond them.
CREATE FUNCTION usage_format_usd(nanos bigint) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN nanos < 0 THEN '-' ELSE '' END || '$'
         || div(abs(nanos::numeric), 1000000000)::text || '.'
         || CASE WHEN length(f) < 2 THEN rpad(f, 2, '0') ELSE f END
    FROM (SELECT rtrim(lpad(mod(abs(nanos::numeric), 1000000000)::text, 9, '0'), '0') AS f) AS t
$$;

-- "2025-04-01T00:00:00Z": UTC, truncated to the second.
CREATE FUNCTION usage_time_text(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- One ReserveBudget decision. Output columns are prefixed with d_ so that they never
-- shadow a table column inside the body. d_foreign: event_id belongs to another
-- user (nothing was decided or stored).
--
-- VOLATILE under READ COMMITTED: every statement below takes a fresh snapshot, so
-- once the row lock is granted the decisions committed by the calls queued before
-- this one are all visible.
CREATE FUNCTION usage_reserve(
    p_user_id bigint, p_event_id text, p_max_cost_nanos bigint, p_requests_per_minute integer,
    p_now timestamptz, p_ttl interval, p_rate_window interval, p_keep interval,
    p_month_start timestamptz, p_next_month timestamptz)
  RETURNS TABLE (d_foreign boolean, d_replayed boolean, d_allowed boolean, d_reason smallint,
                 d_message text, d_retry_at timestamptz, d_remaining_nanos bigint)
  LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_prior reservations%ROWTYPE;
  v_nth timestamptz;
  v_limit bigint;
  v_spent bigint;
  v_reserved bigint;
  v_oldest timestamptz;
  v_committed numeric;
  v_head text;
BEGIN
  d_foreign := false;
  d_replayed := false;
  d_allowed := false;
  d_reason := 0;
  d_message := '';
  d_retry_at := NULL;
  d_remaining_nanos := 0;

  -- The per-user lock: every ReserveBudget for a user queues on this row.
  INSERT INTO budgets (user_id) VALUES (p_user_id) ON CONFLICT (user_id) DO NOTHING;
  PERFORM 1 FROM budgets WHERE user_id = p_user_id FOR UPDATE;

  -- Under the lock, a concurrent call with the same event_id has committed (or not started).
  SELECT * INTO v_prior FROM reservations WHERE event_id = p_event_id;
  IF FOUND THEN
    IF v_prior.user_id <> p_user_id THEN
      d_foreign := true;
    ELSE
      d_replayed := true;
      d_allowed := v_prior.allowed;
      d_reason := v_prior.reason;
      d_message := v_prior.message;
      d_retry_at := v_prior.retry_at;
      d_remaining_nanos := v_prior.remaining_nanos;
    END IF;
    RETURN NEXT;
    RETURN;
  END IF;

  DELETE FROM reservations WHERE user_id = p_user_id AND created_at < p_now - p_keep;

  -- The rpm-th newest admission of the window: if it exists the window is full,
  -- and it frees up when that admission leaves the window.
  IF p_requests_per_minute > 0 THEN
    SELECT created_at INTO v_nth FROM reservations
      WHERE user_id = p_user_id AND allowed AND created_at > p_now - p_rate_window
      ORDER BY created_at DESC OFFSET p_requests_per_minute - 1 LIMIT 1;
    IF FOUND THEN
      d_reason := 1;
      d_retry_at := v_nth + p_rate_window;
      d_message := 'rate limit of ' || p_requests_per_minute
                   || ' requests per minute reached; next request allowed at '
                   || usage_time_text(d_retry_at);
    END IF;
  END IF;

  IF d_reason = 0 THEN
    -- Limit, month's spend (from the daily rollup), money in flight (active,
    -- unexpired reservations) and the oldest of those, in one statement: one
    -- snapshot, so a RecordUsage committing meanwhile is seen entirely or not at all.
    SELECT COALESCE((SELECT monthly_limit_nanos FROM budgets WHERE user_id = p_user_id), 0),
           (SELECT COALESCE(sum(cost_nanos), 0) FROM usage_daily
             WHERE user_id = p_user_id AND day >= (p_month_start AT TIME ZONE 'UTC')::date
               AND day < (p_next_month AT TIME ZONE 'UTC')::date)::bigint,
           (SELECT COALESCE(sum(max_cost_nanos), 0) FROM reservations
             WHERE user_id = p_user_id AND state = 'active' AND created_at > p_now - p_ttl)::bigint,
           (SELECT min(created_at) FROM reservations
             WHERE user_id = p_user_id AND state = 'active' AND created_at > p_now - p_ttl)
      INTO v_limit, v_spent, v_reserved, v_oldest;
    IF v_limit = 0 THEN
      d_allowed := true;
    ELSE
      v_committed := v_spent::numeric + v_reserved;
      IF v_committed + p_max_cost_nanos <= v_limit THEN
        d_allowed := true;
        d_remaining_nanos := v_limit - v_committed - p_max_cost_nanos;
      ELSE
        d_reason := 2;
        d_remaining_nanos := GREATEST(LEAST(v_limit - v_committed, 9223372036854775807),
                                      -9223372036854775808);
        v_head := 'monthly budget of ' || usage_format_usd(v_limit) || ' reached (spent '
                  || usage_format_usd(v_spent) || ', in flight ' || usage_format_usd(v_reserved)
                  || ', this turn needs up to ' || usage_format_usd(p_max_cost_nanos) || ')';
        IF v_spent::numeric + p_max_cost_nanos <= v_limit AND v_oldest IS NOT NULL THEN
          -- Only turns in flight stand in the way: they settle, or expire by then.
          d_retry_at := LEAST(v_oldest + p_ttl, p_next_month);
          d_message := v_head || '; turns in flight hold the rest, retry after '
                       || usage_time_text(d_retry_at);
        ELSE
          d_retry_at := p_next_month;
          d_message := v_head || '; the budget resets at ' || usage_time_text(p_next_month);
        END IF;
      END IF;
    END IF;
  END IF;

  -- A concurrent decision for another user with this event_id fails here with a
  -- unique violation (the caller answers ALREADY_EXISTS).
  INSERT INTO reservations (event_id, user_id, max_cost_nanos, allowed, state, reason, message,
                            retry_at, remaining_nanos, created_at)
    VALUES (p_event_id, p_user_id, p_max_cost_nanos, d_allowed,
            CASE WHEN d_allowed THEN 'active' ELSE 'refused' END, d_reason, d_message,
            d_retry_at, d_remaining_nanos, p_now);
  RETURN NEXT;
END $$;
