-- The back-office on PostgreSQL: the projection columns the case queue filters and sorts on and
-- the statistics aggregate (no JSON parsed per row at request time), each record's searchable
-- text with its character pairs for Chinese search, and plain indexes for the filters and the
-- three orders (PostgreSQL keeps statistics and picks among them itself).
--
-- The commit path writes every column here from the merged record (`store::office::
-- OfficeColumns::derive`, through `pg_office::write_office_columns_pg`), in the transaction that
-- writes the record's value. The PostgreSQL series ships with this migration, so no record was
-- committed before it and there is nothing to backfill.
--
-- Text compared or ordered by bytes is COLLATE "C", as in 0001: the same order as SQLite's, and
-- one collation for columns compared with each other (`places.id`, `records.id`).

ALTER TABLE records
    ADD COLUMN source           TEXT COLLATE "C",
    ADD COLUMN session_id       TEXT COLLATE "C",
    -- Department codes as ",police,fire_brigade,": "assigned to x" is a search for ",x,".
    ADD COLUMN departments      TEXT COLLATE "C",
    ADD COLUMN deadline         TEXT COLLATE "C",
    ADD COLUMN satisfaction     TEXT COLLATE "C",
    -- A title for lists: the first 200 characters of the activity, summary or needs.
    ADD COLUMN summary          TEXT,
    -- The building-level place the record lies in, else the record's own `building` text.
    ADD COLUMN building         TEXT COLLATE "C",
    -- The day the record is about: its own `date`, or (cases) the day it was created, UTC+8.
    ADD COLUMN date             TEXT COLLATE "C",
    ADD COLUMN session_type     TEXT COLLATE "C",
    ADD COLUMN run_number       TEXT COLLATE "C",
    ADD COLUMN consultations    BIGINT,
    ADD COLUMN answered         BIGINT,
    ADD COLUMN leaflets         BIGINT,
    ADD COLUMN hours            DOUBLE PRECISION,
    ADD COLUMN residents_served BIGINT,
    ADD COLUMN activity_type    TEXT COLLATE "C",
    ADD COLUMN has_resolution   BOOLEAN NOT NULL DEFAULT FALSE,
    -- The searchable text (summary, details, resolution, needs, activity, venue, estate,
    -- household and notes; never residents' personal values), lower-cased by the server.
    ADD COLUMN search_text      TEXT COLLATE "C" NOT NULL DEFAULT '',
    -- That text's overlapping pairs of letters or digits within each run of them, plus each
    -- run's last character ("漏水 a1" → 漏水 水 a1 1), built by the server: pg_trgm ignores CJK
    -- characters under the C/POSIX ctype, and a tsvector of pairs does not depend on it. A
    -- search needs every pair of its terms here, then checks `search_text` holds each term.
    ADD COLUMN grams            TSVECTOR NOT NULL DEFAULT '';

-- The queue's orders (by last change: `records_updated` of 0001) and "after this cursor".
CREATE INDEX records_created ON records(created_at, id);
CREATE INDEX records_deadline ON records(deadline, id);
-- A kind within places, and the case codes within places.
CREATE INDEX records_kind_place ON records(kind, place);
CREATE INDEX records_codes ON records(kind, category, status, place);
CREATE INDEX records_source ON records(source, updated_at);
-- Overdue: open cases by deadline, a few among many closed ones.
CREATE INDEX records_open ON records(deadline)
    WHERE kind = 'case' AND status NOT IN ('resolved', 'evaluated', 'withdrawn');
CREATE INDEX records_conflicted ON records(updated_at, id) WHERE has_conflicts;
-- A bus run's cases, named by its record id or its run number.
CREATE INDEX records_session ON records(session_id, kind, place);
CREATE INDEX records_run_number ON records(run_number) WHERE kind = 'bus';
-- The statistics: a kind over a period.
CREATE INDEX records_days ON records(kind, date);
CREATE INDEX records_grams ON records USING GIN (grams);
