//! The record queue (诉求列表): filters, search, sort and keyset pages, all in the URL so a view
//! can be bookmarked and shared; `?partial=rows` returns just the table rows for live refresh;
//! the same filters export to CSV and `.xlsx`.

use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use linli_sync_core::PlaceId;
use linli_sync_core::schema::{self, RecordKind};

use super::export::{self, Format, PlaceNamer};
use super::session::{Fields, WebUser};
use super::view::{self, Nav, PlaceNames};
use super::{WebError, WebResult, render};
use crate::records::value_for_role;
use crate::state::AppState;
use futures_util::StreamExt;

use crate::store::prelude::*;
use crate::store::{OfficeFilter, RecordRow, Sort};

/// Rows per page.
pub const PAGE_SIZE: u32 = 50;
/// A queue page counts the matching records up to this many.
pub const COUNT_CAP: u32 = 5000;
/// A search counts its matches up to this many: each one costs a lookup of its record, where a
/// filter's count reads index entries only.
pub const SEARCH_COUNT_CAP: u32 = 1000;

/// The queue's filters as read from the URL (every one optional; an empty value means "any").
#[derive(Debug, Clone, Default)]
pub struct QueueQuery {
    /// Kind.
    pub kind: Option<RecordKind>,
    /// Place subtree (street, community, estate, building).
    pub place: Option<PlaceId>,
    /// Case category code.
    pub category: Option<String>,
    /// Case status code.
    pub status: Option<String>,
    /// Case source code.
    pub source: Option<String>,
    /// Department code.
    pub department: Option<String>,
    /// Bus session (its record id or run number).
    pub session: Option<String>,
    /// First day, `YYYY-MM-DD`.
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub to: Option<String>,
    /// Only open cases past their deadline.
    pub overdue: bool,
    /// Only records with conflicting values.
    pub conflicts: bool,
    /// Full-text search in summaries, details and notes.
    pub text: Option<String>,
    /// `updated` (default), `created` or `deadline`.
    pub sort: Sort,
    /// Keyset cursor of the page.
    pub after: Option<String>,
}

fn bad(m: String) -> WebError {
    WebError::page(StatusCode::BAD_REQUEST, m)
}

fn date(q: &Fields, name: &str) -> WebResult<Option<String>> {
    match q.get(name) {
        None => Ok(None),
        Some(d) if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() => {
            Ok(Some(d.to_string()))
        }
        Some(d) => Err(bad(format!("日期格式应为 年-月-日（如 2026-11-01）：{d}"))),
    }
}

impl QueueQuery {
    /// Reads the filters; an unknown code is a clear error.
    pub fn parse(q: &Fields) -> WebResult<Self> {
        let kind = match q.get("kind") {
            Some(k) => Some(
                k.parse::<RecordKind>()
                    .map_err(|_| bad(format!("未知的记录类型：{k}")))?,
            ),
            None => None,
        };
        let place = match q.get("place") {
            Some(p) => Some(
                p.parse::<PlaceId>()
                    .map_err(|_| bad(format!("地点格式不正确：{p}")))?,
            ),
            None => None,
        };
        let code = |name: &str, codes: &[schema::Code]| -> WebResult<Option<String>> {
            match q.get(name) {
                Some(v) if codes.iter().any(|c| c.code == v) => Ok(Some(v.to_string())),
                Some(v) => Err(bad(format!("未知的筛选值：{v}"))),
                None => Ok(None),
            }
        };
        let sort = match q.get("sort") {
            None | Some("updated") => Sort::Updated,
            Some("created") => Sort::Created,
            Some("deadline") => Sort::Deadline,
            Some(s) => return Err(bad(format!("未知的排序方式：{s}"))),
        };
        let text = q.get("q").map(|t| t.chars().take(100).collect::<String>());
        Ok(Self {
            kind,
            place,
            category: code("category", schema::CATEGORIES)?,
            status: code("status", schema::CASE_STATUSES)?,
            source: code("source", schema::CASE_SOURCES)?,
            department: code("department", schema::DEPARTMENTS)?,
            session: q.get("session").map(|s| s.chars().take(64).collect()),
            from: date(q, "from")?,
            to: date(q, "to")?,
            overdue: q.get("overdue").is_some(),
            conflicts: q.get("conflicts").is_some(),
            text,
            sort,
            after: q.get("after").map(String::from),
        })
    }

