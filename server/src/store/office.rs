//! The back-office's reads: the case queue (filters, Chinese full-text search, keyset pages in
//! three orders, counts and a constant-memory stream for exports) and the statistics, all
//! computed with SQL over the projection's columns at request time; nothing here is a stored
//! total.
//!
//! Also the one place those columns are derived from a merged record
//! ([`OfficeColumns::derive`]), written by every path that writes a record's value.

use std::collections::VecDeque;

use futures_util::Stream;
use linli_sync_core::{PlaceId, RecordKind};
use serde_json::Value;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::projection::{ROW_COLUMNS, record_from_row};
use super::{RecordRow, SqliteStore, push_within};
use crate::error::{Error, Result};

/// Case statuses that close a case: no longer overdue, counted as resolved.
pub const CLOSED_STATUSES: &[&str] = &["resolved", "evaluated", "withdrawn"];
/// Case statuses that count as a reply to the resident.
pub const REPLIED_STATUSES: &[&str] = &["answered_on_site", "resolved", "evaluated"];
/// Characters kept in the `summary` column.
pub const SUMMARY_CHARS: usize = 200;
/// Rows per batch of [`SqliteStore::office_stream`].
pub const STREAM_BATCH: u32 = 1000;
/// Most rows one [`SqliteStore::office_page`] returns.
pub const MAX_PAGE: u32 = 1000;

/// Text fields indexed for search, in this order, then the notes (the migration's backfill
/// lists the same).
const TEXT_FIELDS: &[&str] = &[
    "summary",
    "details",
    "resolution",
    "needs",
    "activity",
    "venue",
    "estate",
    "household",
];

/// The back-office columns of one record, derived from its merged value (the typed record as
/// JSON, personal fields masked). Keep in step with the backfill in `0006_office.sql`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OfficeColumns {
    pub source: Option<String>,
    pub session_id: Option<String>,
    pub departments: Option<String>,
    pub deadline: Option<String>,
    pub satisfaction: Option<String>,
    pub summary: Option<String>,
    /// The record's own `building` text (a building-level place, when there is one, wins).
    pub building_field: Option<String>,
    pub date: Option<String>,
    pub session_type: Option<String>,
    pub run_number: Option<String>,
    pub consultations: Option<i64>,
    pub answered: Option<i64>,
    pub leaflets: Option<i64>,
    pub hours: Option<f64>,
    pub residents_served: Option<i64>,
    pub activity_type: Option<String>,
    pub has_resolution: bool,
    /// The searchable text.
    pub text: String,
}

fn text_of(value: &Value, field: &str) -> Option<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

impl OfficeColumns {
    /// The columns of a record's merged value.
    pub(crate) fn derive(value: &Value) -> OfficeColumns {
        let departments: Vec<&str> = value
            .get("departments")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let summary = text_of(value, "activity")
            .or_else(|| text_of(value, "summary"))
            .or_else(|| text_of(value, "needs"))
            .map(|s| s.chars().take(SUMMARY_CHARS).collect());
        let date = text_of(value, "date").or_else(|| {
            let ms = value.get("created_at").and_then(Value::as_i64)?;
            // As SQLite's `date(ms / 1000, 'unixepoch', '+8 hours')` (integer division).
            chrono::DateTime::from_timestamp(ms / 1000, 0).map(|t| {
                (t + chrono::Duration::hours(8))
                    .format("%Y-%m-%d")
                    .to_string()
            })
        });
        let mut parts: Vec<String> = TEXT_FIELDS
            .iter()
            .filter_map(|f| text_of(value, f))
            .collect();
        let notes: Vec<&str> = value
            .get("notes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.get("text").and_then(Value::as_str))
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if !notes.is_empty() {
            parts.push(notes.join("\n"));
        }
        OfficeColumns {
            source: text_of(value, "source"),
            session_id: text_of(value, "session_id"),
            departments: (!departments.is_empty()).then(|| format!(",{},", departments.join(","))),
            deadline: text_of(value, "deadline"),
            satisfaction: text_of(value, "satisfaction"),
            summary,
            building_field: text_of(value, "building"),
            date,
            session_type: text_of(value, "session_type"),
            run_number: text_of(value, "run_number"),
            consultations: value.get("consultations").and_then(Value::as_i64),
            answered: value.get("answered_on_site").and_then(Value::as_i64),
            leaflets: value.get("leaflets").and_then(Value::as_i64),
            hours: value.get("hours").and_then(Value::as_f64),
            residents_served: value.get("residents_served").and_then(Value::as_i64),
            activity_type: text_of(value, "activity_type"),
            has_resolution: text_of(value, "resolution").is_some(),
            text: parts.join("\n"),
        }
    }
}

/// The back-office columns [`OfficeRow::bind`] writes, in the order of [`OFFICE_VALUES`]:
/// `INSERT INTO records ({OFFICE_COLUMNS}, …) VALUES ({OFFICE_VALUES}, …)` and
/// `UPDATE records SET ({OFFICE_COLUMNS}) = ({OFFICE_VALUES}), …`.
pub(super) const OFFICE_COLUMNS: &str = "source, session_id, departments, deadline, satisfaction,
     summary, building, date, session_type, run_number, consultations, answered, leaflets, hours,
     residents_served, activity_type, has_resolution, has_conflicts, text_n";

/// The values of [`OFFICE_COLUMNS`], as many `?` as [`OfficeRow::bind`] binds. The building is
/// the building-level place the record lies in (itself or the nearest ancestor), else the
/// record's own `building` text; the text key is that of the record's `record_text` row, which
/// [`OfficeRow::write_text`] writes first. Subqueries, so that one statement writes the row.
pub(super) const OFFICE_VALUES: &str = "?, ?, ?, ?, ?, ?,
     COALESCE((SELECT p.id FROM places p WHERE p.level = 'building'
                 AND p.id IN (SELECT value FROM json_each(?))
               ORDER BY length(p.id) DESC LIMIT 1), ?),
     ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
     (SELECT n FROM record_text WHERE id = ?)";

/// What `INSERT INTO record_text (id, text, grams) VALUES …` does with a record's existing row:
/// rewritten only when its text changed (each rewrite re-indexes it), or its pairs are missing.
pub(super) const TEXT_UPSERT: &str = "ON CONFLICT(id) DO UPDATE
     SET text = excluded.text, grams = excluded.grams
     WHERE text != excluded.text OR grams IS NULL";

/// A record's back-office columns and search text, derived from its merged value before the
/// statement that writes the value, so that one statement writes both: they never disagree, and
/// the row (with its many indexes) is written once in a commit, not three times.
pub(crate) struct OfficeRow<'a> {
    record: &'a str,
    cols: OfficeColumns,
    /// The record's place and its ancestors as a JSON array, for the building lookup.
    ancestors: String,
    has_conflicts: bool,
}

