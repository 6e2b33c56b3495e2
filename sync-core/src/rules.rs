//! Who may make which edit: the roles and their field rules, sans-I/O, so the server (which
//! enforces them on every pushed change) and phones (which can check before they record an edit)
//! apply the very same table.
//!
//! | role | may not |
//! |---|---|
//! | steward | record or edit a service-bus session; set a case's status to `evaluated`; set a case's `departments` or `deadline` |
//! | bus | set a case's status to `evaluated`; set a case's `deadline` |
//! | office, admin | (everything a valid record allows) |
//!
//! For everyone (every role, office and admin included):
//!
//! | what | rule |
//! |---|---|
//! | fixed fields (`kind`, `schema`, `place`, `created_at`, `created_by`) | set once at creation, never changed through sync ([`crate::ingest`]) |
//! | `created_by` | the user who pushes the creating change ([`check_audit`]) |
//! | `created_at` | the creating change's own claimed time ([`check_audit`]) |
//! | a new note | its `author` is the user who pushes it, its `at` that change's claimed time ([`check_notes`]) |
//! | an existing note | only its author may change or remove it: notes are append-only per author ([`check_notes`]) |

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::RecordKind;

/// What a user does, which decides what they may see and edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Building steward (楼长 / 楼栋管家).
    Steward,
    /// Service-bus team member (直通车).
    Bus,
    /// Back-office staff of a community or street (社区/街道).
    Office,
    /// System operator.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Self::Steward, Self::Bus, Self::Office, Self::Admin];

    /// The stored code.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Steward => "steward",
            Self::Bus => "bus",
            Self::Office => "office",
            Self::Admin => "admin",
        }
    }

    /// The Chinese label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Steward => "楼长",
            Self::Bus => "直通车",
            Self::Office => "社区/街道",
            Self::Admin => "系统管理员",
        }
    }

    /// Whether this role sees residents' personal data (phone numbers) unmasked.
    pub fn sees_personal_data(&self) -> bool {
        matches!(self, Self::Office | Self::Admin)
    }

    /// Whether this role works in the back-office (lists rejected pushes, triages cases).
    pub fn is_back_office(&self) -> bool {
        matches!(self, Self::Office | Self::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role '{s}' (expected steward, bus, office or admin)"))
    }
}

/// What one change does to a record, as the rules need to see it.
#[derive(Debug, Clone, Copy)]
pub struct Edit<'a> {
    /// The record's kind.
    pub kind: RecordKind,
    /// Whether the change creates the record.
    pub creates: bool,
    /// The top-level fields the change touched.
    pub touched: &'a [String],
    /// The scalar values the change itself wrote, by field (not values merged from others).
    pub written: &'a [(String, Value)],
    /// The record after the change, as JSON (a creation touches every field, so for a creation
    /// the rules look at which fields it left non-empty).
    pub record: &'a Value,
}

/// An edit the role may not make.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {role} may not {what}")]
pub struct RuleViolation {
    /// The role.
    pub role: Role,
    /// The field at fault (or `kind` for a kind the role may not record).
    pub field: String,
    /// What the role may not do, in words (no values beyond codes).
    pub what: String,
}

fn deny(role: Role, field: &str, what: &str) -> Result<(), RuleViolation> {
    Err(RuleViolation {
        role,
        field: field.to_string(),
        what: what.to_string(),
    })
}

/// Whether the role may write records of this kind at all (then its field rules apply).
pub fn may_write_kind(role: Role, kind: RecordKind) -> Result<(), RuleViolation> {
    if role == Role::Steward && kind == RecordKind::Bus {
        return deny(
            role,
            "kind",
            "record or edit a service-bus session (直通车班次): that is the bus team's",
        );
    }
    Ok(())
}

