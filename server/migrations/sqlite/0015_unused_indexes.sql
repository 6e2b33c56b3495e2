-- Indexes on `records` that no query needs. Every statement the server sent in the back-office
-- benchmark and the whole-system stories was run through `EXPLAIN QUERY PLAN` with and without
-- them (BENCHMARKS.md, "Indexes no query needs"). Without them the plans are the same, except
-- where a query sought `kind` in `records_kind` (the contact and volunteer statistics, the bus-run
-- and overdue queues): it now seeks `kind` in `records_case_days`, whose first column is also
-- `kind`, and reads the same rows. A search filtered by category now starts from the search's
-- matches instead of the category's records. Each index was written at every accepted change
-- and took disk beside the record. (`records_place` stays: the queue's count of every kind in a
-- place and the records API's list of a place seek it.)
-- A prefix of `records_queue_updated` (0011).
DROP INDEX records_updated;
-- One-column filters of the first schema: the queue pages name the order's index they walk,
-- and their counts and the statistics read the covering indexes of 0008 and 0010.
DROP INDEX records_kind;
DROP INDEX records_status;
DROP INDEX records_category;
DROP INDEX records_source;
-- Its columns are all in `records_office_cover` (0008) and `records_case_days` (0010).
DROP INDEX records_stats;
