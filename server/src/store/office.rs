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
use super::{RecordRow, Store, push_within};
use crate::error::{Error, Result};

/// Case statuses that close a case: no longer overdue, counted as resolved.
pub const CLOSED_STATUSES: &[&str] = &["resolved", "evaluated", "withdrawn"];
/// Case statuses that count as a reply to the resident.
pub const REPLIED_STATUSES: &[&str] = &["answered_on_site", "resolved", "evaluated"];
/// Characters kept in the `summary` column.
pub const SUMMARY_CHARS: usize = 200;
/// Rows per batch of [`Store::office_stream`].
pub const STREAM_BATCH: u32 = 1000;
/// Most rows one [`Store::office_page`] returns.
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

/// Writes a record's back-office columns and search text, inside the transaction that writes
/// its value (so they never disagree with it).
pub(crate) async fn write_office_columns(
    conn: &mut SqliteConnection,
    record: &str,
    place: &PlaceId,
    value: &Value,
    has_conflicts: bool,
) -> Result<()> {
    let cols = OfficeColumns::derive(value);
    // The building-level place the record lies in: itself or an ancestor.
    let mut qb =
        QueryBuilder::<Sqlite>::new("SELECT id FROM places WHERE level = 'building' AND id IN (");
    let mut sep = qb.separated(", ");
    let mut at = Some(place.clone());
    while let Some(p) = at {
        at = p.parent();
        sep.push_bind(p.as_str().to_string());
    }
    qb.push(") LIMIT 1");
    let building: Option<String> = qb.build_query_scalar().fetch_optional(&mut *conn).await?;
    sqlx::query(
        "UPDATE records SET source = ?, session_id = ?, departments = ?, deadline = ?,
                satisfaction = ?, summary = ?, building = ?, date = ?, session_type = ?,
                run_number = ?, consultations = ?, answered = ?, leaflets = ?, hours = ?,
                residents_served = ?, activity_type = ?, has_resolution = ?, has_conflicts = ?
         WHERE id = ?",
    )
    .bind(&cols.source)
    .bind(&cols.session_id)
    .bind(&cols.departments)
    .bind(&cols.deadline)
    .bind(&cols.satisfaction)
    .bind(&cols.summary)
    .bind(building.or(cols.building_field))
    .bind(&cols.date)
    .bind(&cols.session_type)
    .bind(&cols.run_number)
    .bind(cols.consultations)
    .bind(cols.answered)
    .bind(cols.leaflets)
    .bind(cols.hours)
    .bind(cols.residents_served)
    .bind(&cols.activity_type)
    .bind(cols.has_resolution)
    .bind(has_conflicts)
    .bind(record)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO record_text (id, text) VALUES (?, ?)
         ON CONFLICT(id) DO UPDATE SET text = excluded.text WHERE text != excluded.text",
    )
    .bind(record)
    .bind(&cols.text)
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
enum Cursor {
    Updated(i64, String),
    Created(i64, String),
    Deadline(Option<String>, String),
}

impl Cursor {
    fn of(sort: Sort, row: &RecordRow) -> Cursor {
        match sort {
            Sort::Updated => Cursor::Updated(row.updated_at, row.id.clone()),
            Sort::Created => Cursor::Created(row.created_at, row.id.clone()),
            Sort::Deadline => Cursor::Deadline(row.deadline.clone(), row.id.clone()),
        }
    }

    fn encode(&self) -> String {
        match self {
            Cursor::Updated(t, id) => format!("u.{t}.{id}"),
            Cursor::Created(t, id) => format!("c.{t}.{id}"),
            Cursor::Deadline(d, id) => format!("d.{}.{id}", d.as_deref().unwrap_or("")),
        }
    }

