//! The server's accept logic for one pushed change, sans-I/O: the caller loads the document,
//! calls [`ingest`], and on [`Ingested::Applied`] persists the change and the new document in one
//! transaction before acknowledging it.
//!
//! Checks, in order: the bytes are one Automerge change (a compressed change may not inflate past
//! [`MAX_CHANGE_BYTES`]); the document does not hold it yet (else [`Ingested::Duplicate`]); its
//! dependencies are held; it keeps the document's kind and fixed fields; the caller's
//! `authorize` accepts the record's place; the role's field rules ([`crate::rules`]) allow it; and
//! the merged record still validates. A refusal leaves the document exactly as it was.

use std::io::Read;

use automerge::{Change, ChangeHash};
use serde_json::Value;

use crate::document::RecordDoc;
use crate::ids::PlaceId;
use crate::protocol::{MAX_CHANGE_BYTES, PushChange, RejectCode};
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

/// What became of an accepted change.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// The document already held it: acknowledge again, store nothing.
    Duplicate {
        /// Its hash.
        hash: [u8; 32],
    },
    /// Newly applied to the document.
    Applied {
        /// Its hash.
        hash: [u8; 32],
        /// Its actor (hex).
        actor: String,
        /// The device's claimed time, ms since epoch.
        claimed_at: i64,
        /// Top-level fields it touched.
        touched: Vec<String>,
        /// The record's place.
        place: PlaceId,
        /// The record's kind.
        kind: RecordKind,
    },
}

/// Automerge's chunk magic bytes.
const CHUNK_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge's chunk type of a DEFLATE-compressed change.
const CHUNK_COMPRESSED: u8 = 2;

