-- nf-auth, issue 3: per-key rate limits, the live-key count, sessions' origin.

-- A key may carry a lower rate limit than the gateway's default (NF_GATEWAY_RATE_LIMIT /
-- NF_GATEWAY_RATE_BURST); the gateway applies min(key, default). NULL: the default.
ALTER TABLE auth.api_keys
    ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0),
    ADD COLUMN burst integer CHECK (burst > 0),
    ADD CONSTRAINT api_keys_name_len CHECK (length(name) <= 64);

-- "At most N live keys per user" counts these rows on every creation.
CREATE INDEX api_keys_live_idx ON auth.api_keys (user_id) WHERE revoked_at IS NULL;

-- Where a session was opened from (shown to the user, audited); never a secret.
ALTER TABLE auth.sessions ADD COLUMN client_addr text;

-- Times as the API writes them: RFC 3339 UTC with milliseconds ("2026-11-28T21:03:52.123Z").
CREATE FUNCTION auth.rfc3339(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;
