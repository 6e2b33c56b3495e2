-- Linli server schema v1 (SQLite). Times are milliseconds since the Unix epoch (UTC).

-- The place tree. Ids are paths ("hz/baiyang/haitian"), so "within" is a prefix test.
CREATE TABLE places (
    id      TEXT PRIMARY KEY NOT NULL,
    parent  TEXT REFERENCES places(id),
    name    TEXT NOT NULL,
    level   TEXT NOT NULL
        CHECK (level IN ('district', 'street', 'community', 'estate', 'building', 'unit', 'household'))
);
CREATE INDEX places_parent ON places(parent);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('steward', 'bus', 'office', 'admin')),
    display_name  TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- A grant on a place covers everything below it.
CREATE TABLE grants (
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    place_id TEXT NOT NULL REFERENCES places(id),
    PRIMARY KEY (user_id, place_id)
);

-- Phones. A device id is chosen by the phone and bound to one user at its first login.
CREATE TABLE devices (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id),
    name       TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);

-- Automerge actor ids (hex) and the device each belongs to (bound at first accepted change).
CREATE TABLE actors (
    actor      TEXT PRIMARY KEY NOT NULL,
    device_id  TEXT NOT NULL REFERENCES devices(id),
    first_seen INTEGER NOT NULL
);

-- The projection: one row per record, with the indexed columns the lists filter on, the typed
-- JSON value and the full Automerge document (saved at every accepted change).
CREATE TABLE records (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL,
    place      TEXT NOT NULL,
    status     TEXT,
    category   TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    value      TEXT NOT NULL,
    doc        BLOB NOT NULL
);
CREATE INDEX records_updated ON records(updated_at, id);
CREATE INDEX records_kind ON records(kind, updated_at);
CREATE INDEX records_place ON records(place);
CREATE INDEX records_status ON records(status, updated_at);
CREATE INDEX records_category ON records(category, updated_at);

-- The change log. `seq` orders what phones pull; (record, hash) makes pushes idempotent.
-- The hash is unique per record, not globally: two records created by one actor with the same
-- content in the same second have byte-identical creating changes, and both must be kept.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    hash        BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    place       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    actor       TEXT NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    claimed_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    touched     TEXT NOT NULL DEFAULT '[]'
);
CREATE UNIQUE INDEX changes_record_hash ON changes(record_id, hash);

-- Refused pushes, for the back-office (a rejected change is never silently dropped).
CREATE TABLE rejections (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    hash      BLOB NOT NULL,
    record_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    message   TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX rejections_at ON rejections(at);
