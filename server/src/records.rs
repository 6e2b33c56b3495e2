//! The records API (JSON, authenticated): lists from the projection table and one record's
//! detail with its conflicts and history, enriched with who pushed each change.
//!
//! Only records within the caller's grants are visible; others are answered 404 as if missing.
//! Residents' names and phone numbers are shown in full only to office and admin (from the
//! record's personal part); stewards and bus teams see the masked form the shared document holds.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use linli_sync_core::protocol::Part;
use linli_sync_core::schema;
use linli_sync_core::{PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::AuthUser;
use crate::error::{Error, Result};
use crate::extract::{PathParams, QueryParams};
use crate::model::{Role, hex};
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{ChangeMeta, RecordFilter, RecordRow};

/// Default page size of lists.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of lists.
pub const MAX_LIMIT: u32 = 500;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/records", get(list))
        .route("/v1/records/{id}", get(detail))
}

/// Query of `GET /v1/records`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// `case`, `bus`, `contact` or `volunteer`.
    pub kind: Option<String>,
    /// A place path: only records within it.
    pub place: Option<String>,
    /// A case status code.
    pub status: Option<String>,
    /// A case category code.
    pub category: Option<String>,
    /// RFC 3339 time or ms since the epoch: only records updated since.
    pub updated_since: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// One record in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordSummary {
    /// Record id.
    pub id: String,
    /// Kind code.
    pub kind: String,
    /// Place path.
    pub place: String,
    /// Case status.
    pub status: Option<String>,
    /// Case category.
    pub category: Option<String>,
    /// First receive time, ms.
    pub created_at: i64,
    /// Last receive time, ms.
    pub updated_at: i64,
    /// The typed record (personal data masked per role).
    pub value: Value,
}

/// `GET /v1/records` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordPage {
    /// Newest-updated first.
    pub records: Vec<RecordSummary>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next: Option<String>,
}

fn codes_list(codes: &[schema::Code]) -> String {
    codes.iter().map(|c| c.code).collect::<Vec<_>>().join(", ")
}

fn check_code(what: &str, codes: &[schema::Code], value: &str) -> Result<()> {
    if codes.iter().any(|c| c.code == value) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "unknown {what} '{value}' (expected one of {})",
            codes_list(codes)
        )))
    }
}

/// Parses `updated_since`: RFC 3339 or integer milliseconds.
fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            Error::BadRequest(format!(
                "updated_since '{s}' is not a time (expected RFC 3339 such as \
                 2024-05-01T08:00:00+08:00, or milliseconds since the epoch)"
            ))
        })
}

fn parse_after(s: &str) -> Result<(i64, String)> {
    let bad = || Error::BadRequest("after: not a cursor this server issued".into());
    let (at, id) = s.split_once('.').ok_or_else(bad)?;
    let at: i64 = at.parse().map_err(|_| bad())?;
    let id: RecordId = id.parse().map_err(|_| bad())?;
    Ok((at, id.to_string()))
}

/// Masks residents' personal fields in a record value (their masked form, unless already so):
/// records stored before the personal part existed may still hold full values.
fn mask_value(kind: RecordKind, value: &mut Value) {
    for spec in kind.fields().iter().filter(|f| f.personal) {
        if let Some(Value::String(v)) = value.get_mut(spec.name)
            && !schema::is_masked(spec, v)
        {
            *v = schema::mask_personal(spec, v);
        }
    }
}

/// A record's value as `role` may see it: personal fields in full (from the record's personal
/// part) for roles that read residents' personal data, masked for the others. Every page, list
/// and export shows record values through this one function.
pub fn value_for_role(row: &RecordRow, role: Role) -> Result<Value> {
    let kind: RecordKind = row.kind.parse().map_err(Error::internal)?;
    let mut value: Value = serde_json::from_str(&row.value).map_err(Error::internal)?;
    if role.sees_personal_data() {
        if let Some(personal) = &row.personal {
            let personal: Value = serde_json::from_str(personal).map_err(Error::internal)?;
            if let (Value::Object(v), Value::Object(p)) = (&mut value, personal) {
                v.extend(p);
            }
        }
    } else {
        mask_value(kind, &mut value);
    }
    Ok(value)
}