/// Parses one pushed change. Automerge inflates a compressed change chunk without a bound, so a
/// compressed chunk is first inflated here, at most [`MAX_CHANGE_BYTES`] (the limit of an
/// uncompressed change): a DEFLATE bomb is refused after reading that much, not after hundreds of
/// megabytes.
pub fn parse_change(bytes: &[u8]) -> Result<Change, Refusal> {
    if bytes.len() > 9 && bytes[..4] == CHUNK_MAGIC && bytes[8] == CHUNK_COMPRESSED {
        let body = compressed_body(&bytes[9..]).ok_or_else(|| {
            Refusal::new(
                RejectCode::MalformedChange,
                "not an automerge change: a compressed chunk with a bad length",
                [0; 32],
            )
        })?;
        let mut inflated = Vec::new();
        let read = flate2::read::DeflateDecoder::new(body)
            .take(MAX_CHANGE_BYTES as u64 + 1)
            .read_to_end(&mut inflated);
        if read.is_ok() && inflated.len() > MAX_CHANGE_BYTES {
            return Err(Refusal::new(
                RejectCode::MalformedChange,
                format!("a compressed change inflates past {MAX_CHANGE_BYTES} bytes"),
                [0; 32],
            ));
        }
    }
    Change::from_bytes(bytes.to_vec()).map_err(|e| {
        Refusal::new(
            RejectCode::MalformedChange,
            format!("not an automerge change: {e}"),
            [0; 32],
        )
    })
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

/// Checks one pushed change against the document and applies it if it is acceptable.
///
/// `authorize` is asked whether the pusher may write this kind of record at this place; `role`
/// decides which fields they may write ([`rules::check`]). On a refusal the document is left
/// exactly as it was.
pub fn ingest(
    doc: &mut RecordDoc,
    push: &PushChange,
    role: Role,
    authorize: impl Fn(&PlaceId, RecordKind) -> Result<(), Refusal>,
) -> Result<Ingested, Refusal> {
    let change = parse_change(&push.change)?;
    let hash = change.hash();
    let hash_bytes = hash.0;
    let refuse = |code, msg: String| Refusal::new(code, msg, hash_bytes);

    if doc.has_change(&hash) {
        return Ok(Ingested::Duplicate { hash: hash_bytes });
    }
    let missing: Vec<&ChangeHash> = change
        .deps()
        .iter()
        .filter(|d| !doc.has_change(d))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(
            RejectCode::MissingDependencies,
            format!(
                "depends on {} change(s) the server does not have",
                missing.len()
            ),
        ));
    }

    let before_fixed = fixed_values(doc);
    let before_heads = doc.heads();
    let creates = before_heads.is_empty();
    let before_ops = scalar_ops(doc);
    let mut trial = doc.fork();
    let claimed_at = change.timestamp().saturating_mul(1000);
    let actor = change.actor_id().to_hex_string();
    // Automerge 0.12 can panic applying a change that parses but is inconsistent (found by the
    // `ingest` fuzz target; kept in fuzz/regressions/ingest/). The trial fork is thrown away, so
    // catching the panic leaves nothing half-applied, and the change is refused like any other
    // malformed one instead of failing the whole request.
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        trial.apply_changes(vec![change])
    }));
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(refuse(
                RejectCode::MalformedChange,
                format!("cannot apply: {e}"),
            ));
        }
        Err(_) => {
            return Err(refuse(
                RejectCode::MalformedChange,
                "cannot apply: the change is inconsistent (automerge refused it)".into(),
            ));
        }
    }

    let kind = match trial.kind() {
        Ok(k) => k,
        Err(e) => return Err(refuse(RejectCode::InvalidRecord, e.to_string())),
    };
    if kind != push.kind {
        return Err(refuse(
            RejectCode::KindMismatch,
            format!("pushed as {} but the document is a {}", push.kind, kind),
        ));
    }
    let after_fixed = fixed_values(&trial);
    for (name, after) in &after_fixed {
        if after.len() != 1 {
            return Err(refuse(
                RejectCode::ReadOnlyField,
                format!("{name} cannot be changed: it is fixed when the record is created"),
            ));
        }
        if let Some((_, before)) = before_fixed.iter().find(|(n, _)| n == name)
            && !before.is_empty()
            && before != after
        {
            return Err(refuse(
                RejectCode::ReadOnlyField,
                format!("{name} cannot be changed: it is fixed when the record is created"),
            ));
        }
    }
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

    let after_heads = trial.heads();
    let touched = trial.touched(&before_heads, &after_heads);
    let written: Vec<(String, Value)> = scalar_ops(&trial)
        .into_iter()
        .filter(|(field, op, _)| !before_ops.iter().any(|(f, o, _)| f == field && o == op))
        .map(|(field, _, value)| (field, value))
        .collect();
    let json = record.to_json();
    rules::check(
        role,
        &Edit {
            kind,
            creates,
            touched: &touched,
            written: &written,
            record: &json,
        },
    )
    .map_err(|v| {
        with_place(Refusal::new(
            RejectCode::Forbidden,
            v.to_string(),
            hash_bytes,
        ))
    })?;
    record
        .validate()
        .map_err(|e| with_place(refuse(RejectCode::InvalidRecord, e.to_string())))?;

    *doc = trial;
    Ok(Ingested::Applied {
        hash: hash_bytes,
        actor,
        claimed_at,
        touched,
        place,
        kind,
    })
}

/// Every value of every scalar root field with the op that set it: comparing before and after
/// tells exactly which values one change wrote (not what it merged with).
fn scalar_ops(doc: &RecordDoc) -> Vec<(String, automerge::ObjId, Value)> {
    let Ok(kind) = doc.kind() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for spec in kind.fields().iter().filter(|f| f.ty.is_scalar()) {
        for (value, op) in doc.values_of(spec.name) {
            out.push((spec.name.to_string(), op, value));
        }
    }
    out
}

