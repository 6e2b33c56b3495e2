//! The plain data the SDK hands to apps: owned strings, numbers, vectors and records of them, each
//! exported as a UniFFI record (a Kotlin data class, a Swift struct). These are the ffi crate's
//! own mirror types, filled from the core's types through `From` conversions; no core type
//! crosses the boundary. Times are milliseconds since the Unix epoch.

use linli_sync_core::RecordId;
use linli_sync_core::protocol::{self, Rejected};
use serde::Serialize;

/// Implements `as_str` (the stable snake_case code, as in JSON and logs) and `Display` for a
/// mirror enum, and the conversion from the core's enum where there is one.
macro_rules! codes {
    ($name:ident { $($variant:ident => $code:literal),* $(,)? }) => {
        impl $name {
            /// The stable snake_case code (`case`, `pending`, `forbidden`, …).
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::ApiError;
            fn from_str(s: &str) -> Result<Self, crate::ApiError> {
                match s {
                    $($code => Ok(Self::$variant),)*
                    other => Err(crate::ApiError::invalid(
                        stringify!($name),
                        format!("unknown code '{other}'"),
                    )),
                }
            }
        }
    };
}

/// The four kinds of record captured in the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// 诉求: a case raised by a resident.
    Case,
    /// 直通车班次 / 三方联合接访: a service-bus session or joint reception.
    Bus,
    /// 走访记录: a steward's contact with a household.
    Contact,
    /// 志愿服务: a volunteer activity.
    Volunteer,
}

codes!(RecordKind { Case => "case", Bus => "bus", Contact => "contact", Volunteer => "volunteer" });

impl From<linli_sync_core::RecordKind> for RecordKind {
    fn from(k: linli_sync_core::RecordKind) -> Self {
        match k {
            linli_sync_core::RecordKind::Case => Self::Case,
            linli_sync_core::RecordKind::Bus => Self::Bus,
            linli_sync_core::RecordKind::Contact => Self::Contact,
            linli_sync_core::RecordKind::Volunteer => Self::Volunteer,
        }
    }
}

impl From<RecordKind> for linli_sync_core::RecordKind {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::Case => Self::Case,
            RecordKind::Bus => Self::Bus,
            RecordKind::Contact => Self::Contact,
            RecordKind::Volunteer => Self::Volunteer,
        }
    }
}

/// What a user does, which decides what they may see and edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Building steward (楼长).
    Steward,
    /// Service-bus team member (直通车).
    Bus,
    /// Back-office staff of a community or street (社区/街道).
    Office,
    /// System operator.
    Admin,
}

codes!(Role { Steward => "steward", Bus => "bus", Office => "office", Admin => "admin" });

impl From<linli_sync_core::rules::Role> for Role {
    fn from(r: linli_sync_core::rules::Role) -> Self {
        use linli_sync_core::rules::Role as R;
        match r {
            R::Steward => Self::Steward,
            R::Bus => Self::Bus,
            R::Office => Self::Office,
            R::Admin => Self::Admin,
        }
    }
}

/// Where one of this phone's own changes stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting to be sent (or sent again after a refusal that may pass later).
    Pending,
    /// Refused by the server: kept, with the reason, until the user discards it.
    Rejected,
}

codes!(OutboxState { Pending => "pending", Rejected => "rejected" });

/// Where a change in a record's history stands, as far as this phone knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    /// Accepted by the server (who made it and when are confirmed).
    Synced,
    /// This phone's own change, not sent yet.
    Pending,
    /// This phone's own change, refused by the server.
    Rejected,
    /// Received inside a whole record (who made it is not known here).
    Unknown,
}

codes!(ChangeState { Synced => "synced", Pending => "pending", Rejected => "rejected", Unknown => "unknown" });

/// Why the server refused a change (or, `RecordReplaced`, why this phone did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The bytes are not an Automerge change.
    MalformedChange,
    /// The change depends on changes the server does not have yet (sent again).
    MissingDependencies,
    /// The merged record would not be valid (the message names the field).
    InvalidRecord,
    /// The change alters the record's kind, place or audit fields.
    ReadOnlyField,
    /// The change names another kind than the record has.
    KindMismatch,
    /// The record lies outside the places granted to the user.
    OutOfScope,
    /// The change was made under another device's identity.
    ForeignActor,
    /// The user's role may not make this edit.
    Forbidden,
    /// The server failed; the change is sent again.
    ServerError,
    /// The change claims a time too far ahead of the server's clock.
    ClockSkew,
    /// The server rebuilt the record after this change was made: enter the edit again.
    RecordReplaced,
}

