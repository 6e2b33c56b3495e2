//! The back-office's reads ([`OfficeStore`]) on PostgreSQL, and a record's back-office columns
//! as the commit path writes them ([`OfficeRow`]).
//!
//! The same filters, orders, cursors and figures as SQLite (`office.rs`), in plain SQL over the
//! plain indexes of `0004_office.sql`. PostgreSQL keeps statistics and plans each query itself,
//! so none of the plans SQLite is pinned to are needed here.
//!
//! Search. On SQLite a term of three characters or more is a phrase of a trigram index, a
//! two-character word a word of an index of the text's character pairs, and anything shorter a
//! `LIKE`: each finds the texts that contain the term, ignoring case. pg_trgm drops CJK
//! characters under the C/POSIX ctype this database may run with, so instead each record keeps
//! its text lower-cased (`search_text`) and, as a `tsvector` (`grams`), the overlapping pairs of
//! letters or digits of each run of them plus each run's last character. A term's pairs (for a
//! one-character run, that character as a prefix) must all be lexemes of `grams`, which a GIN
//! index finds; `strpos` then confirms the term itself occurs, which the pairs alone cannot tell
//! ("水管漏水" holds both pairs of "漏水管").

use std::collections::{BTreeSet, VecDeque};

use futures_util::Stream;
use linli_sync_core::{PlaceId, RecordId};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, QueryBuilder, Row};

use super::office::{
    BuildingCount, CaseFigures, CaseGroup, CodeCount, Cursor, MAX_PAGE, MonthCount, OfficeColumns,
    OfficeFilter, OfficeStats, STREAM_BATCH, SessionStat, Share, Sort, StatsFilter, VolunteerStat,
    narrowest, order_by,
};
use super::office_seam::OfficeStore;
use super::projection::{RecordFilter, RecordRow};
use super::seam::{StoreError, StoreResult};
use super::{PgStore, push_within};

/// A projection row's columns, on `records r`.
const ROW_COLUMNS: &str = "r.id, r.kind, r.place, r.status, r.category, r.created_at,
     r.updated_at, r.last_seq, r.value::text AS value, r.personal::text AS personal, r.source,
     r.session_id, r.departments, r.deadline, r.satisfaction, r.summary, r.building, r.date,
     r.has_conflicts";

/// JSON text in `serde_json`'s compact form (keys sorted), as SQLite stores it, from the text of
/// a `jsonb` (which spaces and orders keys its own way): a row reads the same from either
/// backend.
fn json_text(text: &str) -> StoreResult<String> {
    serde_json::from_str::<Value>(text)
        .map(|v| v.to_string())
        .map_err(|e| StoreError::Corrupt(format!("stored JSON: {e}")))
}

fn record_from_row(row: &PgRow) -> StoreResult<RecordRow> {
    let departments: Option<String> = row.try_get("departments")?;
    let value: String = row.try_get("value")?;
    let personal: Option<String> = row.try_get("personal")?;
    Ok(RecordRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        place: row.try_get("place")?,
        status: row.try_get("status")?,
        category: row.try_get("category")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seq: row.try_get("last_seq")?,
        value: json_text(&value)?,
        personal: personal.as_deref().map(json_text).transpose()?,
        source: row.try_get("source")?,
        session_id: row.try_get("session_id")?,
        departments: departments
            .unwrap_or_default()
            .split(',')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect(),
        deadline: row.try_get("deadline")?,
        satisfaction: row.try_get("satisfaction")?,
        summary: row.try_get("summary")?,
        building: row.try_get("building")?,
        date: row.try_get("date")?,
        has_conflicts: row.try_get("has_conflicts")?,
    })
}

/// Lower-cases character by character, so a term folds exactly as it does inside a text.
pub(crate) fn fold(text: &str) -> String {
    text.chars().flat_map(char::to_lowercase).collect()
}

/// The runs of letters or digits of a folded text, as characters.
fn runs(folded: &str) -> impl Iterator<Item = Vec<char>> + '_ {
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|run| !run.is_empty())
        .map(|run| run.chars().collect())
}

/// The lexemes of `grams` for a folded text: each run's overlapping pairs and its last
/// character. Every letter or digit then starts some lexeme, so a one-character term is a
/// prefix search ("水" finds "漏水" by its lexeme "水", "水管" by "水管").
pub(crate) fn gram_lexemes(folded: &str) -> Vec<String> {
    let mut lexemes = BTreeSet::new();
    for run in runs(folded) {
        for pair in run.windows(2) {
            lexemes.insert(pair.iter().collect::<String>());
        }
        if let Some(last) = run.last() {
            lexemes.insert(last.to_string());
        }
    }
    lexemes.into_iter().collect()
}

