//! Sync protocol v2: the messages of `POST /v1/sync` and their binary codec.
//!
//! A message is a 6-byte header, `b"LNLS"`, the protocol version (2) and the message type
//! (1 = request, 2 = response), followed by the message encoded with
//! [postcard](https://docs.rs/postcard) (its wire format is stable since 1.0: varint integers,
//! length-prefixed byte strings and sequences, fields in declaration order). `docs/PROTOCOL.md`
//! spells out every field. Trailing bytes are an error, so a message has exactly one reading.

use serde::{Deserialize, Serialize};

use crate::RecordKind;
use crate::error::CodecError;

/// The protocol version this build speaks. Version 2 added the record's [`Part`] (the shared
/// document or its personal companion), the user's grants in every reply, and replacement
/// snapshots.
pub const PROTOCOL_VERSION: u8 = 2;
/// The media type of sync bodies.
pub const CONTENT_TYPE: &str = "application/vnd.linli.sync";
/// Most changes one push may carry.
pub const MAX_CHANGES_PER_PUSH: usize = 1000;
/// Largest single change accepted, in bytes.
pub const MAX_CHANGE_BYTES: usize = 256 * 1024;
/// Largest sync body, in bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most changes a reply carries in one page.
pub const MAX_PAGE: u32 = 1000;
/// Most bytes of changes (or snapshots) a reply carries in one page; a single larger change
/// still travels alone, so a page always makes progress.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes all compressed changes of one push may inflate to together.
pub const MAX_INFLATE_PER_PUSH: usize = MAX_BODY_BYTES;

const MAGIC: &[u8; 4] = b"LNLS";
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

/// An opaque position in the server's change log. Phones store it and send it back unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(#[serde(with = "serde_bytes_vec")] pub Vec<u8>);

impl Cursor {
    /// The cursor of a phone that has pulled nothing yet.
    pub fn start() -> Self {
        Self(Vec::new())
    }
    /// The v1 server encoding of a log position alone: a big-endian log sequence number (empty
    /// means 0).
    pub fn from_seq(seq: i64) -> Self {
        Self(seq.to_be_bytes().to_vec())
    }
    /// The v1 server encoding with the grant epoch the phone has been bootstrapped for and, in
    /// the middle of a bootstrap, the last record whose snapshot was sent: `seq` (8 bytes,
    /// big-endian), `epoch` (8 bytes), then optionally the record id (16 bytes).
    pub fn with_epoch(seq: i64, epoch: i64, resume: Option<[u8; 16]>) -> Self {
        let mut bytes = Vec::with_capacity(32);
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&epoch.to_be_bytes());
        if let Some(r) = resume {
            bytes.extend_from_slice(&r);
        }
        Self(bytes)
    }
    /// The cursor of a new phone in the middle of its first bootstrap: the log position its
    /// snapshots started at, and the last record whose snapshot was sent. Every grant is new to
    /// it, including those from before grant epochs existed.
    pub fn first_bootstrap(seq: i64, resume: [u8; 16]) -> Self {
        Self::with_epoch(seq, -1, Some(resume))
    }
    /// Whether this cursor is one of [`Cursor::first_bootstrap`].
    pub fn is_first_bootstrap(&self) -> bool {
        self.0.len() == 32 && self.0[8..16] == (-1i64).to_be_bytes()
    }
    fn field(&self, at: usize) -> Option<i64> {
        let raw = self.0.get(at..at + 8)?;
        Some(i64::from_be_bytes(raw.try_into().ok()?)).filter(|v| *v >= 0)
    }
    /// Decodes the log position of a v1 server cursor; `None` if it is not one.
    pub fn seq(&self) -> Option<i64> {
        match self.0.len() {
            0 => Some(0),
            8 | 16 | 32 => self.field(0),
            _ => None,
        }
    }
    /// The grant epoch the phone was bootstrapped for (`None` for an empty or position-only
    /// cursor, or one this server did not issue).
    pub fn grant_epoch(&self) -> Option<i64> {
        match self.0.len() {
            16 | 32 => self.field(8),
            _ => None,
        }
    }
    /// Where an unfinished bootstrap resumes: the last record whose snapshot was sent.
    pub fn resume(&self) -> Option<[u8; 16]> {
        match self.0.len() {
            32 => self.0[16..32].try_into().ok(),
            _ => None,
        }
    }
    /// Whether this is the cursor of a phone that has pulled nothing yet.
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which of a record's two documents a change or snapshot belongs to.
///
/// Every record is one shared document that everyone entitled to its place receives, plus a
/// personal companion document holding residents' names and phone numbers, which the server
/// sends only to roles that may read them (office and admin). The shared document holds the
/// masked form of those fields (`138****5678`), computed where the value is captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Part {
    /// The shared record document.
    #[default]
    Record,
    /// The personal companion document.
    Personal,
}