impl<'a> OfficeRow<'a> {
    /// The row of `record` lying in `place` whose merged value is `value`.
    pub(crate) fn derive(
        record: &'a str,
        place: &PlaceId,
        value: &Value,
        has_conflicts: bool,
    ) -> OfficeRow<'a> {
        let mut ancestors = Vec::new();
        let mut at = Some(place.clone());
        while let Some(p) = at {
            at = p.parent();
            ancestors.push(Value::String(p.as_str().to_string()));
        }
        OfficeRow {
            record,
            cols: OfficeColumns::derive(value),
            ancestors: Value::Array(ancestors).to_string(),
            has_conflicts,
        }
    }

    /// Writes the record's searchable text (its full-text rows follow by trigger); before the
    /// statement that writes the row, whose text key reads it.
    pub(crate) async fn write_text(&self, conn: &mut SqliteConnection) -> Result<()> {
        let sql =
            format!("INSERT INTO record_text (id, text, grams) VALUES (?, ?, ?) {TEXT_UPSERT}");
        self.bind_text(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Binds the record's `record_text` row: id, text and its pairs.
    pub(crate) fn bind_text<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        query
            .bind(self.record)
            .bind(&self.cols.text)
            .bind(grams(&self.cols.text))
    }

    /// Binds [`OFFICE_VALUES`]' parameters to a statement that has bound none yet.
    pub(crate) fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        let c = &self.cols;
        query
            .bind(&c.source)
            .bind(&c.session_id)
            .bind(&c.departments)
            .bind(&c.deadline)
            .bind(&c.satisfaction)
            .bind(&c.summary)
            .bind(&self.ancestors)
            .bind(&c.building_field)
            .bind(&c.date)
            .bind(&c.session_type)
            .bind(&c.run_number)
            .bind(c.consultations)
            .bind(c.answered)
            .bind(c.leaflets)
            .bind(c.hours)
            .bind(c.residents_served)
            .bind(&c.activity_type)
            .bind(c.has_resolution)
            .bind(self.has_conflicts)
            .bind(self.record)
    }
}

/// Writes a record's back-office columns and search text alone, inside the transaction that
/// wrote its value (paths that rewrite a record outside the sync commit).
pub(crate) async fn write_office_columns(
    conn: &mut SqliteConnection,
    record: &str,
    place: &PlaceId,
    value: &Value,
    has_conflicts: bool,
) -> Result<()> {
    let row = OfficeRow::derive(record, place, value, has_conflicts);
    row.write_text(conn).await?;
    let sql = format!("UPDATE records SET ({OFFICE_COLUMNS}) = ({OFFICE_VALUES}) WHERE id = ?");
    row.bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(record)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The order of a queue page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Last changed first (`updated_at` descending).
    #[default]
    Updated,
    /// Newest first by the server's first receive time (`created_at` descending).
    Created,
    /// Earliest deadline first; records without one last.
    Deadline,
}

/// What the back-office queue shows. Every condition narrows; `None`/`false` leaves it out.
#[derive(Debug, Clone, Default)]
pub struct OfficeFilter {
    /// Only records within these places (already intersected with the caller's grants; empty
    /// matches nothing).
    pub scopes: Vec<PlaceId>,
    /// Only records within this place's subtree (street, community, estate, building).
    pub place: Option<PlaceId>,
    /// Only this kind.
    pub kind: Option<RecordKind>,
    /// Only this category code (cases).
    pub category: Option<String>,
    /// Only this status code (cases).
    pub status: Option<String>,
    /// Only this source code (cases).
    pub source: Option<String>,
    /// Only records naming this department code.
    pub department: Option<String>,
    /// Only cases of this bus session, given by its record id or its run number (cases store
    /// either in `session_id`; both spellings find both).
    pub session_id: Option<String>,
    /// Only records whose day (`date`, or a case's creation day, UTC+8) is on or after this
    /// `YYYY-MM-DD`.
    pub date_from: Option<String>,
    /// ... and on or before this `YYYY-MM-DD`.
    pub date_to: Option<String>,
    /// Today (`YYYY-MM-DD`): only open cases whose deadline is before it.
    pub overdue_on: Option<String>,
    /// Only records with a field holding concurrent values.
    pub has_conflicts: bool,
    /// Only records whose summary, details, resolution, notes (or other text) contain every
    /// whitespace-separated term of this text.
    pub text: Option<String>,
    /// The order.
    pub sort: Sort,
    /// Continue after this cursor (from the previous page, same filter and sort).
    pub after: Option<String>,
    /// Most rows per page (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

impl OfficeFilter {
    /// Whether the filter searches text.
    pub fn searches(&self) -> bool {
        self.text.as_deref().is_some_and(|t| !t.trim().is_empty())
    }
}

/// The period and places statistics are computed over.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    /// Only records within these places (already intersected with the caller's grants).
    pub scopes: Vec<PlaceId>,
    /// Only records within this place's subtree.
    pub place: Option<PlaceId>,
    /// First day, `YYYY-MM-DD` (on the record's day: `date`, or a case's creation day).
    pub date_from: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub date_to: Option<String>,
}

/// A service-bus run or joint reception with its tallies, as the phones recorded them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SessionStat {
    /// The session's record id.
    pub id: String,
    /// Run number (班次号).
    pub run_number: Option<String>,
    /// `service_bus` or `joint_reception`.
    pub session_type: Option<String>,
    /// Its day.
    pub date: Option<String>,
    /// Its place.
    pub place: String,
    /// Consultations and problems received (咨询及问题数).
    pub consultations: i64,
    /// Answered on site (现场解答数).
    pub answered: i64,
    /// Leaflets handed out.
    pub leaflets: i64,
    /// Cases linked to it (by record id or run number), within the scopes.
    pub cases: i64,
}

/// A part of a whole, e.g. 706 resolved of 707 cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    /// The part.
    pub part: i64,
    /// The whole.
    pub total: i64,
}

impl Share {
    /// `part / total`, 0 when there is nothing.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.part as f64 / self.total as f64
        }
    }
}

/// Cases created in one month.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MonthCount {
    /// `YYYY-MM`.
    pub month: String,
    /// Cases.
    pub count: i64,
    /// Against the month before (`None` for the first month listed).
    pub change: Option<i64>,
}

/// How many records carry one code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodeCount {
    /// The code.
    pub code: String,
    /// Records.
    pub count: i64,
}

/// Steward contacts in one building.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildingCount {
    /// The building-level place path, or a record's own building text when it has no such
    /// place.
    pub building: String,
    /// The place's name, when the building is a place.
    pub name: Option<String>,
    /// Contacts.
    pub contacts: i64,
}

/// Volunteer activities of one type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolunteerStat {
    /// Activity type code (`other` when unset).
    pub activity_type: String,
    /// Activities.
    pub activities: i64,
    /// Hours in total.
    pub hours: f64,
    /// Residents served in total.
    pub residents_served: i64,
}

