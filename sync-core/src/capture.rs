//! Capturing what a person enters on a record: the one place that splits residents' personal
//! values from the rest. Personal fields go in full into the record's personal part and, masked,
//! into the shared record document; everything else goes into the shared document. Phones and
//! the back-office both edit through here, so the masked form is always computed where the value
//! is captured.

use automerge::Change;

use crate::document::{EditContext, RecordDoc};
use crate::error::RecordError;
use crate::ids::{PlaceId, RecordId};
use crate::personal::PersonalDoc;
use crate::schema::{self, RecordKind};

/// The changes one capture made: to the shared document, to the personal part, or both (never
/// neither: a capture that changes nothing is an error).
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// The change to the shared record document.
    pub record: Option<Change>,
    /// The change to the record's personal part.
    pub personal: Option<Change>,
}

/// `field=value` pairs.
pub type Fields = Vec<(String, String)>;

/// Splits `field=value` pairs into those of the shared document (personal ones replaced by
/// their masked form) and the full personal ones.
pub fn split_personal(
    kind: RecordKind,
    fields: &[(String, String)],
) -> Result<(Fields, Fields), RecordError> {
    let mut shared = Vec::with_capacity(fields.len());
    let mut personal = Vec::new();
    for (field, value) in fields {
        let spec = kind.field(field)?;
        if spec.personal {
            shared.push((field.clone(), schema::mask_personal(spec, value)));
            personal.push((field.clone(), value.trim().to_string()));
        } else {
            shared.push((field.clone(), value.clone()));
        }
    }
    Ok((shared, personal))
}

/// Creates a record with the creator's fields: its shared document (one change) and, when
/// personal fields were given, its personal part (one more change).
pub fn create(
    id: RecordId,
    kind: RecordKind,
    place: &PlaceId,
    ctx: &EditContext,
    fields: &[(String, String)],
) -> Result<(RecordDoc, PersonalDoc, Captured), RecordError> {
    let (shared, personal_fields) = split_personal(kind, fields)?;
    let mut personal = PersonalDoc::empty(id);
    // Checked first, so an invalid phone number leaves nothing behind.
    let personal_change = if personal_fields.iter().any(|(_, v)| !v.is_empty()) {
        personal.set(ctx, kind, &personal_fields)?
    } else {
        None
    };
    let (doc, change) = RecordDoc::create(id, kind, place, ctx, &shared)?;
    Ok((
        doc,
        personal,
        Captured {
            record: Some(change),
            personal: personal_change,
        },
    ))
}

/// Sets fields of a record: non-personal ones and masks in the shared document, full personal
/// values in its personal part. Fails, changing nothing, when nothing would change.
pub fn set_fields(
    doc: &mut RecordDoc,
    personal: &mut PersonalDoc,
    ctx: &EditContext,
    fields: &[(String, String)],
) -> Result<Captured, RecordError> {
    let kind = doc.kind()?;
    let (shared, personal_fields) = split_personal(kind, fields)?;
    let personal_change = if personal_fields.is_empty() {
        None
    } else {
        personal.set(ctx, kind, &personal_fields)?
    };
    let record_change = match doc.try_set_fields(ctx, &shared) {
        Ok(c) => c,
        Err(e) => {
            // Keep the two parts consistent: undo the personal change made above.
            if personal_change.is_some() {
                *personal = rebuild_without_last(personal);
            }
            return Err(e);
        }
    };
    if record_change.is_none() && personal_change.is_none() {
        return Err(RecordError::invalid("fields", "nothing changed"));
    }
    Ok(Captured {
        record: record_change,
        personal: personal_change,
    })
}

/// The personal document without its last change (an edit whose shared half was refused).
fn rebuild_without_last(personal: &mut PersonalDoc) -> PersonalDoc {
    let mut changes = personal.changes();
    changes.pop();
    let mut out = PersonalDoc::empty(personal.id());
    // Re-applying a prefix of a document's own changes cannot fail.
    let _ = out.apply_changes(changes);
    out
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;

    use super::*;
    use crate::records::Record;

    fn ctx() -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: "bus1".into(),
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
    fn personal_values_go_to_the_personal_part_and_masks_to_the_record() {
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng/b3".parse().unwrap();
        let (mut doc, mut personal, captured) = create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ctx(),
            &kv(&[
                ("summary", "楼道堆物"),
                ("resident_name", "王小明"),
                ("resident_phone", "13812345678"),
            ]),
        )
        .unwrap();
        let record_bytes = captured.record.unwrap().raw_bytes().to_vec();
        assert!(captured.personal.is_some());
        let needle = b"13812345678";
        assert!(
            !record_bytes.windows(needle.len()).any(|w| w == needle),
            "the shared change must not carry the number"
        );
        assert!(!String::from_utf8_lossy(&record_bytes).contains("王小明"));
        let Record::Case(case) = doc.record().unwrap() else {
            panic!()
        };
        assert_eq!(case.resident_phone, "138****5678");
        assert_eq!(case.resident_name, "王**");
        let values = personal.values();
        assert!(values.contains(&("resident_phone".into(), "13812345678".into())));

        // A new number with the same mask changes only the personal part.
        let c = set_fields(
            &mut doc,
            &mut personal,
            &ctx(),
            &kv(&[("resident_phone", "13899995678")]),
        )
        .unwrap();
        assert!(c.record.is_none() && c.personal.is_some());
        // An invalid edit leaves both parts as they were.
        let heads = personal.heads();
        let err = set_fields(
            &mut doc,
            &mut personal,
            &ctx(),
            &kv(&[("resident_phone", "13700000000"), ("status", "exploded")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("status"), "{err}");
        assert_eq!(personal.heads(), heads);
        // Writing an unmasked value straight into the record is refused.
        let err = doc
            .set_fields(&ctx(), &kv(&[("resident_phone", "13812345678")]))
            .unwrap_err();
        assert!(err.to_string().contains("masked"), "{err}");
    }
}