/// Checks one edit against the role's rules.
pub fn check(role: Role, edit: &Edit<'_>) -> Result<(), RuleViolation> {
    let touches = |f: &str| {
        if edit.creates {
            match edit.record.get(f) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                Some(_) => true,
            }
        } else {
            edit.touched.iter().any(|t| t == f)
        }
    };
    let writes = |f: &str, v: &str| {
        edit.written
            .iter()
            .any(|(name, value)| name == f && value.as_str() == Some(v))
    };
    match role {
        Role::Office | Role::Admin => Ok(()),
        Role::Steward => {
            may_write_kind(role, edit.kind)?;
            if edit.kind == RecordKind::Case {
                if writes("status", "evaluated") {
                    return deny(
                        role,
                        "status",
                        "mark a case evaluated (已评价): the back-office records the resident's evaluation",
                    );
                }
                if touches("departments") {
                    return deny(
                        role,
                        "departments",
                        "assign or reassign departments (责任部门): the back-office or the bus team does",
                    );
                }
                if touches("deadline") {
                    return deny(
                        role,
                        "deadline",
                        "set a deadline (办结时限): the back-office does",
                    );
                }
            }
            Ok(())
        }
        Role::Bus => {
            if edit.kind == RecordKind::Case {
                if writes("status", "evaluated") {
                    return deny(
                        role,
                        "status",
                        "mark a case evaluated (已评价): the back-office records the resident's evaluation",
                    );
                }
                if touches("deadline") {
                    return deny(
                        role,
                        "deadline",
                        "set a deadline (办结时限): the back-office does",
                    );
                }
            }
            Ok(())
        }
    }
}

/// Checks the audit fields of a creating change: `created_by` must be the pusher and
/// `created_at` the change's own claimed time (`claimed_at`, ms), so nobody can make a record
/// appear to be someone else's or backdate it apart from its change.
pub fn check_audit(
    role: Role,
    user: &str,
    created_by: &str,
    created_at: i64,
    claimed_at: i64,
) -> Result<(), RuleViolation> {
    if created_by != user {
        return deny(
            role,
            "created_by",
            "create a record in another user's name (created_by must be the signed-in user)",
        );
    }
    if created_at.abs_diff(claimed_at) > crate::limits::MAX_STAMP_DRIFT_MS.unsigned_abs() {
        return deny(
            role,
            "created_at",
            "give a record a creation time other than the time of its creating change",
        );
    }
    Ok(())
}

/// Checks what one change did to the notes: every note it adds or leaves changed must be the
/// pusher's own (`author`), with a new note's `at` the change's claimed time; every note it
/// removes or changes must have been the pusher's. `before` and `after` are the notes before and
/// after applying just this change, so notes merged from others are untouched by it.
pub fn check_notes(
    role: Role,
    user: &str,
    before: &[crate::records::Note],
    after: &[crate::records::Note],
    claimed_at: i64,
) -> Result<(), RuleViolation> {
    for note in before.iter().filter(|n| !after.contains(n)) {
        if note.author != user {
            return deny(
                role,
                "notes",
                "change or remove another user's note (notes are append-only per author)",
            );
        }
    }
    for note in after.iter().filter(|n| !before.contains(n)) {
        if note.author != user {
            return deny(
                role,
                "notes",
                "write or change a note in another user's name (a note's author is the user who writes it)",
            );
        }
        let is_new = !before.iter().any(|b| b.id == note.id);
        if is_new && note.at.abs_diff(claimed_at) > crate::limits::MAX_STAMP_DRIFT_MS.unsigned_abs()
        {
            return deny(
                role,
                "notes",
                "date a note other than the time it is written",
            );
        }
    }
    Ok(())
}