/// Every statistic of the back-office over one filter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OfficeStats {
    /// Bus runs and joint receptions, latest first.
    pub sessions: Vec<SessionStat>,
    /// Resolved or evaluated cases of all cases (withdrawn ones left out): the problem list's
    /// resolved share.
    pub resolved: Share,
    /// Cases per month, oldest first, months without cases included.
    pub per_month: Vec<MonthCount>,
    /// Cases that got a reply (answered on site, resolved, evaluated, or a resolution written)
    /// of all cases (withdrawn ones left out).
    pub replied: Share,
    /// Cases per satisfaction code (evaluated ones).
    pub satisfaction: Vec<CodeCount>,
    /// Steward contacts per building, most first.
    pub contacts: Vec<BuildingCount>,
    /// Volunteer activities per type.
    pub volunteering: Vec<VolunteerStat>,
}

/// Where a page ends, to continue after it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cursor {
    Updated(i64, String),
    Created(i64, String),
    Deadline(Option<String>, String),
}

impl Cursor {
    pub(super) fn of(sort: Sort, row: &RecordRow) -> Cursor {
        match sort {
            Sort::Updated => Cursor::Updated(row.updated_at, row.id.clone()),
            Sort::Created => Cursor::Created(row.created_at, row.id.clone()),
            Sort::Deadline => Cursor::Deadline(row.deadline.clone(), row.id.clone()),
        }
    }

    pub(super) fn encode(&self) -> String {
        match self {
            Cursor::Updated(t, id) => format!("u.{t}.{id}"),
            Cursor::Created(t, id) => format!("c.{t}.{id}"),
            Cursor::Deadline(d, id) => format!("d.{}.{id}", d.as_deref().unwrap_or("")),
        }
    }

    pub(super) fn parse(s: &str, sort: Sort) -> Result<Cursor> {
        let bad = || Error::BadRequest(format!("'{s}' is not a cursor of this list's order"));
        let mut parts = s.splitn(3, '.');
        let (Some(tag), Some(key), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        if id.is_empty() {
            return Err(bad());
        }
        let id = id.to_string();
        match (tag, sort) {
            ("u", Sort::Updated) => Ok(Cursor::Updated(key.parse().map_err(|_| bad())?, id)),
            ("c", Sort::Created) => Ok(Cursor::Created(key.parse().map_err(|_| bad())?, id)),
            ("d", Sort::Deadline) => Ok(Cursor::Deadline(
                (!key.is_empty()).then(|| key.to_string()),
                id,
            )),
            _ => Err(bad()),
        }
    }
}

/// A text's overlapping pairs of letters or digits, space-separated: what `record_grams`
/// indexes, so a two-character word is one word of its index ("消防通道" → "消防 防通 通道").
/// Runs are split at anything else (spaces, punctuation), as the index's tokenizer splits.
pub(crate) fn grams(text: &str) -> String {
    let mut out = String::new();
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = run.chars().collect();
        for pair in chars.windows(2) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(pair);
        }
    }
    out
}

/// The terms of a search: quoted phrases for FTS5's trigram index (three characters or more,
/// what it can match), a word of the pairs index for two letters or digits, and `LIKE` patterns
/// for anything shorter or odder.
enum Term {
    Match(String),
    Pair(String),
    Like(String),
}

impl Term {
    /// The full-text index this term is a word of, and the word; `None` for a `LIKE` pattern.
    fn index(&self) -> Option<(&'static str, &str)> {
        match self {
            Term::Match(word) => Some(("record_fts", word)),
            Term::Pair(word) => Some(("record_grams", word)),
            Term::Like(_) => None,
        }
    }
}

fn search_terms(text: &str) -> Vec<Term> {
    text.split_whitespace()
        .map(|t| {
            let n = t.chars().count();
            if n >= 3 {
                // A phrase in double quotes, quotes doubled: no FTS5 syntax gets through.
                Term::Match(format!("\"{}\"", t.replace('"', "\"\"")))
            } else if n == 2 && t.chars().all(char::is_alphanumeric) {
                Term::Pair(format!("\"{t}\""))
            } else {
                let escaped = t
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                Term::Like(format!("%{escaped}%"))
            }
        })
        .collect()
}

/// Appends the filter's conditions (after a `WHERE`) on `records r`.
///
/// With `place_range` the place tests can drive an index on (kind, place); without it they are
/// written `+r.place`, which keeps SQLite from gathering a whole street through such an index
/// when another index serves the query better.
fn push_conditions(qb: &mut QueryBuilder<Sqlite>, f: &OfficeFilter, place_range: bool) {
    push_conditions_but(qb, f, place_range, None);
}