impl Part {
    /// `record` or `personal`, as stored and logged.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Personal => "personal",
        }
    }
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "record" => Ok(Self::Record),
            "personal" => Ok(Self::Personal),
            other => Err(format!("unknown document part '{other}'")),
        }
    }
}

/// One change a phone pushes: the record it belongs to and the raw Automerge change bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushChange {
    /// The record (document) id, 16 bytes.
    pub record: [u8; 16],
    /// The record kind, so an unknown kind is refused before any work.
    pub kind: RecordKind,
    /// Which of the record's documents the change belongs to.
    pub part: Part,
    /// The Automerge change, exactly as `Change::raw_bytes` gives it.
    #[serde(with = "serde_bytes_vec")]
    pub change: Vec<u8>,
}

/// `POST /v1/sync` request: the phone's unsent changes and its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Where the phone's last pull ended.
    pub cursor: Cursor,
    /// Unsent changes, in the order they were made.
    pub changes: Vec<PushChange>,
    /// Most changes the phone wants back in this reply (the server caps it).
    pub max_pull: u32,
}

/// A change the server stored (or already had).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The change hash, 32 bytes.
    pub hash: [u8; 32],
    /// When the server first received it, milliseconds since the Unix epoch.
    pub received_at: i64,
}

/// Machine-readable reasons for refusing a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// The bytes are not an Automerge change.
    MalformedChange,
    /// The change depends on changes the server does not have.
    MissingDependencies,
    /// The merged document would not be a valid record.
    InvalidRecord,
    /// The change alters the record's kind, place or audit fields.
    ReadOnlyField,
    /// The change names another kind than the document holds.
    KindMismatch,
    /// The record lies outside the places the user is granted.
    OutOfScope,
    /// The change's actor belongs to another device.
    ForeignActor,
    /// The user's role may not make this edit.
    Forbidden,
    /// The server failed; the change can be sent again.
    ServerError,
    /// The change claims a time too far ahead of the server's clock (the device clock is wrong).
    ClockSkew,
    /// The record was rebuilt by the server (a personal-data migration) after this change was
    /// made on top of the old version: the phone marks it refused; enter the edit again.
    RecordReplaced,
}

impl RejectCode {
    /// The stable snake_case name used in JSON and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::MalformedChange => "malformed_change",
            Self::MissingDependencies => "missing_dependencies",
            Self::InvalidRecord => "invalid_record",
            Self::ReadOnlyField => "read_only_field",
            Self::KindMismatch => "kind_mismatch",
            Self::OutOfScope => "out_of_scope",
            Self::ForeignActor => "foreign_actor",
            Self::Forbidden => "forbidden",
            Self::ServerError => "server_error",
            Self::ClockSkew => "clock_skew",
            Self::RecordReplaced => "record_replaced",
        }
    }
    /// Whether sending the same change again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::ServerError | Self::MissingDependencies)
    }
}

/// A refused change with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The change hash (all zeros when the bytes did not parse).
    pub hash: [u8; 32],
    /// The record it was pushed for.
    pub record: [u8; 16],
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable reason, without personal data.
    pub message: String,
}

/// A change made by someone else, delivered to the phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledChange {
    /// The record id.
    pub record: [u8; 16],
    /// Which of the record's documents it belongs to.
    pub part: Part,
    /// The raw Automerge change.
    #[serde(with = "serde_bytes_vec")]
    pub change: Vec<u8>,
    /// When the server received it (ms since epoch).
    pub received_at: i64,
    /// Who pushed it (user name).
    pub user: String,
    /// From which device.
    pub device: String,
}

