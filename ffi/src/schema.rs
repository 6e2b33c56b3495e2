//! The record kinds and their fields, mirrored into plain [`KindInfo`] records for apps.

use linli_sync_core::RecordKind;
use linli_sync_core::schema::{Code, FieldType};

use crate::types::{Choice, FieldInfo, FieldType as Editing, KindInfo};

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
            kind: kind.into(),
            code: kind.as_str().to_string(),
            label: kind.label().to_string(),
            fields: kind
                .fields()
                .iter()
                .map(|f| {
                    let (field_type, codes): (Editing, &[Code]) = match f.ty {
                        FieldType::Str => (Editing::Str, &[]),
                        FieldType::Code(c) => (Editing::Code, c),
                        FieldType::Codes(c) => (Editing::Codes, c),
                        FieldType::List => (Editing::List, &[]),
                        FieldType::Date => (Editing::Date, &[]),
                        FieldType::Phone => (Editing::Phone, &[]),
                        FieldType::Number => (Editing::Number, &[]),
                        FieldType::Text => (Editing::Text, &[]),
                        FieldType::Counter => (Editing::Tally, &[]),
                        FieldType::Fixed => (Editing::Fixed, &[]),
                    };
                    FieldInfo {
                        name: f.name.to_string(),
                        label: f.label.to_string(),
                        field_type,
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
