-- Access control: grant epochs (so a phone whose grants grew is bootstrapped), device
-- revocation, rotating refresh tokens, and the place of each rejected push.

-- Every grant and revocation, in order. Its id is the "grant epoch": a counter that only grows,
-- even when grants are revoked, so "grants newer than what a phone was bootstrapped for" is exact.
CREATE TABLE grant_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id  TEXT NOT NULL,
    place_id TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('grant', 'revoke')),
    at       INTEGER NOT NULL
);

-- The epoch a grant was made at (0: before epochs existed).
ALTER TABLE grants ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;

-- A revoked device can no longer sync or refresh; its actors stay bound to it.
ALTER TABLE devices ADD COLUMN revoked_at INTEGER;

-- Refresh tokens, stored as SHA-256 hashes. Each use spends the token and issues the next one of
-- the same family; presenting a spent token again revokes the whole family.
CREATE TABLE refresh_tokens (
    hash       BLOB PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER,
    revoked_at INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens(device_id);

-- The place of the refused record (or of the pusher's first grant when the bytes named none), so
-- the back-office lists the rejections within its own grants.
ALTER TABLE rejections ADD COLUMN place TEXT;
CREATE INDEX rejections_place ON rejections(place, at);
