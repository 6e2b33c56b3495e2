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
//! For everyone: the fixed fields (`kind`, `schema`, `place`, `created_at`, `created_by`) are set
//! once at creation and never changed through sync; that rule lives in [`crate::ingest`], as it
//! holds whatever the role.

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
            if edit.kind == RecordKind::Bus {
                return deny(
                    role,
                    "kind",
                    "record or edit a service-bus session (直通车班次): that is the bus team's",
                );
            }
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
    fn roles_parse_and_show() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("boss".parse::<Role>().is_err());
        assert!(!Role::Steward.sees_personal_data());
        assert!(Role::Office.sees_personal_data());
    }
}
