//! The server's accept logic for one pushed change, sans-I/O: the caller parses the bytes
//! ([`parse_change`]), loads the document, calls [`ingest`] (the shared record document) or
//! [`ingest_personal`] (its personal part), and on [`Ingested::Applied`] persists the change and
//! the new document in one transaction before acknowledging it. Phones run the same functions on
//! their own edits before they keep them, so both sides apply one set of rules.
//!
//! Checks, cheapest first: the bytes are one Automerge change chunk (no other chunk type reaches
//! Automerge's parser; a compressed change may not inflate past [`MAX_CHANGE_BYTES`], nor all of
//! a push's past [`MAX_INFLATE_PER_PUSH`]); the document does not hold it yet (else
//! [`Ingested::Duplicate`]); its dependencies are held; its claimed time is not ahead of the
//! server's clock; its tally operations are within bounds; the record stays within its size
//! bound. Then, on a trial copy: it keeps the document's kind and fixed fields; every key and
//! every concurrent value has its field's shape ([`crate::shape`]); the caller's `authorize`
//! accepts the record's place; the audit fields and notes it writes name the pusher and the
//! change's own time; the role's field rules ([`crate::rules`]) allow it; and the merged record
//! still validates. A refusal leaves the document exactly as it was.

use std::io::Read;

use automerge::{Change, ChangeHash};
use serde_json::Value;

use crate::document::RecordDoc;
use crate::ids::PlaceId;
use crate::limits;
use crate::personal::PersonalDoc;
use crate::protocol::{MAX_CHANGE_BYTES, MAX_INFLATE_PER_PUSH, RejectCode};
use crate::records::Note;
use crate::rules::{self, Edit, Role};
use crate::schema::{FieldType, RecordKind};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable reason, without personal data.
    pub message: String,
    /// The change hash (zeros if the bytes did not parse).
    pub hash: [u8; 32],
    /// The record's place, when it was known by the time of the refusal.
    pub place: Option<PlaceId>,
}

impl Refusal {
    /// A refusal for a change.
    pub fn new(code: RejectCode, message: impl Into<String>, hash: [u8; 32]) -> Self {
        Self {
            code,
            message: message.into(),
            hash,
            place: None,
        }
    }
}

/// Who pushes a change, as the server knows them: what the change's audit fields and notes must
/// name, and the clock its claimed time is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Pusher<'a> {
    /// The pusher's role.
    pub role: Role,
    /// The pusher's login name (what `created_by` and a new note's `author` must be).
    pub user: &'a str,
    /// The server's receive time, ms since the epoch (a phone checking its own edit passes its
    /// own clock).
    pub received_at: i64,
}

/// A newly applied change.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its hash.
    pub hash: [u8; 32],
    /// Its actor (hex).
    pub actor: String,
    /// The device's claimed time, ms since epoch.
    pub claimed_at: i64,
    /// Top-level fields it touched.
    pub touched: Vec<String>,
    /// The shared document's merged record after the change, as the checks read it (`None` for
    /// a personal part), so the caller need not read the document again.
    pub record: Option<Box<crate::records::Record>>,
    /// Some scalar field of the merged shared document now holds concurrent values.
    pub has_conflicts: bool,
}

/// What became of an accepted change.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// The document already held it: acknowledge again, store nothing.
    Duplicate {
        /// Its hash.
        hash: [u8; 32],
    },
    /// Newly applied to the document.
    Applied(Applied),
}

/// Automerge's chunk magic bytes.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge's chunk type of an uncompressed change (whose columns may not be compressed).
const CHUNK_CHANGE: u8 = 1;
/// Automerge's chunk type of a DEFLATE-compressed change.
const CHUNK_COMPRESSED: u8 = 2;

/// How many bytes the compressed changes of one push may still inflate to.
#[derive(Debug, Clone)]
pub struct InflateBudget {
    left: usize,
}

impl InflateBudget {
    /// The budget of one push, [`MAX_INFLATE_PER_PUSH`].
    pub fn per_push() -> Self {
        Self {
            left: MAX_INFLATE_PER_PUSH,
        }
    }
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal::new(RejectCode::MalformedChange, message, [0; 32])
}

/// Parses one pushed change. Only an Automerge change chunk gets as far as Automerge's parser:
/// documents, bundles and unknown chunk types are refused on their type byte, because Automerge
/// would inflate their compressed columns without a bound before noticing they are no change.
/// A compressed change is first inflated here, at most [`MAX_CHANGE_BYTES`] and at most what is
/// left of the push's `budget`, so a DEFLATE bomb is refused after reading that much.
pub fn parse_change(bytes: &[u8], budget: &mut InflateBudget) -> Result<Change, Refusal> {
    if bytes.len() < 9 || bytes[..4] != CHUNK_MAGIC {
        return Err(malformed("not an automerge change"));
    }
    match bytes[8] {
        CHUNK_CHANGE => {}
        CHUNK_COMPRESSED => {
            let body = compressed_body(&bytes[9..]).ok_or_else(|| {
                malformed("not an automerge change: a compressed chunk with a bad length")
            })?;
            let limit = MAX_CHANGE_BYTES.min(budget.left);
            let mut inflated = Vec::new();
            let read = flate2::read::DeflateDecoder::new(body)
                .take(limit as u64 + 1)
                .read_to_end(&mut inflated);
            if inflated.len() > limit {
                return Err(malformed(if limit < MAX_CHANGE_BYTES {
                    format!(
                        "the compressed changes of this push inflate past {MAX_INFLATE_PER_PUSH} bytes"
                    )
                } else {
                    format!("a compressed change inflates past {MAX_CHANGE_BYTES} bytes")
                }));
            }
            if read.is_err() {
                return Err(malformed("not an automerge change: bad compressed data"));
            }
            budget.left -= inflated.len();
        }
        0 => return Err(malformed("an automerge document, not a change")),
        3 => return Err(malformed("an automerge bundle, not a change")),
        other => {
            return Err(malformed(format!(
                "not an automerge change (chunk type {other})"
            )));
        }
    }
    Change::from_bytes(bytes.to_vec())
        .map_err(|e| malformed(format!("not an automerge change: {e}")))
}

