-- nf-auth: users, API keys and dashboard sessions (DESIGN §2, §5).
-- Secrets are never stored: API keys and session tokens only as SHA-256 hex of the whole
-- value, passwords only as Argon2id strings (crypto_pwhash_str).

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.users (
    user_id       text PRIMARY KEY CHECK (user_id ~ '^usr_[0-9A-HJKMNP-TV-Z]{26}$'),
    email         text NOT NULL UNIQUE CHECK (email <> '' AND email = lower(btrim(email))),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^key_[0-9A-HJKMNP-TV-Z]{26}$'),
    user_id      text NOT NULL REFERENCES auth.users (user_id) ON DELETE CASCADE,
    name         text NOT NULL DEFAULT '',
    key_hash     char(64) NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    prefix       text NOT NULL CHECK (length(prefix) = 12),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- "GET /api/auth/api-keys": a user's keys, newest first.
CREATE INDEX api_keys_user_idx ON auth.api_keys (user_id, created_at DESC);

CREATE TABLE auth.sessions (
    token_hash char(64) PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_id    text NOT NULL REFERENCES auth.users (user_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX sessions_user_idx ON auth.sessions (user_id);
CREATE INDEX sessions_expires_idx ON auth.sessions (expires_at);
