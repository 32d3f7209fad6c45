-- Conversations and their messages. Every lookup filters by user_id (the owner),
-- so another user's id reads exactly like a missing one.
CREATE TABLE conversations (
  id                   bigserial PRIMARY KEY,
  user_id              bigint NOT NULL,
  title                text NOT NULL DEFAULT '',
  model                text NOT NULL DEFAULT '',
  system_prompt        text NOT NULL DEFAULT '',
  -- Estimated once when the prompt is set, so GetContext never re-counts it.
  system_prompt_tokens integer NOT NULL DEFAULT 0 CHECK (system_prompt_tokens >= 0),
  message_count        bigint NOT NULL DEFAULT 0,
  -- The position of the newest message; an append takes last_position + 1 under
  -- this row's lock, so positions of one conversation are 1, 2, 3… with no
  -- duplicates and commit in position order.
  last_position        bigint NOT NULL DEFAULT 0,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);
-- ListConversations: newest updated first, keyset on (updated_at, id).
CREATE INDEX conversations_user_updated_idx ON conversations (user_id, updated_at, id);

CREATE TABLE messages (
  id                    bigserial PRIMARY KEY,
  conversation_id       bigint NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  position              bigint NOT NULL,
  role                  text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
  content               text NOT NULL,
  token_count           integer NOT NULL CHECK (token_count >= 0),
  token_count_estimated boolean NOT NULL,
  prompt_id             bigint,
  -- The message this one replaced (a regenerated answer), for the record.
  replaces_message_id   bigint,
  superseded            boolean NOT NULL DEFAULT false,
  created_at            timestamptz NOT NULL DEFAULT now(),
  -- ListMessages pages on this (oldest first).
  CONSTRAINT messages_position_key UNIQUE (conversation_id, position)
);
-- GetContext walks the newest live messages backwards reading only this index
-- (position and token count), then fetches the contents of the ones that fit.
CREATE INDEX messages_context_idx ON messages (conversation_id, position DESC)
  INCLUDE (token_count) WHERE NOT superseded;