/// The data of a chunk after its type byte: a LEB128 length, then that many bytes.
fn compressed_body(rest: &[u8]) -> Option<&[u8]> {
    let mut len: u64 = 0;
    for (i, b) in rest.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return rest.get(start..end);
        }
    }
    None
}

/// The checks that need only the change and the document's change set: duplicate, missing
/// dependencies, claimed time, tally operations and the record's size bound.
fn precheck(
    change: &Change,
    has: &mut dyn FnMut(&ChangeHash) -> bool,
    pusher: &Pusher<'_>,
    record_bytes: usize,
) -> Result<Option<Ingested>, Refusal> {
    let hash = change.hash();
    let refuse = |code, msg: String| Refusal::new(code, msg, hash.0);
    if has(&hash) {
        return Ok(Some(Ingested::Duplicate { hash: hash.0 }));
    }
    let missing = change.deps().iter().filter(|d| !has(d)).count();
    if missing > 0 {
        return Err(refuse(
            RejectCode::MissingDependencies,
            format!("depends on {missing} change(s) the server does not have"),
        ));
    }
    let claimed = change.timestamp().saturating_mul(1000);
    let ahead = claimed.saturating_sub(pusher.received_at);
    if ahead > limits::MAX_CLOCK_AHEAD_MS {
        return Err(refuse(
            RejectCode::ClockSkew,
            format!(
                "the change claims a time {} minutes ahead of the server's clock: set the \
                 phone's clock and enter the edit again",
                ahead / 60_000
            ),
        ));
    }
    let size = change.raw_bytes().len();
    if record_bytes.saturating_add(size) > limits::MAX_RECORD_BYTES {
        return Err(refuse(
            RejectCode::InvalidRecord,
            format!(
                "the record is full: it may hold at most {} bytes of changes",
                limits::MAX_RECORD_BYTES
            ),
        ));
    }
    check_tally_ops(change).map_err(|m| refuse(RejectCode::InvalidRecord, m))?;
    Ok(None)
}

/// Refuses counter values and increments beyond what a person could count before Automerge adds
/// them up (where a huge one would overflow).
fn check_tally_ops(change: &Change) -> Result<(), String> {
    use automerge::ScalarValue;
    use automerge::legacy::OpType;
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| change.decode()))
        .map_err(|_| "the change's operations cannot be read".to_string())?;
    for op in &decoded.operations {
        let out_of_bounds = match &op.action {
            OpType::Increment(n) => n.unsigned_abs() > limits::MAX_TALLY_STEP.unsigned_abs(),
            OpType::Put(ScalarValue::Counter(c)) => {
                i64::from(c).unsigned_abs() > limits::MAX_TALLY.unsigned_abs()
            }
            _ => false,
        };
        if out_of_bounds {
            return Err(format!(
                "a tally step may be at most {} and a tally at most {}",
                limits::MAX_TALLY_STEP,
                limits::MAX_TALLY
            ));
        }
    }
    Ok(())
}

/// Applies the change to a trial copy. Automerge 0.12 can panic applying a change that parses but
/// is inconsistent (found by the `ingest` fuzz target; kept in fuzz/regressions/ingest/); the
/// copy is thrown away, so catching the panic leaves nothing half-applied.
fn trial_apply(
    apply: impl FnOnce() -> Result<(), crate::RecordError>,
    hash: [u8; 32],
) -> Result<(), Refusal> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(apply)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Refusal::new(
            RejectCode::MalformedChange,
            format!("cannot apply: {e}"),
            hash,
        )),
        Err(_) => Err(Refusal::new(
            RejectCode::MalformedChange,
            "cannot apply: the change is inconsistent (automerge refused it)",
            hash,
        )),
    }
}