/// A whole record delivered as its saved Automerge document: how a phone whose grants grew
/// receives the records that were already in the newly granted place. The phone merges it into
/// its own copy (or stores it as a new record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledSnapshot {
    /// The record id.
    pub record: [u8; 16],
    /// Which of the record's documents it is.
    pub part: Part,
    /// The saved document (`Automerge::save`), every change the server held when it was read.
    #[serde(with = "serde_bytes_vec")]
    pub doc: Vec<u8>,
    /// `false`: merge it into the phone's copy. `true`: the server rebuilt the document (a
    /// personal-data migration rewrote its history), so the phone drops its copy of this part
    /// and keeps this one; own unsent changes to it are refused with `record_replaced`.
    pub replace: bool,
}

/// `POST /v1/sync` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Changes stored (or already held), in push order.
    pub accepted: Vec<Accepted>,
    /// Changes refused, with reasons.
    pub rejected: Vec<Rejected>,
    /// Others' changes in the phone's places since its cursor, in log order.
    pub changes: Vec<PulledChange>,
    /// More changes are waiting: sync again.
    pub more: bool,
    /// The cursor to send next time.
    pub cursor: Cursor,
    /// The server's clock (ms since epoch), so phones can show their skew.
    pub server_time: i64,
    /// Whole records of places newly granted to the user (or rebuilt by the server); the phone
    /// applies them before `changes`.
    pub snapshots: Vec<PulledSnapshot>,
    /// The places the user is granted now (each covers everything below it). Records outside
    /// them leave the phone, unless the phone still holds unsent changes to them.
    pub grants: Vec<String>,
    /// Whether this user receives residents' personal data (the personal parts of records). When
    /// `false` the phone keeps only what it captured itself.
    pub personal: bool,
}

fn encode<T: Serialize>(kind: u8, msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(kind);
    // Serializing these plain structs into a Vec cannot fail.
    postcard::to_io(msg, &mut out).expect("postcard encodes into a Vec");
    out
}

fn decode<'a, T: Deserialize<'a>>(kind: u8, bytes: &'a [u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(CodecError::TooLarge(format!(
            "{} bytes, the limit is {MAX_BODY_BYTES}",
            bytes.len()
        )));
    }
    if bytes.len() < 6 || &bytes[..4] != MAGIC {
        return Err(CodecError::NotSync);
    }
    if bytes[4] != PROTOCOL_VERSION {
        return Err(CodecError::Version(bytes[4], PROTOCOL_VERSION));
    }
    if bytes[5] != kind {
        return Err(CodecError::MessageType(bytes[5], kind));
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(&bytes[6..])
        .map_err(|e| CodecError::Malformed(describe_postcard(e)))?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} unexpected trailing bytes",
            rest.len()
        )));
    }
    Ok(msg)
}

fn describe_postcard(e: postcard::Error) -> String {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "the message ends too early".into(),
        E::DeserializeBadVarint => "a length or number is not a valid varint".into(),
        E::DeserializeBadEnum | E::SerdeDeCustom => {
            "an unknown record kind or an invalid value".into()
        }
        E::DeserializeBadUtf8 => "a text field is not valid UTF-8".into(),
        other => other.to_string().to_lowercase(),
    }
}

impl SyncRequest {
    /// Encodes with the v1 header.
    pub fn encode(&self) -> Vec<u8> {
        encode(TYPE_REQUEST, self)
    }
    /// Decodes and checks limits: at most [`MAX_CHANGES_PER_PUSH`] changes of at most
    /// [`MAX_CHANGE_BYTES`] each.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let req: Self = decode(TYPE_REQUEST, bytes)?;
        if req.changes.len() > MAX_CHANGES_PER_PUSH {
            return Err(CodecError::TooLarge(format!(
                "{} changes in one push, the limit is {MAX_CHANGES_PER_PUSH}",
                req.changes.len()
            )));
        }
        if let Some(big) = req
            .changes
            .iter()
            .find(|c| c.change.len() > MAX_CHANGE_BYTES)
        {
            return Err(CodecError::TooLarge(format!(
                "a change of {} bytes, the limit is {MAX_CHANGE_BYTES}",
                big.change.len()
            )));
        }
        if req.cursor.seq().is_none() {
            return Err(CodecError::Malformed(
                "the cursor is not one this server issued".into(),
            ));
        }
        Ok(req)
    }
}