/// As [`push_conditions`], leaving out the search term at `skip` (the query joins it).
///
/// A word of a full-text index is a test of the record's text key (`text_n`) against the keys
/// of the texts that hold it: a walk tests it on the index entry it meets, and SQLite can also
/// seek the few records of a rare word through `records_text_cover`. Listing the matching
/// records' string ids instead cost a lookup per match, most of a page's time for a common word.
fn push_conditions_but(
    qb: &mut QueryBuilder<Sqlite>,
    f: &OfficeFilter,
    place_range: bool,
    skip: Option<usize>,
) {
    let (scopes, place) = narrowest(&f.scopes, f.place.as_ref());
    if place_range {
        push_within_range(qb, scopes);
        if let Some(place) = place {
            qb.push(" AND ");
            push_within_range(qb, std::slice::from_ref(place));
        }
    } else {
        push_within(qb, "+r.place", scopes);
        if let Some(place) = place {
            qb.push(" AND ");
            push_within(qb, "+r.place", std::slice::from_ref(place));
        }
    }
    if let Some(kind) = f.kind {
        // With a search, the matching text keys are the selective part. The unary `+` keeps
        // SQLite (which has no statistics) from walking every record of the kind through an
        // index and testing each against the matches instead: 0.2-0.6 s against 30-60 ms over
        // 100,000 cases.
        qb.push(if f.searches() {
            " AND +r.kind = "
        } else {
            " AND r.kind = "
        })
        .push_bind(kind.as_str());
    }
    for (column, value) in [
        ("r.category", &f.category),
        ("r.status", &f.status),
        ("r.source", &f.source),
    ] {
        if let Some(v) = value {
            qb.push(format!(" AND {column} = ")).push_bind(v.clone());
        }
    }
    if let Some(d) = &f.department {
        qb.push(" AND instr(r.departments, ")
            .push_bind(format!(",{d},"))
            .push(") > 0");
    }
    if let Some(s) = &f.session_id {
        // Cases name their run by its record id (older phones: its run number), and staff
        // filter by either: the run number is what they know.
        qb.push(" AND r.kind = 'case' AND (r.session_id = ")
            .push_bind(s.clone())
            .push(" OR r.session_id = (SELECT b.run_number FROM records b WHERE b.id = ")
            .push_bind(s.clone())
            .push(" AND b.kind = 'bus')")
            .push(" OR r.session_id IN (SELECT b.id FROM records b WHERE b.run_number = ")
            .push_bind(s.clone())
            .push(" AND b.kind = 'bus'))");
    }
    if let Some(from) = &f.date_from {
        qb.push(" AND r.date >= ").push_bind(from.clone());
    }
    if let Some(to) = &f.date_to {
        qb.push(" AND r.date <= ").push_bind(to.clone());
    }
    if let Some(today) = &f.overdue_on {
        // Written as the `records_open` index's condition, so SQLite can use it; `+` keeps it
        // off the kind index.
        qb.push(" AND +r.kind = 'case' AND r.deadline < ")
            .push_bind(today.clone())
            .push(" AND r.status NOT IN ('resolved', 'evaluated', 'withdrawn')");
    }
    if f.has_conflicts {
        qb.push(" AND r.has_conflicts = 1");
    }
    for (i, term) in f
        .text
        .as_deref()
        .map(search_terms)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if skip == Some(i) {
            continue;
        }
        if let Some((table, word)) = term.index() {
            qb.push(format!(
                " AND r.text_n IN (SELECT rowid FROM {table} WHERE {table} MATCH "
            ))
            .push_bind(word.to_string())
            .push(")");
        } else if let Term::Like(pattern) = term {
            qb.push(" AND r.id IN (SELECT t.id FROM record_text t WHERE t.text LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
    }
}

/// Most matches of a search term for which a queue page finds the matching records by id and
/// sorts them, rather than walking its order's index.
const FEW_MATCHES: i64 = 2000;

/// Whether some term of the filter's search matches at most [`FEW_MATCHES`] records.
async fn search_is_narrow(pool: &sqlx::SqlitePool, f: &OfficeFilter) -> Result<bool> {
    for term in f.text.as_deref().map(search_terms).unwrap_or_default() {
        // A `LIKE` scans every text whatever the plan.
        let Some((table, word)) = term.index() else {
            continue;
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {table} MATCH ? LIMIT ?)"
        )))
        .bind(word)
        .bind(FEW_MATCHES + 1)
        .fetch_one(pool)
        .await?;
        if n <= FEW_MATCHES {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The place tests a filter needs: a place within one of the scopes is the only test (testing
/// the scopes too costs a string comparison per index entry, about a sixth of a statistics
/// page over a street); otherwise both.
pub(super) fn narrowest<'a>(
    scopes: &'a [PlaceId],
    place: Option<&'a PlaceId>,
) -> (&'a [PlaceId], Option<&'a PlaceId>) {
    match place {
        Some(p) if scopes.iter().any(|s| p.is_within(s)) => (std::slice::from_ref(p), None),
        _ => (scopes, place),
    }
}

/// As [`push_within`] on `r.place`, written for one place as a single range (`p` ≤ x < `p0`,
/// then the exact test), which SQLite can seek in an index on (kind, place); [`push_within`]'s
/// `p = x OR (range)` it cannot.
fn push_within_range(qb: &mut QueryBuilder<Sqlite>, scopes: &[PlaceId]) {
    let [scope] = scopes else {
        push_within(qb, "r.place", scopes);
        return;
    };
    let p = scope.as_str();
    qb.push("(r.place >= ")
        .push_bind(p.to_string())
        .push(" AND r.place < ")
        .push_bind(format!("{p}0"))
        .push(" AND (r.place = ")
        .push_bind(p.to_string())
        .push(" OR r.place >= ")
        .push_bind(format!("{p}/"))
        .push("))");
}

/// Appends "after this cursor" as a row-value comparison, which SQLite turns into a range on the
/// order's index (an `a < ? OR (a = ? AND id < ?)` it would test entry by entry).
fn push_after(qb: &mut QueryBuilder<Sqlite>, cursor: &Cursor) {
    match cursor {
        Cursor::Updated(t, id) | Cursor::Created(t, id) => {
            let column = if matches!(cursor, Cursor::Updated(..)) {
                "r.updated_at"
            } else {
                "r.created_at"
            };
            qb.push(format!(" AND ({column}, r.id) < ("))
                .push_bind(*t)
                .push(", ")
                .push_bind(id.clone())
                .push(")");
        }
        Cursor::Deadline(Some(d), id) => {
            qb.push(" AND (r.deadline, r.id) > (")
                .push_bind(d.clone())
                .push(", ")
                .push_bind(id.clone())
                .push(")");
        }
        Cursor::Deadline(None, id) => {
            qb.push(" AND r.id > ").push_bind(id.clone());
        }
    }
}

/// How a queue page finds its rows.
///
/// SQLite keeps no statistics here, and without them it guesses wrong both ways over a street of
/// 100,000 cases: it gathers every case through `kind` or `place` and sorts them (1-3 s under
/// load), or walks an order index that lacks the filtered columns and reads each wide row
/// (documents included) to test them. So the page names its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Walk the order's index, which holds every column the filters test: index entries only,
    /// stopping after a page of matches, reading just the rows it returns. For filters that
    /// match many records.
    Walk(&'static str),
    /// Let SQLite find the few matches through an index on (kind, place) or (kind, category,
    /// status, place) and sort them.
    Few,
    /// Let SQLite find the few matches through their own index (a bus run, a rare search
    /// term's ids) and sort them.
    Own,
    /// Read the few matches through the partial index named (see [`partial_index`]) and sort
    /// them.
    Partial(&'static str),
}

impl Plan {
    fn source(self) -> String {
        match self {
            Plan::Walk(index) | Plan::Partial(index) => {
                format!("FROM records r INDEXED BY {index}")
            }
            Plan::Few | Plan::Own => "FROM records r".into(),
        }
    }
}

/// The partial index holding only the records the filter can match, when it has one: the open
/// cases for "overdue", the conflicted records for "conflicts". Named, because SQLite, without
/// statistics, preferred seeking the kind (every case) to the index of the few, and read every
/// case's row to test it.
fn partial_index(f: &OfficeFilter) -> Option<&'static str> {
    if f.session_id.is_some() || f.searches() {
        None
    } else if f.overdue_on.is_some() {
        Some("records_open")
    } else if f.has_conflicts {
        Some("records_conflicted")
    } else {
        None
    }
}

/// `FROM records r` for a count of the filter, naming its [`partial_index`] if it has one.
fn count_source(f: &OfficeFilter) -> String {
    partial_index(f).map_or(Plan::Own, Plan::Partial).source()
}

/// Whether the filter has a condition that an index of its own finds few records for.
fn has_own_index(f: &OfficeFilter) -> bool {
    f.session_id.is_some() || f.has_conflicts || f.overdue_on.is_some()
}

/// Whether a count of this filter should read an index on (kind, place) for its places: not
/// when another condition has its own index (a bus run, conflicts) or a search's ids are the
/// selective part, where SQLite would otherwise gather the whole street through the place
/// index and read every row to test them.
fn counts_by_place(f: &OfficeFilter) -> bool {
    !has_own_index(f) && !f.searches()
}

fn walk(sort: Sort) -> Plan {
    Plan::Walk(match sort {
        Sort::Updated => "records_queue_updated",
        Sort::Created => "records_queue_created_all",
        Sort::Deadline => "records_queue_deadline_all",
    })
}

pub(super) fn order_by(sort: Sort) -> &'static str {
    match sort {
        Sort::Updated => " ORDER BY r.updated_at DESC, r.id DESC",
        Sort::Created => " ORDER BY r.created_at DESC, r.id DESC",
        // Within one of the two deadline passes (see `SqliteStore::office_page`).
        Sort::Deadline => " ORDER BY r.deadline, r.id",
    }
}