fn summary(row: RecordRow, role: Role) -> Result<RecordSummary> {
    let value = value_for_role(&row, role)?;
    Ok(RecordSummary {
        id: row.id,
        kind: row.kind,
        place: row.place,
        status: row.status,
        category: row.category,
        created_at: row.created_at,
        updated_at: row.updated_at,
        value,
    })
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<RecordPage>> {
    let kind = match q.kind.as_deref().filter(|s| !s.is_empty()) {
        Some(k) => Some(k.parse::<RecordKind>().map_err(|_| {
            let kinds: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
            Error::BadRequest(format!(
                "unknown kind '{k}' (expected one of {})",
                kinds.join(", ")
            ))
        })?),
        None => None,
    };
    let status = q.status.filter(|s| !s.is_empty());
    if let Some(s) = &status {
        check_code("status", schema::CASE_STATUSES, s)?;
    }
    let category = q.category.filter(|s| !s.is_empty());
    if let Some(c) = &category {
        check_code("category", schema::CATEGORIES, c)?;
    }
    let place = match q.place.as_deref().filter(|s| !s.is_empty()) {
        Some(p) => Some(
            p.parse::<PlaceId>()
                .map_err(|e| Error::BadRequest(e.to_string()))?,
        ),
        None => None,
    };
    let updated_since = q.updated_since.as_deref().map(parse_time).transpose()?;
    let after = q
        .after
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(parse_after)
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);

    let filter = RecordFilter {
        scopes: user.scopes_within(place.as_ref()),
        kind,
        status,
        category,
        updated_since,
        after,
        limit: limit + 1,
    };
    let mut rows = state.store.list_records(&filter).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| format!("{}.{}", r.updated_at, r.id))
    } else {
        None
    };
    let records = rows
        .into_iter()
        .map(|r| summary(r, user.role))
        .collect::<Result<_>>()?;
    Ok(Json(RecordPage { records, next }))
}

/// One value of a conflicted field, with who set it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictValueView {
    /// The value (masked per role when personal).
    pub value: Value,
    /// Who pushed it (login name), if the server holds the change.
    pub user: Option<String>,
    /// Their display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// From which device.
    pub device: Option<String>,
    /// The Automerge actor (hex).
    pub actor: String,
    /// The device's claimed time, ms.
    pub claimed_at: i64,
    /// The server's receive time, ms.
    pub received_at: Option<i64>,
    /// The change hash (hex).
    pub change: String,
}

/// A conflicted field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictView {
    /// Field name.
    pub field: String,
    /// Chinese label.
    pub label: String,
    /// The value shown.
    pub winner: Value,
    /// Every concurrent value.
    pub values: Vec<ConflictValueView>,
}

/// One change of a record's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Change hash (hex).
    pub hash: String,
    /// Who pushed it (login name).
    pub user: Option<String>,
    /// Their display name.
    pub display_name: Option<String>,
    /// From which device.
    pub device: Option<String>,
    /// The Automerge actor (hex).
    pub actor: String,
    /// The device's claimed time, ms.
    pub claimed_at: i64,
    /// The server's receive time, ms.
    pub received_at: Option<i64>,
    /// Fields the change touched.
    pub touched: Vec<String>,
    /// The editing device's message.
    pub message: Option<String>,
    /// `record` (the shared document) or `personal` (residents' details; office and admin).
    pub part: String,
}

/// `GET /v1/records/{id}` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordDetail {
    /// Record id.
    pub id: String,
    /// Kind code.
    pub kind: String,
    /// Place path.
    pub place: String,
    /// Case status.
    pub status: Option<String>,
    /// Case category.
    pub category: Option<String>,
    /// First receive time, ms.
    pub created_at: i64,
    /// Last receive time, ms.
    pub updated_at: i64,
    /// The merged typed record.
    pub value: Value,
    /// Fields set differently by different people, with every value.
    pub conflicts: Vec<ConflictView>,
    /// Every change, in causal order.
    pub history: Vec<HistoryEntry>,
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<RecordDetail>> {
    record_detail(&state, &user, &id).await.map(Json)
}