/// The `tsquery` every text containing the folded term matches, `None` when the term has no
/// letter or digit (only `strpos` can test it). Lexemes are letters and digits only, so quoting
/// them needs no escapes.
fn term_query(folded: &str) -> Option<String> {
    let mut parts = Vec::new();
    for run in runs(folded) {
        if let &[one] = run.as_slice() {
            parts.push(format!("'{one}':*"));
        }
        for pair in run.windows(2) {
            parts.push(format!("'{}{}'", pair[0], pair[1]));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" & "))
}

/// Appends a search's conditions: the pairs of every term in one `@@` (for the GIN index), then
/// each term as a substring of the text.
fn push_search(qb: &mut QueryBuilder<Postgres>, text: &str) {
    let terms: Vec<String> = text.split_whitespace().map(fold).collect();
    let queries: Vec<String> = terms.iter().filter_map(|t| term_query(t)).collect();
    if !queries.is_empty() {
        qb.push(" AND r.grams @@ ")
            .push_bind(queries.join(" & "))
            .push("::tsquery");
    }
    for term in terms {
        qb.push(" AND strpos(r.search_text, ")
            .push_bind(term)
            .push(") > 0");
    }
}

/// Appends the filter's conditions (after a `WHERE`) on `records r`.
fn push_conditions(qb: &mut QueryBuilder<Postgres>, f: &OfficeFilter) {
    let (scopes, place) = narrowest(&f.scopes, f.place.as_ref());
    push_within(qb, "r.place", scopes);
    if let Some(place) = place {
        qb.push(" AND ");
        push_within(qb, "r.place", std::slice::from_ref(place));
    }
    if let Some(kind) = f.kind {
        qb.push(" AND r.kind = ").push_bind(kind.as_str());
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
        qb.push(" AND strpos(r.departments, ")
            .push_bind(format!(",{d},"))
            .push(") > 0");
    }
    if let Some(s) = &f.session_id {
        // Cases name their run by its record id (older phones: its run number), and staff
        // filter by either.
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
        // Spelled as `records_open`'s predicate, so the planner can use that index.
        qb.push(" AND r.kind = 'case' AND r.deadline < ")
            .push_bind(today.clone())
            .push(" AND r.status NOT IN ('resolved', 'evaluated', 'withdrawn')");
    }
    if f.has_conflicts {
        qb.push(" AND r.has_conflicts");
    }
    if let Some(text) = &f.text {
        push_search(qb, text);
    }
}

