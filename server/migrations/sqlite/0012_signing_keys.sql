-- The access-token signing keys, in the database so that every server process on it signs and
-- verifies the same ring and sees the others' rotations (they were in `jwt-keys.json` in the data
-- directory, which the first start after this migration imports). The newest key without
-- `retire_at` signs; every key not retired verifies until `retire_at`. A retired key keeps its row
-- (its id and dates) but not its secret.
CREATE TABLE signing_keys (
    seq        INTEGER PRIMARY KEY,
    kid        TEXT NOT NULL UNIQUE,
    algorithm  TEXT NOT NULL,
    -- The HMAC secret, hex; '' once retired.
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- After this time (ms) it verifies nothing; NULL while it signs.
    retire_at  INTEGER,
    retired    INTEGER NOT NULL DEFAULT 0
);
