-- The access-token signing keys, shared by every server process on this database (see the
-- SQLite migration 0012). The newest key without `retire_at` signs; every key not retired
-- verifies until `retire_at`. A retired key keeps its row but not its secret.
CREATE TABLE signing_keys (
    seq        BIGSERIAL PRIMARY KEY,
    kid        TEXT NOT NULL UNIQUE,
    algorithm  TEXT NOT NULL,
    -- The HMAC secret, hex; '' once retired.
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- After this time (ms) it verifies nothing; NULL while it signs.
    retire_at  BIGINT,
    retired    BOOLEAN NOT NULL DEFAULT FALSE
);
