//! The record kinds and their fields, mirrored into plain [`KindInfo`] records for apps.

use linli_sync_core::RecordKind;
use linli_sync_core::schema::{Code, FieldType};

use crate::types::{Choice, FieldInfo, KindInfo};

/// Every record kind with its fields, labels and allowed codes, in display order.
pub fn record_kinds() -> Vec<KindInfo> {
    RecordKind::ALL.iter().map(|k| kind_info(*k)).collect()
}

pub(crate) fn kind_info(kind: RecordKind) -> KindInfo {
    KindInfo {
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

/// The Chinese label of a kind code (the code itself when unknown).
pub(crate) fn kind_label(code: &str) -> String {
    code.parse::<RecordKind>()
        .map(|k| k.label().to_string())
        .unwrap_or_else(|_| code.to_string())
}