    /// The query string of these filters (without the cursor), for links, exports and
    /// bookmarks.
    pub fn to_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        let mut pair = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                s.append_pair(k, v);
            }
        };
        pair("kind", self.kind.map(|k| k.as_str()));
        pair("place", self.place.as_ref().map(|p| p.as_str()));
        pair("category", self.category.as_deref());
        pair("status", self.status.as_deref());
        pair("source", self.source.as_deref());
        pair("department", self.department.as_deref());
        pair("session", self.session.as_deref());
        pair("from", self.from.as_deref());
        pair("to", self.to.as_deref());
        pair("overdue", self.overdue.then_some("1"));
        pair("conflicts", self.conflicts.then_some("1"));
        pair("q", self.text.as_deref());
        pair(
            "sort",
            match self.sort {
                Sort::Updated => None,
                Sort::Created => Some("created"),
                Sort::Deadline => Some("deadline"),
            },
        );
        s.finish()
    }

    /// The store filter of these filters for `user`: their grants narrowed to the place.
    pub fn filter(&self, user: &WebUser, limit: u32) -> OfficeFilter {
        OfficeFilter {
            scopes: user.auth.scopes_within(self.place.as_ref()),
            place: None,
            kind: self.kind,
            category: self.category.clone(),
            status: self.status.clone(),
            source: self.source.clone(),
            department: self.department.clone(),
            session_id: self.session.clone(),
            date_from: self.from.clone(),
            date_to: self.to.clone(),
            overdue_on: self.overdue.then(view::today),
            has_conflicts: self.conflicts,
            text: self.text.clone(),
            sort: self.sort,
            after: self.after.clone(),
            limit,
        }
    }

    /// The sort code as in the URL.
    pub fn sort_code(&self) -> &'static str {
        match self.sort {
            Sort::Updated => "updated",
            Sort::Created => "created",
            Sort::Deadline => "deadline",
        }
    }
}

/// One row of the queue as shown.
pub struct QueueRow {
    /// Record id.
    pub id: String,
    /// Record version (changes when the record does: the live refresh highlights it).
    pub version: i64,
    /// Kind label.
    pub kind: &'static str,
    /// Place names.
    pub place: String,
    /// Title.
    pub title: String,
    /// Category label.
    pub category: String,
    /// Status label.
    pub status: String,
    /// Source label.
    pub source: String,
    /// Departments.
    pub departments: String,
    /// Deadline.
    pub deadline: String,
    /// Past its deadline and open.
    pub overdue: bool,
    /// Has conflicting values.
    pub conflicts: bool,
    /// Last update.
    pub updated: String,
}

fn row_view(
    row: &RecordRow,
    user: &WebUser,
    names: &PlaceNames,
    today: &str,
) -> WebResult<QueueRow> {
    let kind: RecordKind = row.kind.parse().map_err(|_| WebError::not_found())?;
    let value = value_for_role(row, user.auth.role)?;
    let text = |f: &str| view::value_text(kind, &value, f);
    let deadline = row.deadline.clone().unwrap_or_default();
    let status = row.status.clone().unwrap_or_default();
    Ok(QueueRow {
        id: row.id.clone(),
        version: row.last_seq,
        kind: kind.label(),
        place: names.label(&row.place),
        title: view::title(kind, &value),
        category: text("category"),
        status: text("status"),
        source: text("source"),
        departments: text("departments"),
        overdue: kind == RecordKind::Case
            && !deadline.is_empty()
            && deadline.as_str() < today
            && !super::detail::CLOSED_STATUSES.contains(&status.as_str()),
        deadline,
        conflicts: row.has_conflicts,
        updated: view::time(row.updated_at),
    })
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    nav: Nav,
    q: QueueQuery,
    rows: Vec<QueueRow>,
    total: String,
    next: Option<String>,
    query: String,
    sort: &'static str,
    sources: Vec<(&'static str, &'static str)>,
    departments: Vec<(&'static str, &'static str)>,
    kinds: Vec<(&'static str, &'static str)>,
    categories: Vec<(&'static str, &'static str)>,
    statuses: Vec<(&'static str, &'static str)>,
    places: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "queue_rows.html")]