/// Checks one pushed change to a record's shared document and applies it if it is acceptable.
///
/// `kind` is the kind the phone pushed it as; `record_bytes` the record's current stored size
/// (the server's figure, or the phone's saved size); `authorize` is asked whether the pusher may
/// write this kind of record at this place. On a refusal the document is left exactly as it was.
pub fn ingest(
    doc: &mut RecordDoc,
    change: &Change,
    kind: RecordKind,
    pusher: &Pusher<'_>,
    record_bytes: usize,
    authorize: impl Fn(&PlaceId, RecordKind) -> Result<(), Refusal>,
) -> Result<Ingested, Refusal> {
    let hash = change.hash();
    let hash_bytes = hash.0;
    let refuse = |code, msg: String| Refusal::new(code, msg, hash_bytes);
    if let Some(dup) = precheck(change, &mut |h| doc.has_change(h), pusher, record_bytes)? {
        return Ok(dup);
    }

    let before_heads = doc.heads();
    let creates = before_heads.is_empty();
    let before_ops = scalar_ops(doc);
    let before_fixed = fixed_values(doc, Some(&before_ops));
    let before_notes: Vec<Note> = doc.record().map(|r| r.notes().to_vec()).unwrap_or_default();
    let mut trial = doc.fork();
    trial_apply(|| trial.apply_changes(vec![change.clone()]), hash_bytes)?;

    let found = trial
        .kind()
        .map_err(|e| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    if found != kind {
        return Err(refuse(
            RejectCode::KindMismatch,
            format!("pushed as {kind} but the document is a {found}"),
        ));
    }
    // One pass over the merged document checks its shape and reads every scalar value; should
    // the shape be wrong, the fixed fields are still judged first, as they always were.
    let scanned = crate::shape::check_scalars(&trial);
    let after_fixed = fixed_values(&trial, scanned.as_deref().ok());
    for (name, after) in &after_fixed {
        let changed = before_fixed
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, before)| !before.is_empty() && before != after);
        if after.len() != 1 || changed {
            return Err(refuse(
                RejectCode::ReadOnlyField,
                format!("{name} cannot be changed: it is fixed when the record is created"),
            ));
        }
    }
    let after_ops = scanned.map_err(|e| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    let record = trial
        .record()
        .map_err(|e| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    let place: PlaceId = record
        .place()
        .parse()
        .map_err(|e: crate::IdError| refuse(RejectCode::InvalidRecord, e.to_string()))?;
    let with_place = |mut r: Refusal| {
        r.hash = hash_bytes;
        r.place = Some(place.clone());
        r
    };
    authorize(&place, kind).map_err(with_place)?;

    let claimed_at = change.timestamp().saturating_mul(1000);
    let forbidden = |v: rules::RuleViolation| {
        with_place(Refusal::new(
            RejectCode::Forbidden,
            v.to_string(),
            hash_bytes,
        ))
    };
    if creates {
        rules::check_audit(
            pusher.role,
            pusher.user,
            record.created_by(),
            record.created_at(),
            claimed_at,
        )
        .map_err(forbidden)?;
    }
    rules::check_notes(
        pusher.role,
        pusher.user,
        &before_notes,
        record.notes(),
        claimed_at,
    )
    .map_err(forbidden)?;

    let after_heads = trial.heads();
    let touched = trial.touched(&before_heads, &after_heads);
    // As `RecordDoc::conflicts` decides it (a scalar field with two values or more), from the
    // values read here anyway.
    let has_conflicts = after_ops
        .iter()
        .enumerate()
        .any(|(i, (f, _, _))| after_ops[..i].iter().any(|(g, _, _)| g == f));
    let written: Vec<(String, Value)> = after_ops
        .into_iter()
        .filter(|(field, op, _)| !before_ops.iter().any(|(f, o, _)| f == field && o == op))
        .map(|(field, _, value)| (field.to_string(), value))
        .collect();
    let json = record.to_json();
    rules::check(
        pusher.role,
        &Edit {
            kind,
            creates,
            touched: &touched,
            written: &written,
            record: &json,
        },
    )
    .map_err(forbidden)?;
    record
        .validate()
        .map_err(|e| with_place(refuse(RejectCode::InvalidRecord, e.to_string())))?;

    *doc = trial;
    Ok(Ingested::Applied(Applied {
        hash: hash_bytes,
        actor: change.actor_id().to_hex_string(),
        claimed_at,
        touched,
        record: Some(Box::new(record)),
        has_conflicts,
    }))
}

/// Checks one pushed change to a record's personal part and applies it if it is acceptable.
///
/// The caller has already decided, from the record's shared document, that the record exists,
/// that its place is within the pusher's grants and that the pusher's role may write a record
/// of this `kind`: whoever may write a record may write its residents' details. On a refusal the
/// document is left exactly as it was.
pub fn ingest_personal(
    doc: &mut PersonalDoc,
    change: &Change,
    kind: RecordKind,
    pusher: &Pusher<'_>,
    record_bytes: usize,
) -> Result<Ingested, Refusal> {
    let hash = change.hash();
    if let Some(dup) = precheck(change, &mut |h| doc.has_change(h), pusher, record_bytes)? {
        return Ok(dup);
    }
    let before_heads = doc.heads();
    let mut trial = doc.fork();
    trial_apply(|| trial.apply_changes(vec![change.clone()]), hash.0)?;
    trial
        .check(kind)
        .map_err(|e| Refusal::new(RejectCode::InvalidRecord, e.to_string(), hash.0))?;
    let after_heads = trial.heads();
    let touched = trial.touched(&before_heads, &after_heads);
    *doc = trial;
    Ok(Ingested::Applied(Applied {
        hash: hash.0,
        actor: change.actor_id().to_hex_string(),
        claimed_at: change.timestamp().saturating_mul(1000),
        touched,
        record: None,
        has_conflicts: false,
    }))
}

/// Every value of every scalar root field with the op that set it: comparing before and after
/// tells exactly which values one change wrote (not what it merged with).
fn scalar_ops(doc: &RecordDoc) -> Vec<crate::shape::ScalarValue> {
    let Ok(kind) = doc.kind() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for spec in kind.fields().iter().filter(|f| f.ty.is_scalar()) {
        for (value, op) in doc.values_of(spec.name) {
            out.push((spec.name, op, value));
        }
    }
    out
}

/// Every value of each fixed field. Taken from `scalars` (the document's scalar values, when they
/// were read already) if the document has a kind, else read from it; without a kind, the
/// creation fields it holds.
fn fixed_values(
    doc: &RecordDoc,
    scalars: Option<&[crate::shape::ScalarValue]>,
) -> Vec<(&'static str, Vec<Value>)> {
    let kind = doc.kind().ok();
    if let (Some(k), Some(scalars)) = (kind, scalars) {
        return k
            .fields()
            .iter()
            .filter(|f| f.ty == FieldType::Fixed)
            .map(|f| {
                let values = scalars.iter().filter(|(n, _, _)| *n == f.name);
                (f.name, values.map(|(_, _, v)| v.clone()).collect())
            })
            .collect();
    }
    let names: Vec<&'static str> = match kind {
        Some(k) => k
            .fields()
            .iter()
            .filter(|f| f.ty == FieldType::Fixed)
            .map(|f| f.name)
            .collect(),
        None => vec!["kind", "schema", "place", "created_at", "created_by"],
    };
    names
        .into_iter()
        .map(|n| (n, doc.values_of(n).into_iter().map(|(v, _)| v).collect()))
        .filter(|(_, v): &(&str, Vec<Value>)| kind.is_some() || !v.is_empty())
        .collect()
}

/// Entry points of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). They live here so the
/// regular tests replay the kept corpus and every crasher ever found through exactly the code the
/// fuzzer runs. Each panics only when an invariant breaks: decoding or ingesting hostile bytes
/// must end in an error, never in a panic, a hang or an invalid document.
#[doc(hidden)]
pub mod fuzz {
    use std::sync::OnceLock;

    use automerge::ActorId;
    use automerge::transaction::Transactable;

    use super::{InflateBudget, Ingested, Pusher, ingest, ingest_personal, parse_change};
    use crate::document::{EditContext, RecordDoc};
    use crate::ids::{PlaceId, RecordId};
    use crate::personal::PersonalDoc;
    use crate::protocol::{Part, PushChange, SyncRequest, SyncResponse};
    use crate::rules::Role;
    use crate::schema::RecordKind;

