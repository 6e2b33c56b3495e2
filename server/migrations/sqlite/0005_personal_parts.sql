-- Records in two parts (protocol v2): the shared record document and its personal companion
-- (residents' names and phones), which only office and admin receive. Hostile-input bounds:
-- per-record stored sizes, bounded rejection rows, and a version per record so a cached
-- document is always checked against what is committed.

-- Which document of the record a logged change belongs to, and whether it starts a new version
-- of that document (a rebuild by `linli-server migrate-personal-data`): phones then replace
-- their copy instead of merging.
ALTER TABLE changes ADD COLUMN part TEXT NOT NULL DEFAULT 'record'
    CHECK (part IN ('record', 'personal'));
ALTER TABLE changes ADD COLUMN replaces INTEGER NOT NULL DEFAULT 0;
-- The editing device's message ("set status", "note"), so a record's history is read from the
-- log without loading (or diffing) its document; NULL for changes logged before this column.
ALTER TABLE changes ADD COLUMN message TEXT;

-- The personal part of each record (NULL until someone captures a resident's details), the full
-- personal values as JSON for the back-office, the stored size of each part (bounded by
-- MAX_RECORD_BYTES), and the record's version (bumped by every commit).
ALTER TABLE records ADD COLUMN personal_doc BLOB;
ALTER TABLE records ADD COLUMN personal TEXT;
ALTER TABLE records ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN personal_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

-- History replaced by a personal-data migration: kept for audit by office and admin, never sent
-- to phones again.
CREATE TABLE changes_archive (
    seq         INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    part        TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    actor       TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    claimed_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    archived_at INTEGER NOT NULL
);
CREATE INDEX changes_archive_record ON changes_archive(record_id);

-- A push refused wholesale is stored as a bounded sample: `more` counts the refusals of the same
-- push that were not stored one by one.
ALTER TABLE rejections ADD COLUMN more INTEGER NOT NULL DEFAULT 0;
CREATE INDEX rejections_user_at ON rejections(user_id, at);

-- Existing records: their stored size is their saved document's.
UPDATE records SET bytes = length(doc);