codes!(RejectCode {
    MalformedChange => "malformed_change",
    MissingDependencies => "missing_dependencies",
    InvalidRecord => "invalid_record",
    ReadOnlyField => "read_only_field",
    KindMismatch => "kind_mismatch",
    OutOfScope => "out_of_scope",
    ForeignActor => "foreign_actor",
    Forbidden => "forbidden",
    ServerError => "server_error",
    ClockSkew => "clock_skew",
    RecordReplaced => "record_replaced",
});

impl From<protocol::RejectCode> for RejectCode {
    fn from(c: protocol::RejectCode) -> Self {
        use protocol::RejectCode as C;
        match c {
            C::MalformedChange => Self::MalformedChange,
            C::MissingDependencies => Self::MissingDependencies,
            C::InvalidRecord => Self::InvalidRecord,
            C::ReadOnlyField => Self::ReadOnlyField,
            C::KindMismatch => Self::KindMismatch,
            C::OutOfScope => Self::OutOfScope,
            C::ForeignActor => Self::ForeignActor,
            C::Forbidden => Self::Forbidden,
            C::ServerError => Self::ServerError,
            C::ClockSkew => Self::ClockSkew,
            C::RecordReplaced => Self::RecordReplaced,
        }
    }
}

impl RejectCode {
    /// Whether the change stays pending and is sent again at the next sync.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ServerError | Self::MissingDependencies)
    }
}

/// How a field is edited (to build a form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Short text.
    Str,
    /// One code out of `choices`.
    Code,
    /// Several codes out of `choices` (comma-separated in `set`).
    Codes,
    /// A list of short texts (comma-separated in `set`).
    List,
    /// A date, `YYYY-MM-DD`.
    Date,
    /// A phone number (personal data).
    Phone,
    /// A number.
    Number,
    /// Collaborative text: concurrent edits merge character by character.
    Text,
    /// A tally: change it with `tally`, concurrent tallies add up.
    Tally,
    /// Set at creation, never changed.
    Fixed,
}

codes!(FieldType {
    Str => "str",
    Code => "code",
    Codes => "codes",
    List => "list",
    Date => "date",
    Phone => "phone",
    Number => "number",
    Text => "text",
    Tally => "tally",
    Fixed => "fixed",
});

/// How the phone reaches servers. Everything is optional; the defaults are right for an app in
/// the field.
#[derive(Debug, Clone, Default, PartialEq, Eq, uniffi::Record)]
pub struct ConnectionOptions {
    /// Extra CA certificates (PEM text, one or more per string) trusted beside the platform's
    /// store: for a server whose certificate comes from an intranet's own CA.
    #[uniffi(default = [])]
    pub extra_ca_certs_pem: Vec<String>,
    /// Development only: allow plain `http://` to hosts other than this device (passwords,
    /// tokens and residents' data then cross the network unencrypted; a warning is logged).
    /// Plain HTTP to this device (127.0.0.1, ::1, localhost) is always allowed.
    #[uniffi(default = false)]
    pub allow_insecure_http: bool,
}

/// One `field=value` pair for `FieldClient.create` and `FieldClient.set`.
/// Lists are comma-separated (`departments=police,housing`); an empty value clears an optional
/// field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct FieldValue {
    /// Field name, e.g. `status`.
    pub name: String,
    /// The value as text.
    pub value: String,
}

impl FieldValue {
    /// A pair from anything string-like.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Parses `name=value` (split at the first `=`; the value may be empty or contain `=`).
    pub fn parse(text: &str) -> Result<Self, crate::ApiError> {
        match text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok(Self::new(name.trim(), value)),
            _ => Err(crate::ApiError::InvalidInput {
                field: "fields".into(),
                reason: "expected field=value".into(),
            }),
        }
    }
}

impl<N: Into<String>, V: Into<String>> From<(N, V)> for FieldValue {
    fn from((name, value): (N, V)) -> Self {
        Self::new(name, value)
    }
}

/// A place the signed-in user is granted (everything below it is covered too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct PlaceInfo {
    /// The place id, a path such as `hz/baiyang/haitian`.
    pub id: String,
    /// Its name, e.g. 海天社区.
    pub name: String,
}