/// Appends the statistics' place and period conditions on `records` aliased `alias`.
fn push_stats(qb: &mut QueryBuilder<Sqlite>, alias: &str, f: &StatsFilter) {
    let (scopes, place) = narrowest(&f.scopes, f.place.as_ref());
    push_within(qb, &format!("{alias}.place"), scopes);
    if let Some(place) = place {
        qb.push(" AND ");
        push_within(qb, &format!("{alias}.place"), std::slice::from_ref(place));
    }
    if let Some(from) = &f.date_from {
        qb.push(format!(" AND {alias}.date >= "))
            .push_bind(from.clone());
    }
    if let Some(to) = &f.date_to {
        qb.push(format!(" AND {alias}.date <= "))
            .push_bind(to.clone());
    }
}

/// Cases counted by (day, status, has a resolution, satisfaction).
pub(super) type CaseGroup = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
);

/// The case figures of one statistics filter.
pub(super) struct CaseFigures {
    pub(super) resolved: Share,
    pub(super) replied: Share,
    pub(super) per_month: Vec<MonthCount>,
    pub(super) satisfaction: Vec<CodeCount>,
}

impl CaseFigures {
    /// Sums the figures from the groups. A case without a status counts in no share, as SQL's
    /// `status != 'withdrawn'` leaves it out.
    pub(super) fn of(groups: Vec<CaseGroup>) -> CaseFigures {
        let mut resolved = Share { part: 0, total: 0 };
        let mut replied = Share { part: 0, total: 0 };
        let mut months: std::collections::BTreeMap<String, i64> = Default::default();
        let mut satisfaction: std::collections::BTreeMap<String, i64> = Default::default();
        for (day, status, has_resolution, sat, n) in groups {
            if let Some(status) = status.as_deref().filter(|s| *s != "withdrawn") {
                resolved.total += n;
                replied.total += n;
                if matches!(status, "resolved" | "evaluated") {
                    resolved.part += n;
                }
                if REPLIED_STATUSES.contains(&status) || has_resolution == Some(1) {
                    replied.part += n;
                }
            }
            if let Some(month) = day.as_deref().and_then(|d| d.get(..7)) {
                *months.entry(month.to_string()).or_default() += n;
            }
            if let Some(sat) = sat {
                *satisfaction.entry(sat).or_default() += n;
            }
        }
        let mut per_month: Vec<MonthCount> = Vec::new();
        for (month, count) in months {
            // Months without cases between two with cases count as 0 (bounded by the data).
            while let Some(gap) = per_month
                .last()
                .and_then(|l| next_month(&l.month))
                .filter(|m| *m < month)
            {
                let prev = per_month.last().map(|l| l.count);
                per_month.push(MonthCount {
                    month: gap,
                    count: 0,
                    change: prev.map(|p| -p),
                });
            }
            let prev = per_month.last().map(|l| l.count);
            per_month.push(MonthCount {
                month,
                count,
                change: prev.map(|p| count - p),
            });
        }
        let mut satisfaction: Vec<CodeCount> = satisfaction
            .into_iter()
            .map(|(code, count)| CodeCount { code, count })
            .collect();
        satisfaction.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
        CaseFigures {
            resolved,
            replied,
            per_month,
            satisfaction,
        }
    }
}

/// The month after `YYYY-MM`.
fn next_month(month: &str) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    Some(if m >= 12 {
        format!("{:04}-01", y + 1)
    } else {
        format!("{y:04}-{:02}", m + 1)
    })
}

impl SqliteStore {
    /// One page of the back-office queue and the cursor of the next page (`None` on the last
    /// page). Keyset pagination: a page costs the same however deep it is, and rows changed
    /// between pages are neither skipped nor repeated by the order's own key.
    pub async fn office_page(
        &self,
        filter: &OfficeFilter,
    ) -> Result<(Vec<RecordRow>, Option<String>)> {
        let plan = self.plan(filter).await?;
        self.office_page_planned(filter, plan).await
    }

