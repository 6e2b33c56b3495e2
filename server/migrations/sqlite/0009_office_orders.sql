-- The queue's orders by creation and by deadline get the columns the filters test, as the
-- default order's index has since 0006: a page then walks its order's index reading entries
-- only, and reads the wide rows (documents included) of the records it shows and no others.
DROP INDEX records_queue_created;
DROP INDEX records_queue_deadline;
CREATE INDEX records_queue_created_all ON records(created_at, id, place, kind, status, category,
                                                  source, deadline, date, has_conflicts,
                                                  departments);
CREATE INDEX records_queue_deadline_all ON records(deadline, id, place, kind, status, category,
                                                   source, date, has_conflicts, departments);

-- Two-character words, the commonest Chinese search (漏水, 噪音, 停车), are shorter than the
-- trigram index can match, and a LIKE over every record's text read all of it (about 90 ms over
-- 100,000 cases). Each record's text is also kept as its overlapping character pairs
-- ("消防通道" → "消防 防通 通道"), one word each for a plain word index. The server fills `grams`
-- for rows stored before this (NULL) when it starts; until then the LIKE still finds them.
ALTER TABLE record_text ADD COLUMN grams TEXT;
CREATE VIRTUAL TABLE record_grams USING fts5(
    grams, content = 'record_text', content_rowid = 'n', tokenize = 'unicode61'
);
DROP TRIGGER record_text_ai;
DROP TRIGGER record_text_ad;
DROP TRIGGER record_text_au;
CREATE TRIGGER record_text_ai AFTER INSERT ON record_text BEGIN
    INSERT INTO record_fts (rowid, text) VALUES (new.n, new.text);
    INSERT INTO record_grams (rowid, grams) SELECT new.n, new.grams WHERE new.grams IS NOT NULL;
END;
CREATE TRIGGER record_text_ad AFTER DELETE ON record_text BEGIN
    INSERT INTO record_fts (record_fts, rowid, text) VALUES ('delete', old.n, old.text);
    INSERT INTO record_grams (record_grams, rowid, grams)
        SELECT 'delete', old.n, old.grams WHERE old.grams IS NOT NULL;
END;
CREATE TRIGGER record_text_au AFTER UPDATE OF text ON record_text BEGIN
    INSERT INTO record_fts (record_fts, rowid, text) VALUES ('delete', old.n, old.text);
    INSERT INTO record_fts (rowid, text) VALUES (new.n, new.text);
END;
CREATE TRIGGER record_text_grams_au AFTER UPDATE OF grams ON record_text BEGIN
    INSERT INTO record_grams (record_grams, rowid, grams)
        SELECT 'delete', old.n, old.grams WHERE old.grams IS NOT NULL;
    INSERT INTO record_grams (rowid, grams) SELECT new.n, new.grams WHERE new.grams IS NOT NULL;
END;
