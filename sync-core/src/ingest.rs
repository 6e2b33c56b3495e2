//! The server's accept logic for one pushed change, sans-I/O: the caller loads the document,
//! calls [`ingest`], and on [`Ingested::Applied`] persists the change and the new document in one
//! transaction before acknowledging it.

use automerge::{Change, ChangeHash};
use serde_json::Value;

use crate::document::RecordDoc;
use crate::ids::PlaceId;
use crate::protocol::{PushChange, RejectCode};
use crate::schema::{FieldType, RecordKind};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable reason, without personal data.
    pub message: String,
    /// The change hash (zeros if the bytes did not parse).
    pub hash: [u8; 32],
}

impl Refusal {
    /// A refusal for a change.
    pub fn new(code: RejectCode, message: impl Into<String>, hash: [u8; 32]) -> Self {
        Self {
            code,
            message: message.into(),
            hash,
        }
    }
}

/// What became of an accepted change.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// The document already held it: acknowledge again, store nothing.
    Duplicate {
        /// Its hash.
        hash: [u8; 32],
    },
    /// Newly applied to the document.
    Applied {
        /// Its hash.
        hash: [u8; 32],
        /// Its actor (hex).
        actor: String,
        /// The device's claimed time, ms since epoch.
        claimed_at: i64,
        /// Top-level fields it touched.
        touched: Vec<String>,
        /// The record's place.
        place: PlaceId,
        /// The record's kind.
        kind: RecordKind,
    },
}

