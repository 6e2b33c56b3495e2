//! The core's errors. Messages are lowercase, say what was wrong and never carry personal data
//! (field values of resident details are never echoed).

use crate::RecordKind;

/// An identifier that did not parse.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdError {
    /// Not a UUID.
    #[error("'{0}' is not a record id (expected a UUID)")]
    Record(String),
    /// Not a place path.
    #[error(
        "'{0}' is not a place id (expected a path of lowercase segments such as hz/baiyang/haitian)"
    )]
    Place(String),
    /// Not a UUID.
    #[error("'{0}' is not a device id (expected a UUID)")]
    Device(String),
}

/// Why a record or an edit was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The `kind` names no record type Linli knows.
    #[error("unknown record kind '{0}' (expected case, bus, contact or volunteer)")]
    UnknownKind(String),
    /// A field name that the kind does not have.
    #[error("{kind} has no field '{field}'")]
    UnknownField {
        /// The record kind.
        kind: RecordKind,
        /// The field asked for.
        field: String,
    },
    /// A field value that fails the field's rule.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// A field that may not be edited this way (audit fields, place, kind, tallies by `set`).
    #[error("{field} cannot be changed: {reason}")]
    ReadOnlyField {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The document is not a Linli record at all.
    #[error("the document is not a linli record: {0}")]
    NotARecord(String),
    /// Automerge refused the bytes or the operation.
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for RecordError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Automerge(e.to_string())
    }
}

impl RecordError {
    /// Shorthand for [`RecordError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A sync message that could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Too short or without the `LNLS` magic.
    #[error("not a linli sync message (missing the LNLS header)")]
    NotSync,
    /// A protocol version this build does not speak.
    #[error(
        "unsupported sync protocol version {0} (this build speaks version {1}: update the app or the server)"
    )]
    Version(u8, u8),
    /// The message type byte is not the one expected here.
    #[error("unexpected message type {0} (expected {1})")]
    MessageType(u8, u8),
    /// The body does not decode.
    #[error("malformed sync message: {0}")]
    Malformed(String),
    /// A limit was exceeded.
    #[error("sync message too large: {0}")]
    TooLarge(String),
}