    fn parse(s: &str, sort: Sort) -> Result<Cursor> {
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

/// The terms of a search: quoted phrases for FTS5 (three characters or more, what a trigram
/// index can match), and `LIKE` patterns for shorter ones (two-character Chinese words).
enum Term {
    Match(String),
    Like(String),
}

fn search_terms(text: &str) -> Vec<Term> {
    text.split_whitespace()
        .map(|t| {
            if t.chars().count() >= 3 {
                // A phrase in double quotes, quotes doubled: no FTS5 syntax gets through.
                Term::Match(format!("\"{}\"", t.replace('"', "\"\"")))
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
/// The place tests are written `+r.place` so SQLite walks the order's own index (which holds the
/// place) instead of gathering a whole street through the place index and sorting it.
fn push_conditions(qb: &mut QueryBuilder<Sqlite>, f: &OfficeFilter) {
    push_within(qb, "+r.place", &f.scopes);
    if let Some(place) = &f.place {
        qb.push(" AND ");
        push_within(qb, "+r.place", std::slice::from_ref(place));
    }
    if let Some(kind) = f.kind {
        // With a search, the matching ids are the selective part. The unary `+` keeps SQLite
        // (which has no statistics) from walking every record of the kind through an index
        // and looking each up in the id list instead: 0.2-0.6 s against 30-60 ms over 100,000
        // cases.
        let searching = f.text.as_deref().is_some_and(|t| !t.trim().is_empty());
        qb.push(if searching {
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
    for term in f.text.as_deref().map(search_terms).unwrap_or_default() {
        match term {
            Term::Match(phrase) => {
                qb.push(
                    " AND r.id IN (SELECT t.id FROM record_fts JOIN record_text t
                                   ON t.n = record_fts.rowid WHERE record_fts MATCH ",
                )
                .push_bind(phrase)
                .push(")");
            }
            Term::Like(pattern) => {
                qb.push(" AND r.id IN (SELECT t.id FROM record_text t WHERE t.text LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
        }
    }
}

fn push_after(qb: &mut QueryBuilder<Sqlite>, cursor: &Cursor) {
    match cursor {
        Cursor::Updated(t, id) | Cursor::Created(t, id) => {
            let column = if matches!(cursor, Cursor::Updated(..)) {
                "r.updated_at"
            } else {
                "r.created_at"
            };
            qb.push(format!(" AND ({column} < "))
                .push_bind(*t)
                .push(format!(" OR ({column} = "))
                .push_bind(*t)
                .push(" AND r.id < ")
                .push_bind(id.clone())
                .push("))");
        }
        Cursor::Deadline(Some(d), id) => {
            qb.push(" AND (r.deadline > ")
                .push_bind(d.clone())
                .push(" OR (r.deadline = ")
                .push_bind(d.clone())
                .push(" AND r.id > ")
                .push_bind(id.clone())
                .push("))");
        }
        Cursor::Deadline(None, id) => {
            qb.push(" AND r.id > ").push_bind(id.clone());
        }
    }
}

fn order_by(sort: Sort) -> &'static str {
    match sort {
        Sort::Updated => " ORDER BY r.updated_at DESC, r.id DESC",
        Sort::Created => " ORDER BY r.created_at DESC, r.id DESC",
        // Within one of the two deadline passes (see `Store::office_page`).
        Sort::Deadline => " ORDER BY r.deadline, r.id",
    }
}

/// Appends the statistics' place and period conditions on `records` aliased `alias`.
fn push_stats(qb: &mut QueryBuilder<Sqlite>, alias: &str, f: &StatsFilter) {
    push_within(qb, &format!("{alias}.place"), &f.scopes);
    if let Some(place) = &f.place {
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

impl Store {
    /// One page of the back-office queue and the cursor of the next page (`None` on the last
    /// page). Keyset pagination: a page costs the same however deep it is, and rows changed
    /// between pages are neither skipped nor repeated by the order's own key.
    pub async fn office_page(
        &self,
        filter: &OfficeFilter,
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
        let mut rows: Vec<RecordRow> = Vec::new();
        for (i, dated) in passes.iter().enumerate() {
            let want = limit as usize + 1 - rows.len();
            let mut qb =
                QueryBuilder::<Sqlite>::new(format!("SELECT {ROW_COLUMNS} FROM records r WHERE "));
            push_conditions(&mut qb, filter);
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

    /// How many records the filter matches (its `sort`, `after` and `limit` are ignored).
    pub async fn office_count(&self, filter: &OfficeFilter) -> Result<i64> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM records r WHERE ");
        push_conditions(&mut qb, filter);
        Ok(qb.build_query_scalar().fetch_one(&self.pool).await?)
    }

    /// How many records the filter matches, counting no further than `cap` (`None` past it):
    /// what a queue page shows, at a cost bounded by `cap` whatever the street holds.
    pub async fn office_count_upto(&self, filter: &OfficeFilter, cap: u32) -> Result<Option<i64>> {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM (SELECT 1 FROM records r WHERE ");
        push_conditions(&mut qb, filter);
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
        self.case_share(f, "r.status IN ('resolved', 'evaluated')")
            .await
    }

    /// Cases (withdrawn ones left out) and how many got a reply: answered on site, resolved,
    /// evaluated, or with a resolution written.
    pub async fn office_reply_rate(&self, f: &StatsFilter) -> Result<Share> {
        self.case_share(
            f,
            "(r.status IN ('answered_on_site', 'resolved', 'evaluated') OR r.has_resolution = 1)",
        )
        .await
    }

    async fn case_share(&self, f: &StatsFilter, part: &str) -> Result<Share> {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT COUNT(*), COALESCE(SUM({part}), 0) FROM records r
             WHERE r.kind = 'case' AND r.status != 'withdrawn' AND "
        ));
        push_stats(&mut qb, "r", f);
        let (total, part): (i64, i64) = qb.build_query_as().fetch_one(&self.pool).await?;
        Ok(Share { part, total })
    }

    /// Cases per month of their day, oldest first, with months without cases between the first
    /// and the last filled in, and each month's change against the one before.
    pub async fn office_cases_per_month(&self, f: &StatsFilter) -> Result<Vec<MonthCount>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT substr(r.date, 1, 7) AS month, COUNT(*) FROM records r
             WHERE r.kind = 'case' AND r.date IS NOT NULL AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY month ORDER BY month");
        let counts: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
        let mut out: Vec<MonthCount> = Vec::new();
        for (month, count) in counts {
            // Months without cases between two with cases count as 0 (bounded by the data).
            while let Some(gap) = out
                .last()
                .and_then(|l| next_month(&l.month))
                .filter(|m| *m < month)
            {
                let prev = out.last().map(|l| l.count);
                out.push(MonthCount {
                    month: gap,
                    count: 0,
                    change: prev.map(|p| -p),
                });
            }
            let prev = out.last().map(|l| l.count);
            out.push(MonthCount {
                month,
                count,
                change: prev.map(|p| count - p),
            });
        }
        Ok(out)
    }

    /// Cases per satisfaction code, most first.
    pub async fn office_satisfaction(&self, f: &StatsFilter) -> Result<Vec<CodeCount>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT r.satisfaction, COUNT(*) AS n FROM records r
             WHERE r.kind = 'case' AND r.satisfaction IS NOT NULL AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY r.satisfaction ORDER BY n DESC, r.satisfaction");
        let rows: Vec<(String, i64)> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|(code, count)| CodeCount { code, count })
            .collect())
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
        Ok(OfficeStats {
            sessions: self.office_sessions(f).await?,
            resolved: self.office_resolved_share(f).await?,
            per_month: self.office_cases_per_month(f).await?,
            replied: self.office_reply_rate(f).await?,
            satisfaction: self.office_satisfaction(f).await?,
            contacts: self.office_contacts_per_building(f).await?,
            volunteering: self.office_volunteering(f).await?,
        })
    }

    /// Computes `has_conflicts` for records whose column is not known yet (those stored before
    /// the column existed): each document is loaded once, in batches.
    pub(crate) async fn backfill_conflicts(&self) -> Result<()> {
        loop {
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT id, doc FROM records WHERE has_conflicts IS NULL ORDER BY id LIMIT 200",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let flags: Vec<(String, bool)> = rows
                .into_iter()
                .map(|(id, doc)| {
                    let conflicted = id
                        .parse()
                        .ok()
                        .and_then(|rid| linli_sync_core::RecordDoc::load(rid, &doc).ok())
                        .is_some_and(|mut d| !d.conflicts().is_empty());
                    (id, conflicted)
                })
                .collect();
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
                Term::Like(s) => format!("L{s}"),
            })
            .collect();
        assert_eq!(
            shown,
            vec!["M\"消防通道\"", "L%消防%", "M\"a\"\"b\"\"c\"", "L%5\\%%"]
        );
    }

    /// The part of the migration between `-- {name}` and `-- END {name}`.
    fn migration_part(name: &str) -> &'static str {
        let sql = include_str!("../../migrations/sqlite/0006_office.sql");
        let start = sql.find(&format!("-- {name}\n")).unwrap();
        let end = sql.find(&format!("-- END {name}")).unwrap();
        &sql[start..end]
    }

    async fn snapshot(store: &Store) -> Vec<(String, String)> {
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

    #[tokio::test]
    async fn the_migration_backfill_derives_what_the_commit_path_writes() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::run::open(crate::Config::new(dir.path()).with_demo_records())
            .await
            .unwrap();
        let store = &state.store;
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
                    activity_type = NULL, has_resolution = 0, has_conflicts = NULL;
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
