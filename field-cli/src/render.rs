//! Human-readable output (English with Chinese labels) and the JSON form of `show`.

use std::fmt::Write;

use chrono::{Local, TimeZone};
use linli_ffi::{
    FieldType, KindInfo, OutboxItem, OutboxState, RecordSummary, RecordView, SyncReport, WhoAmI,
};
use serde_json::{Value, json};

/// A time in ms since the epoch, in local time.
fn when(ms: i64) -> String {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn kind_of<'a>(kinds: &'a [KindInfo], code: &str) -> Option<&'a KindInfo> {
    kinds.iter().find(|k| k.code == code)
}

/// `label (code)` for a coded value, the value itself otherwise.
fn code_text(kind: Option<&KindInfo>, field: &str, code: &str) -> String {
    kind.and_then(|k| k.fields.iter().find(|f| f.name == field))
        .and_then(|f| f.choices.iter().find(|c| c.code == code))
        .map(|c| format!("{} ({code})", c.label))
        .unwrap_or_else(|| code.to_string())
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// JSON text of a value to show: strings bare, the rest as JSON.
fn plain(json_text: &str) -> String {
    match serde_json::from_str::<Value>(json_text) {
        Ok(Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => json_text.to_string(),
    }
}

/// The `kinds` command.
pub fn kinds(kinds: &[KindInfo]) -> String {
    let mut out = String::new();
    for k in kinds {
        let _ = writeln!(out, "{} {}", k.code, k.label);
        for f in k.fields.iter().filter(|f| f.field_type != FieldType::Fixed) {
            let mut flags = vec![f.field_type.to_string()];
            if f.required {
                flags.push("required 必填".into());
            }
            if f.personal {
                flags.push("personal 个人信息".into());
            }
            let _ = writeln!(
                out,
                "  {:<18} {:<10} [{}]",
                f.name,
                f.label,
                flags.join(", ")
            );
            if !f.choices.is_empty() {
                let choices: Vec<String> = f
                    .choices
                    .iter()
                    .map(|c| format!("{}={}", c.code, c.label))
                    .collect();
                let _ = writeln!(out, "  {:<18} {}", "", choices.join("  "));
            }
        }
        out.push('\n');
    }
    out
}

/// The `list` command.
pub fn list(list: &[RecordSummary]) -> String {
    if list.is_empty() {
        return "no records on this phone 暂无记录".into();
    }
    let kinds = linli_ffi::record_kinds();
    let mut out = String::new();
    for r in list {
        let kind = kind_of(&kinds, r.kind.map_or("", |k| k.as_str()));
        let label = kind
            .map(|k| k.label.as_str())
            .unwrap_or("(incomplete 未完整)");
        let status = r
            .status
            .as_deref()
            .map(|s| code_text(kind, "status", s))
            .unwrap_or_default();
        let mut pending = String::new();
        if r.pending_changes > 0 {
            pending = format!(" [{} unsent 待发送", r.pending_changes);
            if r.rejected_changes > 0 {
                let _ = write!(pending, ", {} refused 被拒", r.rejected_changes);
            }
            pending.push(']');
        }
        let _ = writeln!(
            out,
            "{}  {} {}  {}  {}{}",
            r.id, label, status, r.place, r.title, pending
        );
    }
    out
}

/// The JSON form of `show`: values parsed, not JSON-in-a-string.
pub fn view_json(v: &RecordView) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    json!({
        "id": v.id,
        "kind": v.kind,
        "kind_label": v.kind_label,
        "place": v.place,
        "status": v.status,
        "title": v.title,
        "value": parse(&v.value_json),
        "pending_changes": v.pending_changes,
        "conflicts": v.conflicts.iter().map(|c| json!({
            "field": c.field,
            "label": c.label,
            "winner": parse(&c.winner_json),
            "values": c.values.iter().map(|x| json!({
                "value": parse(&x.value_json),
                "user": x.user,
                "device": x.device,
                "change": x.change,
                "claimed_at": x.claimed_at,
                "received_at": x.received_at,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "history": v.history,
    })
}

/// The `show` command.
pub fn view(v: &RecordView) -> String {
    let kinds = linli_ffi::record_kinds();
    let kind = kind_of(&kinds, v.kind.as_str());
    let value: Value = serde_json::from_str(&v.value_json).unwrap_or(Value::Null);
    let mut out = String::new();
    let _ = writeln!(out, "{} ({}) {}", v.kind_label, v.kind, v.id);
    let _ = writeln!(out, "位置 place: {}", v.place);
    if v.pending_changes > 0 {
        let _ = writeln!(out, "待发送 unsent changes: {}", v.pending_changes);
    }
    let _ = writeln!(out, "\n字段 fields:");
    for f in kind.map(|k| k.fields.as_slice()).unwrap_or_default() {
        if matches!(f.name.as_str(), "kind" | "schema" | "place") {
            continue;
        }
        let shown = match value.get(&f.name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::Array(a)) if a.is_empty() => continue,
            Some(Value::String(s)) if f.name == "created_at" => s.clone(),
            Some(Value::Number(n)) if f.name == "created_at" => {
                when(n.as_i64().unwrap_or_default())
            }
            Some(Value::String(s)) => code_text(kind, &f.name, s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| code_text(kind, &f.name, i.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
        };
        let _ = writeln!(out, "  {} {}: {}", f.label, f.name, shown);
    }
    if let Some(notes) = value
        .get("notes")
        .and_then(Value::as_array)
        .filter(|n| !n.is_empty())
    {
        let _ = writeln!(out, "\n备注 notes:");
        for n in notes {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                when(n["at"].as_i64().unwrap_or_default()),
                n["author"].as_str().unwrap_or_default(),
                n["text"].as_str().unwrap_or_default()
            );
        }
    }
    if !v.conflicts.is_empty() {
        let _ = writeln!(
            out,
            "\n冲突 conflicts (every value is kept; the first line is the one shown):"
        );
        for c in &v.conflicts {
            let _ = writeln!(
                out,
                "  {} {}: shown 显示 {}",
                c.label,
                c.field,
                plain(&c.winner_json)
            );
            for x in &c.values {
                let mut who = x.user.clone();
                if !x.device.is_empty() {
                    let _ = write!(who, " on device {}", short(&x.device));
                }
                let at = match x.received_at {
                    Some(t) => format!("received {}", when(t)),
                    None => format!("claimed {}", when(x.claimed_at)),
                };
                let _ = writeln!(
                    out,
                    "    - {}  set by 设置人 {}, {}",
                    plain(&x.value_json),
                    who,
                    at
                );
            }
        }
    }
    let _ = writeln!(out, "\n历史 history:");
    for h in &v.history {
        let at = h.received_at.unwrap_or(h.claimed_at);
        let _ = writeln!(
            out,
            "  {}  {:<16} {:<8} {}{}",
            when(at),
            h.user,
            h.state,
            h.message.as_deref().unwrap_or("change"),
            if h.touched.is_empty()
                || h.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("create"))
            {
                String::new()
            } else {
                format!(" [{}]", h.touched.join(", "))
            }
        );
    }
    out
}

/// The `sync` command.
pub fn sync(r: &SyncReport) -> String {
    let mut out = format!(
        "pushed 已发送 {}, accepted 已接受 {}, pulled 已接收 {}, rejected 被拒 {}",
        r.pushed,
        r.accepted,
        r.pulled,
        r.rejected.len()
    );
    if r.skipped > 0 {
        let _ = write!(out, ", skipped damaged {}", r.skipped);
    }
    if r.more_pending {
        out.push_str(" (more to sync: run sync again 还有待同步)");
    }
    out.push('\n');
    for x in &r.rejected {
        let _ = writeln!(
            out,
            "  {} {}: {}{}",
            x.record,
            x.code,
            x.message,
            if x.retryable {
                " (will retry 将重试)"
            } else {
                ""
            }
        );
    }
    out
}

/// The `outbox` command.
pub fn outbox(items: &[OutboxItem]) -> String {
    if items.is_empty() {
        return "outbox empty: everything is synced 全部已同步".into();
    }
    let mut out = String::new();
    for i in items {
        let _ = write!(
            out,
            "{:>4}  {:<8} {} {} {}  {}",
            i.id,
            i.state,
            when(i.created_at),
            i.kind,
            i.record_id,
            i.description.as_deref().unwrap_or("change")
        );
        if let Some(code) = &i.reject_code {
            let _ = write!(
                out,
                "  — {} {}: {}",
                if i.state == OutboxState::Rejected {
                    "refused 被拒"
                } else {
                    "last try"
                },
                code,
                i.reject_message.as_deref().unwrap_or_default()
            );
        }
        out.push('\n');
    }
    out
}

/// The `whoami` command.
pub fn whoami(me: &WhoAmI) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "device 设备: {}", me.device_id);
    let _ = writeln!(
        out,
        "server 服务器: {}",
        me.server_url.as_deref().unwrap_or("-")
    );
    match &me.user {
        Some(u) => {
            let _ = writeln!(
                out,
                "user 用户: {} ({}, {}){}",
                u.username,
                u.display_name,
                u.role,
                if me.logged_in {
                    ""
                } else {
                    " — logged out 已退出"
                }
            );
            for p in &u.places {
                let _ = writeln!(out, "  place 辖区: {} {}", p.id, p.name);
            }
        }
        None => {
            let _ = writeln!(out, "user 用户: not logged in 未登录");
        }
    }
    let _ = writeln!(
        out,
        "unsent 待发送: {}, refused 被拒: {}",
        me.pending_changes, me.rejected_changes
    );
    if let Some(t) = me.last_sync_at {
        let _ = writeln!(out, "last sync 上次同步: {}", when(t));
    }
    out
}
