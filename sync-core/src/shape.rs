//! The shape of a record document, checked over *every* value it holds: each root key is a field
//! of the kind (or `notes`), each value — the displayed winner and every concurrent value a
//! conflict keeps — has its field's type and stays within its bounds, and each note holds only
//! its four keys. Hydrating the typed record sees only the winners and ignores unknown keys, so
//! without this a pushed change could hide a 200 KB blob under an unknown key or in a losing
//! concurrent value, and the server would relay it to every phone.

use automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc};
use serde_json::Value;

use crate::document::{RecordDoc, value_json};
use crate::error::RecordError;
use crate::limits;
use crate::records::check_value;
use crate::schema::FieldType;

/// The keys a note may hold.
const NOTE_KEYS: [&str; 4] = ["id", "author", "at", "text"];

/// Checks every key and value of a record document (see the module docs).
pub fn check(doc: &RecordDoc) -> Result<(), RecordError> {
    check_scalars(doc).map(|_| ())
}

/// One value of a scalar field with the op that set it.
pub(crate) type ScalarValue = (&'static str, ObjId, Value);

/// Checks like [`check`], and returns every value of every scalar field with the op that set it,
/// in the kind's field order (one field's values in Automerge's order): read in the same pass,
/// so that the accept checks need not look each field up again.
pub(crate) fn check_scalars(doc: &RecordDoc) -> Result<Vec<ScalarValue>, RecordError> {
    let kind = doc.kind()?;
    let am = doc.automerge();
    let mut scalars = Vec::new();
    // One walk over the root map; only a key holding concurrent values is looked up again for
    // all of them (a lookup by key seeks through the document's ops).
    for item in am.map_range(ROOT, ..) {
        let key = item.key.as_ref();
        let values = if item.conflict {
            am.get_all(ROOT, key)?
        } else {
            let id = item.id();
            vec![(item.value.into_value(), id)]
        };
        if key == "notes" {
            for (v, id) in values {
                check_notes(am, &v, &id)?;
            }
            continue;
        }
        let spec = kind.field(key).map_err(|_| {
            let shown: String = key.chars().take(40).collect();
            RecordError::invalid("fields", format!("'{shown}' is not a field of a {kind}"))
        })?;
        for (v, id) in values {
            let json = value_of(am, spec.ty, spec.name, &v, &id)?;
            if spec.ty != FieldType::Fixed {
                check_value(kind, spec, &json)?;
            }
            if spec.ty.is_scalar() {
                scalars.push((spec.name, id, json));
            }
        }
    }
    let fields = kind.fields();
    scalars.sort_by_key(|(name, _, _)| fields.iter().position(|f| f.name == *name));
    Ok(scalars)
}

/// One value of a field as JSON, after checking it has the field's Automerge type.
fn value_of(
    am: &AutoCommit,
    ty: FieldType,
    field: &str,
    v: &automerge::Value<'_>,
    id: &ObjId,
) -> Result<Value, RecordError> {
    let wrong = || RecordError::invalid(field, "has the wrong type");
    match (ty, v) {
        (FieldType::Text, automerge::Value::Object(ObjType::Text)) => {
            let len = am.length(id);
            if len > limits::MAX_TEXT_CHARS * 4 {
                return Err(RecordError::invalid(field, "is too long"));
            }
            Ok(Value::String(am.text(id)?))
        }
        (FieldType::List | FieldType::Codes(_), automerge::Value::Object(ObjType::List)) => {
            let len = am.length(id);
            if len > limits::MAX_LIST_ITEMS {
                return Err(RecordError::invalid(field, "has too many items"));
            }
            let mut items = Vec::with_capacity(len);
            for i in 0..len {
                for (item, _) in am.get_all(id, i)? {
                    match value_json_scalar(&item) {
                        Some(s @ Value::String(_)) => items.push(s),
                        _ => return Err(wrong()),
                    }
                }
            }
            Ok(Value::Array(items))
        }
        (FieldType::Counter, automerge::Value::Scalar(s)) if s.is_counter() => Ok(value_json(v)),
        (
            FieldType::Str
            | FieldType::Code(_)
            | FieldType::Date
            | FieldType::Phone
            | FieldType::Number
            | FieldType::Fixed,
            automerge::Value::Scalar(s),
        ) if !s.is_counter() => Ok(value_json(v)),
        _ => Err(wrong()),
    }
}

fn value_json_scalar(v: &automerge::Value<'_>) -> Option<Value> {
    match v {
        automerge::Value::Scalar(_) => Some(value_json(v)),
        automerge::Value::Object(_) => None,
    }
}

fn check_notes(am: &AutoCommit, v: &automerge::Value<'_>, id: &ObjId) -> Result<(), RecordError> {
    let bad = |why: &str| RecordError::invalid("notes", why.to_string());
    if !matches!(v, automerge::Value::Object(ObjType::List)) {
        return Err(bad("must be a list of notes"));
    }
    let len = am.length(id);
    if len > limits::MAX_NOTES {
        return Err(bad(&format!(
            "a record holds at most {} notes",
            limits::MAX_NOTES
        )));
    }
    for i in 0..len {
        for (note, note_id) in am.get_all(id, i)? {
            if !matches!(note, automerge::Value::Object(ObjType::Map)) {
                return Err(bad("each note must be a map"));
            }
            for key in am.keys(&note_id) {
                if !NOTE_KEYS.contains(&key.as_str()) {
                    return Err(bad("a note holds only id, author, at and text"));
                }
                for (field, _) in am.get_all(&note_id, key.as_str())? {
                    let ok = match (key.as_str(), value_json_scalar(&field)) {
                        ("at", Some(Value::Number(_))) => true,
                        ("text", Some(Value::String(t))) => {
                            t.chars().count() <= limits::MAX_NOTE_CHARS
                        }
                        ("id" | "author", Some(Value::String(t))) => t.chars().count() <= 64,
                        _ => false,
                    };
                    if !ok {
                        return Err(bad(&format!(
                            "a note's {key} has the wrong type or is too long"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{ActorId, AutoCommit};

    use super::*;
    use crate::document::EditContext;
    use crate::ids::{PlaceId, RecordId};
    use crate::schema::RecordKind;

    fn case() -> RecordDoc {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let ctx = EditContext {
            actor: ActorId::random(),
            user: "office1".into(),
            now_ms: 1_700_000_000_000,
        };
        let (mut doc, _) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ctx,
            &[("summary".into(), "漏水".into())],
        )
        .unwrap();
        doc.add_note(&ctx, "已联系物业").unwrap();
        doc
    }

    fn with(doc: &RecordDoc, f: impl FnOnce(&mut AutoCommit)) -> RecordDoc {
        let mut am = doc.automerge().clone();
        f(&mut am);
        am.commit();
        let bytes = am.save();
        RecordDoc::load(doc.id(), &bytes).unwrap()
    }

    #[test]
    fn a_valid_record_passes() {
        check(&case()).unwrap();
    }

    #[test]
    fn unknown_keys_wrong_types_and_hidden_blobs_are_refused() {
        let doc = case();
        let hidden = with(&doc, |am| {
            am.put(ROOT, "hidden", "x".repeat(200_000)).unwrap();
        });
        assert!(check(&hidden).unwrap_err().to_string().contains("hidden"));
        let wrong = with(&doc, |am| {
            am.put_object(ROOT, "status", ObjType::Map).unwrap();
        });
        assert!(check(&wrong).is_err());
        let long_note = with(&doc, |am| {
            let (_, notes) = am.get(ROOT, "notes").unwrap().unwrap();
            let (_, n0) = am.get(&notes, 0).unwrap().unwrap();
            am.put(&n0, "text", "长".repeat(limits::MAX_NOTE_CHARS + 1))
                .unwrap();
        });
        assert!(check(&long_note).is_err());
        let extra_key = with(&doc, |am| {
            let (_, notes) = am.get(ROOT, "notes").unwrap().unwrap();
            let (_, n0) = am.get(&notes, 0).unwrap().unwrap();
            am.put(&n0, "blob", "x").unwrap();
        });
        assert!(check(&extra_key).is_err());
    }

    #[test]
    fn a_losing_concurrent_value_is_checked_too() {
        let doc = case();
        let mut a = doc
            .automerge()
            .clone()
            .with_actor(ActorId::from(vec![1u8; 16]));
        let mut b = doc
            .automerge()
            .clone()
            .with_actor(ActorId::from(vec![2u8; 16]));
        a.put(ROOT, "building", "3幢").unwrap();
        b.put(ROOT, "building", "x".repeat(limits::MAX_STR_CHARS + 1))
            .unwrap();
        a.commit();
        b.commit();
        a.merge(&mut b).unwrap();
        let merged = RecordDoc::load(doc.id(), &a.save()).unwrap();
        assert_eq!(
            merged.automerge().get_all(ROOT, "building").unwrap().len(),
            2
        );
        assert!(check(&merged).is_err());
    }
}
