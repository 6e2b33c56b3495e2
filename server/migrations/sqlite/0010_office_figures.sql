-- A queue filtered by category and status finds its few cases by seeking, not by reading the
-- street's (kind, place) entries.
CREATE INDEX records_office_codes ON records(kind, category, status, place, date);
-- The case statistics group cases by day as they read this index (no sort of a street's cases),
-- and a period is a range in it.
CREATE INDEX records_case_days ON records(kind, date, status, has_resolution, satisfaction, place);
-- A bus run's cases are counted from index entries (each run's linked cases were read as whole
-- rows to test their kind and place: about 13,000 rows for a street's 72 runs).
DROP INDEX records_session;
CREATE INDEX records_session ON records(session_id, kind, place);
-- A search's count meets each match by its id and tests the filters on these columns without
-- reading the record's row.
CREATE INDEX records_id_cover ON records(id, kind, place, status, category, source, date);
