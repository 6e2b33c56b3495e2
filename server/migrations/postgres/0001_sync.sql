-- Linli server schema (PostgreSQL), first part: the place tree, users, their grants and devices,
-- and the sync log with its projection. Times are milliseconds since the Unix epoch (UTC).
--
-- Place paths and record ids are compared byte by byte (COLLATE "C"): "within a place" is the
-- range `p/` <= x < `p0`, and bootstrap pages walk record ids in order, both of which assume
-- byte order, which a locale's collation does not give.

CREATE TABLE places (
    id      TEXT COLLATE "C" PRIMARY KEY,
    parent  TEXT COLLATE "C" REFERENCES places(id),
    name    TEXT NOT NULL,
    level   TEXT NOT NULL
        CHECK (level IN ('district', 'street', 'community', 'estate', 'building', 'unit', 'household'))
);
CREATE INDEX places_parent ON places(parent);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('steward', 'bus', 'office', 'admin')),
    display_name  TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

-- Every grant and revocation, in order; its id is the grant epoch (only grows).
CREATE TABLE grant_events (
    id       BIGSERIAL PRIMARY KEY,
    user_id  TEXT NOT NULL,
    place_id TEXT COLLATE "C" NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('grant', 'revoke')),
    at       BIGINT NOT NULL
);

CREATE TABLE grants (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    place_id TEXT COLLATE "C" NOT NULL REFERENCES places(id),
    epoch    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, place_id)
);

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    name       TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX devices_user ON devices(user_id);

-- Automerge actor ids (hex) and the device each is bound to (at its first accepted change).
CREATE TABLE actors (
    actor      TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    first_seen BIGINT NOT NULL
);

-- One row per record: what the sync path decides on (place, kind, version), its saved documents
-- (whole saves at `doc_seq` / `personal_seq`, with `doc_tail` / `personal_tail` later changes in
-- the log on top) and the projection the lists read.
CREATE TABLE records (
    id             TEXT COLLATE "C" PRIMARY KEY,
    kind           TEXT NOT NULL,
    place          TEXT COLLATE "C" NOT NULL,
    status         TEXT,
    category       TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    last_seq       BIGINT NOT NULL,
    value          JSONB NOT NULL,
    has_conflicts  BOOLEAN NOT NULL DEFAULT FALSE,
    doc            BYTEA NOT NULL,
    personal_doc   BYTEA,
    personal       JSONB,
    bytes          BIGINT NOT NULL DEFAULT 0,
    personal_bytes BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 0,
    doc_seq        BIGINT NOT NULL DEFAULT 0,
    doc_tail       BIGINT NOT NULL DEFAULT 0,
    personal_seq   BIGINT NOT NULL DEFAULT 0,
    personal_tail  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX records_place ON records(place, id);
CREATE INDEX records_updated ON records(updated_at, id);

-- The change log. `seq` is the log position phones pull by. It is not a sequence: it is handed
-- out from `log_head` as the last statement of the committing transaction (see docs/PROTOCOL.md,
-- "The cursor never skips a change"), so it is NULL only inside that transaction and no reader
-- ever sees a NULL. `id` is only the row's handle until then.
CREATE TABLE changes (
    id          BIGSERIAL PRIMARY KEY,
    seq         BIGINT UNIQUE,
    hash        BYTEA NOT NULL,
    record_id   TEXT COLLATE "C" NOT NULL,
    place       TEXT COLLATE "C" NOT NULL,
    kind        TEXT NOT NULL,
    part        TEXT NOT NULL DEFAULT 'record' CHECK (part IN ('record', 'personal')),
    replaces    BOOLEAN NOT NULL DEFAULT FALSE,
    bytes       BYTEA NOT NULL,
    actor       TEXT NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    claimed_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    touched     JSONB NOT NULL DEFAULT '[]',
    message     TEXT
);
CREATE UNIQUE INDEX changes_record_hash ON changes(record_id, hash);
CREATE INDEX changes_record_seq ON changes(record_id, part, seq);
CREATE INDEX changes_place_seq ON changes(place, seq);

-- The last log position handed out. One row; its lock orders the commits' positions.
CREATE TABLE log_head (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    seq BIGINT NOT NULL
);
INSERT INTO log_head (seq) VALUES (0);

-- Refused pushes, for the back-office; a bounded sample per push (`more` counts the rest).
CREATE TABLE rejections (
    id        BIGSERIAL PRIMARY KEY,
    hash      BYTEA NOT NULL,
    record_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    at        BIGINT NOT NULL,
    place     TEXT COLLATE "C",
    more      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX rejections_at ON rejections(at);
CREATE INDEX rejections_place ON rejections(place, at);
