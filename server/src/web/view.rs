//! Formatting shared by the pages: labels, times in China Standard Time, place names, field
//! values as people read them, and the navigation bar.

use std::collections::HashMap;

use chrono::{FixedOffset, TimeZone};
use linli_sync_core::schema::{self, FieldSpec, FieldType, RecordKind};
use serde_json::Value;

use super::session::WebUser;
use crate::error::Result;
use crate::model::Role;
use crate::store::Store;
use crate::store::prelude::*;

/// China Standard Time (UTC+8, no daylight saving): the time staff read.
pub fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// `YYYY-MM-DD HH:MM` in China Standard Time.
pub fn time(ms: i64) -> String {
    cst()
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Today's date in China Standard Time, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Utc::now()
        .with_timezone(&cst())
        .format("%Y-%m-%d")
        .to_string()
}

/// Percent-encodes a query value.
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The Chinese name of a role.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Steward => "楼长",
        Role::Bus => "直通车队员",
        Role::Office => "社区/街道工作人员",
        Role::Admin => "系统管理员",
    }
}

/// A short name of the browser from its `User-Agent`, for the device list.
pub fn browser_name(agent: &str) -> &'static str {
    if agent.contains("Edg/") {
        "Edge"
    } else if agent.contains("Chrome/") || agent.contains("Chromium/") {
        "Chrome"
    } else if agent.contains("Firefox/") {
        "Firefox"
    } else if agent.contains("Safari/") {
        "Safari"
    } else {
        "浏览器"
    }
}

/// Names of places by path, to show `海天社区 / 海天城小区 / 3幢` instead of paths.
#[derive(Debug, Clone, Default)]
pub struct PlaceNames(HashMap<String, String>);

impl PlaceNames {
    /// Every place's name (the place tree is small: streets, communities, estates, buildings).
    pub async fn load(store: &Store) -> Result<Self> {
        Ok(Self(
            store
                .all_places()
                .await?
                .into_iter()
                .map(|p| (p.id.to_string(), p.name))
                .collect(),
        ))
    }

    /// The name of one place (its path when unnamed).
    pub fn name(&self, path: &str) -> String {
        self.0
            .get(path)
            .cloned()
            .unwrap_or_else(|| path.to_string())
    }

    /// The names from below the street down to `path`, joined with " / ".
    pub fn label(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('/').collect();
        let from = parts.len().saturating_sub(3).max(1).min(parts.len() - 1);
        (from..parts.len())
            .map(|i| self.name(&parts[..=i].join("/")))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// A field value as people read it: codes as their labels, lists joined, numbers plain.
pub fn field_text(spec: &FieldSpec, value: &Value) -> String {
    match (spec.ty, value) {
        (_, Value::Null) => String::new(),
        (FieldType::Code(codes), Value::String(s)) => schema::code_label(codes, s),
        (FieldType::Codes(codes), Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => schema::code_label(codes, s),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("、"),
        (_, Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("、"),
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Bool(b)) => if *b { "是" } else { "否" }.to_string(),
        (_, other) => other.to_string(),
    }
}

/// The field of a record value as text (empty when absent).
pub fn value_text(kind: RecordKind, value: &Value, field: &str) -> String {
    kind.field(field)
        .map(|spec| field_text(spec, value.get(field).unwrap_or(&Value::Null)))
        .unwrap_or_default()
}

/// A record's one-line title: a case's summary, a bus session's run, a contact's household, a
/// volunteer activity.
pub fn title(kind: RecordKind, value: &Value) -> String {
    let t = match kind {
        RecordKind::Case => value_text(kind, value, "summary"),
        RecordKind::Bus => {
            let run = value_text(kind, value, "run_number");
            let ty = value_text(kind, value, "session_type");
            format!("{ty} {run}期 {}", value_text(kind, value, "date"))
        }
        RecordKind::Contact => format!(
            "{} {}",
            value_text(kind, value, "household"),
            value_text(kind, value, "channel")
        ),
        RecordKind::Volunteer => value_text(kind, value, "activity"),
    };
    let t = t.trim().to_string();
    if t.chars().count() > 80 {
        t.chars().take(80).collect::<String>() + "…"
    } else {
        t
    }
}

/// The navigation bar's data, on every page.
#[derive(Debug, Clone)]
pub struct Nav {
    /// The signed-in user's display name.
    pub display_name: String,
    /// Their role's label.
    pub role: &'static str,
    /// Shows the administration menu.
    pub is_admin: bool,
    /// The CSRF token (the sign-out form needs it).
    pub csrf: String,
    /// Which menu entry is current: `records`, `stats` or `admin`.
    pub active: &'static str,
}

impl Nav {
    /// The bar for `user` with `active` highlighted.
    pub fn new(user: &WebUser, active: &'static str) -> Self {
        Self {
            display_name: user.display_name.clone(),
            role: role_label(user.auth.role),
            is_admin: user.is_admin(),
            csrf: user.csrf.clone(),
            active,
        }
    }
}