fn fixed_values(doc: &RecordDoc) -> Vec<(&'static str, Vec<Value>)> {
    let kind = doc.kind().ok();
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

    use super::{Ingested, ingest};
    use crate::document::{EditContext, RecordDoc};
    use crate::ids::{PlaceId, RecordId};
    use crate::protocol::{PushChange, SyncRequest, SyncResponse};
    use crate::rules::Role;
    use crate::schema::RecordKind;

    /// The record id of the seeded document.
    pub const SEED_RECORD: [u8; 16] = [0x11; 16];

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

    /// Target `ingest`: the first byte picks the pushed kind (bits 0-1) and the pusher's role
    /// (bits 2-3); the rest is the change. It is ingested into an empty document and into a
    /// seeded case; an accepted change must leave a valid record, a refused one an untouched
    /// document.
    pub fn ingest_change(data: &[u8]) {
        let Some((&selector, change)) = data.split_first() else {
            return;
        };
        let kind = RecordKind::ALL[usize::from(selector & 3)];
        let role = Role::ALL[usize::from((selector >> 2) & 3)];
        let push = PushChange {
            record: SEED_RECORD,
            kind,
            change: change.to_vec(),
        };
        for mut doc in [
            RecordDoc::empty(RecordId::from_bytes(SEED_RECORD)),
            seeded().clone(),
        ] {
            let heads = doc.heads();
            match ingest(&mut doc, &push, role, |_, _| Ok(())) {
                Ok(Ingested::Applied { .. }) => {
                    let record = doc.record().expect("an accepted change leaves a record");
                    record
                        .validate()
                        .expect("an accepted change leaves a valid record");
                }
                Ok(Ingested::Duplicate { .. }) | Err(_) => {
                    assert_eq!(doc.heads(), heads, "the document is unchanged");
                }
            }
        }
    }

    fn seed_ctx() -> EditContext {
        EditContext {
            actor: ActorId::from(b"linli-fuzz-seed1".as_slice()),
            user: "fuzz".into(),
            now_ms: 1_700_000_000_000,
        }
    }

    /// The seeded case the `ingest` target also feeds its changes to (deterministic).
    pub fn seeded() -> &'static RecordDoc {
        static SEED: OnceLock<RecordDoc> = OnceLock::new();
        SEED.get_or_init(|| {
            let place: PlaceId = "hz/baiyang/haitian".parse().expect("a valid place");
            RecordDoc::create(
                RecordId::from_bytes(SEED_RECORD),
                RecordKind::Case,
                &place,
                &seed_ctx(),
                &[
                    ("summary".into(), "电梯故障".into()),
                    ("resident_phone".into(), "13812345678".into()),
                ],
            )
            .expect("the seed case is valid")
            .0
        })
    }

    /// Starting inputs for the corpus: valid messages and changes (creations, edits of the
    /// seeded case, including ones some roles may not make).
    pub fn seed_inputs() -> Vec<(String, Vec<u8>, &'static str)> {
        let mut out = Vec::new();
        let ctx = seed_ctx();
        let place: PlaceId = "hz/baiyang/haitian/haitiancheng".parse().expect("place");
        let mut changes = Vec::new();
        for kind in RecordKind::ALL {
            let fields: Vec<(String, String)> = match kind {
                RecordKind::Case => vec![("summary".into(), "噪音".into())],
                RecordKind::Contact => vec![("household".into(), "3-201".into())],
                RecordKind::Volunteer => vec![("activity".into(), "义诊".into())],
                RecordKind::Bus => vec![("run_number".into(), "1801".into())],
            };
            let id = RecordId::from_bytes([kind as u8 + 1; 16]);
            let (_, c) = RecordDoc::create(id, kind, &place, &ctx, &fields).expect("valid");
            changes.push((format!("create-{kind}"), kind, c.raw_bytes().to_vec()));
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
        ];
        for (name, fields) in edits {
            let mut doc = seeded().clone();
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let c = doc.set_fields(&ctx, &fields).expect("valid edit");
            changes.push((
                format!("edit-{name}"),
                RecordKind::Case,
                c.raw_bytes().to_vec(),
            ));
        }
        for (name, kind, bytes) in &changes {
            for role in [0u8, 3] {
                let mut data = vec![(*kind as u8) | (role << 2)];
                data.extend_from_slice(bytes);
                out.push((format!("{name}-role{role}"), data, "ingest"));
            }
        }
        let request = SyncRequest {
            cursor: crate::protocol::Cursor::with_epoch(42, 3, None),
            changes: changes
                .iter()
                .map(|(_, kind, bytes)| PushChange {
                    record: SEED_RECORD,
                    kind: *kind,
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
                change: changes[0].2.clone(),
                received_at: 7,
                user: "bus1".into(),
                device: "dev".into(),
            }],
            more: true,
            cursor: crate::protocol::Cursor::with_epoch(9, 1, Some([3; 16])),
            server_time: 1_700_000_000_000,
            snapshots: vec![crate::protocol::PulledSnapshot {
                record: SEED_RECORD,
                doc: seeded().clone().save(),
            }],
        };
        out.push(("response".into(), response.encode(), "sync_decode"));
        out
    }

    #[cfg(test)]
    mod tests {
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
    use automerge::ActorId;
    use automerge::transaction::Transactable;

    fn ctx() -> EditContext {
        EditContext {
            actor: ActorId::random(),
            user: "bus1".into(),
            now_ms: 1_700_000_000_000,
        }
    }

    fn allow(_: &PlaceId, _: RecordKind) -> Result<(), Refusal> {
        Ok(())
    }

    fn push(doc: &RecordDoc, kind: RecordKind, change: &Change) -> PushChange {
        PushChange {
            record: *doc.id().as_bytes(),
            kind,
            change: change.raw_bytes().to_vec(),
        }
    }

    fn new_case() -> (RecordDoc, Change) {
        let place: PlaceId = "hz/baiyang/haitian".parse().unwrap();
        RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &ctx(),
            &[("summary".into(), "电梯故障".into())],
        )
        .unwrap()
    }

    #[test]
    fn a_new_record_is_applied_once_then_duplicate() {
        let (phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        let p = push(&phone, RecordKind::Case, &c);
        match ingest(&mut server, &p, Role::Office, allow).unwrap() {
            Ingested::Applied { touched, place, .. } => {
                assert!(touched.contains(&"summary".to_string()));
                assert_eq!(place.as_str(), "hz/baiyang/haitian");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ingest(&mut server, &p, Role::Office, allow).unwrap(),
            Ingested::Duplicate { .. }
        ));
    }

    #[test]
    fn garbage_wrong_kind_and_scope_are_refused_without_changing_the_doc() {
        let (phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        let mut bad = push(&phone, RecordKind::Case, &c);
        bad.change = vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3];
        assert_eq!(
            ingest(&mut server, &bad, Role::Office, allow)
                .unwrap_err()
                .code,
            RejectCode::MalformedChange
        );
        let wrong = push(&phone, RecordKind::Bus, &c);
        assert_eq!(
            ingest(&mut server, &wrong, Role::Office, allow)
                .unwrap_err()
                .code,
            RejectCode::KindMismatch
        );
        let deny = |_: &PlaceId, _| Err(Refusal::new(RejectCode::OutOfScope, "not yours", [0; 32]));
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &c),
            Role::Office,
            deny,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::OutOfScope);
        assert_eq!(r.hash, c.hash().0);
        assert!(server.heads().is_empty());
    }

    #[test]
    fn forged_edits_of_place_and_invalid_values_are_refused() {
        let (mut phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &c),
            Role::Office,
            allow,
        )
        .unwrap();

        // A hand-made change that moves the record, bypassing the SDK's checks.
        let mut raw = phone.automerge().clone();
        raw.put(automerge::ROOT, "place", "hz").unwrap();
        let moved = raw.get_last_local_change();
        raw.commit();
        let moved = moved.or_else(|| raw.get_last_local_change()).unwrap();
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &moved),
            Role::Office,
            allow,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::ReadOnlyField, "{r:?}");

        let mut raw = phone.automerge().clone();
        raw.put(automerge::ROOT, "status", "exploded").unwrap();
        raw.commit();
        let invalid = raw.get_last_local_change().unwrap();
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &invalid),
            Role::Office,
            allow,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::InvalidRecord);
        assert!(r.message.contains("status"), "{}", r.message);

        let edit = phone
            .set_fields(&ctx(), &[("status".into(), "assigned".into())])
            .unwrap();
        assert!(matches!(
            ingest(
                &mut server,
                &push(&phone, RecordKind::Case, &edit),
                Role::Office,
                allow
            )
            .unwrap(),
            Ingested::Applied { .. }
        ));
    }

    #[test]
    fn a_change_with_unknown_dependencies_waits() {
        let (mut phone, _c0) = new_case();
        let c1 = phone
            .set_fields(&ctx(), &[("status".into(), "assigned".into())])
            .unwrap();
        let mut server = RecordDoc::empty(phone.id());
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &c1),
            Role::Office,
            allow,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::MissingDependencies);
    }

    #[test]
    fn role_rules_refuse_what_the_role_may_not_write() {
        let (mut phone, c) = new_case();
        let mut server = RecordDoc::empty(phone.id());
        ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &c),
            Role::Steward,
            allow,
        )
        .unwrap();
        let evaluated = phone
            .set_fields(
                &ctx(),
                &[
                    ("status".into(), "evaluated".into()),
                    ("satisfaction".into(), "satisfied".into()),
                ],
            )
            .unwrap();
        let p = push(&phone, RecordKind::Case, &evaluated);
        let heads = server.heads();
        for role in [Role::Steward, Role::Bus] {
            let r = ingest(&mut server, &p, role, allow).unwrap_err();
            assert_eq!(r.code, RejectCode::Forbidden, "{role}");
            assert!(r.message.contains("evaluated"), "{}", r.message);
            assert_eq!(
                r.place.as_ref().map(|p| p.as_str()),
                Some("hz/baiyang/haitian")
            );
            assert_eq!(server.heads(), heads, "a refusal changes nothing");
        }
        assert!(matches!(
            ingest(&mut server, &p, Role::Office, allow).unwrap(),
            Ingested::Applied { .. }
        ));
        // A later steward edit of another field is fine although the merged status is
        // `evaluated`: only what the change itself writes counts.
        let note = phone.add_note(&ctx(), "已回访").unwrap();
        assert!(matches!(
            ingest(
                &mut server,
                &push(&phone, RecordKind::Case, &note),
                Role::Steward,
                allow
            )
            .unwrap(),
            Ingested::Applied { .. }
        ));
        let depts = phone
            .set_fields(&ctx(), &[("departments".into(), "police".into())])
            .unwrap();
        let r = ingest(
            &mut server,
            &push(&phone, RecordKind::Case, &depts),
            Role::Steward,
            allow,
        )
        .unwrap_err();
        assert_eq!(r.code, RejectCode::Forbidden);
        assert!(r.message.contains("departments"), "{}", r.message);
    }

    #[test]
    fn a_deflate_bomb_is_refused_after_the_limit_not_inflated() {
        use std::io::Write;
        // A compressed change chunk whose body inflates to 64 MiB of zeros.
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let body = enc.finish().unwrap();
        assert!(body.len() < 128 * 1024, "{}", body.len());
        let mut chunk = CHUNK_MAGIC.to_vec();
        chunk.extend_from_slice(&[0, 0, 0, 0, CHUNK_COMPRESSED]);
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
        chunk.extend_from_slice(&body);
        let r = parse_change(&chunk).unwrap_err();
        assert_eq!(r.code, RejectCode::MalformedChange);
        assert!(r.message.contains("inflates past"), "{}", r.message);
        // Truncated or lying lengths are refused too, never a panic.
        assert!(parse_change(&chunk[..20]).is_err());
        assert!(parse_change(&[0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2, 0xff]).is_err());
        // A genuinely compressed, small change still parses.
        let (_, mut c) = new_case();
        let compressed = c.bytes().into_owned();
        assert_eq!(parse_change(&compressed).unwrap().hash(), c.hash());
    }
}
