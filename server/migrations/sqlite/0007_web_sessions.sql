-- Browser sessions of the back-office. The cookie holds a random token; the database keeps only
-- its SHA-256. Each session is bound to a device of its own (the browser) and an Automerge actor
-- on it, so every edit made from the office is attributed like a phone's. A session ends on
-- sign-out, after `idle` without a request, or when the user's session epoch moves (password
-- reset, disable).
CREATE TABLE web_sessions (
    hash          BLOB PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices(id),
    actor         TEXT NOT NULL,
    csrf          TEXT NOT NULL,
    session_epoch INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    ended_at      INTEGER
);
CREATE INDEX web_sessions_user ON web_sessions(user_id);
