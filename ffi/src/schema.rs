//! The record kinds and their fields, mirrored into plain [`KindInfo`] records for apps.

use linli_sync_core::RecordKind;
use linli_sync_core::schema::{Code, FieldType};

use crate::types::{Choice, FieldInfo, KindInfo};

/// Every record kind (`case`, `bus`, `contact`, `volunteer`) with its fields, Chinese labels and
/// allowed codes, in display order: what an app needs to build its forms and pass `create` and
/// `set` valid field names and codes. Works offline.
#[uniffi::export]
pub fn record_kinds() -> Vec<KindInfo> {
    RecordKind::ALL
        .iter()
        .copied()
        .map(KindInfo::from)
        .collect()
}

impl From<RecordKind> for KindInfo {
    /// The kind's fields, labels and codes, as plain data.
    fn from(kind: RecordKind) -> Self {
        Self {
            code: kind.as_str().to_string(),
            label: kind.label().to_string(),
            fields: kind
                .fields()
                .iter()
                .map(|f| {
                    let (field_type, codes): (&str, &[Code]) = match f.ty {
                        FieldType::Str => ("str", &[]),
                        FieldType::Code(c) => ("code", c),
                        FieldType::Codes(c) => ("codes", c),
                        FieldType::List => ("list", &[]),
                        FieldType::Date => ("date", &[]),
                        FieldType::Phone => ("phone", &[]),
                        FieldType::Number => ("number", &[]),
                        FieldType::Text => ("text", &[]),
                        FieldType::Counter => ("tally", &[]),
                        FieldType::Fixed => ("fixed", &[]),
                    };
                    FieldInfo {
                        name: f.name.to_string(),
                        label: f.label.to_string(),
                        field_type: field_type.to_string(),
                        required: f.required,
                        personal: f.personal,
                        editable: !matches!(f.ty, FieldType::Counter | FieldType::Fixed),
                        choices: codes
                            .iter()
                            .map(|c| Choice {
                                code: c.code.to_string(),
                                label: c.label.to_string(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// The Chinese label of a kind code (the code itself when unknown).
pub(crate) fn kind_label(code: &str) -> String {
    code.parse::<RecordKind>()
        .map(|k| k.label().to_string())
        .unwrap_or_else(|_| code.to_string())
}