/// The signed-in user, as the server described them at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct UserInfo {
    /// Login name.
    pub username: String,
    /// Name to show.
    pub display_name: String,
    /// What the user does.
    pub role: Role,
    /// Granted places.
    pub places: Vec<PlaceInfo>,
}

/// Who this phone is and who is signed in on it. Answered without the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct WhoAmI {
    /// This install's device id (a UUID generated once).
    pub device_id: String,
    /// This install's Automerge actor (hex).
    pub actor_id: String,
    /// The server last logged in to.
    pub server_url: Option<String>,
    /// Whether a token is stored (it may still have expired on the server).
    pub logged_in: bool,
    /// The user last logged in (kept after logout until another user logs in).
    pub user: Option<UserInfo>,
    /// When the stored token expires, as the server gave it.
    pub token_expires_at: Option<String>,
    /// Changes waiting to be sent.
    pub pending_changes: u32,
    /// Changes the server refused (kept until discarded).
    pub rejected_changes: u32,
    /// When this phone last synced successfully.
    pub last_sync_at: Option<i64>,
}

/// One line of the record list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct RecordSummary {
    /// Record id (UUID).
    pub id: String,
    /// The record's kind (`None` while only part of a pulled record is here).
    pub kind: Option<RecordKind>,
    /// Place id.
    pub place: String,
    /// A case's status code; `None` for other kinds.
    pub status: Option<String>,
    /// A one-line title.
    pub title: String,
    /// Own changes not yet accepted by the server (pending or rejected).
    pub pending_changes: u32,
    /// Of those, how many the server refused.
    pub rejected_changes: u32,
    /// When this phone last stored the record.
    pub updated_at: i64,
}

/// One value of a conflicted field, with who set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct ConflictValue {
    /// The value, as JSON text.
    pub value_json: String,
    /// Who set it: the user name the server confirmed, `me (unsynced)` for this phone's own
    /// unsent change, or `unknown`.
    pub user: String,
    /// From which device (empty when unknown).
    pub device: String,
    /// The change that set it (hex hash).
    pub change: String,
    /// The device's claimed time of that change (advisory).
    pub claimed_at: i64,
    /// When the server received that change, if known.
    pub received_at: Option<i64>,
}

/// A field that people set differently while apart. The winner is shown; every value is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct FieldConflict {
    /// Field name.
    pub field: String,
    /// Chinese label.
    pub label: String,
    /// The value displayed (the deterministic winner), as JSON text.
    pub winner_json: String,
    /// Every concurrent value, winner included.
    pub values: Vec<ConflictValue>,
}

/// One change in a record's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct HistoryEntry {
    /// Change hash (hex).
    pub hash: String,
    /// Who made it (as in `ConflictValue.user`).
    pub user: String,
    /// From which device (empty when unknown).
    pub device: String,
    /// The device's claimed time (advisory).
    pub claimed_at: i64,
    /// When the server received it, if known.
    pub received_at: Option<i64>,
    /// What the editing device said it did (`set status`, `note`, …).
    pub message: Option<String>,
    /// Top-level fields it touched.
    pub touched: Vec<String>,
    /// Whether the server has it, or it is this phone's own, unsent or refused.
    pub state: ChangeState,
}

/// A record with its merged value, its conflicts and its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct RecordView {
    /// Record id.
    pub id: String,
    /// The record's kind.
    pub kind: RecordKind,
    /// Kind label in Chinese.
    pub kind_label: String,
    /// Place id.
    pub place: String,
    /// A case's status code.
    pub status: Option<String>,
    /// One-line title.
    pub title: String,
    /// The merged, typed value as JSON text (tallies as numbers, text as strings, notes as a list).
    pub value_json: String,
    /// Fields with concurrent values.
    pub conflicts: Vec<FieldConflict>,
    /// Every change, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Own changes not yet accepted (pending or rejected).
    pub pending_changes: u32,
}

/// A change in the outbox: waiting to be sent, or refused by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct OutboxItem {
    /// Outbox entry number (for `FieldClient.discard`).
    pub id: i64,
    /// The record.
    pub record_id: String,
    /// The record kind.
    pub kind: RecordKind,
    /// Change hash (hex).
    pub hash: String,
    /// What the change does (`create case`, `set status`, `tally leaflets +5`, `note`).
    pub description: Option<String>,
    /// When it was made on this phone.
    pub created_at: i64,
    /// Waiting to be sent, or refused.
    pub state: OutboxState,
    /// The reason for the last refusal (also set on pending changes whose last refusal was
    /// retryable).
    pub reject_code: Option<RejectCode>,
    /// The server's explanation.
    pub reject_message: Option<String>,
}

