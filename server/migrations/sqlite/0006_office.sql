-- The back-office: projection columns that the case queue filters, sorts and the statistics
-- aggregate on with plain SQL (no JSON parsed per row at request time), and a trigram full-text
-- index over each record's text, which finds Chinese words without a word segmenter.
--
-- The commit path writes these columns from the merged record (`store::office::OfficeColumns`);
-- the backfill below derives the same values from the stored JSON for records committed before
-- this migration. `has_conflicts` needs the document, not the JSON: it is left NULL here and
-- filled in by `Store::migrate` (which loads each such document once).

ALTER TABLE records ADD COLUMN source TEXT;
ALTER TABLE records ADD COLUMN session_id TEXT;
-- Department codes as ",police,fire_brigade,", so "assigned to x" is instr(departments, ',x,').
ALTER TABLE records ADD COLUMN departments TEXT;
ALTER TABLE records ADD COLUMN deadline TEXT;
ALTER TABLE records ADD COLUMN satisfaction TEXT;
-- A title for lists: the first 200 characters of the activity, summary or needs.
ALTER TABLE records ADD COLUMN summary TEXT;
-- The building-level place the record lies in, else a case's own `building` text.
ALTER TABLE records ADD COLUMN building TEXT;
-- The day the record is about: its own `date`, or (cases) the day it was created, UTC+8.
ALTER TABLE records ADD COLUMN date TEXT;
ALTER TABLE records ADD COLUMN session_type TEXT;
ALTER TABLE records ADD COLUMN run_number TEXT;
ALTER TABLE records ADD COLUMN consultations INTEGER;
ALTER TABLE records ADD COLUMN answered INTEGER;
ALTER TABLE records ADD COLUMN leaflets INTEGER;
ALTER TABLE records ADD COLUMN hours REAL;
ALTER TABLE records ADD COLUMN residents_served INTEGER;
ALTER TABLE records ADD COLUMN activity_type TEXT;
ALTER TABLE records ADD COLUMN has_resolution INTEGER NOT NULL DEFAULT 0;
-- 1 when some field of the merged document holds concurrent values; NULL: not computed yet.
ALTER TABLE records ADD COLUMN has_conflicts INTEGER;

-- Derived as `OfficeColumns::derive` does (a test compares the two).
-- BACKFILL
UPDATE records SET
    source = NULLIF(json_extract(value, '$.source'), ''),
    session_id = NULLIF(json_extract(value, '$.session_id'), ''),
    departments = (SELECT ',' || group_concat(d.value, ',') || ','
                   FROM json_each(records.value, '$.departments') d),
    deadline = NULLIF(json_extract(value, '$.deadline'), ''),
    satisfaction = NULLIF(json_extract(value, '$.satisfaction'), ''),
    summary = substr(COALESCE(NULLIF(json_extract(value, '$.activity'), ''),
                              NULLIF(json_extract(value, '$.summary'), ''),
                              NULLIF(json_extract(value, '$.needs'), '')), 1, 200),
    building = COALESCE(
        (SELECT p.id FROM places p
         WHERE p.level = 'building'
           AND (p.id = records.place OR substr(records.place, 1, length(p.id) + 1) = p.id || '/')),
        NULLIF(json_extract(value, '$.building'), '')),
    date = COALESCE(NULLIF(json_extract(value, '$.date'), ''),
                    date(json_extract(value, '$.created_at') / 1000, 'unixepoch', '+8 hours')),
    session_type = NULLIF(json_extract(value, '$.session_type'), ''),
    run_number = NULLIF(json_extract(value, '$.run_number'), ''),
    consultations = json_extract(value, '$.consultations'),
    answered = json_extract(value, '$.answered_on_site'),
    leaflets = json_extract(value, '$.leaflets'),
    hours = json_extract(value, '$.hours'),
    residents_served = json_extract(value, '$.residents_served'),
    activity_type = NULLIF(json_extract(value, '$.activity_type'), ''),
    has_resolution = COALESCE(json_extract(value, '$.resolution'), '') != '',
    has_conflicts = NULL;
-- END BACKFILL

-- The queue in each of its orders: an index walked in that order, holding the place (and, for
-- the default order, the columns most filters test), so a page reads index entries until it has
-- its rows and never sorts a street's worth of records; the queries keep SQLite off the place
-- index for this (`+place`).
CREATE INDEX records_queue_updated ON records(updated_at, id, place, kind, status, category,
                                              source, deadline, date, has_conflicts, departments);
CREATE INDEX records_queue_created ON records(created_at, id, place);
CREATE INDEX records_queue_deadline ON records(deadline, id, place);
-- Open cases by deadline: what "overdue" looks at (a few among many closed ones). Only cases have
-- a status, so the condition leaves the other kinds out too.
CREATE INDEX records_open ON records(deadline, id, place)
    WHERE status NOT IN ('resolved', 'evaluated', 'withdrawn');
-- The case statistics read this index only.
CREATE INDEX records_stats ON records(kind, place, date, status, satisfaction, has_resolution);
CREATE INDEX records_session ON records(session_id);
CREATE INDEX records_source ON records(source, updated_at);
CREATE INDEX records_conflicted ON records(updated_at, id) WHERE has_conflicts = 1;

-- Each record's searchable text (summary, details, resolution, needs, activity, venue, estate,
-- household and notes; never residents' personal values), with a stable integer key for the
-- full-text index (a table's implicit rowid may change on VACUUM).
CREATE TABLE record_text (
    n    INTEGER PRIMARY KEY,
    id   TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL
);
CREATE VIRTUAL TABLE record_fts USING fts5(
    text, content = 'record_text', content_rowid = 'n', tokenize = 'trigram'
);
CREATE TRIGGER record_text_ai AFTER INSERT ON record_text BEGIN
    INSERT INTO record_fts (rowid, text) VALUES (new.n, new.text);
END;
CREATE TRIGGER record_text_ad AFTER DELETE ON record_text BEGIN
    INSERT INTO record_fts (record_fts, rowid, text) VALUES ('delete', old.n, old.text);
END;
CREATE TRIGGER record_text_au AFTER UPDATE ON record_text BEGIN
    INSERT INTO record_fts (record_fts, rowid, text) VALUES ('delete', old.n, old.text);
    INSERT INTO record_fts (rowid, text) VALUES (new.n, new.text);
END;

-- TEXT BACKFILL
INSERT INTO record_text (id, text)
SELECT id, concat_ws(char(10),
    NULLIF(json_extract(value, '$.summary'), ''),
    NULLIF(json_extract(value, '$.details'), ''),
    NULLIF(json_extract(value, '$.resolution'), ''),
    NULLIF(json_extract(value, '$.needs'), ''),
    NULLIF(json_extract(value, '$.activity'), ''),
    NULLIF(json_extract(value, '$.venue'), ''),
    NULLIF(json_extract(value, '$.estate'), ''),
    NULLIF(json_extract(value, '$.household'), ''),
    (SELECT group_concat(NULLIF(json_extract(n.value, '$.text'), ''), char(10))
     FROM json_each(records.value, '$.notes') n))
FROM records;
-- END TEXT BACKFILL
