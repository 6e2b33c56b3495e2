//! A record's personal part: residents' names and phone numbers (the schema's `personal` fields),
//! kept in a companion Automerge document of their own.
//!
//! The shared record document holds only the masked form of these fields (`138****5678`,
//! `王**`), written where the value is captured. The personal document holds the full values
//! and travels only to roles that may read them (office and admin) — and stays on the phone
//! that captured them. Both are complete, mergeable CRDTs, so change hashes stay intact and no
//! change ever has to be stripped of a field on its way to a phone. `docs/PERSONAL_DATA.md`
//! explains why this design was chosen.
//!
//! A personal document is a flat map: field name → text. It has no kind, place or audit fields
//! of its own; those are the record's, and the server authorises a personal change by the
//! record's place and kind.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, Change, ChangeHash, ObjId, ROOT, ReadDoc};
use serde_json::Value;

use crate::document::{
    ChangeInfo, Conflict, EditContext, commit_doc, conflicts_in, document_basics, value_json,
};
use crate::error::RecordError;
use crate::ids::RecordId;
use crate::limits;
use crate::schema::{self, FieldSpec, FieldType, RecordKind};

/// The personal companion document of one record.
#[derive(Debug, Clone)]
pub struct PersonalDoc {
    id: RecordId,
    doc: AutoCommit,
}

document_basics!(PersonalDoc);

/// The personal fields of a kind (none for kinds without residents' details).
pub fn personal_fields(kind: RecordKind) -> impl Iterator<Item = &'static FieldSpec> {
    kind.fields().iter().filter(|f| f.personal)
}

impl PersonalDoc {
    /// An empty personal document (no change yet).
    pub fn empty(id: RecordId) -> Self {
        Self {
            id,
            doc: AutoCommit::new(),
        }
    }

    /// Loads a saved personal document.
    pub fn load(id: RecordId, bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(Self {
            id,
            doc: AutoCommit::load(bytes)?,
        })
    }

    /// The full value of each field set (the deterministic winner where people disagreed).
    pub fn values(&self) -> Vec<(String, String)> {
        self.doc
            .keys(ROOT)
            .filter_map(|k| {
                let v = self.doc.get(ROOT, k.as_str()).ok().flatten()?;
                value_json(&v.0)
                    .as_str()
                    .map(|s| (k.clone(), s.to_string()))
            })
            .collect()
    }

    /// Writes personal fields (`field=value` text; empty clears), as one change; `None` when every
    /// field already had that value. Only personal fields of `kind` are accepted, each checked
    /// by its rule (phone numbers must be phone numbers) without echoing the value.
    pub fn set(
        &mut self,
        ctx: &EditContext,
        kind: RecordKind,
        fields: &[(String, String)],
    ) -> Result<Option<Change>, RecordError> {
        self.doc.set_actor(ctx.actor.clone());
        for (field, value) in fields {
            let value = value.trim();
            let spec = kind.field(field)?;
            if let Err(e) = check_personal(kind, spec, &Value::from(value)) {
                self.doc.rollback();
                return Err(e);
            }
            let unchanged = self
                .doc
                .get(ROOT, field.as_str())?
                .is_some_and(|(v, _)| value_json(&v).as_str() == Some(value))
                && values_of_len(&self.doc, field) == 1;
            if !unchanged {
                self.doc.put(ROOT, field.as_str(), value)?;
            }
        }
        let names: Vec<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
        commit_doc(&mut self.doc, ctx, format!("set {}", names.join(",")))
    }

    /// Checks every key and every concurrent value: only personal fields of `kind`, text within
    /// bounds, phone numbers that are phone numbers.
    pub fn check(&self, kind: RecordKind) -> Result<(), RecordError> {
        for key in self.doc.keys(ROOT) {
            let spec = kind
                .field(&key)
                .ok()
                .filter(|s| s.personal)
                .ok_or_else(|| {
                    RecordError::invalid(
                        "personal",
                        format!("'{key}' is not a personal field of a {kind}"),
                    )
                })?;
            for (v, _) in self.doc.get_all(ROOT, key.as_str())? {
                check_personal(kind, spec, &value_json(&v))?;
            }
        }
        Ok(())
    }