impl SyncResponse {
    /// Encodes with the v1 header.
    pub fn encode(&self) -> Vec<u8> {
        encode(TYPE_RESPONSE, self)
    }
    /// Decodes a reply.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        decode(TYPE_RESPONSE, bytes)
    }
}

/// Byte strings as postcard's length-prefixed bytes rather than a sequence of u8 (same bytes on
/// the wire with postcard, but explicit and cheaper to decode).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SyncRequest {
        SyncRequest {
            cursor: Cursor::from_seq(42),
            changes: vec![PushChange {
                record: [7; 16],
                kind: RecordKind::Case,
                part: Part::Personal,
                change: vec![1, 2, 3],
            }],
            max_pull: 100,
        }
    }

    #[test]
    fn request_round_trips() {
        let req = sample();
        assert_eq!(SyncRequest::decode(&req.encode()).unwrap(), req);
    }

    #[test]
    fn response_round_trips() {
        let resp = SyncResponse {
            accepted: vec![Accepted {
                hash: [1; 32],
                received_at: 5,
            }],
            rejected: vec![Rejected {
                hash: [2; 32],
                record: [3; 16],
                code: RejectCode::InvalidRecord,
                message: "status: bad".into(),
            }],
            changes: vec![],
            more: true,
            cursor: Cursor::from_seq(9),
            server_time: 77,
            snapshots: vec![PulledSnapshot {
                record: [4; 16],
                part: Part::Record,
                doc: vec![0x85, 0x6f, 0x4a, 0x83],
                replace: true,
            }],
            grants: vec!["hz/baiyang".into()],
            personal: false,
        };
        assert_eq!(SyncResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(
                SyncRequest::decode(&bytes[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            SyncRequest::decode(&trailing),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn header_errors_are_specific() {
        let mut bytes = sample().encode();
        bytes[4] = 9;
        assert_eq!(SyncRequest::decode(&bytes), Err(CodecError::Version(9, 2)));
        assert_eq!(
            SyncRequest::decode(b"{\"json\":1}"),
            Err(CodecError::NotSync)
        );
        let resp = SyncResponse::default().encode();
        assert!(matches!(
            SyncRequest::decode(&resp),
            Err(CodecError::MessageType(2, 1))
        ));
    }

    #[test]
    fn unknown_kind_tag_is_refused() {
        let mut bytes = sample().encode();
        // Layout: header(6) cursor(len 1 + 8) changes-count(1) record(16) kind(1)...
        let kind_at = 6 + 1 + 8 + 1 + 16;
        bytes[kind_at] = 99;
        let err = SyncRequest::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("unknown record kind"), "{err}");
    }

    #[test]
    fn cursors_carry_position_epoch_and_resume_point() {
        let c = Cursor::with_epoch(42, 7, None);
        assert_eq!(
            (c.seq(), c.grant_epoch(), c.resume()),
            (Some(42), Some(7), None)
        );
        let r = Cursor::with_epoch(42, 7, Some([9; 16]));
        assert_eq!(
            (r.seq(), r.grant_epoch(), r.resume()),
            (Some(42), Some(7), Some([9; 16]))
        );
        assert_eq!(Cursor::from_seq(5).grant_epoch(), None);
        assert!(Cursor::start().is_start());
        assert_eq!(Cursor(vec![0; 12]).seq(), None);
        assert_eq!(Cursor::with_epoch(-1, 0, None).seq(), None);
        let mut req = sample();
        req.cursor = r.clone();
        assert_eq!(SyncRequest::decode(&req.encode()).unwrap().cursor, r);
        req.cursor = Cursor(vec![1; 12]);
        assert!(SyncRequest::decode(&req.encode()).is_err());
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_or_panic() {
        let mut bytes = b"LNLS\x01\x01".to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(SyncRequest::decode(&bytes).is_err());
    }
}
