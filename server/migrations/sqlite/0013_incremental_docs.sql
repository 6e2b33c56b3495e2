-- A record's saved documents are no longer rewritten whole on every change. `doc` (and
-- `personal_doc`) hold a full save covering the log up to `doc_seq` (`personal_seq`); the
-- record's later changes of that part, in the log after that position (`doc_tail` of them), load
-- on top of it (Automerge loads a saved document followed by change chunks). The server saves
-- whole again once a tail grows long.
ALTER TABLE records ADD COLUMN doc_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN doc_tail INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN personal_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE records ADD COLUMN personal_tail INTEGER NOT NULL DEFAULT 0;
-- Until now every commit saved both documents whole.
UPDATE records SET doc_seq = last_seq, personal_seq = last_seq;