/// Checks `field=value` edits (as phones make them) before they are recorded.
pub fn check_fields(
    role: Role,
    kind: RecordKind,
    creates: bool,
    fields: &[(String, String)],
) -> Result<(), RuleViolation> {
    let touched: Vec<String> = fields.iter().map(|(f, _)| f.clone()).collect();
    let written: Vec<(String, Value)> = fields
        .iter()
        .map(|(f, v)| (f.clone(), Value::String(v.trim().to_string())))
        .collect();
    let record = Value::Object(written.iter().cloned().collect());
    check(
        role,
        &Edit {
            kind,
            creates,
            touched: &touched,
            written: &written,
            record: &record,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_rule_table() {
        use RecordKind::{Bus as BusRun, Case, Contact};
        use Role::{Admin, Bus, Office, Steward};
        type Row<'a> = (Role, RecordKind, &'a [(&'a str, &'a str)], bool);
        let cases: &[Row] = &[
            (Steward, Case, &[("status", "evaluated")], false),
            (Steward, Case, &[("status", "resolved")], true),
            (Steward, Case, &[("departments", "police")], false),
            (Steward, Case, &[("deadline", "2024-05-01")], false),
            (
                Steward,
                Case,
                &[("summary", "漏水"), ("satisfaction", "satisfied")],
                true,
            ),
            (Steward, BusRun, &[("leaflets", "1")], false),
            (Steward, Contact, &[("household", "3-201")], true),
            (Bus, Case, &[("status", "evaluated")], false),
            (
                Bus,
                Case,
                &[("status", "assigned"), ("departments", "police")],
                true,
            ),
            (Bus, Case, &[("deadline", "2024-05-01")], false),
            (Bus, BusRun, &[("run_number", "1801")], true),
            (
                Office,
                Case,
                &[("status", "evaluated"), ("deadline", "2024-05-01")],
                true,
            ),
            (Admin, BusRun, &[("departments", "court")], true),
        ];
        for (role, kind, fields, ok) in cases {
            for creates in [false, true] {
                let got = check_fields(*role, *kind, creates, &kv(fields));
                assert_eq!(got.is_ok(), *ok, "{role} {kind} {fields:?}: {got:?}");
            }
        }
        let err = check_fields(Steward, Case, false, &kv(&[("status", "evaluated")])).unwrap_err();
        assert_eq!(err.field, "status");
        assert!(
            err.to_string().starts_with("a steward may not mark"),
            "{err}"
        );
    }

    #[test]
    fn notes_are_append_only_per_author() {
        use crate::records::Note;
        let note = |id: &str, author: &str, text: &str| Note {
            id: id.into(),
            author: author.into(),
            at: 1_000_000,
            text: text.into(),
        };
        let mine = note("a", "steward1", "已回访");
        let theirs = note("b", "office1", "请跟进");
        let before = vec![mine.clone(), theirs.clone()];
        let check =
            |after: Vec<Note>| check_notes(Role::Steward, "steward1", &before, &after, 1_000_400);
        // Adding one's own note, editing and removing one's own: fine.
        let mut add = before.clone();
        add.push(note("c", "steward1", "新情况"));
        check(add).unwrap();
        check(vec![note("a", "steward1", "已回访两次"), theirs.clone()]).unwrap();
        check(vec![theirs.clone()]).unwrap();
        // A note in someone else's name, editing or removing theirs: refused, for every role.
        let mut forged = before.clone();
        forged.push(note("c", "office1", "假冒"));
        assert_eq!(check(forged).unwrap_err().field, "notes");
        assert!(check(vec![mine.clone(), note("b", "office1", "改了")]).is_err());
        assert!(check(vec![mine.clone()]).is_err());
        assert!(check(vec![mine.clone(), note("b", "steward1", "请跟进")]).is_err());
        let office = check_notes(
            Role::Office,
            "office1",
            &before,
            std::slice::from_ref(&theirs),
            1_000_400,
        );
        assert!(
            office.is_err(),
            "office may not remove a steward's note either"
        );
        // A new note dated far from its change.
        let mut backdated = before.clone();
        backdated.push(Note {
            at: 1,
            ..note("d", "steward1", "旧事")
        });
        assert!(check(backdated).is_err());
    }

    #[test]
    fn audit_fields_name_the_pusher_and_the_change_time() {
        check_audit(Role::Bus, "bus1", "bus1", 5_000, 5_400).unwrap();
        assert_eq!(
            check_audit(Role::Steward, "steward1", "office1", 5_000, 5_000)
                .unwrap_err()
                .field,
            "created_by"
        );
        assert_eq!(
            check_audit(Role::Office, "office1", "office1", 5_000, 90_000)
                .unwrap_err()
                .field,
            "created_at"
        );
    }

    #[test]
    fn roles_parse_and_show() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("boss".parse::<Role>().is_err());
        assert!(!Role::Steward.sees_personal_data());
        assert!(Role::Office.sees_personal_data());
    }
}