/// A change the server refused during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct RejectedChange {
    /// The record.
    pub record: String,
    /// The change hash (hex).
    pub hash: String,
    /// Why.
    pub code: RejectCode,
    /// The server's explanation.
    pub message: String,
    /// Whether the change stays pending and is sent again next sync.
    pub retryable: bool,
}

impl From<&Rejected> for RejectedChange {
    fn from(r: &Rejected) -> Self {
        Self {
            record: RecordId::from_bytes(r.record).to_string(),
            hash: crate::store::to_hex(&r.hash),
            code: r.code.into(),
            message: r.message.clone(),
            retryable: r.code.is_retryable(),
        }
    }
}

/// What one `FieldClient.sync` did: changes pushed and accepted, changes pulled, refusals with
/// their reasons, and whether more is waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct SyncReport {
    /// Changes sent.
    pub pushed: u32,
    /// Of those, accepted (or already held) by the server.
    pub accepted: u32,
    /// Changes by others received and applied.
    pub pulled: u32,
    /// Changes received that could not be applied (damaged on the way; not retried).
    pub skipped: u32,
    /// Refusals, with reasons.
    pub rejected: Vec<RejectedChange>,
    /// Whether the server still has more, or changes are still waiting (the round limit was hit).
    pub more_pending: bool,
    /// Records outside the user's grants that stay on this phone only because it has unsent
    /// changes to them: ask the user to sync them (they will be refused as out of scope) and
    /// discard them, and they leave the phone at the next sync.
    pub kept_outside_grants: Vec<String>,
    /// Round trips made.
    pub rounds: u32,
}

/// How far a running sync has got, as told to a `SyncListener` after each round trip. Counts are
/// totals since the sync started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct SyncProgress {
    /// Round trips made so far.
    pub rounds: u32,
    /// Own changes sent so far.
    pub pushed: u32,
    /// Of those, accepted by the server.
    pub accepted: u32,
    /// Changes by others received and merged so far.
    pub pulled: u32,
    /// Own changes the server refused so far.
    pub rejected: u32,
    /// Whether this is the last report of this sync.
    pub done: bool,
}

impl From<&SyncReport> for SyncProgress {
    fn from(r: &SyncReport) -> Self {
        Self {
            rounds: r.rounds,
            pushed: r.pushed,
            accepted: r.accepted,
            pulled: r.pulled,
            rejected: r.rejected.len() as u32,
            done: false,
        }
    }
}

impl SyncProgress {
    /// The same progress, marked as the last report (or not).
    pub fn done(mut self, done: bool) -> Self {
        self.done = done;
        self
    }
}

/// One allowed value of a coded field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct Choice {
    /// Stored code.
    pub code: String,
    /// Chinese label.
    pub label: String,
}

/// A field of a record kind, to build forms and parse `field=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct FieldInfo {
    /// Field name.
    pub name: String,
    /// Chinese label.
    pub label: String,
    /// How it is edited.
    pub field_type: FieldType,
    /// Must be non-empty.
    pub required: bool,
    /// Personal data.
    pub personal: bool,
    /// Whether `set` may change it (tallies are changed with `tally`, fixed fields never).
    pub editable: bool,
    /// Allowed codes for `code` and `codes` fields.
    pub choices: Vec<Choice>,
}

/// A record kind and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, uniffi::Record)]
pub struct KindInfo {
    /// The kind.
    pub kind: RecordKind,
    /// Its code (`case`, …), as `kind` spells it.
    pub code: String,
    /// Chinese label.
    pub label: String,
    /// Fields in display order.
    pub fields: Vec<FieldInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_parse_at_the_first_equals_sign() {
        assert_eq!(
            FieldValue::parse("summary=a=b").unwrap(),
            FieldValue::new("summary", "a=b")
        );
        assert_eq!(
            FieldValue::parse("deadline=").unwrap(),
            FieldValue::new("deadline", "")
        );
        let err = FieldValue::parse("resident_phone 13800001111").unwrap_err();
        assert!(!err.to_string().contains("1380"), "{err}");
        assert!(FieldValue::parse("=x").is_err());
    }
}
