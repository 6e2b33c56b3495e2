//! How the log stores the fields a change touched: a JSON array naming each known field by a
//! small number, the same text on both backends (so `migrate-store` copies it as it is).
//!
//! A new case's first change touches every field it sets; as names that was 241 bytes of each
//! log row, as numbers 57 on average (`linli-bootstrap-bench`). A name outside the table is stored as itself, and rows logged
//! before the table (arrays of names) read as they always did.

use serde::{Deserialize, Serialize};

/// Every top-level key a record's documents hold, numbered by position. Stored rows name fields
/// by these numbers: append only, never reorder or remove.
const FIELDS: &[&str] = &[
    "kind",
    "schema",
    "place",
    "created_at",
    "created_by",
    "notes",
    "category",
    "summary",
    "details",
    "building",
    "unit",
    "room",
    "resident_name",
    "resident_phone",
    "source",
    "session_id",
    "status",
    "departments",
    "deadline",
    "resolution",
    "satisfaction",
    "photos",
    "session_type",
    "run_number",
    "date",
    "estate",
    "leader",
    "consultations",
    "answered_on_site",
    "leaflets",
    "steward",
    "household",
    "channel",
    "topics",
    "needs",
    "case_id",
    "follow_up_due",
    "activity",
    "activity_type",
    "venue",
    "volunteers",
    "hours",
    "residents_served",
];

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Field {
    Code(usize),
    Name(String),
}

/// The stored form of the touched fields.
pub(crate) fn encode(names: &[String]) -> String {
    let fields: Vec<Field> = names
        .iter()
        .map(|n| match FIELDS.iter().position(|f| f == n) {
            Some(i) => Field::Code(i),
            None => Field::Name(n.clone()),
        })
        .collect();
    serde_json::to_string(&fields).unwrap_or_else(|_| "[]".into())
}

/// The touched fields' names from their stored form; what cannot be read is left out (the
/// history then names fewer fields, which is all it is used for).
pub(crate) fn decode(stored: &str) -> Vec<String> {
    let fields: Vec<Field> = serde_json::from_str(stored).unwrap_or_default();
    fields
        .into_iter()
        .filter_map(|f| match f {
            Field::Code(i) => FIELDS.get(i).map(|n| (*n).to_string()),
            Field::Name(n) => Some(n),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use linli_sync_core::RecordKind;

    #[test]
    fn every_field_of_every_kind_has_a_number() {
        for kind in RecordKind::ALL {
            for field in kind.fields() {
                assert!(FIELDS.contains(&field.name), "{kind}: {}", field.name);
            }
        }
        let mut sorted = FIELDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), FIELDS.len(), "a name numbered twice");
    }

    #[test]
    fn known_fields_are_stored_as_numbers_and_read_back_as_names() {
        let names: Vec<String> = ["summary", "category", "status", "notes"]
            .map(String::from)
            .to_vec();
        assert_eq!(encode(&names), "[7,6,16,5]");
        assert_eq!(decode(&encode(&names)), names);
        assert_eq!(encode(&[]), "[]");
        assert!(decode("[]").is_empty());
    }

    #[test]
    fn unknown_names_and_old_rows_read_as_names() {
        let names = vec!["summary".to_string(), "future_field".to_string()];
        assert_eq!(encode(&names), r#"[7,"future_field"]"#);
        assert_eq!(decode(&encode(&names)), names);
        // A row logged before the numbers.
        assert_eq!(decode(r#"["summary","notes"]"#), ["summary", "notes"]);
        // A number past the table or a row that is not an array names nothing.
        assert_eq!(decode("[7,9999]"), ["summary"]);
        assert!(decode("not json").is_empty());
    }

    #[test]
    fn a_new_case_touches_far_fewer_bytes() {
        let names: Vec<String> = RecordKind::Case
            .fields()
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        let as_names = serde_json::to_string(&names).unwrap();
        assert!(encode(&names).len() * 4 < as_names.len());
    }
}