/// Appends "after this cursor" as a row comparison, a range on the order's index.
fn push_after(qb: &mut QueryBuilder<Postgres>, cursor: &Cursor) {
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

/// Appends the statistics' place and period conditions on `records` aliased `alias`.
fn push_stats(qb: &mut QueryBuilder<Postgres>, alias: &str, f: &StatsFilter) {
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

impl PgStore {
    /// The case figures from one grouped read of the cases, summed as SQLite's are
    /// ([`CaseFigures::of`]).
    async fn case_figures(&self, f: &StatsFilter) -> StoreResult<CaseFigures> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT r.date, r.status, CASE WHEN r.has_resolution THEN 1::int8 ELSE 0::int8 END,
                    r.satisfaction, COUNT(*)
             FROM records r WHERE r.kind = 'case' AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY r.date, r.status, r.has_resolution, r.satisfaction");
        let groups: Vec<CaseGroup> = qb.build_query_as().fetch_all(self.pool()).await?;
        Ok(CaseFigures::of(groups))
    }
}

impl OfficeStore for PgStore {
    async fn list_records(&self, filter: &RecordFilter) -> StoreResult<Vec<RecordRow>> {
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("SELECT {ROW_COLUMNS} FROM records r WHERE "));
        push_within(&mut qb, "r.place", &filter.scopes);
        if let Some(kind) = filter.kind {
            qb.push(" AND r.kind = ").push_bind(kind.as_str());
        }
        if let Some(status) = &filter.status {
            qb.push(" AND r.status = ").push_bind(status.clone());
        }
        if let Some(category) = &filter.category {
            qb.push(" AND r.category = ").push_bind(category.clone());
        }
        if let Some(since) = filter.updated_since {
            qb.push(" AND r.updated_at >= ").push_bind(since);
        }
        if let Some((updated_at, id)) = &filter.after {
            qb.push(" AND (r.updated_at, r.id) < (")
                .push_bind(*updated_at)
                .push(", ")
                .push_bind(id.clone())
                .push(")");
        }
        qb.push(" ORDER BY r.updated_at DESC, r.id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        qb.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    async fn record_row(&self, id: RecordId) -> StoreResult<Option<RecordRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM records r WHERE r.id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(record_from_row)
        .transpose()
    }

    async fn office_page(
        &self,
        filter: &OfficeFilter,
    ) -> StoreResult<(Vec<RecordRow>, Option<String>)> {
        let limit = filter.limit.clamp(1, MAX_PAGE) as usize;
        let cursor = filter
            .after
            .as_deref()
            .map(|a| Cursor::parse(a, filter.sort))
            .transpose()?;
        // Deadline order lists dated records, then undated ones by id: two reads, each a range
        // of its own index.
        let passes: &[Option<bool>] = match (&filter.sort, &cursor) {
            (Sort::Deadline, Some(Cursor::Deadline(None, _))) => &[Some(false)],
            (Sort::Deadline, _) => &[Some(true), Some(false)],
            _ => &[None],
        };
        let mut rows: Vec<RecordRow> = Vec::new();
        for (i, dated) in passes.iter().enumerate() {
            let want = limit + 1 - rows.len();
            let mut qb = QueryBuilder::<Postgres>::new(format!(
                "SELECT {ROW_COLUMNS} FROM records r WHERE "
            ));
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
            for row in qb.build().fetch_all(self.pool()).await?.iter() {
                rows.push(record_from_row(row)?);
            }
            if rows.len() > limit {
                break;
            }
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| Cursor::of(filter.sort, r).encode())
        } else {
            None
        };
        Ok((rows, next))
    }

    async fn office_count(&self, filter: &OfficeFilter) -> StoreResult<i64> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM records r WHERE ");
        push_conditions(&mut qb, filter);
        Ok(qb.build_query_scalar().fetch_one(self.pool()).await?)
    }

    async fn office_count_upto(&self, filter: &OfficeFilter, cap: u32) -> StoreResult<Option<i64>> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM (SELECT 1 FROM records r WHERE ");
        push_conditions(&mut qb, filter);
        qb.push(" LIMIT ")
            .push_bind(i64::from(cap) + 1)
            .push(") AS upto");
        let n: i64 = qb.build_query_scalar().fetch_one(self.pool()).await?;
        Ok((n <= i64::from(cap)).then_some(n))
    }

    fn office_stream(
        &self,
        filter: &OfficeFilter,
    ) -> impl Stream<Item = StoreResult<RecordRow>> + Send + 'static {
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

    async fn office_sessions(&self, f: &StatsFilter) -> StoreResult<Vec<SessionStat>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT b.id, b.run_number, b.session_type, b.date, b.place,
                    COALESCE(b.consultations, 0) AS consultations,
                    COALESCE(b.answered, 0) AS answered, COALESCE(b.leaflets, 0) AS leaflets,
                    (SELECT COUNT(*) FROM records c
                     WHERE c.session_id IN (b.id, b.run_number) AND c.kind = 'case' AND ",
        );
        push_within(&mut qb, "c.place", &f.scopes);
        qb.push(") AS cases FROM records b WHERE b.kind = 'bus' AND ");
        push_stats(&mut qb, "b", f);
        // SQLite sorts NULL first, so last when descending.
        qb.push(" ORDER BY b.date DESC NULLS LAST, b.id DESC");
        qb.build()
            .fetch_all(self.pool())
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

    async fn office_resolved_share(&self, f: &StatsFilter) -> StoreResult<Share> {
        Ok(self.case_figures(f).await?.resolved)
    }

    async fn office_reply_rate(&self, f: &StatsFilter) -> StoreResult<Share> {
        Ok(self.case_figures(f).await?.replied)
    }

    async fn office_cases_per_month(&self, f: &StatsFilter) -> StoreResult<Vec<MonthCount>> {
        Ok(self.case_figures(f).await?.per_month)
    }

    async fn office_satisfaction(&self, f: &StatsFilter) -> StoreResult<Vec<CodeCount>> {
        Ok(self.case_figures(f).await?.satisfaction)
    }

    async fn office_contacts_per_building(
        &self,
        f: &StatsFilter,
    ) -> StoreResult<Vec<BuildingCount>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT r.building, p.name, COUNT(*) AS n FROM records r
             LEFT JOIN places p ON p.id = r.building
             WHERE r.kind = 'contact' AND r.building IS NOT NULL AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY r.building, p.name ORDER BY n DESC, r.building");
        let rows: Vec<(String, Option<String>, i64)> =
            qb.build_query_as().fetch_all(self.pool()).await?;
        Ok(rows
            .into_iter()
            .map(|(building, name, contacts)| BuildingCount {
                building,
                name,
                contacts,
            })
            .collect())
    }

    async fn office_volunteering(&self, f: &StatsFilter) -> StoreResult<Vec<VolunteerStat>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT COALESCE(r.activity_type, 'other') AS t, COUNT(*) AS n,
                    COALESCE(SUM(r.hours), 0.0)::float8 AS hours,
                    COALESCE(SUM(r.residents_served), 0)::int8 AS served
             FROM records r WHERE r.kind = 'volunteer' AND ",
        );
        push_stats(&mut qb, "r", f);
        qb.push(" GROUP BY t ORDER BY n DESC, t");
        let rows: Vec<(String, i64, f64, i64)> = qb.build_query_as().fetch_all(self.pool()).await?;
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

    async fn office_stats(&self, f: &StatsFilter) -> StoreResult<OfficeStats> {
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
}