    async fn office_page_planned(
        &self,
        filter: &OfficeFilter,
        plan: Plan,
    ) -> Result<(Vec<RecordRow>, Option<String>)> {
        let limit = filter.limit.clamp(1, MAX_PAGE);
        let cursor = filter
            .after
            .as_deref()
            .map(|a| Cursor::parse(a, filter.sort))
            .transpose()?;
        // Deadline order is two passes, each an index walk: dated records, then undated ones.
        let passes: &[Option<bool>] = match (&filter.sort, &cursor) {
            (Sort::Deadline, Some(Cursor::Deadline(None, _))) => &[Some(false)],
            (Sort::Deadline, _) => &[Some(true), Some(false)],
            _ => &[None],
        };
        let from = format!("SELECT {ROW_COLUMNS} {} WHERE ", plan.source());
        let mut rows: Vec<RecordRow> = Vec::new();
        for (i, dated) in passes.iter().enumerate() {
            let want = limit as usize + 1 - rows.len();
            let mut qb = QueryBuilder::<Sqlite>::new(&from);
            push_conditions(&mut qb, filter, plan == Plan::Few);
            match dated {
                Some(true) => {
                    qb.push(" AND r.deadline IS NOT NULL");
                }
                Some(false) => {
                    qb.push(" AND r.deadline IS NULL");
                }
                None => {}
            }
            // The cursor applies to the pass it was taken in; a later pass starts at its head.
            if let Some(c) = &cursor
                && i == 0
            {
                push_after(&mut qb, c);
            }
            qb.push(order_by(filter.sort));
            qb.push(" LIMIT ").push_bind(want as i64);
            for row in qb.build().fetch_all(&self.pool).await?.iter() {
                rows.push(record_from_row(row)?);
            }
            if rows.len() > limit as usize {
                break;
            }
        }
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| Cursor::of(filter.sort, r).encode())
        } else {
            None
        };
        Ok((rows, next))
    }

    /// How a page of this filter finds its rows: by its own index when few records match, else
    /// by walking the order's index (see [`Plan`]). Deciding costs a count bounded by
    /// [`FEW_MATCHES`].
    async fn plan(&self, filter: &OfficeFilter) -> Result<Plan> {
        if let Some(index) = partial_index(filter) {
            return Ok(Plan::Partial(index));
        }
        if has_own_index(filter) {
            return Ok(Plan::Own);
        }
        if filter.searches() {
            return Ok(if search_is_narrow(&self.pool, filter).await? {
                Plan::Own
            } else {
                walk(filter.sort)
            });
        }
        Ok(
            match self.office_count_upto(filter, FEW_MATCHES as u32).await? {
                Some(_) => Plan::Few,
                None => walk(filter.sort),
            },
        )
    }

    /// How many records the filter matches (its `sort`, `after` and `limit` are ignored).
    pub async fn office_count(&self, filter: &OfficeFilter) -> Result<i64> {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("SELECT COUNT(*) {} WHERE ", count_source(filter)));
        push_conditions(&mut qb, filter, counts_by_place(filter));
        Ok(qb.build_query_scalar().fetch_one(&self.pool).await?)
    }

    /// How many records the filter matches, counting no further than `cap` (`None` past it):
    /// what a queue page shows, at a cost bounded by `cap` whatever the street holds.
    pub async fn office_count_upto(&self, filter: &OfficeFilter, cap: u32) -> Result<Option<i64>> {
        // A search's count walks its first indexed term's matches, stopping at the cap, rather
        // than listing every match first (7,000 for a common word over 100,000 cases).
        let terms = filter.text.as_deref().map(search_terms).unwrap_or_default();
        let driver = terms
            .iter()
            .enumerate()
            .find_map(|(i, t)| t.index().map(|(table, word)| (i, table, word)));
        let mut qb = match &driver {
            Some((_, table, word)) => {
                let mut qb = QueryBuilder::<Sqlite>::new(format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM {table}
                     CROSS JOIN records r INDEXED BY records_text_cover
                     ON r.text_n = {table}.rowid WHERE {table} MATCH "
                ));
                qb.push_bind(word.to_string()).push(" AND ");
                qb
            }
            None => QueryBuilder::<Sqlite>::new(format!(
                "SELECT COUNT(*) FROM (SELECT 1 {} WHERE ",
                count_source(filter)
            )),
        };
        push_conditions_but(
            &mut qb,
            filter,
            counts_by_place(filter),
            driver.map(|(i, _, _)| i),
        );
        qb.push(" LIMIT ").push_bind(i64::from(cap) + 1).push(")");
        let n: i64 = qb.build_query_scalar().fetch_one(&self.pool).await?;
        Ok((n <= i64::from(cap)).then_some(n))
    }

    /// Every record the filter matches, in its order from its `after` on (its `limit` is
    /// ignored), read in keyset batches of [`STREAM_BATCH`]: memory stays constant however many
    /// rows there are, for exports. Each batch is its own read, so a long export sees changes
    /// committed while it runs the way paging would.
    pub fn office_stream(
        &self,
        filter: &OfficeFilter,
    ) -> impl Stream<Item = Result<RecordRow>> + Send + 'static {
        let mut filter = filter.clone();
        filter.limit = STREAM_BATCH;
        let state = (self.clone(), filter, VecDeque::<RecordRow>::new(), false);
        futures_util::stream::unfold(state, |(store, mut filter, mut buf, mut done)| async move {
            loop {
                if let Some(row) = buf.pop_front() {
                    return Some((Ok(row), (store, filter, buf, done)));
                }
                if done {
                    return None;
                }
                match store.office_page(&filter).await {
                    Ok((rows, next)) => {
                        buf.extend(rows);
                        done = next.is_none();
                        filter.after = next;
                    }
                    Err(e) => return Some((Err(e), (store, filter, buf, true))),
                }
            }
        })
    }

    /// Bus runs and joint receptions within the filter, latest first, each with its tallies and
    /// the number of cases linked to it.
    ///
    /// The linked cases are counted through `records_session`; the unary `+` keeps SQLite from
    /// choosing an index on `kind` instead (without statistics it takes `kind = 'case'` for a
    /// selective term, and then scanned every case once per bus run: 14 s for 72 runs over
    /// 100,000 cases).
    pub async fn office_sessions(&self, f: &StatsFilter) -> Result<Vec<SessionStat>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT b.id, b.run_number, b.session_type, b.date, b.place,
                    COALESCE(b.consultations, 0) AS consultations,
                    COALESCE(b.answered, 0) AS answered, COALESCE(b.leaflets, 0) AS leaflets,
                    (SELECT COUNT(*) FROM records c
                     WHERE c.session_id IN (b.id, b.run_number) AND +c.kind = 'case' AND ",
        );
        // Through the session index: `+` keeps SQLite from scanning every case instead.
        push_within(&mut qb, "+c.place", &f.scopes);
        qb.push(") AS cases FROM records b WHERE b.kind = 'bus' AND ");
        push_stats(&mut qb, "b", f);
        qb.push(" ORDER BY b.date DESC, b.id DESC");
        qb.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(SessionStat {
                    id: row.try_get("id")?,
                    run_number: row.try_get("run_number")?,
                    session_type: row.try_get("session_type")?,
                    date: row.try_get("date")?,
                    place: row.try_get("place")?,
                    consultations: row.try_get("consultations")?,
                    answered: row.try_get("answered")?,
                    leaflets: row.try_get("leaflets")?,
                    cases: row.try_get("cases")?,
                })
            })
            .collect()
    }

    /// Cases (withdrawn ones left out) and how many of them are resolved or evaluated.
    pub async fn office_resolved_share(&self, f: &StatsFilter) -> Result<Share> {
        Ok(self.case_figures(f).await?.resolved)
    }

    /// Cases (withdrawn ones left out) and how many got a reply: answered on site, resolved,
    /// evaluated, or with a resolution written.
    pub async fn office_reply_rate(&self, f: &StatsFilter) -> Result<Share> {
        Ok(self.case_figures(f).await?.replied)
    }

    /// Cases per month of their day, oldest first, with months without cases between the first
    /// and the last filled in, and each month's change against the one before.
    pub async fn office_cases_per_month(&self, f: &StatsFilter) -> Result<Vec<MonthCount>> {
        Ok(self.case_figures(f).await?.per_month)
    }

    /// Cases per satisfaction code, most first.
    pub async fn office_satisfaction(&self, f: &StatsFilter) -> Result<Vec<CodeCount>> {
        Ok(self.case_figures(f).await?.satisfaction)
    }

    /// The case figures (resolved share, reply rate, cases per month, satisfaction) from one
    /// read of the cases: grouped by every column they depend on, so SQLite reads the covering
    /// index once instead of once per figure (each read was most of a statistics page's cost
    /// over a street of 100,000 cases), and the figures are summed from the groups here.
    async fn case_figures(&self, f: &StatsFilter) -> Result<CaseFigures> {
        // Grouped as SQLite reads the index in day order (no sort of a street's cases), and the
        // few thousand groups returned as one JSON row: each row crossing from sqlx's SQLite
        // thread costs more than SQLite's grouping of it.
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT json_group_array(json_array(d, s, h, v, n)) FROM (
                SELECT r.date AS d, r.status AS s, r.has_resolution AS h, r.satisfaction AS v,
                       COUNT(*) AS n
                FROM records r INDEXED BY records_case_days WHERE r.kind = 'case' AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY r.date, r.status, r.has_resolution, r.satisfaction)");
        let json: String = qb.build_query_scalar().fetch_one(&self.pool).await?;
        let groups: Vec<CaseGroup> = serde_json::from_str(&json).map_err(Error::internal)?;
        Ok(CaseFigures::of(groups))
    }

    /// Steward contacts per building, most first.
    pub async fn office_contacts_per_building(
        &self,
        f: &StatsFilter,
    ) -> Result<Vec<BuildingCount>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT r.building, p.name, COUNT(*) AS n FROM records r
             LEFT JOIN places p ON p.id = r.building
             WHERE r.kind = 'contact' AND r.building IS NOT NULL AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY r.building ORDER BY n DESC, r.building");
        let rows: Vec<(String, Option<String>, i64)> =
            qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(building, name, contacts)| BuildingCount {
                building,
                name,
                contacts,
            })
            .collect())
    }

    /// Volunteer activities per type: how many, hours and residents served.
    pub async fn office_volunteering(&self, f: &StatsFilter) -> Result<Vec<VolunteerStat>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT COALESCE(r.activity_type, 'other') AS t, COUNT(*) AS n,
                    COALESCE(SUM(r.hours), 0.0) AS hours,
                    COALESCE(SUM(r.residents_served), 0) AS served
             FROM records r WHERE r.kind = 'volunteer' AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY t ORDER BY n DESC, t");
        let rows: Vec<(String, i64, f64, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(
                |(activity_type, activities, hours, residents_served)| VolunteerStat {
                    activity_type,
                    activities,
                    hours,
                    residents_served,
                },
            )
            .collect())
    }

    /// Every statistic over one filter.
    pub async fn office_stats(&self, f: &StatsFilter) -> Result<OfficeStats> {
        let cases = self.case_figures(f).await?;
        Ok(OfficeStats {
            sessions: self.office_sessions(f).await?,
            resolved: cases.resolved,
            per_month: cases.per_month,
            replied: cases.replied,
            satisfaction: cases.satisfaction,
            contacts: self.office_contacts_per_building(f).await?,
            volunteering: self.office_volunteering(f).await?,
        })
    }

    /// Fills the pairs index's text of records stored before it existed, in batches, and the
    /// text key of records whose text was indexed without it.
    pub(crate) async fn backfill_grams(&self) -> Result<()> {
        sqlx::query(
            "UPDATE records SET text_n = (SELECT t.n FROM record_text t WHERE t.id = records.id)
             WHERE text_n IS NULL",
        )
        .execute(&self.pool)
        .await?;
        loop {
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT n, text FROM record_text WHERE grams IS NULL ORDER BY n LIMIT 2000",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self.write_tx().await?;
            for (n, text) in rows {
                sqlx::query("UPDATE record_text SET grams = ? WHERE n = ?")
                    .bind(grams(&text))
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }

    /// Computes `has_conflicts` for records whose column is not known yet (those stored before
    /// the column existed): each document is loaded once, in batches.
    pub(crate) async fn backfill_conflicts(&self) -> Result<()> {
        loop {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM records WHERE has_conflicts IS NULL ORDER BY id LIMIT 200",
            )
            .fetch_all(&self.pool)
            .await?;
            if ids.is_empty() {
                return Ok(());
            }
            let mut flags: Vec<(String, bool)> = Vec::with_capacity(ids.len());
            for id in ids {
                // The whole document: its last full save and the changes logged after it.
                let rid = id.parse().map_err(Error::internal)?;
                let conflicted = match self.record_doc(rid).await? {
                    Some(doc) => linli_sync_core::RecordDoc::load(rid, &doc)
                        .is_ok_and(|mut d| !d.conflicts().is_empty()),
                    None => false,
                };
                flags.push((id, conflicted));
            }
            let mut tx = self.write_tx().await?;
            for (id, conflicted) in flags {
                sqlx::query(
                    "UPDATE records SET has_conflicts = ? WHERE id = ? AND has_conflicts IS NULL",
                )
                .bind(conflicted)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_orders() {
        for (sort, c) in [
            (Sort::Updated, Cursor::Updated(5, "a-b".into())),
            (Sort::Created, Cursor::Created(-1, "x".into())),
            (
                Sort::Deadline,
                Cursor::Deadline(Some("2026-01-02".into()), "y".into()),
            ),
            (Sort::Deadline, Cursor::Deadline(None, "z".into())),
        ] {
            assert_eq!(Cursor::parse(&c.encode(), sort).unwrap(), c);
        }
        assert!(Cursor::parse("u.5.x", Sort::Created).is_err());
        assert!(Cursor::parse("u.five.x", Sort::Updated).is_err());
        assert!(Cursor::parse("u.5", Sort::Updated).is_err());
        assert!(Cursor::parse("", Sort::Updated).is_err());
    }

    #[test]
    fn search_terms_are_quoted_or_escaped() {
        let terms = search_terms(" 消防通道 消防 a\"b\"c 5% ");
        let shown: Vec<String> = terms
            .iter()
            .map(|t| match t {
                Term::Match(s) => format!("M{s}"),
                Term::Pair(s) => format!("P{s}"),
                Term::Like(s) => format!("L{s}"),
            })
            .collect();
        assert_eq!(
            shown,
            vec!["M\"消防通道\"", "P\"消防\"", "M\"a\"\"b\"\"c\"", "L%5\\%%"]
        );
    }

    #[test]
    fn text_is_indexed_as_overlapping_pairs() {
        assert_eq!(grams("消防通道"), "消防 防通 通道");
        assert_eq!(grams("楼道漏水，3号楼 a"), "楼道 道漏 漏水 3号 号楼");
        assert_eq!(grams("x"), "");
    }

    /// The part of the migration between `-- {name}` and `-- END {name}`.
    fn migration_part(name: &str) -> &'static str {
        let sql = include_str!("../../migrations/sqlite/0006_office.sql");
        let start = sql.find(&format!("-- {name}\n")).unwrap();
        let end = sql.find(&format!("-- END {name}")).unwrap();
        &sql[start..end]
    }

    async fn snapshot(store: &SqliteStore) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT r.id, json_array(source, session_id, departments, deadline, satisfaction,
                    summary, building, date, session_type, run_number, consultations, answered,
                    leaflets, hours, residents_served, activity_type, has_resolution,
                    has_conflicts, t.text)
             FROM records r LEFT JOIN record_text t ON t.id = r.id ORDER BY r.id",
        )
        .fetch_all(&store.pool)
        .await
        .unwrap()
    }

    /// A server's state over a new SQLite district holding the demo records (the directory must
    /// outlive it).
    async fn demo_district() -> (tempfile::TempDir, crate::state::AppState) {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::run::open(crate::Config::new(dir.path()).with_demo_records())
            .await
            .unwrap();
        (dir, state)
    }

    #[tokio::test]
    async fn the_migration_backfill_derives_what_the_commit_path_writes() {
        let (_dir, state) = demo_district().await;
        let store = state.store.sqlite();
        let written = snapshot(store).await;
        assert!(written.len() > 750);
        assert!(
            written.iter().any(|(_, cols)| cols.contains(",1,")),
            "a conflict"
        );

        // Forget everything derived, then derive it again the way an upgrade does.
        sqlx::query(
            "UPDATE records SET source = NULL, session_id = NULL, departments = NULL,
                    deadline = NULL, satisfaction = NULL, summary = NULL, building = NULL,
                    date = NULL, session_type = NULL, run_number = NULL, consultations = NULL,
                    answered = NULL, leaflets = NULL, hours = NULL, residents_served = NULL,
                    activity_type = NULL, has_resolution = 0, has_conflicts = NULL,
                    text_n = NULL;
             DELETE FROM record_text;",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let none = OfficeFilter {
            scopes: vec!["hz".parse().unwrap()],
            text: Some("消防通道".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.office_count(&none).await.unwrap(), 0);
        for part in ["BACKFILL", "TEXT BACKFILL"] {
            sqlx::query(sqlx::AssertSqlSafe(migration_part(part)))
                .execute(&store.pool)
                .await
                .unwrap();
        }
        store.migrate().await.unwrap();
        let derived = snapshot(store).await;
        assert_eq!(derived.len(), written.len());
        for (w, d) in written.iter().zip(&derived) {
            assert_eq!(w, d);
        }
        // The full-text index followed its table.
        assert!(store.office_count(&none).await.unwrap() > 10);
    }

    /// Every page of `filter` under `plan`, following the cursors: the ids in order.
    async fn all_pages(store: &SqliteStore, filter: &OfficeFilter, plan: Plan) -> Vec<String> {
        let mut filter = filter.clone();
        let mut ids = Vec::new();
        loop {
            let (rows, next) = store.office_page_planned(&filter, plan).await.unwrap();
            ids.extend(rows.into_iter().map(|r| r.id));
            match next {
                Some(after) => filter.after = Some(after),
                None => return ids,
            }
        }
    }

    /// The plans differ only in how SQLite finds the rows: each lists the same records in the
    /// same order, page after page, for every order and kind of filter (over the demo street,
    /// where the chosen plan would mostly be `Few`, so the walks are checked here).
    #[tokio::test]
    async fn every_plan_lists_the_same_pages() {
        let (_dir, state) = demo_district().await;
        let store = state.store.sqlite();
        let street: PlaceId = "hz/baiyang".parse().unwrap();
        let base = OfficeFilter {
            scopes: vec![street.clone()],
            limit: 7,
            ..Default::default()
        };
        let filters = [
            OfficeFilter {
                kind: Some(RecordKind::Case),
                ..base.clone()
            },
            OfficeFilter {
                kind: Some(RecordKind::Case),
                place: Some("hz/baiyang/haitian".parse().unwrap()),
                status: Some("resolved".into()),
                ..base.clone()
            },
            OfficeFilter {
                place: Some(street.clone()),
                text: Some("漏水".into()),
                ..base.clone()
            },
            OfficeFilter {
                kind: Some(RecordKind::Case),
                text: Some("消防通道".into()),
                ..base.clone()
            },
            base.clone(),
        ];
        for filter in filters {
            for sort in [Sort::Updated, Sort::Created, Sort::Deadline] {
                let filter = OfficeFilter {
                    sort,
                    ..filter.clone()
                };
                let own = all_pages(store, &filter, Plan::Own).await;
                assert!(own.len() > 7, "{filter:?} matches several pages");
                let mut unique = own.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), own.len(), "no record twice");
                let count = store.office_count(&filter).await.unwrap();
                assert_eq!(own.len() as i64, count, "{filter:?}");
                let upto = store.office_count_upto(&filter, 5000).await.unwrap();
                assert_eq!(upto, Some(count), "{filter:?}");
                let capped = store.office_count_upto(&filter, 3).await.unwrap();
                assert_eq!(capped, None, "{filter:?}");
                assert_eq!(
                    all_pages(store, &filter, Plan::Few).await,
                    own,
                    "{filter:?}"
                );
                assert_eq!(
                    all_pages(store, &filter, walk(sort)).await,
                    own,
                    "{filter:?}"
                );
            }
        }
    }

    /// The overdue and conflicted queues read their partial index (`INDEXED BY` fails the query
    /// when SQLite cannot use the index for it) and list what the other plans list.
    #[tokio::test]
    async fn overdue_and_conflicts_read_their_partial_index() {
        let (_dir, state) = demo_district().await;
        let store = state.store.sqlite();
        let street: PlaceId = "hz/baiyang".parse().unwrap();
        // The demo street has few open cases with a deadline and no conflicts: open every other
        // case with a deadline (a third of them on one day, so the orders have ties) and mark
        // every third record conflicted, in the columns these queries read.
        sqlx::query(
            "UPDATE records SET status = 'assigned',
                 deadline = CASE WHEN rowid % 3 = 0 THEN '2026-01-01'
                     ELSE '2026-0' || (1 + rowid % 9) || '-15' END
             WHERE kind = 'case' AND rowid % 2 = 0",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE records SET has_conflicts = 1 WHERE rowid % 3 = 0")
            .execute(&store.pool)
            .await
            .unwrap();
        // Every open case with a deadline is overdue on a day far ahead.
        let overdue = OfficeFilter {
            scopes: vec![street.clone()],
            kind: Some(RecordKind::Case),
            overdue_on: Some("2999-12-31".into()),
            limit: 2,
            ..Default::default()
        };
        let conflicts = OfficeFilter {
            scopes: vec![street],
            has_conflicts: true,
            limit: 2,
            ..Default::default()
        };
        for (filter, index) in [(overdue, "records_open"), (conflicts, "records_conflicted")] {
            assert_eq!(store.plan(&filter).await.unwrap(), Plan::Partial(index));
            for sort in [Sort::Updated, Sort::Created, Sort::Deadline] {
                let filter = OfficeFilter {
                    sort,
                    ..filter.clone()
                };
                let partial = all_pages(store, &filter, Plan::Partial(index)).await;
                assert!(partial.len() > 4, "{filter:?} matches several pages");
                assert_eq!(all_pages(store, &filter, Plan::Own).await, partial);
                assert_eq!(all_pages(store, &filter, walk(sort)).await, partial);
                let count = partial.len() as i64;
                assert_eq!(store.office_count(&filter).await.unwrap(), count);
                assert_eq!(
                    store.office_count_upto(&filter, 5000).await.unwrap(),
                    Some(count)
                );
            }
        }
    }

    #[tokio::test]
    async fn the_export_stream_can_cross_threads() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let (_dir, store) = crate::store::tests::temp_store().await;
        let stream = store.office_stream(&OfficeFilter::default());
        assert_send(&stream);
    }

    #[test]
    fn months_follow_each_other() {
        assert_eq!(next_month("2026-11").as_deref(), Some("2026-12"));
        assert_eq!(next_month("2026-12").as_deref(), Some("2027-01"));
        assert_eq!(next_month("x"), None);
    }
}
