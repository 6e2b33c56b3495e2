-- Linli server schema (PostgreSQL), second part: what accounts need beyond the first part's
-- places, users, grants and devices (SQLite migrations 0002, 0003 and 0007). Times are
-- milliseconds since the Unix epoch (UTC).

-- Every access token carries the user's session epoch; a password reset or a disable moves it
-- on, so tokens issued before stop working at once (enabling the user again does not revive
-- them).
ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;

-- Server-wide secrets kept in the database, so every server process derives the same values
-- (the successor of a refresh token, for retries within the grace window).
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Refresh tokens, stored as SHA-256 hashes. Each use spends the token and issues the next one of
-- the same family; presenting a spent token again revokes the whole family.
CREATE TABLE refresh_tokens (
    hash       BYTEA PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    spent_at   BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device_id);

-- Browser sessions of the back-office. The cookie holds a random token; the database keeps only
-- its SHA-256. Each session is bound to a device of its own (the browser) and an Automerge actor
-- on it. A session ends on sign-out, after `idle` without a request, or when the user's session
-- epoch moves.
CREATE TABLE web_sessions (
    hash          BYTEA PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices(id),
    actor         TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    session_epoch BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL,
    ended_at      BIGINT
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
