//! One record's page: its merged fields with labels, each conflict with every value and who set
//! it (one button resolves it), the history as a timeline, notes, and the office's work on a
//! case (assign departments and a deadline, move the status, record the resolution and the
//! resident's evaluation).
//!
//! Every action is an Automerge change made here under the session's actor (bound to the
//! browser's device) and handed to [`crate::sync::submit`]: the same `sync-core` checks, the same
//! commit and log as a phone's push, so it shows in history with the staff member's name and
//! phones pull it at their next sync.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use linli_sync_core::capture::{self, Captured};
use linli_sync_core::protocol::{Part, PushChange};
use linli_sync_core::schema::{self, RecordKind};
use linli_sync_core::{EditContext, PersonalDoc, RecordDoc, RecordError, RecordId};
use serde_json::Value;

use super::session::{Fields, Posted, WebUser};
use super::view::{self, Nav, PlaceNames};
use super::{WebError, WebResult, render};
use crate::model::{now_ms, unhex};
use crate::records::{RecordDetail, record_detail, value_for_role};
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{OfficeFilter, Sort};

/// Statuses after which a case no longer counts as overdue.
pub const CLOSED_STATUSES: &[&str] = &["resolved", "evaluated", "withdrawn"];

/// A labelled field.
pub struct FieldView {
    /// Field name.
    pub name: &'static str,
    /// Chinese label.
    pub label: &'static str,
    /// The value as people read it.
    pub text: String,
}

/// One value of a conflict.
pub struct ConflictValueRow {
    /// The value as people read it.
    pub text: String,
    /// Who set it: display name (login name).
    pub who: String,
    /// The device's name or id.
    pub device: String,
    /// The device's claimed time.
    pub claimed: String,
    /// When the server received it.
    pub received: String,
    /// Is it the value shown now.
    pub shown: bool,
}

/// A conflicted field.
pub struct ConflictRow {
    /// Field name.
    pub field: String,
    /// Chinese label.
    pub label: String,
    /// Every value.
    pub values: Vec<ConflictValueRow>,
}

/// One change in the timeline.
pub struct HistoryRow {
    /// Who: display name (login name).
    pub who: String,
    /// The server's receive time.
    pub received: String,
    /// The device's claimed time, when it differs from the receive time by over a minute.
    pub claimed: Option<String>,
    /// What it touched, as labels.
    pub what: String,
    /// The device's name or id.
    pub device: String,
}

/// A note.
pub struct NoteRow {
    /// Author.
    pub author: String,
    /// When.
    pub at: String,
    /// Text.
    pub text: String,
}

/// A case linked to a bus session.
pub struct LinkedCase {
    /// Record id.
    pub id: String,
    /// Summary.
    pub summary: String,
    /// Status label.
    pub status: String,
}

/// Everything the record page shows.
pub struct DetailView {
    /// Record id.
    pub id: String,
    /// Kind code.
    pub kind: &'static str,
    /// Kind label.
    pub kind_label: &'static str,
    /// One-line title.
    pub title: String,
    /// Place names.
    pub place: String,
    /// Status code (cases).
    pub status: String,
    /// Status label (cases).
    pub status_label: String,
    /// Deadline passed and not closed.
    pub overdue: bool,
    /// Fields with labels.
    pub fields: Vec<FieldView>,
    /// Conflicts.
    pub conflicts: Vec<ConflictRow>,
    /// History, oldest first.
    pub history: Vec<HistoryRow>,
    /// Notes, oldest first.
    pub notes: Vec<NoteRow>,
    /// For a contact: the case it opened.
    pub case_link: Option<String>,
    /// For a bus session: its cases.
    pub cases: Vec<LinkedCase>,
    /// For a case: its bus session's record id.
    pub session_link: Option<String>,
    /// The CSRF token for the forms.
    pub csrf: String,
    /// A message after an action.
    pub flash: Option<&'static str>,
    /// Department choices: (code, label, checked).
    pub departments: Vec<(&'static str, &'static str, bool)>,
    /// Status choices: (code, label).
    pub statuses: Vec<(&'static str, &'static str)>,
    /// Satisfaction choices: (code, label, checked).
    pub satisfaction: Vec<(&'static str, &'static str, bool)>,
    /// The current deadline.
    pub deadline: String,
    /// The current resolution text.
    pub resolution: String,
    /// Created and updated times.
    pub created: String,
    /// Last update.
    pub updated: String,
}

#[derive(Template)]
#[template(path = "detail.html")]
struct DetailPage {
    nav: Nav,
    d: DetailView,
}

#[derive(Template)]
#[template(path = "detail_body.html")]
struct DetailBody {
    d: DetailView,
}

