//! The one error type of the device SDK, [`ApiError`], which also crosses the UniFFI boundary
//! (Kotlin `ApiException`, Swift `ApiError`, Python `ApiError`).
//!
//! Every variant is something an app can act on (go online, log in, fix a field, …). Messages are
//! lowercase, short and never carry personal data: field values are not echoed (the core's own
//! messages only quote codes, dates and field names), SQL errors are reduced to their category and
//! server error bodies are passed on only as the server's own sanitised `message`.

use linli_sync_core::{IdError, RecordError};

/// What went wrong in a call into the Linli device SDK.
///
/// Each case is something the app can act on; `reason` texts are short, lowercase English meant
/// for logs and support, never containing personal data (field values are not echoed). Show your
/// own localised text per case rather than the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi::export(Display)]
pub enum ApiError {
    /// The server cannot be reached (no network, connection refused, timeout). Everything
    /// captured stays on the phone; sync again later.
    #[error("the server cannot be reached ({reason}); your changes are kept on this phone")]
    Offline {
        /// What failed, e.g. "connection refused".
        reason: String,
    },
    /// The server's certificate was refused (unknown issuer, expired, for another host name) or
    /// the TLS handshake failed: `reason` names the problem. Nothing was sent.
    #[error("secure connection refused: {reason}")]
    Tls {
        /// The certificate problem, in words an operator can act on.
        reason: String,
    },
    /// An admin revoked this device (a lost or stolen phone): the SDK has erased the records,
    /// the outbox and the login from this phone. `unsent_changes` counts the signed-in user's
    /// changes that had not reached the server and were erased with it. The app can log in
    /// again as a new device.
    #[error(
        "this device was revoked by an admin; its data was erased ({unsent_changes} unsent changes)"
    )]
    DeviceRevoked {
        /// Changes made on this phone that had not reached the server.
        unsent_changes: u32,
    },
    /// Not logged in, the user name or password was refused, or the server no longer accepts the
    /// stored login: ask the user to log in again.
    #[error("not authorised: {reason}")]
    Unauthorized {
        /// What to do about it.
        reason: String,
    },
    /// Logged in, but the user's role or granted places do not allow this (for example a record
    /// at a place outside the places granted to them).
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },
    /// An argument is wrong: unknown kind or field, a value that fails its rule, a bad id or URL.
    /// `field` names the argument or record field at fault, so a form can mark it.
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The argument or record field at fault (`place`, `status`, `server_url`, …).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such record or outbox entry on this phone.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (an id, never personal data).
        what: String,
    },
    /// The call does not fit the current state (e.g. discarding a change that is not rejected,
    /// logging in as someone else while their changes are unsent).
    #[error("{reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// The on-device store failed (disk full, damaged file, …).
    #[error("the on-device store failed: {reason}")]
    Storage {
        /// The failure's category, without data.
        reason: String,
    },
    /// The server answered with an error.
    #[error("the server answered {status}: {reason}")]
    Server {
        /// HTTP status (0 when the reply could not be read at all).
        status: u16,
        /// The server's message.
        reason: String,
    },
}

impl ApiError {
    /// A stable snake_case code for scripts and logs: `offline`, `tls`, `device_revoked`,
    /// `unauthorized`, `forbidden`, `invalid_input`, `not_found`, `conflict`, `storage`, `server`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Offline { .. } => "offline",
            Self::Tls { .. } => "tls",
            Self::DeviceRevoked { .. } => "device_revoked",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::InvalidInput { .. } => "invalid_input",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Storage { .. } => "storage",
            Self::Server { .. } => "server",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_logged_in() -> Self {
        Self::Unauthorized {
            reason: "not logged in on this phone: log in first".into(),
        }
    }

    pub(crate) fn storage(reason: impl Into<String>) -> Self {
        Self::Storage {
            reason: reason.into(),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        // Only the SQLite result code's description: never SQL text or bound values.
        let reason = match &e {
            rusqlite::Error::SqliteFailure(err, _) => match err.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    "the database is busy (another process holds it)".to_string()
                }
                rusqlite::ErrorCode::DiskFull => "the disk is full".to_string(),
                rusqlite::ErrorCode::ReadOnly => "the database is read-only".to_string(),
                rusqlite::ErrorCode::CannotOpen => "the database file cannot be opened".to_string(),
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt => {
                    "the database file is damaged".to_string()
                }
                rusqlite::ErrorCode::SystemIoFailure => "a disk read or write failed".to_string(),
                other => format!("sqlite error ({other:?})").to_lowercase(),
            },
            _ => "unexpected data in the database".to_string(),
        };
        Self::Storage { reason }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::UnknownKind(_) => Self::invalid("kind", e.to_string()),
            RecordError::UnknownField { ref field, .. } => Self::invalid(
                field.clone(),
                format!("no such field for this kind of record ({e})"),
            ),
            RecordError::InvalidField { field, reason } => Self::invalid(field, reason),
            RecordError::ReadOnlyField { field, reason } => {
                Self::invalid(field, format!("cannot be changed: {reason}"))
            }
            RecordError::NotARecord(_) => Self::Conflict {
                reason: "the record is incomplete on this phone: sync to receive the rest".into(),
            },
            RecordError::Automerge(_) => Self::storage("a stored document could not be read"),
        }
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        let field = match e {
            IdError::Record(_) => "id",
            IdError::Place(_) => "place",
            IdError::Device(_) => "device_id",
        };
        Self::invalid(field, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_do_not_echo_personal_values() {
        let e: ApiError = linli_sync_core::schema::check_phone("resident_phone", "call 555 secret")
            .unwrap_err()
            .into();
        assert_eq!(e.code(), "invalid_input");
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