    /// The record id of the seeded document.
    pub const SEED_RECORD: [u8; 16] = [0x11; 16];
    /// The user the seeds are made by and the fuzzed changes are pushed as (a demo user, so the
    /// server's corpus test can push the seeded case as them).
    const SEED_USER: &str = "bus1";
    /// The seeds' claimed time; the fuzzed pushes are received a minute later.
    const SEED_TIME: i64 = 1_700_000_000_000;

    /// For the fuzz targets: libFuzzer's panic hook aborts on every panic, even one that
    /// [`ingest`](super::ingest) catches on purpose; this hook stays quiet and lets an uncaught
    /// panic reach libFuzzer, which still reports it as a crash.
    pub fn quiet_caught_panics() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| std::panic::set_hook(Box::new(|_| {})));
    }

    /// Target `sync_decode`: both message decoders; whatever decodes re-encodes to the same
    /// message.
    pub fn sync_decode(data: &[u8]) {
        if let Ok(req) = SyncRequest::decode(data) {
            let again = SyncRequest::decode(&req.encode()).expect("a decoded request re-decodes");
            assert_eq!(again, req);
        }
        if let Ok(resp) = SyncResponse::decode(data) {
            let again = SyncResponse::decode(&resp.encode()).expect("a decoded reply re-decodes");
            assert_eq!(again, resp);
        }
    }

    /// Target `ingest`: the first byte picks the pushed kind (bits 0-1), the pusher's role (bits
    /// 2-3) and the part (bit 4: the shared record or its personal part); the rest is the change
    /// (any chunk type). It is ingested into an empty document and into a seeded case; an
    /// accepted change must leave a valid record (or personal part), a refused one an untouched
    /// document.
    pub fn ingest_change(data: &[u8]) {
        let Some((&selector, bytes)) = data.split_first() else {
            return;
        };
        let kind = RecordKind::ALL[usize::from(selector & 3)];
        let role = Role::ALL[usize::from((selector >> 2) & 3)];
        let part = if selector & 0x10 == 0 {
            Part::Record
        } else {
            Part::Personal
        };
        let Ok(change) = parse_change(bytes, &mut InflateBudget::per_push()) else {
            return;
        };
        let pusher = Pusher {
            role,
            user: SEED_USER,
            received_at: SEED_TIME + 60_000,
        };
        match part {
            Part::Record => {
                for mut doc in [
                    RecordDoc::empty(RecordId::from_bytes(SEED_RECORD)),
                    seeded().0.clone(),
                    first_seed().clone(),
                ] {
                    let heads = doc.heads();
                    match ingest(&mut doc, &change, kind, &pusher, 0, |_, _| Ok(())) {
                        Ok(Ingested::Applied(_)) => {
                            let record = doc.record().expect("an accepted change leaves a record");
                            record
                                .validate()
                                .expect("an accepted change leaves a valid record");
                            crate::shape::check(&doc).expect("and a well-shaped document");
                        }
                        Ok(Ingested::Duplicate { .. }) | Err(_) => {
                            assert_eq!(doc.heads(), heads, "the document is unchanged");
                        }
                    }
                }
            }
            Part::Personal => {
                for mut doc in [
                    PersonalDoc::empty(RecordId::from_bytes(SEED_RECORD)),
                    seeded().1.clone(),
                ] {
                    let heads = doc.heads();
                    match ingest_personal(&mut doc, &change, kind, &pusher, 0) {
                        Ok(Ingested::Applied(_)) => {
                            doc.check(kind)
                                .expect("an accepted change leaves valid values");
                        }
                        Ok(Ingested::Duplicate { .. }) | Err(_) => {
                            assert_eq!(doc.heads(), heads, "the document is unchanged");
                        }
                    }
                }
            }
        }
    }

    fn seed_ctx() -> EditContext {
        EditContext {
            actor: ActorId::from(b"linli-fuzz-seed1".as_slice()),
            user: SEED_USER.into(),
            now_ms: SEED_TIME,
        }
    }

    /// The seeded case of the first fuzzing campaigns (made by user `fuzz`, with the resident's
    /// phone in the shared document, as records were before they had a personal part), rebuilt
    /// byte for byte: the crashers kept in `fuzz/regressions/ingest/` were found on top of it,
    /// and only on top of it do they still reach Automerge.
    pub fn first_seed() -> &'static RecordDoc {
        static SEED: OnceLock<RecordDoc> = OnceLock::new();
        SEED.get_or_init(|| {
            let place: PlaceId = "hz/baiyang/haitian".parse().expect("a valid place");
            let ctx = EditContext {
                user: "fuzz".into(),
                ..seed_ctx()
            };
            RecordDoc::create_checked(
                RecordId::from_bytes(SEED_RECORD),
                RecordKind::Case,
                &place,
                &ctx,
                &[
                    ("summary".into(), "电梯故障".into()),
                    ("resident_phone".into(), "13812345678".into()),
                ],
                false,
            )
            .expect("the first seed rebuilds")
            .0
        })
    }

    /// The seeded case (and its personal part) the `ingest` target also feeds its changes to
    /// (deterministic).
    pub fn seeded() -> &'static (RecordDoc, PersonalDoc) {
        static SEED: OnceLock<(RecordDoc, PersonalDoc)> = OnceLock::new();
        SEED.get_or_init(|| {
            let place: PlaceId = "hz/baiyang/haitian".parse().expect("a valid place");
            let (doc, personal, _) = crate::capture::create(
                RecordId::from_bytes(SEED_RECORD),
                RecordKind::Case,
                &place,
                &seed_ctx(),
                &[
                    ("summary".into(), "电梯故障".into()),
                    ("resident_phone".into(), "13812345678".into()),
                ],
            )
            .expect("the seed case is valid");
            (doc, personal)
        })
    }

    /// Starting inputs for the corpus: valid messages and changes (creations, edits of the
    /// seeded case, including ones some roles may not make), personal changes, and hostile
    /// shapes: a document chunk, a compressed change, an unknown key, an oversized note.
    pub fn seed_inputs() -> Vec<(String, Vec<u8>, &'static str)> {
        let mut out = Vec::new();
        let ctx = seed_ctx();
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().expect("place");
        let mut changes: Vec<(String, RecordKind, Part, Vec<u8>)> = Vec::new();
        for kind in RecordKind::ALL {
            let fields: Vec<(String, String)> = match kind {
                RecordKind::Case => vec![
                    ("summary".into(), "噪音".into()),
                    ("resident_name".into(), "王小明".into()),
                ],
                RecordKind::Contact => vec![("household".into(), "3-201".into())],
                RecordKind::Volunteer => vec![("activity".into(), "义诊".into())],
                RecordKind::Bus => vec![("run_number".into(), "1801".into())],
            };
            let id = RecordId::from_bytes([kind as u8 + 1; 16]);
            let (_, _, c) = crate::capture::create(id, kind, &place, &ctx, &fields).expect("valid");
            if let Some(c) = c.record {
                changes.push((
                    format!("create-{kind}"),
                    kind,
                    Part::Record,
                    c.raw_bytes().to_vec(),
                ));
            }
            if let Some(c) = c.personal {
                changes.push((
                    format!("personal-{kind}"),
                    kind,
                    Part::Personal,
                    c.raw_bytes().to_vec(),
                ));
            }
        }
        let edits: &[(&str, &[(&str, &str)])] = &[
            (
                "status",
                &[("status", "assigned"), ("departments", "police,housing")],
            ),
            (
                "evaluated",
                &[("status", "evaluated"), ("satisfaction", "satisfied")],
            ),
            ("deadline", &[("deadline", "2024-05-01")]),
            ("text", &[("details", "三楼漏水，已联系物业")]),
            ("phone", &[("resident_phone", "13900001111")]),
        ];
        for (name, fields) in edits {
            let (mut doc, mut personal) = seeded().clone();
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let c = crate::capture::set_fields(&mut doc, &mut personal, &ctx, &fields)
                .expect("valid edit");
            if let Some(r) = c.record {
                changes.push((
                    format!("edit-{name}"),
                    RecordKind::Case,
                    Part::Record,
                    r.raw_bytes().to_vec(),
                ));
            }
            if let Some(p) = c.personal {
                changes.push((
                    format!("edit-{name}-personal"),
                    RecordKind::Case,
                    Part::Personal,
                    p.raw_bytes().to_vec(),
                ));
            }
        }
        // Hostile shapes, built with the automerge crate as an attacker would.
        let (doc, _) = seeded().clone();
        let mut raw = doc
            .automerge()
            .clone()
            .with_actor(ActorId::from(b"linli-fuzz-hostl".as_slice()));
        raw.put(automerge::ROOT, "hidden", "x".repeat(2000))
            .expect("put");
        raw.commit();
        let hidden = raw.get_last_local_change().expect("a change");
        let mut hidden_c = hidden.clone();
        changes.push((
            "hidden-key".into(),
            RecordKind::Case,
            Part::Record,
            hidden.raw_bytes().to_vec(),
        ));
        changes.push((
            "compressed".into(),
            RecordKind::Case,
            Part::Record,
            hidden_c.bytes().to_vec(),
        ));
        let mut document = raw.clone();
        changes.push((
            "document-chunk".into(),
            RecordKind::Case,
            Part::Record,
            document.save(),
        ));
        let mut note = doc
            .automerge()
            .clone()
            .with_actor(ActorId::from(b"linli-fuzz-notes".as_slice()));
        if let Ok(Some((_, notes))) = automerge::ReadDoc::get(&note, automerge::ROOT, "notes")
            && let Ok(n) = note.insert_object(&notes, 0, automerge::ObjType::Map)
        {
            let _ = note.put(&n, "id", "n1");
            let _ = note.put(&n, "author", SEED_USER);
            let _ = note.put(&n, "at", SEED_TIME);
            let _ = note.put(&n, "text", "长".repeat(6000));
        }
        note.commit();
        if let Some(c) = note.get_last_local_change() {
            changes.push((
                "long-note".into(),
                RecordKind::Case,
                Part::Record,
                c.raw_bytes().to_vec(),
            ));
        }
        for (name, kind, part, bytes) in &changes {
            for role in [0u8, 3] {
                let part_bit = if *part == Part::Personal { 0x10 } else { 0 };
                let mut data = vec![(*kind as u8) | (role << 2) | part_bit];
                data.extend_from_slice(bytes);
                out.push((format!("{name}-role{role}"), data, "ingest"));
            }
        }
        let request = SyncRequest {
            cursor: crate::protocol::Cursor::with_epoch(42, 3, None),
            changes: changes
                .iter()
                .map(|(_, kind, part, bytes)| PushChange {
                    record: SEED_RECORD,
                    kind: *kind,
                    part: *part,
                    change: bytes.clone(),
                })
                .collect(),
            max_pull: 100,
        };
        out.push(("request".into(), request.encode(), "sync_decode"));
        out.push((
            "request-empty".into(),
            SyncRequest::default().encode(),
            "sync_decode",
        ));
        let (mut seed_doc, mut seed_personal) = seeded().clone();
        let response = SyncResponse {
            accepted: vec![crate::protocol::Accepted {
                hash: [1; 32],
                received_at: 5,
            }],
            rejected: vec![crate::protocol::Rejected {
                hash: [2; 32],
                record: SEED_RECORD,
                code: crate::protocol::RejectCode::Forbidden,
                message: "a steward may not mark a case evaluated".into(),
            }],
            changes: vec![crate::protocol::PulledChange {
                record: SEED_RECORD,
                part: Part::Record,
                change: changes[0].3.clone(),
                received_at: 7,
                user: "bus1".into(),
                device: "dev".into(),
            }],
            more: true,
            cursor: crate::protocol::Cursor::with_epoch(9, 1, Some([3; 16])),
            server_time: SEED_TIME,
            snapshots: vec![
                crate::protocol::PulledSnapshot {
                    record: SEED_RECORD,
                    part: Part::Record,
                    doc: seed_doc.save(),
                    replace: false,
                },
                crate::protocol::PulledSnapshot {
                    record: SEED_RECORD,
                    part: Part::Personal,
                    doc: seed_personal.save(),
                    replace: true,
                },
            ],
            grants: vec!["hz/baiyang".into()],
            personal: true,
        };
        out.push(("response".into(), response.encode(), "sync_decode"));
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_first_seed_is_rebuilt_byte_for_byte() {
            // The hash the kept regression `automerge-apply-panic-batch-rs-1121` depends on.
            let mut seed = super::first_seed().clone();
            assert_eq!(
                seed.heads()[0].to_string(),
                "469723a529f1913bfe613b5d12d534fea64944ade563115cc34cefcfc8143eb6"
            );
        }

        #[test]
        fn the_seeds_run_clean() {
            for (name, data, target) in super::seed_inputs() {
                match target {
                    "ingest" => super::ingest_change(&data),
                    _ => super::sync_decode(&data),
                }
                assert!(!data.is_empty(), "{name}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::EditContext;
    use crate::ids::RecordId;
    use crate::rules::Role;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ReadDoc};

    const NOW: i64 = 1_700_000_000_000;

    fn ctx(user: &str) -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: user.into(),
            now_ms: NOW,
        }
    }

    fn pusher(role: Role, user: &str) -> Pusher<'_> {
        Pusher {
            role,
            user,
            received_at: NOW + 5_000,
        }
    }

    fn allow(_: &PlaceId, _: RecordKind) -> Result<(), Refusal> {
        Ok(())
    }

    fn new_case(user: &str) -> (RecordDoc, Change) {
        let place: PlaceId = "hz/baiyang/haitian".parse().unwrap();
        RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ctx(user),
            &[("summary".into(), "电梯故障".into())],
        )
        .unwrap()
    }

    fn run(
        server: &mut RecordDoc,
        change: &Change,
        role: Role,
        user: &str,
    ) -> Result<Ingested, Refusal> {
        ingest(
            server,
            change,
            RecordKind::Case,
            &pusher(role, user),
            0,
            allow,
        )
    }

    /// The last change of a raw automerge edit made on a copy of `doc`'s document.
    fn raw_edit(doc: &RecordDoc, f: impl FnOnce(&mut automerge::AutoCommit)) -> Change {
        let mut raw = doc.automerge().clone().with_actor(ActorId::random());
        f(&mut raw);
        raw.commit_with(automerge::transaction::CommitOptions::default().with_time(NOW / 1000));
        raw.get_last_local_change().unwrap()
    }

    #[test]
    fn a_new_record_is_applied_once_then_duplicate() {
        let (phone, c) = new_case("bus1");
        let mut server = RecordDoc::empty(phone.id());
        match run(&mut server, &c, Role::Office, "bus1").unwrap() {
            Ingested::Applied(a) => assert!(a.touched.contains(&"summary".to_string())),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&mut server, &c, Role::Office, "bus1").unwrap(),
            Ingested::Duplicate { .. }
        ));
    }

    /// What an applied change reports of the merged record is what reading the document gives:
    /// the record, and whether a field holds concurrent values.
    #[test]
    fn an_applied_change_reports_the_merged_record_and_its_conflicts() {
        let (phone, c) = new_case("bus1");
        let mut server = RecordDoc::empty(phone.id());
        let Ingested::Applied(first) = run(&mut server, &c, Role::Office, "bus1").unwrap() else {
            panic!("applied");
        };
        assert!(!first.has_conflicts && server.conflicts().is_empty());
        assert_eq!(
            first.record.unwrap().to_json(),
            server.record().unwrap().to_json()
        );
        // Two phones set the deadline offline from the same state.
        let a = raw_edit(&server, |d| {
            d.put(automerge::ROOT, "deadline", "2026-12-10").unwrap();
        });
        let b = raw_edit(&server, |d| {
            d.put(automerge::ROOT, "deadline", "2026-12-20").unwrap();
        });
        let Ingested::Applied(one) = run(&mut server, &a, Role::Office, "bus1").unwrap() else {
            panic!("applied");
        };
        assert!(!one.has_conflicts);
        let Ingested::Applied(two) = run(&mut server, &b, Role::Office, "bus1").unwrap() else {
            panic!("applied");
        };
        assert!(two.has_conflicts && !server.conflicts().is_empty());
        assert_eq!(
            two.record.unwrap().to_json(),
            server.record().unwrap().to_json()
        );
    }

    #[test]
    fn wrong_kind_and_scope_are_refused_without_changing_the_doc() {
        let (phone, c) = new_case("bus1");
        let mut server = RecordDoc::empty(phone.id());
        let wrong = ingest(
            &mut server,
            &c,
            RecordKind::Bus,
            &pusher(Role::Office, "bus1"),
            0,
            allow,
        );
        assert_eq!(wrong.unwrap_err().code, RejectCode::KindMismatch);
        let deny = |_: &PlaceId, _| Err(Refusal::new(RejectCode::OutOfScope, "not yours", [0; 32]));
        let r = ingest(
            &mut server,
            &c,
            RecordKind::Case,
            &pusher(Role::Office, "bus1"),
            0,
            deny,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::OutOfScope);
        assert_eq!(r.hash, c.hash().0);
        assert!(server.heads().is_empty());
    }

    #[test]
    fn forged_edits_of_place_and_invalid_values_are_refused() {
        let (phone, c) = new_case("office1");
        let mut server = RecordDoc::empty(phone.id());
        run(&mut server, &c, Role::Office, "office1").unwrap();
        let moved = raw_edit(&phone, |d| d.put(automerge::ROOT, "place", "hz").unwrap());
        let r = run(&mut server, &moved, Role::Office, "office1").unwrap_err();
        assert_eq!(r.code, RejectCode::ReadOnlyField, "{r:?}");
        let invalid = raw_edit(&phone, |d| {
            d.put(automerge::ROOT, "status", "exploded").unwrap()
        });
        let r = run(&mut server, &invalid, Role::Office, "office1").unwrap_err();
        assert_eq!(r.code, RejectCode::InvalidRecord);
        assert!(r.message.contains("status"), "{}", r.message);
    }

    #[test]
    fn a_change_with_unknown_dependencies_waits() {
        let (mut phone, _c0) = new_case("office1");
        let c1 = phone
            .set_fields(&ctx("office1"), &[("status".into(), "assigned".into())])
            .unwrap();
        let mut server = RecordDoc::empty(phone.id());
        let r = run(&mut server, &c1, Role::Office, "office1").unwrap_err();
        assert_eq!(r.code, RejectCode::MissingDependencies);
    }

    #[test]
    fn role_rules_refuse_what_the_role_may_not_write() {
        let (mut phone, c) = new_case("steward1");
        let mut server = RecordDoc::empty(phone.id());
        run(&mut server, &c, Role::Steward, "steward1").unwrap();
        let evaluated = phone
            .set_fields(
                &ctx("steward1"),
                &[
                    ("status".into(), "evaluated".into()),
                    ("satisfaction".into(), "satisfied".into()),
                ],
            )
            .unwrap();
        let heads = server.heads();
        for role in [Role::Steward, Role::Bus] {
            let r = run(&mut server, &evaluated, role, "steward1").unwrap_err();
            assert_eq!(r.code, RejectCode::Forbidden, "{role}");
            assert!(r.message.contains("evaluated"), "{}", r.message);
            assert_eq!(
                r.place.as_ref().map(|p| p.as_str()),
                Some("hz/baiyang/haitian")
            );
            assert_eq!(server.heads(), heads, "a refusal changes nothing");
        }
        assert!(matches!(
            run(&mut server, &evaluated, Role::Office, "steward1").unwrap(),
            Ingested::Applied(_)
        ));
        // A later steward edit of another field is fine although the merged status is
        // `evaluated`: only what the change itself writes counts.
        let note = phone.add_note(&ctx("steward1"), "已回访").unwrap();
        assert!(matches!(
            run(&mut server, &note, Role::Steward, "steward1").unwrap(),
            Ingested::Applied(_)
        ));
        let depts = phone
            .set_fields(&ctx("steward1"), &[("departments".into(), "police".into())])
            .unwrap();
        let r = run(&mut server, &depts, Role::Steward, "steward1").unwrap_err();
        assert_eq!(r.code, RejectCode::Forbidden);
        assert!(r.message.contains("departments"), "{}", r.message);
    }

    fn compressed_chunk(chunk_type: u8, body: &[u8]) -> Vec<u8> {
        let mut chunk = CHUNK_MAGIC.to_vec();
        chunk.extend_from_slice(&[0, 0, 0, 0, chunk_type]);
        let mut len = body.len();
        loop {
            let b = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                chunk.push(b);
                break;
            }
            chunk.push(b | 0x80);
        }
        chunk.extend_from_slice(body);
        chunk
    }

    fn deflated_zeros(mib: usize) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..mib {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn a_deflate_bomb_is_refused_after_the_limit_not_inflated() {
        let body = deflated_zeros(64);
        assert!(body.len() < 128 * 1024, "{}", body.len());
        let chunk = compressed_chunk(CHUNK_COMPRESSED, &body);
        let r = parse_change(&chunk, &mut InflateBudget::per_push()).unwrap_err();
        assert_eq!(r.code, RejectCode::MalformedChange);
        assert!(r.message.contains("inflates past"), "{}", r.message);
        // Truncated or lying lengths are refused too, never a panic.
        assert!(parse_change(&chunk[..20], &mut InflateBudget::per_push()).is_err());
        let lying = [0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2, 0xff];
        assert!(parse_change(&lying, &mut InflateBudget::per_push()).is_err());
        // A genuinely compressed, small change still parses.
        let (_, mut c) = new_case("bus1");
        let compressed = c.bytes().into_owned();
        let parsed = parse_change(&compressed, &mut InflateBudget::per_push()).unwrap();
        assert_eq!(parsed.hash(), c.hash());
    }

    #[test]
    fn every_other_chunk_type_is_refused_before_automerge_parses_it() {
        // A saved document whose compressed columns would inflate to a lot: refused on its type
        // byte (Automerge would inflate it fully before noticing it is no change).
        let (mut doc, _) = new_case("bus1");
        let saved = doc.save();
        for (ty, what) in [(0u8, "document"), (3, "bundle"), (7, "chunk type 7")] {
            let mut bytes = saved.clone();
            bytes[8] = ty;
            let r = parse_change(&bytes, &mut InflateBudget::per_push()).unwrap_err();
            assert_eq!(r.code, RejectCode::MalformedChange);
            assert!(r.message.contains(what), "{ty}: {}", r.message);
        }
        assert!(
            parse_change(&saved, &mut InflateBudget::per_push())
                .unwrap_err()
                .message
                .contains("document")
        );
        // The budget is per push: compressed changes that each pass alone stop once the push's
        // total is spent.
        let body = deflated_zeros(1);
        let mut chunk = compressed_chunk(CHUNK_COMPRESSED, &body[..]);
        chunk.truncate(chunk.len());
        let mut budget = InflateBudget { left: 300 * 1024 };
        let first = parse_change(
            &compressed_chunk(CHUNK_COMPRESSED, &deflated_zeros(0)),
            &mut budget,
        );
        assert!(first.is_err(), "an empty body is no change");
        let small = {
            use std::io::Write;
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&vec![0u8; 200 * 1024]).unwrap();
            enc.finish().unwrap()
        };
        let c = compressed_chunk(CHUNK_COMPRESSED, &small);
        assert!(
            !parse_change(&c, &mut budget)
                .unwrap_err()
                .message
                .contains("push")
        );
        let r = parse_change(&c, &mut budget).unwrap_err();
        assert!(r.message.contains("this push"), "{}", r.message);
    }

    #[test]
    fn authorship_is_what_the_server_knows() {
        // A steward creates a case claiming office1 made it.
        let (phone, forged) = new_case("office1");
        let mut server = RecordDoc::empty(phone.id());
        let r = run(&mut server, &forged, Role::Steward, "steward1").unwrap_err();
        assert_eq!(r.code, RejectCode::Forbidden);
        assert!(r.message.contains("created_by"), "{}", r.message);

        let (mut phone, c) = new_case("steward1");
        let mut server = RecordDoc::empty(phone.id());
        run(&mut server, &c, Role::Steward, "steward1").unwrap();
        // A note "signed" by office1.
        let forged_note = phone.add_note(&ctx("office1"), "同意办结").unwrap();
        let r = run(&mut server, &forged_note, Role::Steward, "steward1").unwrap_err();
        assert!(r.message.contains("note"), "{}", r.message);
        // office1 writes a real note; the steward then rewrites its text.
        let mut office = server.clone();
        let real = office.add_note(&ctx("office1"), "请三天内处理").unwrap();
        run(&mut server, &real, Role::Office, "office1").unwrap();
        let rewrite = raw_edit(&server, |d| {
            let (_, notes) = d.get(automerge::ROOT, "notes").unwrap().unwrap();
            let (_, n0) = d.get(&notes, 0).unwrap().unwrap();
            d.put(&n0, "text", "不用处理").unwrap();
        });
        let r = run(&mut server, &rewrite, Role::Steward, "steward1").unwrap_err();
        assert_eq!(r.code, RejectCode::Forbidden);
        assert!(r.message.contains("append-only"), "{}", r.message);
        // office1 may edit its own note.
        assert!(matches!(
            run(&mut server, &rewrite, Role::Office, "office1").unwrap(),
            Ingested::Applied(_)
        ));
    }

    #[test]
    fn a_clock_far_ahead_is_refused_with_its_own_code() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let mut ahead = ctx("bus1");
        ahead.now_ms = NOW + 365 * 24 * 3600 * 1000;
        let (doc, c) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ahead,
            &[("summary".into(), "x".into())],
        )
        .unwrap();
        let mut server = RecordDoc::empty(doc.id());
        let r = run(&mut server, &c, Role::Bus, "bus1").unwrap_err();
        assert_eq!(r.code, RejectCode::ClockSkew);
        assert!(!r.code.is_retryable());
    }

    #[test]
    fn tallies_are_bounded_before_automerge_adds_them() {
        let place: PlaceId = "hz/baiyang".parse().unwrap();
        let (doc, c) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Bus,
            &place,
            &ctx("bus1"),
            &[("run_number".into(), "1801".into())],
        )
        .unwrap();
        let mut server = RecordDoc::empty(doc.id());
        ingest(
            &mut server,
            &c,
            RecordKind::Bus,
            &pusher(Role::Bus, "bus1"),
            0,
            allow,
        )
        .unwrap();
        let huge_put = raw_edit(&doc, |d| {
            d.put(
                automerge::ROOT,
                "leaflets",
                automerge::ScalarValue::counter(1 << 62),
            )
            .unwrap()
        });
        let huge_step = raw_edit(&doc, |d| {
            d.increment(automerge::ROOT, "leaflets", 1 << 62).unwrap()
        });
        for bad in [huge_put, huge_step] {
            let r = ingest(
                &mut server,
                &bad,
                RecordKind::Bus,
                &pusher(Role::Bus, "bus1"),
                0,
                allow,
            )
            .unwrap_err();
            assert_eq!(r.code, RejectCode::InvalidRecord);
            assert!(r.message.contains("tally"), "{}", r.message);
        }
        // Many legal steps cannot push the total past the bound either.
        let mut phone = server.clone();
        for _ in 0..10 {
            let step = phone
                .tally(&ctx("bus1"), "leaflets", limits::MAX_TALLY_STEP)
                .unwrap();
            ingest(
                &mut server,
                &step,
                RecordKind::Bus,
                &pusher(Role::Bus, "bus1"),
                0,
                allow,
            )
            .unwrap();
        }
        let err = phone.tally(&ctx("bus1"), "leaflets", 1).unwrap_err();
        assert!(err.to_string().contains("tally"), "{err}");
    }

    #[test]
    fn unknown_keys_and_oversized_records_are_refused() {
        let (phone, c) = new_case("bus1");
        let mut server = RecordDoc::empty(phone.id());
        run(&mut server, &c, Role::Bus, "bus1").unwrap();
        let hidden = raw_edit(&phone, |d| {
            d.put(automerge::ROOT, "hidden", "x".repeat(200_000))
                .unwrap()
        });
        let r = run(&mut server, &hidden, Role::Bus, "bus1").unwrap_err();
        assert_eq!(r.code, RejectCode::InvalidRecord);
        assert!(r.message.contains("hidden"), "{}", r.message);
        // The record's size bound: the caller's figure plus this change.
        let mut phone2 = server.clone();
        let edit = phone2
            .set_fields(&ctx("bus1"), &[("room".into(), "301".into())])
            .unwrap();
        let r = ingest(
            &mut server,
            &edit,
            RecordKind::Case,
            &pusher(Role::Bus, "bus1"),
            limits::MAX_RECORD_BYTES,
            allow,
        )
        .unwrap_err();
        assert!(r.message.contains("full"), "{}", r.message);
    }

    #[test]
    fn personal_changes_are_checked_for_their_keys_and_values() {
        let id = RecordId::new();
        let mut phone = PersonalDoc::empty(id);
        let c = phone
            .set(
                &ctx("bus1"),
                RecordKind::Case,
                &[("resident_phone".into(), "13812345678".into())],
            )
            .unwrap()
            .unwrap();
        let mut server = PersonalDoc::empty(id);
        let p = pusher(Role::Bus, "bus1");
        assert!(matches!(
            ingest_personal(&mut server, &c, RecordKind::Case, &p, 0).unwrap(),
            Ingested::Applied(_)
        ));
        let mut raw = phone.automerge().clone().with_actor(ActorId::random());
        raw.put(automerge::ROOT, "summary", "not personal").unwrap();
        raw.commit();
        let bad = raw.get_last_local_change().unwrap();
        let heads = server.heads();
        let r = ingest_personal(&mut server, &bad, RecordKind::Case, &p, 0).unwrap_err();
        assert_eq!(r.code, RejectCode::InvalidRecord);
        assert_eq!(server.heads(), heads);
    }
}
