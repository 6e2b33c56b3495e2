//! Reads of the records projection: lists and single rows, never loading documents.

use linli_sync_core::{PlaceId, RecordId, RecordKind};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, push_within};
use crate::error::Result;

/// Filters of a record list. Rows come newest-updated first.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Only records within these places (already intersected with the caller's grants).
    pub scopes: Vec<PlaceId>,
    /// Only this kind.
    pub kind: Option<RecordKind>,
    /// Only this status code.
    pub status: Option<String>,
    /// Only this category code.
    pub category: Option<String>,
    /// Only records updated at or after this time (ms).
    pub updated_since: Option<i64>,
    /// Continue after this `(updated_at, id)` position.
    pub after: Option<(i64, String)>,
    /// Most rows to return.
    pub limit: u32,
}

/// One projection row.
#[derive(Debug, Clone, Default)]
pub struct RecordRow {
    /// Record id (UUID text).
    pub id: String,
    /// Kind code.
    pub kind: String,
    /// Place path.
    pub place: String,
    /// Status code, for cases.
    pub status: Option<String>,
    /// Category code, for cases.
    pub category: Option<String>,
    /// First receive time (ms).
    pub created_at: i64,
    /// Last receive time (ms).
    pub updated_at: i64,
    /// Log position of the last change.
    pub last_seq: i64,
    /// The typed record as JSON text (personal fields masked, as the shared document holds
    /// them).
    pub value: String,
    /// The full personal values as JSON text, when someone captured any.
    pub personal: Option<String>,
    /// Source code (cases).
    pub source: Option<String>,
    /// The bus session a case belongs to (its record id or run number).
    pub session_id: Option<String>,
    /// Department codes.
    pub departments: Vec<String>,
    /// Deadline, `YYYY-MM-DD` (cases).
    pub deadline: Option<String>,
    /// Satisfaction code (cases).
    pub satisfaction: Option<String>,
    /// A title: the first 200 characters of the activity, summary or needs.
    pub summary: Option<String>,
    /// The building-level place path, or a case's own building text.
    pub building: Option<String>,
    /// The record's day, `YYYY-MM-DD`: its `date`, or a case's creation day (UTC+8).
    pub date: Option<String>,
    /// Some field of the merged document holds concurrent values.
    pub has_conflicts: bool,
}

pub(super) const ROW_COLUMNS: &str =
    "id, kind, place, status, category, created_at, updated_at, last_seq, value, personal,
     source, session_id, departments, deadline, satisfaction, summary, building, date,
     has_conflicts";

pub(super) fn record_from_row(row: &SqliteRow) -> Result<RecordRow> {
    let departments: Option<String> = row.try_get("departments")?;
    let has_conflicts: Option<i64> = row.try_get("has_conflicts")?;
    Ok(RecordRow {
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
        has_conflicts: has_conflicts == Some(1),
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        place: row.try_get("place")?,
        status: row.try_get("status")?,
        category: row.try_get("category")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_seq: row.try_get("last_seq")?,
        value: row.try_get("value")?,
        personal: row.try_get("personal")?,
    })
}

impl SqliteStore {
    /// A page of the projection, newest-updated first.
    pub async fn list_records(&self, filter: &RecordFilter) -> Result<Vec<RecordRow>> {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("SELECT {ROW_COLUMNS} FROM records WHERE "));
        push_within(&mut qb, "place", &filter.scopes);
        if let Some(kind) = filter.kind {
            qb.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(status) = &filter.status {
            qb.push(" AND status = ").push_bind(status.clone());
        }
        if let Some(category) = &filter.category {
            qb.push(" AND category = ").push_bind(category.clone());
        }
        if let Some(since) = filter.updated_since {
            qb.push(" AND updated_at >= ").push_bind(since);
        }
        if let Some((updated_at, id)) = &filter.after {
            qb.push(" AND (updated_at < ")
                .push_bind(*updated_at)
                .push(" OR (updated_at = ")
                .push_bind(*updated_at)
                .push(" AND id < ")
                .push_bind(id.clone())
                .push("))");
        }
        qb.push(" ORDER BY updated_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        qb.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record_from_row)
            .collect()
    }

    /// One projection row.
    pub async fn record_row(&self, id: RecordId) -> Result<Option<RecordRow>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM records WHERE id = ?"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(record_from_row)
        .transpose()
    }
}
