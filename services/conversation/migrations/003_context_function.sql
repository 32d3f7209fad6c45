-- GetContext in one round trip, bounded by tokens and bytes inside PostgreSQL.
--
-- content_bytes lets the backwards walk stop at the byte budget reading only the
-- index: with octet_length(content) the walk was an index scan plus a heap fetch
-- per message (5x the buffers for a 200-message window); with the column in the
-- index's INCLUDE list it is an index-only scan. Generated, so no writer can
-- forget it. Adding it rewrites the table once.
ALTER TABLE messages
  ADD COLUMN content_bytes integer GENERATED ALWAYS AS (octet_length(content)) STORED;

-- Replaces messages_context_idx (001), which had no content_bytes.
CREATE INDEX messages_window_idx ON messages (conversation_id, position DESC)
  INCLUDE (token_count, content_bytes) WHERE NOT superseded;
DROP INDEX messages_context_idx;

-- The conversation and its context window in one call. Returns no row when the
-- conversation does not exist or is not p_user_id's. Otherwise the first row
-- (is_message = false) is the conversation with `truncated`; the rows after it
-- are the window's messages, oldest first.
--
-- The window: walking the newest live (not superseded) messages backwards, each
-- is taken while the tokens taken so far plus its own stay within p_max_tokens
-- (the system prompt's tokens count first) and the bytes within p_max_bytes (the
-- system prompt's bytes, twice, and each message's content plus p_framing_bytes);
-- the walk stops at the first message that does not fit, so the window is
-- contiguous, and `truncated` says that one exists. The walk reads only
-- messages_window_idx and stops there; contents are read for the window alone.
--
-- STABLE: every statement in it sees the snapshot of the calling statement, so
-- the walk and the fetch agree.
CREATE FUNCTION conversation_context(p_conversation_id bigint, p_user_id bigint,
                                     p_max_tokens bigint, p_max_bytes bigint,
                                     p_framing_bytes integer)
RETURNS TABLE (
  is_message boolean, truncated boolean,
  c_id bigint, c_user_id bigint, c_title text, c_model text, c_system_prompt text,
  c_system_prompt_tokens integer, c_message_count bigint, c_created_at timestamptz,
  c_updated_at timestamptz,
  m_id bigint, m_conversation_id bigint, m_role text, m_content text, m_token_count integer,
  m_token_count_estimated boolean, m_prompt_id bigint, m_position bigint,
  m_superseded boolean, m_created_at timestamptz)
LANGUAGE plpgsql STABLE STRICT
AS $fn$
DECLARE
  -- A bound cursor is planned for a fast start (cursor_tuple_fraction), so the walk
  -- is an index scan that stops where the loop does, never a sort of the whole
  -- conversation; a FOR over it fetches one row at a time, so it reads one row past
  -- the window at most. (A plain FOR-IN-SELECT is planned for all rows: a seq scan
  -- and a sort once the conversation is most of the table.)
  newest CURSOR FOR
    SELECT m.position, m.token_count, m.content_bytes FROM messages m
    WHERE m.conversation_id = p_conversation_id AND NOT m.superseded
    ORDER BY m.position DESC;
  conv conversations%ROWTYPE;
  tokens bigint;
  bytes bigint;
  cut boolean := false;
  lowest bigint;
  highest bigint;
BEGIN
  SELECT * INTO conv FROM conversations c WHERE c.id = p_conversation_id AND c.user_id = p_user_id;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  tokens := conv.system_prompt_tokens;
  -- The response carries the system prompt twice (on its own and in the conversation).
  bytes := 2 * octet_length(conv.system_prompt);
  FOR w IN newest LOOP
    IF tokens + w.token_count > p_max_tokens
       OR bytes + w.content_bytes + p_framing_bytes > p_max_bytes THEN
      cut := true;
      EXIT;
    END IF;
    tokens := tokens + w.token_count;
    bytes := bytes + w.content_bytes + p_framing_bytes;
    lowest := w.position;
    highest := COALESCE(highest, w.position);
  END LOOP;

  RETURN QUERY SELECT false, cut, conv.id, conv.user_id, conv.title, conv.model,
    conv.system_prompt, conv.system_prompt_tokens, conv.message_count, conv.created_at,
    conv.updated_at, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::integer,
    NULL::boolean, NULL::bigint, NULL::bigint, NULL::boolean, NULL::timestamptz;
  IF highest IS NOT NULL THEN
    RETURN QUERY SELECT true, NULL::boolean, NULL::bigint, NULL::bigint, NULL::text,
      NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::timestamptz,
      NULL::timestamptz, m.id, m.conversation_id, m.role, m.content, m.token_count,
      m.token_count_estimated, m.prompt_id, m.position, m.superseded, m.created_at
    FROM messages m
    WHERE m.conversation_id = p_conversation_id AND NOT m.superseded
      AND m.position BETWEEN lowest AND highest
    ORDER BY m.position;
  END IF;
END
$fn$;