/// The back-office columns of `records` the commit path writes, in the order of
/// [`OFFICE_VALUES`]: `INSERT INTO records (…, {OFFICE_COLUMNS}) VALUES (…, {OFFICE_VALUES})`
/// and `UPDATE records SET ({OFFICE_COLUMNS}) = ({OFFICE_VALUES}), …`.
pub(super) const OFFICE_COLUMNS: &str = "source, session_id, departments, deadline, satisfaction,
     summary, building, date, session_type, run_number, consultations, answered, leaflets, hours,
     residents_served, activity_type, has_resolution, search_text, grams";

/// The values of [`OFFICE_COLUMNS`], parameters `$1` to `$20` as [`OfficeRow::bind`] binds them.
/// The building is the building-level place the record lies in, itself or an ancestor (the
/// nearest, should the tree ever nest two), else the record's own `building` text: a subquery,
/// so the row is still written by one statement.
pub(super) const OFFICE_VALUES: &str = "$1, $2, $3, $4, $5, $6,
     COALESCE((SELECT p.id FROM places p WHERE p.level = 'building' AND p.id = ANY($7::text[])
               ORDER BY length(p.id) DESC LIMIT 1), $8),
     $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, array_to_tsvector($20::text[])";

/// A record's back-office columns, search text and pairs, derived from its merged value before
/// the statement that writes the value, so that one statement writes both (they never disagree,
/// and the row is written once, not twice). The PostgreSQL twin of
/// [`write_office_columns`](super::office::write_office_columns), deriving the same columns.
pub(super) struct OfficeRow {
    cols: OfficeColumns,
    /// The record's place and its ancestors, for the building lookup.
    ancestors: Vec<String>,
    /// The searchable text, folded.
    text: String,
    grams: Vec<String>,
}

impl OfficeRow {
    pub(super) fn derive(place: &PlaceId, value: &Value) -> OfficeRow {
        let cols = OfficeColumns::derive(value);
        let mut ancestors = Vec::new();
        let mut at = Some(place.clone());
        while let Some(p) = at {
            at = p.parent();
            ancestors.push(p.as_str().to_string());
        }
        let text = fold(&cols.text);
        let grams = gram_lexemes(&text);
        OfficeRow {
            cols,
            ancestors,
            text,
            grams,
        }
    }

    /// Binds [`OFFICE_VALUES`]' parameters, `$1` to `$20`, to a statement that has bound none yet.
    pub(super) fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
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
            .bind(&self.text)
            .bind(&self.grams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_are_each_runs_pairs_and_last_character() {
        assert_eq!(
            gram_lexemes(&fold("漏水，3号楼 A")),
            ["3号", "a", "号楼", "楼", "水", "漏水"]
        );
        assert!(gram_lexemes("").is_empty());
    }

    #[test]
    fn a_term_needs_its_pairs_or_its_one_character_as_a_prefix() {
        assert_eq!(term_query("漏水").as_deref(), Some("'漏水'"));
        assert_eq!(term_query("水").as_deref(), Some("'水':*"));
        assert_eq!(term_query("漏水管").as_deref(), Some("'漏水' & '水管'"));
        assert_eq!(term_query("1-10").as_deref(), Some("'1':* & '10'"));
        assert_eq!(term_query("，%").as_deref(), None);
    }
}
