-- Bootstrap pages walk the records in id order and keep those within the phone's places. Without
-- this index SQLite answered a page by reading every record of the places (through the place
-- index) and sorting them: a new phone's bootstrap cost grew with the square of the records.
-- With it, a page reads the index from the resume point, tests the place in the index, and
-- reads only the rows it sends.
CREATE INDEX records_bootstrap ON records(id, place);
