-- The fields a change touched, as the same text SQLite keeps (`server/src/store/touched.rs`): a
-- JSON array naming known fields by number. In `jsonb` a small number takes as many bytes as a
-- field's name (a new case's twenty fields: 248 bytes as numbers, 243 as names); as text the
-- numbers take 55. Nothing queries inside the array. Rewrites the log once.
ALTER TABLE changes ALTER COLUMN touched DROP DEFAULT;
ALTER TABLE changes ALTER COLUMN touched TYPE TEXT USING touched::text;
ALTER TABLE changes ALTER COLUMN touched SET DEFAULT '[]';