    /// Personal fields set differently while apart, with every value and who set it.
    pub fn conflicts(&mut self, kind: RecordKind) -> Vec<Conflict> {
        conflicts_in(&mut self.doc, personal_fields(kind))
    }

    /// Every value of one field with the ops that set them (for attributing conflicts).
    pub fn all_values(&self, field: &str) -> Vec<(Value, ObjId)> {
        self.values_of(field)
    }
}

fn values_of_len(doc: &AutoCommit, field: &str) -> usize {
    doc.get_all(ROOT, field).map_or(0, |v| v.len())
}

/// Checks one full personal value: text, bounded, and for phones a phone number. Messages never
/// echo the value.
pub fn check_personal(kind: RecordKind, spec: &FieldSpec, v: &Value) -> Result<(), RecordError> {
    if !spec.personal {
        return Err(RecordError::invalid(
            spec.name,
            format!("is not a personal field of a {kind}"),
        ));
    }
    let Some(text) = v.as_str() else {
        return Err(RecordError::invalid(spec.name, "must be text"));
    };
    match spec.ty {
        FieldType::Phone if !text.is_empty() => schema::check_phone(spec.name, text),
        _ if text.chars().count() > limits::MAX_PERSONAL_CHARS => Err(RecordError::invalid(
            spec.name,
            format!(
                "is too long (at most {} characters)",
                limits::MAX_PERSONAL_CHARS
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(user: &str) -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: user.into(),
            now_ms: 1_700_000_000_000,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn personal_values_merge_and_conflicts_keep_both() {
        let id = RecordId::new();
        let mut a = PersonalDoc::empty(id);
        let c0 = a
            .set(
                &ctx("bus1"),
                RecordKind::Case,
                &kv(&[
                    ("resident_name", "王小明"),
                    ("resident_phone", "13812345678"),
                ]),
            )
            .unwrap()
            .unwrap();
        let mut b = PersonalDoc::empty(id);
        b.apply_change(c0.raw_bytes()).unwrap();
        let ca = a
            .set(
                &ctx("office1"),
                RecordKind::Case,
                &kv(&[("resident_phone", "13900000000")]),
            )
            .unwrap()
            .unwrap();
        let cb = b
            .set(
                &ctx("bus2"),
                RecordKind::Case,
                &kv(&[("resident_phone", "13700000000")]),
            )
            .unwrap()
            .unwrap();
        a.apply_change(cb.raw_bytes()).unwrap();
        b.apply_change(ca.raw_bytes()).unwrap();
        assert_eq!(a.values(), b.values());
        let conflicts = a.conflicts(RecordKind::Case);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, "resident_phone");
        assert_eq!(conflicts[0].values.len(), 2);
        a.check(RecordKind::Case).unwrap();
        // Writing what is already there changes nothing.
        assert!(
            a.set(
                &ctx("bus1"),
                RecordKind::Case,
                &kv(&[("resident_name", "王小明")])
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn only_personal_fields_with_valid_values_are_kept() {
        let mut d = PersonalDoc::empty(RecordId::new());
        let err = d
            .set(&ctx("x"), RecordKind::Case, &kv(&[("summary", "漏水")]))
            .unwrap_err();
        assert!(err.to_string().contains("not a personal field"), "{err}");
        let err = d
            .set(
                &ctx("x"),
                RecordKind::Case,
                &kv(&[("resident_phone", "call me 555")]),
            )
            .unwrap_err();
        assert!(!err.to_string().contains("555"), "{err}");
        assert!(d.is_empty());
        // A hand-made change with another key is caught by `check`.
        let mut raw = d.automerge().clone();
        raw.put(ROOT, "hidden", "x".repeat(1000)).unwrap();
        raw.commit();
        let bad = PersonalDoc {
            id: d.id(),
            doc: raw,
        };
        assert!(bad.check(RecordKind::Case).is_err());
    }
}
