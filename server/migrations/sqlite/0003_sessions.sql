-- Sessions that end at once: every access token carries the user's session epoch, which a
-- password reset or a disable bumps, so tokens issued before stop working immediately (enabling
-- the user again does not revive them). And server-wide secrets kept in the database, so every
-- server node derives the same values (the successor of a refresh token, for retries within the
-- grace window).
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