fn flash_text(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "note" => "备注已添加。",
        "assign" => "已转办并设定办结时限。",
        "status" => "状态已更新。",
        "resolution" => "办理结果和满意度已记录。",
        "resolve" => "冲突已解决，所选值已保存。",
        _ => return None,
    })
}

fn who(user: Option<&String>, display: Option<&String>) -> String {
    match (display, user) {
        (Some(d), Some(u)) if !d.is_empty() => format!("{d}（{u}）"),
        (_, Some(u)) => u.clone(),
        _ => "未知".into(),
    }
}

async fn build(
    state: &AppState,
    user: &WebUser,
    detail: RecordDetail,
    flash: Option<&'static str>,
) -> WebResult<DetailView> {
    let kind: RecordKind = detail
        .kind
        .parse()
        .map_err(|_| WebError::page(StatusCode::INTERNAL_SERVER_ERROR, "记录类型无法识别。"))?;
    let names = PlaceNames::load(&state.store).await?;
    // Only the devices this record's history and conflicts name, not every device there is.
    let mut ids: Vec<&str> = detail
        .history
        .iter()
        .filter_map(|h| h.device.as_deref())
        .chain(
            detail
                .conflicts
                .iter()
                .flat_map(|c| c.values.iter().filter_map(|v| v.device.as_deref())),
        )
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let devices: std::collections::HashMap<String, String> = state
        .store
        .device_names(&ids)
        .await?
        .into_iter()
        .map(|(id, name)| {
            let name = if name.is_empty() {
                format!("设备 {}", id.get(..8).unwrap_or(&id))
            } else {
                name
            };
            (id, name)
        })
        .collect();
    let device = |id: Option<&String>| {
        id.map(|i| devices.get(i).cloned().unwrap_or_else(|| i.clone()))
            .unwrap_or_default()
    };
    let value = &detail.value;
    let fields = kind
        .fields()
        .iter()
        // Links stand for the ids of the session and case a record belongs to.
        .filter(|f| {
            !matches!(
                f.name,
                "kind" | "schema" | "place" | "session_id" | "case_id"
            )
        })
        .map(|f| FieldView {
            name: f.name,
            label: f.label,
            text: match (f.name, value.get(f.name)) {
                ("created_at", Some(Value::Number(n))) => {
                    n.as_i64().map(view::time).unwrap_or_default()
                }
                (_, v) => view::field_text(f, v.unwrap_or(&Value::Null)),
            },
        })
        .collect();
    let conflicts = detail
        .conflicts
        .iter()
        .map(|c| {
            let spec = kind.field(&c.field).ok();
            let text = |v: &Value| match spec {
                Some(s) => view::field_text(s, v),
                None => v.to_string(),
            };
            ConflictRow {
                field: c.field.clone(),
                label: c.label.clone(),
                values: c
                    .values
                    .iter()
                    .map(|v| ConflictValueRow {
                        text: text(&v.value),
                        who: who(v.user.as_ref(), v.display_name.as_ref()),
                        device: device(v.device.as_ref()),
                        claimed: view::time(v.claimed_at),
                        received: v.received_at.map(view::time).unwrap_or_default(),
                        shown: v.value == c.winner,
                    })
                    .collect(),
            }
        })
        .collect();
    let history = detail
        .history
        .iter()
        .map(|h| {
            let received = h.received_at.unwrap_or(h.claimed_at);
            let what: Vec<String> = h
                .touched
                .iter()
                .map(|t| {
                    kind.field(t)
                        .map(|s| s.label.to_string())
                        .unwrap_or_else(|_| {
                            if t == "notes" {
                                "备注".into()
                            } else {
                                t.clone()
                            }
                        })
                })
                .collect();
            let created = h
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("create"));
            let what = if created && h.part != "personal" {
                "创建记录".into()
            } else if h.part == "personal" {
                format!("居民信息：{}", what.join("、"))
            } else if what.is_empty() {
                "创建".into()
            } else {
                what.join("、")
            };
            HistoryRow {
                who: who(h.user.as_ref(), h.display_name.as_ref()),
                received: view::time(received),
                claimed: ((h.claimed_at - received).abs() > 60_000)
                    .then(|| view::time(h.claimed_at)),
                what,
                device: device(h.device.as_ref()),
            }
        })
        .collect();
    let notes = value
        .get("notes")
        .and_then(Value::as_array)
        .map(|notes| {
            notes
                .iter()
                .map(|n| NoteRow {
                    author: n.get("author").and_then(Value::as_str).unwrap_or("").into(),
                    at: n
                        .get("at")
                        .and_then(Value::as_i64)
                        .map(view::time)
                        .unwrap_or_default(),
                    text: n.get("text").and_then(Value::as_str).unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let str_field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let status = str_field("status");
    let deadline = str_field("deadline");
    let overdue = kind == RecordKind::Case
        && !deadline.is_empty()
        && deadline < view::today()
        && !CLOSED_STATUSES.contains(&status.as_str());
    let chosen: Vec<String> = value
        .get("departments")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let satisfaction = str_field("satisfaction");
    let cases = if kind == RecordKind::Bus {
        linked_cases(state, user, &detail.id).await?
    } else {
        Vec::new()
    };
    Ok(DetailView {
        id: detail.id.clone(),
        kind: kind.as_str(),
        kind_label: kind.label(),
        title: view::title(kind, value),
        place: names.label(&detail.place),
        status_label: if status.is_empty() {
            String::new()
        } else {
            schema::code_label(schema::CASE_STATUSES, &status)
        },
        status,
        overdue,
        fields,
        conflicts,
        history,
        notes,
        case_link: (kind == RecordKind::Contact)
            .then(|| str_field("case_id"))
            .filter(|c| c.parse::<RecordId>().is_ok()),
        session_link: (kind == RecordKind::Case)
            .then(|| str_field("session_id"))
            .filter(|c| c.parse::<RecordId>().is_ok()),
        cases,
        csrf: user.csrf.clone(),
        flash,
        departments: schema::DEPARTMENTS
            .iter()
            .map(|c| (c.code, c.label, chosen.iter().any(|d| d == c.code)))
            .collect(),
        statuses: schema::CASE_STATUSES
            .iter()
            .map(|c| (c.code, c.label))
            .collect(),
        satisfaction: schema::SATISFACTION
            .iter()
            .map(|c| (c.code, c.label, satisfaction == c.code))
            .collect(),
        resolution: str_field("resolution"),
        deadline,
        created: view::time(detail.created_at),
        updated: view::time(detail.updated_at),
    })
}

/// The cases a bus session opened (their `session_id` names it), newest first.
async fn linked_cases(state: &AppState, user: &WebUser, id: &str) -> WebResult<Vec<LinkedCase>> {
    let filter = OfficeFilter {
        scopes: user.auth.places.clone(),
        kind: Some(RecordKind::Case),
        session_id: Some(id.to_string()),
        sort: Sort::Created,
        limit: 200,
        ..OfficeFilter::default()
    };
    let (rows, _) = state.store.office_page(&filter).await?;
    rows.iter()
        .map(|row| {
            let value = value_for_role(row, user.auth.role)?;
            Ok(LinkedCase {
                id: row.id.clone(),
                summary: view::title(RecordKind::Case, &value),
                status: view::value_text(RecordKind::Case, &value, "status"),
            })
        })
        .collect()
}

/// `GET /office/records/{id}`: the record page (`?partial=1`: its body only, for live refresh).
pub async fn page(
    State(state): State<AppState>,
    user: WebUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> WebResult {
    let q = Fields::parse(query.unwrap_or_default().as_bytes());
    if id.parse::<RecordId>().is_err() {
        return Err(WebError::not_found());
    }
    let detail = record_detail(&state, &user.auth, &id).await?;
    let d = build(&state, &user, detail, flash_text(q.get("done"))).await?;
    if q.get("partial").is_some() {
        return Ok(Html(DetailBody { d }.render()?).into_response());
    }
    render(&DetailPage {
        nav: Nav::new(&user, "records"),
        d,
    })
}

/// Makes one edit on a record as the session's user and submits it through the accept path;
/// then back to the record page with a message.
async fn edit(
    state: &AppState,
    user: &WebUser,
    id: &str,
    done: &'static str,
    f: impl FnOnce(
        RecordKind,
        &mut RecordDoc,
        &mut PersonalDoc,
        &EditContext,
    ) -> Result<Captured, RecordError>,
) -> WebResult {
    let record: RecordId = id.parse().map_err(|_| WebError::not_found())?;
    let Some((mut doc, mut personal)) = crate::sync::load_docs(state, &user.auth, record).await?
    else {
        return Err(WebError::not_found());
    };
    let actor = unhex(&user.actor)
        .map(automerge::ActorId::from)
        .ok_or_else(|| {
            WebError::page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "会话数据损坏，请重新登录。",
            )
        })?;
    let ctx = EditContext {
        actor,
        user: user.auth.username.clone(),
        now_ms: now_ms(),
    };
    let unprocessable = |e: String| WebError::page(StatusCode::UNPROCESSABLE_ENTITY, e);
    let kind = doc
        .kind()
        .map_err(|e| unprocessable(format!("记录无法读取：{e}")))?;
    let captured = f(kind, &mut doc, &mut personal, &ctx)
        .map_err(|e| unprocessable(format!("无法保存：{e}")))?;
    for (part, change) in [
        (Part::Record, captured.record),
        (Part::Personal, captured.personal),
    ] {
        let Some(change) = change else { continue };
        let push = PushChange {
            record: *record.as_bytes(),
            kind,
            part,
            change: change.raw_bytes().to_vec(),
        };
        if let Err(r) = crate::sync::submit(state, &user.auth, &push).await {
            return Err(unprocessable(format!(
                "服务器拒绝了这次修改：{}",
                r.message
            )));
        }
    }
    Ok(Redirect::to(&format!("/office/records/{id}?done={done}")).into_response())
}

fn set(
    doc: &mut RecordDoc,
    personal: &mut PersonalDoc,
    ctx: &EditContext,
    fields: Vec<(&str, String)>,
) -> Result<Captured, RecordError> {
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    capture::set_fields(doc, personal, ctx, &fields)
}

fn require_case(kind: RecordKind) -> Result<(), RecordError> {
    if kind == RecordKind::Case {
        Ok(())
    } else {
        Err(RecordError::invalid("kind", "只有诉求可以办理"))
    }
}

/// `POST /office/records/{id}/note`: adds a note.
pub async fn add_note(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    let text = form.get("text").unwrap_or("").to_string();
    edit(&state, &user, &id, "note", |_, doc, _, ctx| {
        Ok(Captured {
            record: Some(doc.add_note(ctx, &text)?),
            personal: None,
        })
    })
    .await
}

/// `POST /office/records/{id}/assign`: hands a case to departments with a deadline (a case
/// still at 受理 or 现场解答 moves to 转办).
pub async fn assign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    let departments = form.all("departments").join(",");
    let deadline = form.get("deadline").unwrap_or("").to_string();
    edit(&state, &user, &id, "assign", |kind, doc, personal, ctx| {
        require_case(kind)?;
        if departments.is_empty() {
            return Err(RecordError::invalid(
                "departments",
                "请至少选择一个责任部门",
            ));
        }
        let status = doc
            .record()
            .ok()
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.get("status").and_then(Value::as_str).map(String::from))
            .unwrap_or_default();
        let mut fields = vec![("departments", departments), ("deadline", deadline)];
        if matches!(status.as_str(), "received" | "answered_on_site") {
            fields.push(("status", "assigned".into()));
        }
        set(doc, personal, ctx, fields)
    })
    .await
}

/// `POST /office/records/{id}/status`: moves a case's status.
pub async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    let status = form.get("status").unwrap_or("").to_string();
    edit(&state, &user, &id, "status", |kind, doc, personal, ctx| {
        require_case(kind)?;
        set(doc, personal, ctx, vec![("status", status)])
    })
    .await
}

