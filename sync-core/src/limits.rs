//! Every bound on what a record may hold, in one place, so the phone (before it records an edit)
//! and the server (before it accepts a change) apply the very same limits.
//!
//! The bounds are what a person could type or count, not what the storage could hold: a steward
//! cannot write a 200 KB note on the phone, so the server refuses one pushed by a script.

/// Longest short text field (building, room, leader, household, …), in characters.
pub const MAX_STR_CHARS: usize = 500;
/// Most items in a list field (departments, photos, volunteers, topics).
pub const MAX_LIST_ITEMS: usize = 200;
/// Longest list item, in characters.
pub const MAX_LIST_ITEM_CHARS: usize = 200;
/// Longest case summary (a one-line title), in characters.
pub const MAX_SUMMARY_CHARS: usize = 2_000;
/// Longest collaborative text field (details, resolution, needs, session notes), in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 5_000;
/// Most notes on one record.
pub const MAX_NOTES: usize = 500;
/// Longest resident name (personal), in characters.
pub const MAX_PERSONAL_CHARS: usize = 50;
/// Largest tally total, either way (leaflets handed out, residents served).
pub const MAX_TALLY: i64 = 10_000_000;
/// Largest single tally step, either way.
pub const MAX_TALLY_STEP: i64 = 1_000_000;
/// Largest volunteer hours figure.
pub const MAX_HOURS: f64 = 100_000.0;
/// Largest stored size of one record (the sum of its changes as stored), per document part. A
/// record that reaches it takes no more edits: at a few hundred bytes per edit that is thousands
/// of edits, far beyond any real case.
pub const MAX_RECORD_BYTES: usize = 2 * 1024 * 1024;
/// How far ahead of the server's clock a change may claim to have been made. Phones correct
/// their clock from the server's time at every login and sync, so only a phone whose clock is
/// wrong and that has not reached the server since hits this.
pub const MAX_CLOCK_AHEAD_MS: i64 = 10 * 60 * 1000;
/// How far a claimed time written inside a record (`created_at`, a note's `at`) may differ from
/// the claimed time of the change that wrote it.
pub const MAX_STAMP_DRIFT_MS: i64 = 1_000;
