-- Accounts, refresh tokens and API keys. Secrets are stored only as hashes:
-- passwords as Argon2id strings, refresh tokens and API keys as SHA-256 (hex),
-- which is enough for 256-bit random values.
CREATE TABLE users (
  id                  bigserial PRIMARY KEY,
  email               text NOT NULL UNIQUE,
  password_hash       text NOT NULL,
  display_name        text NOT NULL DEFAULT '',
  role                text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin', 'service')),
  requests_per_minute integer NOT NULL CHECK (requests_per_minute > 0),
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
  id          bigserial PRIMARY KEY,
  user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  token_hash  text NOT NULL UNIQUE,
  expires_at  timestamptz NOT NULL,
  used_at     timestamptz,
  revoked_at  timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE api_keys (
  id           bigserial PRIMARY KEY,
  user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  name         text NOT NULL,
  prefix       text NOT NULL,
  key_hash     text NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, id DESC);
