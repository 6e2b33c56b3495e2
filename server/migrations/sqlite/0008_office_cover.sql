-- A covering index for the back-office's counts and statistics. The queue shows how many records
-- its filters match, and the statistics aggregate every case within the caller's grants: with
-- only the one-column indexes, each of those reads all matching rows of `records`, whose rows
-- carry the whole document and value (about 1.3 KB each), about 100-500 ms per query over
-- 100,000 cases. Every column those queries test is in this index, so they read only it (about
-- 10-35 ms). Column order: the equality on kind, then the place subtree range, then the rest.
CREATE INDEX records_office_cover
    ON records(kind, place, status, category, has_resolution, satisfaction, date);
