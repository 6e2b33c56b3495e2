-- History replaced by a personal-data migration (SQLite's `changes_archive`, from its migration
-- 0005): the changes a rebuilt record was stored with before its residents' details moved to its
-- personal part, kept for audit by office and admin and never sent to phones again. Nothing on
-- PostgreSQL writes here (`migrate-personal-data` runs on SQLite only, before a district moves);
-- `migrate-store` copies a district's archive so the move loses none of it.
CREATE TABLE changes_archive (
    seq         BIGINT PRIMARY KEY,
    hash        BYTEA NOT NULL,
    record_id   TEXT COLLATE "C" NOT NULL,
    part        TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    actor       TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    archived_at BIGINT NOT NULL
);
CREATE INDEX changes_archive_record ON changes_archive(record_id);