/// One record as `user` may see it: its value, every conflict with who set each value, and its
/// history. 404 (as if missing) outside the user's grants. The API and the back-office pages
/// both show records through this.
pub async fn record_detail(state: &AppState, user: &AuthUser, id: &str) -> Result<RecordDetail> {
    let not_found = || Error::NotFound(format!("no record {id}"));
    let record: RecordId = id
        .parse()
        .map_err(|e: linli_sync_core::IdError| Error::BadRequest(e.to_string()))?;
    let row = state
        .store
        .record_row(record)
        .await?
        .ok_or_else(not_found)?;
    let place: PlaceId = row.place.parse().map_err(Error::internal)?;
    if !user.can_access(&place) {
        return Err(not_found());
    }
    let kind: RecordKind = row.kind.parse().map_err(Error::internal)?;
    let role = user.role;
    let bytes = state
        .store
        .record_doc(record)
        .await?
        .ok_or_else(not_found)?;
    let personal_bytes = if role.sees_personal_data() {
        state.store.personal_doc(record).await?
    } else {
        None
    };
    // Conflicts come from the documents (every concurrent value with the op that set it); the
    // history comes from the log, which already knows who pushed each change, when and what it
    // touched, so a long history costs no document work.
    let conflicts = tokio::task::spawn_blocking(move || {
        let mut doc = RecordDoc::load(record, &bytes)?;
        let mut conflicts = doc.conflicts();
        if let Some(p) = personal_bytes {
            let mut personal = PersonalDoc::load(record, &p)?;
            // Full values where someone with access captured them; the masked conflicts of the
            // shared document would only repeat them.
            let full = personal.conflicts(kind);
            conflicts.retain(|c| !full.iter().any(|f| f.field == c.field));
            conflicts.extend(full);
        }
        Ok::<_, linli_sync_core::RecordError>(conflicts)
    })
    .await
    .map_err(Error::internal)?
    .map_err(|e| Error::Internal(format!("stored document {record} does not load: {e}")))?;
    let log = state.store.change_meta(record).await?;
    let meta: HashMap<String, &ChangeMeta> = log.iter().map(|m| (hex(&m.hash), m)).collect();

    let conflicts = conflicts
        .into_iter()
        .map(|c| {
            let masked = !role.sees_personal_data()
                && kind
                    .fields()
                    .iter()
                    .any(|f| f.name == c.field && f.personal);
            let mask = |v: Value| match (masked, &v) {
                (true, Value::String(s)) => {
                    let spec = kind.fields().iter().find(|f| f.name == c.field);
                    match spec {
                        Some(spec) if !schema::is_masked(spec, s) => {
                            Value::String(schema::mask_personal(spec, s))
                        }
                        _ => v,
                    }
                }
                _ => v,
            };
            ConflictView {
                values: c
                    .values
                    .into_iter()
                    .map(|v| {
                        let m = meta.get(&v.change);
                        ConflictValueView {
                            value: mask(v.value),
                            user: m.map(|m| m.username.clone()),
                            display_name: m.map(|m| m.display_name.clone()),
                            device: m.map(|m| m.device_id.clone()),
                            actor: v.actor,
                            claimed_at: v.claimed_at,
                            received_at: m.map(|m| m.received_at),
                            change: v.change,
                        }
                    })
                    .collect(),
                winner: mask(c.winner),
                field: c.field,
                label: c.label,
            }
        })
        .collect();
    let history: Vec<HistoryEntry> = log
        .iter()
        .filter(|m| m.part == Part::Record || role.sees_personal_data())
        .map(|m| HistoryEntry {
            hash: hex(&m.hash),
            user: Some(m.username.clone()),
            display_name: Some(m.display_name.clone()),
            device: Some(m.device_id.clone()),
            actor: m.actor.clone(),
            claimed_at: m.claimed_at,
            received_at: Some(m.received_at),
            touched: m.touched.clone(),
            message: m.message.clone(),
            part: m.part.as_str().to_string(),
        })
        .collect();
    let summary = summary(row, role)?;
    Ok(RecordDetail {
        id: summary.id,
        kind: summary.kind,
        place: summary.place,
        status: summary.status,
        category: summary.category,
        created_at: summary.created_at,
        updated_at: summary.updated_at,
        value: summary.value,
        conflicts,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_are_full_for_office_and_masked_for_field_roles() {
        let row = |personal: Option<&str>| RecordRow {
            id: RecordId::new().to_string(),
            kind: "case".into(),
            place: "hz/baiyang".into(),
            status: None,
            category: None,
            created_at: 0,
            updated_at: 0,
            last_seq: 0,
            value: r#"{"resident_phone":"138****5678","resident_name":"王**"}"#.into(),
            personal: personal.map(String::from),
            ..Default::default()
        };
        let full = row(Some(
            r#"{"resident_phone":"13812345678","resident_name":"王小明"}"#,
        ));
        let office = value_for_role(&full, Role::Office).unwrap();
        assert_eq!(office["resident_phone"], "13812345678");
        assert_eq!(office["resident_name"], "王小明");
        let steward = value_for_role(&full, Role::Steward).unwrap();
        assert_eq!(steward["resident_phone"], "138****5678");
        assert_eq!(steward["resident_name"], "王**");
        // A record stored before personal parts existed is masked on the way out.
        let mut legacy = row(None);
        legacy.value = r#"{"resident_phone":"13812345678","resident_name":"王小明"}"#.into();
        let steward = value_for_role(&legacy, Role::Bus).unwrap();
        assert_eq!(steward["resident_phone"], "138****5678");
        assert_eq!(steward["resident_name"], "王**");
    }

    #[test]
    fn times_and_cursors_parse() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time("yesterday").is_err());
        let id = RecordId::new();
        assert_eq!(
            parse_after(&format!("5.{id}")).unwrap(),
            (5, id.to_string())
        );
        assert!(parse_after("5").is_err());
    }
}