struct QueueRows {
    rows: Vec<QueueRow>,
}

/// `GET /office/records`: the queue (`?partial=rows`: the table rows only, for live refresh).
pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(query): RawQuery,
) -> WebResult {
    let fields = Fields::parse(query.unwrap_or_default().as_bytes());
    let q = QueueQuery::parse(&fields)?;
    let filter = q.filter(&user, PAGE_SIZE);
    let (rows, next) = state.store.office_page(&filter).await?;
    let names = PlaceNames::load(&state.store).await?;
    let today = view::today();
    let rows = rows
        .iter()
        .map(|r| row_view(r, &user, &names, &today))
        .collect::<WebResult<Vec<_>>>()?;
    if fields.get("partial") == Some("rows") {
        return Ok(Html(QueueRows { rows }.render()?).into_response());
    }
    // Counted up to a bound, so a page over a whole street costs the same as over one building.
    let cap = if filter.searches() {
        SEARCH_COUNT_CAP
    } else {
        COUNT_CAP
    };
    // A first page with no next one holds every match: no count needed.
    let counted = if filter.after.is_none() && next.is_none() {
        Some(rows.len() as i64)
    } else {
        state.store.office_count_upto(&filter, cap).await?
    };
    let total = match counted {
        Some(n) => n.to_string(),
        None => format!("超过 {cap}"),
    };
    let places = state
        .store
        .places_within(&user.auth.places)
        .await?
        .into_iter()
        .map(|p| {
            let id = p.id.to_string();
            let label = format!("{}{}", "　".repeat(p.id.depth().saturating_sub(2)), p.name);
            (id, label)
        })
        .collect();
    let codes = |c: &[schema::Code]| c.iter().map(|c| (c.code, c.label)).collect::<Vec<_>>();
    render(&QueuePage {
        nav: Nav::new(&user, "records"),
        query: q.to_query(),
        sort: q.sort_code(),
        q,
        rows,
        total,
        next,
        kinds: RecordKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.label()))
            .collect(),
        categories: codes(schema::CATEGORIES),
        statuses: codes(schema::CASE_STATUSES),
        sources: codes(schema::CASE_SOURCES),
        departments: codes(schema::DEPARTMENTS),
        places,
    })
}

async fn export(
    state: AppState,
    user: WebUser,
    query: Option<String>,
    format: Format,
) -> WebResult {
    let fields = Fields::parse(query.unwrap_or_default().as_bytes());
    let mut q = QueueQuery::parse(&fields)?;
    q.after = None;
    // A bus run's list holds cases only: export it with the case columns (departments,
    // deadline…), not the mixed-kind summary.
    if q.session.is_some() && q.kind.is_none() {
        q.kind = Some(RecordKind::Case);
    }
    let filter = q.filter(&user, 1000);
    let names = PlaceNames::load(&state.store).await?;
    let namer: PlaceNamer = Arc::new(move |p: &str| names.label(p));
    let stem = format!(
        "{}导出-{}",
        q.kind.map_or("记录", |k| k.label()),
        view::today()
    );
    tracing::info!(username = %user.auth.username, format = format.extension(), "export");
    Ok(export::export_response(
        format,
        q.kind,
        user.auth.role,
        state
            .store
            .office_stream(&filter)
            .map(|row| row.map_err(crate::error::Error::from)),
        Some(namer),
        &stem,
    )
    .await?)
}

/// `GET /office/records/export.csv?…`: every record the filters match, as CSV (streamed).
pub async fn export_csv(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(query): RawQuery,
) -> WebResult {
    export(state, user, query, Format::Csv).await
}

/// `GET /office/records/export.xlsx?…`: every record the filters match, as an Excel workbook.
pub async fn export_xlsx(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(query): RawQuery,
) -> WebResult {
    export(state, user, query, Format::Xlsx).await
}