/// `POST /office/records/{id}/resolution`: records how a case was resolved and the resident's
/// evaluation.
pub async fn resolution(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    let text = form.get("resolution").unwrap_or("").to_string();
    let satisfaction = form.get("satisfaction").unwrap_or("").to_string();
    edit(
        &state,
        &user,
        &id,
        "resolution",
        |kind, doc, personal, ctx| {
            require_case(kind)?;
            let mut fields = vec![("resolution", text)];
            if !satisfaction.is_empty() {
                fields.push(("satisfaction", satisfaction));
                fields.push(("status", "evaluated".into()));
            } else {
                fields.push(("status", "resolved".into()));
            }
            set(doc, personal, ctx, fields)
        },
    )
    .await
}

/// The text form of a conflict value, as `set_fields` takes it.
fn as_field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `POST /office/records/{id}/resolve`: keeps one of a conflict's values (`field`, `choice` = its
/// index as shown), written as a new change after all of them, so the conflict is gone.
pub async fn resolve_conflict(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { user, form }: Posted,
) -> WebResult {
    let field = form.get("field").unwrap_or("").to_string();
    let choice: usize = form
        .get("choice")
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| WebError::page(StatusCode::BAD_REQUEST, "请选择要保留的值。"))?;
    let detail = record_detail(&state, &user.auth, &id).await?;
    let Some(value) = detail
        .conflicts
        .iter()
        .find(|c| c.field == field)
        .and_then(|c| c.values.get(choice))
        .map(|v| as_field_text(&v.value))
    else {
        return Err(WebError::page(
            StatusCode::CONFLICT,
            "该冲突已被他人解决或记录已更新，请刷新页面后查看。",
        ));
    };
    edit(&state, &user, &id, "resolve", |kind, doc, personal, ctx| {
        let spec = kind.field(&field)?;
        set(doc, personal, ctx, vec![(spec.name, value)])
    })
    .await
}