/// Checks one pushed change against the document and applies it if it is acceptable.
///
/// `authorize` is asked whether the pusher may write this kind of record at this place. On a
/// refusal the document is left exactly as it was.
pub fn ingest(
    doc: &mut RecordDoc,
    push: &PushChange,
    authorize: impl Fn(&PlaceId, RecordKind) -> Result<(), Refusal>,
) -> Result<Ingested, Refusal> {
    let change = Change::from_bytes(push.change.clone()).map_err(|e| {
        Refusal::new(
            RejectCode::MalformedChange,
            format!("not an automerge change: {e}"),
            [0; 32],
        )
    })?;
    let hash = change.hash();
    let hash_bytes = hash.0;
    let refuse = |code, msg: String| Refusal::new(code, msg, hash_bytes);

    if doc.has_change(&hash) {
        return Ok(Ingested::Duplicate { hash: hash_bytes });
    }
    let missing: Vec<&ChangeHash> = change
        .deps()
        .iter()
        .filter(|d| !doc.has_change(d))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(
            RejectCode::MissingDependencies,
            format!(
                "depends on {} change(s) the server does not have",
                missing.len()
            ),
        ));
    }

    let before_fixed = fixed_values(doc);
    let before_heads = doc.heads();
    let mut trial = doc.fork();
    let claimed_at = change.timestamp().saturating_mul(1000);
    let actor = change.actor_id().to_hex_string();
    trial
        .apply_changes(vec![change])
        .map_err(|e| refuse(RejectCode::MalformedChange, format!("cannot apply: {e}")))?;

    let kind = match trial.kind() {
        Ok(k) => k,
        Err(e) => return Err(refuse(RejectCode::InvalidRecord, e.to_string())),
    };
    if kind != push.kind {
        return Err(refuse(
            RejectCode::KindMismatch,
            format!("pushed as {} but the document is a {}", push.kind, kind),
        ));
    }
    let after_fixed = fixed_values(&trial);
    for (name, after) in &after_fixed {
        if after.len() != 1 {
            return Err(refuse(
                RejectCode::ReadOnlyField,
                format!("{name} cannot be changed: it is fixed when the record is created"),
            ));
        }
        if let Some((_, before)) = before_fixed.iter().find(|(n, _)| n == name)
            && !before.is_empty()
            && before != after
        {
            return Err(refuse(
                RejectCode::ReadOnlyField,
                format!("{name} cannot be changed: it is fixed when the record is created"),
            ));
        }
    }
    let record = trial
        .record()
        .map_err(|e| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    let place: PlaceId = record
        .place()
        .parse()
        .map_err(|e: crate::IdError| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    authorize(&place, kind).map_err(|mut r| {
        r.hash = hash_bytes;
        r
    })?;
    record
        .validate()
        .map_err(|e| refuse(RejectCode::InvalidRecord, e.to_string()))?;

    let after_heads = trial.heads();
    let touched = trial.touched(&before_heads, &after_heads);
    *doc = trial;
    Ok(Ingested::Applied {
        hash: hash_bytes,
        actor,
        claimed_at,
        touched,
        place,
        kind,
    })
}

fn fixed_values(doc: &RecordDoc) -> Vec<(&'static str, Vec<Value>)> {
    let kind = doc.kind().ok();
    let names: Vec<&'static str> = match kind {
        Some(k) => k
            .fields()
            .iter()
            .filter(|f| f.ty == FieldType::Fixed)
            .map(|f| f.name)
            .collect(),
        None => vec!["kind", "schema", "place", "created_at", "created_by"],
    };
    names
        .into_iter()
        .map(|n| (n, doc.values_of(n).into_iter().map(|(v, _)| v).collect()))
        .filter(|(_, v): &(&str, Vec<Value>)| kind.is_some() || !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::EditContext;
    use crate::ids::RecordId;
    use automerge::ActorId;
    use automerge::transaction::Transactable;

    fn ctx() -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: "bus1".into(),
            now_ms: 1_700_000_000_000,
        }
    }

    fn allow(_: &PlaceId, _: RecordKind) -> Result<(), Refusal> {
        Ok(())
    }

    fn push(doc: &RecordDoc, kind: RecordKind, change: &Change) -> PushChange {
        PushChange {
            record: *doc.id().as_bytes(),
            kind,
            change: change.raw_bytes().to_vec(),
        }
    }

    fn new_case() -> (RecordDoc, Change) {
        let place: PlaceId = "hz/baiyang/haitian".parse().unwrap();
        RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ctx(),
            &[("summary".into(), "电梯故障".into())],
        )
        .unwrap()
    }

    #[test]
    fn a_new_record_is_applied_once_then_duplicate() {
        let (phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        let p = push(&phone, RecordKind::Case, &c);
        match ingest(&mut server, &p, allow).unwrap() {
            Ingested::Applied { touched, place, .. } => {
                assert!(touched.contains(&"summary".to_string()));
                assert_eq!(place.as_str(), "hz/baiyang/haitian");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ingest(&mut server, &p, allow).unwrap(),
            Ingested::Duplicate { .. }
        ));
    }

    #[test]
    fn garbage_wrong_kind_and_scope_are_refused_without_changing_the_doc() {
        let (phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        let mut bad = push(&phone, RecordKind::Case, &c);
        bad.change = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3];
        assert_eq!(
            ingest(&mut server, &bad, allow).unwrap_err().code,
            RejectCode::MalformedChange
        );
        let wrong = push(&phone, RecordKind::Bus, &c);
        assert_eq!(
            ingest(&mut server, &wrong, allow).unwrap_err().code,
            RejectCode::KindMismatch
        );
        let deny = |_: &PlaceId, _| Err(Refusal::new(RejectCode::OutOfScope, "not yours", [0; 32]));
        let r = ingest(&mut server, &push(&phone, RecordKind::Case, &c), deny).unwrap_err();
        assert_eq!(r.code, RejectCode::OutOfScope);
        assert_eq!(r.hash, c.hash().0);
        assert!(server.heads().is_empty());
    }

    #[test]
    fn forged_edits_of_place_and_invalid_values_are_refused() {
        let (mut phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        ingest(&mut server, &push(&phone, RecordKind::Case, &c), allow).unwrap();

        // A hand-made change that moves the record, bypassing the SDK's checks.
        let mut raw = phone.automerge().clone();
        raw.put(automerge::ROOT, "place", "hz").unwrap();
        let moved = raw.get_last_local_change();
        raw.commit();
        let moved = moved.or_else(|| raw.get_last_local_change()).unwrap();
        let r = ingest(&mut server, &push(&phone, RecordKind::Case, &moved), allow).unwrap_err();
        assert_eq!(r.code, RejectCode::ReadOnlyField, "{r:?}");

        let mut raw = phone.automerge().clone();
        raw.put(automerge::ROOT, "status", "exploded").unwrap();
        raw.commit();
        let invalid = raw.get_last_local_change().unwrap();
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &invalid),
            allow,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::InvalidRecord);
        assert!(r.message.contains("status"), "{}", r.message);

        let edit = phone
            .set_fields(&ctx(), &[("status".into(), "assigned".into())])
            .unwrap();
        assert!(matches!(
            ingest(&mut server, &push(&phone, RecordKind::Case, &edit), allow).unwrap(),
            Ingested::Applied { .. }
        ));
    }

    #[test]
    fn a_change_with_unknown_dependencies_waits() {
        let (mut phone, _c0) = new_case();
        let c1 = phone
            .set_fields(&ctx(), &[("status".into(), "assigned".into())])
            .unwrap();
        let mut server = RecordDoc::empty(phone.id());
        let r = ingest(&mut server, &push(&phone, RecordKind::Case, &c1), allow).unwrap_err();
        assert_eq!(r.code, RejectCode::MissingDependencies);
    }
}
