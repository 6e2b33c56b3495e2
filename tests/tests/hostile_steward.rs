//! What a hostile steward can do, tried from outside as one would: a demo account, bytes crafted
//! with the `automerge` crate, real HTTP against the real server. One test per class of hole
//! ("What a hostile steward can do today"); each failed on the server before these fixes.

use std::time::{Duration, Instant};

use linli_sync_core::automerge::transaction::{CommitOptions, Transactable};
use linli_sync_core::automerge::{ActorId, AutoCommit, ROOT, ReadDoc, ScalarValue};
use linli_sync_core::protocol::{
    CONTENT_TYPE, Cursor, MAX_PAGE_BYTES, Part, PushChange, RejectCode, SyncRequest, SyncResponse,
};
use linli_sync_core::{EditContext, PlaceId, RecordDoc, RecordId, RecordKind};

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const NOW: i64 = 1_763_000_000_000;

/// A signed-in attacker speaking the protocol directly.
struct Attacker {
    url: String,
    token: String,
    user: String,
    actor: ActorId,
}

impl Attacker {
    fn new(server: &ServerProcess, user: &str) -> Self {
        let device = uuid_like();
        Self {
            url: server.url.clone(),
            token: login_token(&server.url, user, &device),
            user: user.into(),
            actor: ActorId::random(),
        }
    }

    fn ctx(&self) -> EditContext {
        self.ctx_as(&self.user)
    }

    /// An edit context claiming to be `user` (the forgery is in the bytes, not the login).
    fn ctx_as(&self, user: &str) -> EditContext {
        EditContext {
            actor: self.actor.clone(),
            user: user.into(),
            now_ms: NOW,
        }
    }

    fn push(&self, changes: Vec<PushChange>) -> (u16, SyncResponse) {
        let request = SyncRequest {
            cursor: Cursor::start(),
            changes,
            max_pull: 1,
        };
        let (status, body) = raw_post(
            &format!("{}/v1/sync", self.url),
            Some(&self.token),
            CONTENT_TYPE,
            &request.encode(),
        );
        let reply = SyncResponse::decode(&body)
            .unwrap_or_else(|e| panic!("{status}: {e}: {}", String::from_utf8_lossy(&body)));
        (status, reply)
    }

    fn pull(&self, cursor: Cursor, max_pull: u32) -> (Vec<u8>, SyncResponse) {
        let request = SyncRequest {
            cursor,
            changes: vec![],
            max_pull,
        };
        let (status, body) = raw_post(
            &format!("{}/v1/sync", self.url),
            Some(&self.token),
            CONTENT_TYPE,
            &request.encode(),
        );
        assert_eq!(status, 200);
        let reply = SyncResponse::decode(&body).unwrap();
        (body, reply)
    }
}

fn uuid_like() -> String {
    linli_sync_core::DeviceId::new().to_string()
}

fn push_of(record: RecordId, kind: RecordKind, bytes: Vec<u8>) -> PushChange {
    PushChange {
        record: *record.as_bytes(),
        kind,
        part: Part::Record,
        change: bytes,
    }
}

/// The last change of a raw edit of `doc`, made past every check a phone would make.
fn raw_edit(doc: &RecordDoc, actor: &ActorId, f: impl FnOnce(&mut AutoCommit)) -> Vec<u8> {
    let mut raw = doc.automerge().clone().with_actor(actor.clone());
    f(&mut raw);
    raw.commit_with(CommitOptions::default().with_time(NOW / 1000));
    raw.get_last_local_change().unwrap().raw_bytes().to_vec()
}

/// The server's resident memory high-water mark, in KiB.
fn peak_kib(server: &ServerProcess) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn case(attacker: &Attacker, place: &str, summary: &str) -> (RecordDoc, PushChange) {
    let place: PlaceId = place.parse().unwrap();
    let (doc, c) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &place,
        &attacker.ctx(),
        &[("summary".into(), summary.into())],
    )
    .unwrap();
    let push = push_of(doc.id(), RecordKind::Case, c.raw_bytes().to_vec());
    (doc, push)
}

/// Class 1: an Automerge document chunk pushed as a change, whose DEFLATE column inflates to
/// 64 MiB, is refused on its type byte: the server's memory does not move.
#[test]
fn class1_a_decompression_bomb_of_another_chunk_type_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let steward = Attacker::new(&server, "steward1");

    let mut bomb = AutoCommit::new();
    bomb.put(ROOT, "x", "x".repeat(64 << 20)).unwrap();
    bomb.commit();
    let saved = bomb.save();
    assert!(saved.len() < 1 << 20, "{} bytes on the wire", saved.len());
    drop(bomb);

    let before = peak_kib(&server);
    let started = Instant::now();
    let pushes = (0..4)
        .map(|_| push_of(RecordId::new(), RecordKind::Case, saved.clone()))
        .collect();
    let (status, reply) = steward.push(pushes);
    assert_eq!(status, 422);
    assert!(
        reply
            .rejected
            .iter()
            .all(|r| r.code == RejectCode::MalformedChange && r.message.contains("document"))
    );
    let grew = peak_kib(&server).saturating_sub(before);
    assert!(grew < 32 * 1024, "the server grew by {grew} KiB");
    eprintln!("class 1: refused in {:?}", started.elapsed());

    // Compressed changes that each inflate within bounds stop once the push has spent its total.
    let (doc, create) = case(&steward, B3, "楼道灯坏了");
    let mut big = doc.automerge().clone().with_actor(steward.actor.clone());
    big.put(ROOT, "building", "3".repeat(250 * 1024)).unwrap();
    big.commit_with(CommitOptions::default().with_time(NOW / 1000));
    let mut one = big.get_last_local_change().unwrap();
    let compressed = one.bytes().to_vec();
    assert!(compressed.len() < 8 * 1024);
    let mut pushes = vec![create];
    pushes.extend((0..60).map(|_| push_of(doc.id(), RecordKind::Case, compressed.clone())));
    let (_, reply) = steward.push(pushes);
    assert!(
        reply
            .rejected
            .iter()
            .any(|r| r.message.contains("this push inflate past")),
        "{:?}",
        reply.rejected.last()
    );
}

/// Class 2: audit fields and note authorship are what the server knows.
#[test]
fn class2_records_and_notes_in_someone_elses_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let steward = Attacker::new(&server, "steward1");
    let office = Attacker::new(&server, "office1");

    // A case "created by office1", pushed by steward1.
    let place: PlaceId = B3.parse().unwrap();
    let (forged, c) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &place,
        &steward.ctx_as("office1"),
        &[("summary".into(), "假冒办公室".into())],
    )
    .unwrap();
    let (status, reply) = steward.push(vec![push_of(
        forged.id(),
        RecordKind::Case,
        c.raw_bytes().to_vec(),
    )]);
    assert_eq!(status, 422);
    assert_eq!(reply.rejected[0].code, RejectCode::Forbidden);
    assert!(reply.rejected[0].message.contains("another user's name"));

    // A genuine case; a note "signed" by office1 on it.
    let (mut doc, create) = case(&steward, B3, "消防栓漏水");
    assert_eq!(steward.push(vec![create]).0, 200);
    let mut phone = doc.clone();
    let note = phone
        .add_note(&steward.ctx_as("office1"), "已批准")
        .unwrap();
    let (_, reply) = steward.push(vec![push_of(
        doc.id(),
        RecordKind::Case,
        note.raw_bytes().to_vec(),
    )]);
    assert_eq!(reply.rejected[0].code, RejectCode::Forbidden);

    // office1 writes a real note; steward1 rewrites its text.
    let real = doc.add_note(&office.ctx(), "请三天内处理").unwrap();
    assert_eq!(
        office
            .push(vec![push_of(
                doc.id(),
                RecordKind::Case,
                real.raw_bytes().to_vec()
            )])
            .0,
        200
    );
    let rewrite = raw_edit(&doc, &steward.actor, |d| {
        let (_, notes) = d.get(ROOT, "notes").unwrap().unwrap();
        let (_, n0) = d.get(&notes, 0).unwrap().unwrap();
        d.put(&n0, "text", "不用处理了").unwrap();
    });
    let (_, reply) = steward.push(vec![push_of(doc.id(), RecordKind::Case, rewrite)]);
    assert_eq!(reply.rejected[0].code, RejectCode::Forbidden);
    assert!(reply.rejected[0].message.contains("append-only"));

    // What the office reads is what was really written, by whom.
    let token = login_token(&server.url, "office1", &uuid_like());
    let (_, detail) = raw_get_json(&format!("{}/v1/records/{}", server.url, doc.id()), &token);
    assert_eq!(detail["value"]["notes"][0]["text"], "请三天内处理");
    assert_eq!(detail["value"]["notes"][0]["author"], "office1");
    assert_eq!(detail["value"]["created_by"], "steward1");
    let (status, _) = raw_get_json(
        &format!("{}/v1/records/{}", server.url, forged.id()),
        &token,
    );
    assert_eq!(status, 404, "the forged case was never stored");
}

/// Class 3: one user's flood of junk does not stall another user's push.
#[test]
fn class3_a_junk_flood_from_one_user_does_not_stall_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(
        dir.path(),
        &[("LINLI_RATE_LIMIT", "0"), ("LINLI_RATE_BURST", "1")],
    );
    let flooder = Attacker::new(&server, "steward1");
    let innocent = Attacker::new(&server, "bus1");
    let junk: Vec<PushChange> = (0..1000)
        .map(|i| push_of(RecordId::new(), RecordKind::Case, vec![i as u8]))
        .collect();
    let request = SyncRequest {
        cursor: Cursor::start(),
        changes: junk,
        max_pull: 1,
    }
    .encode();
    let url = format!("{}/v1/sync", server.url);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..8 {
        let (url, token, request, stop) = (
            url.clone(),
            flooder.token.clone(),
            request.clone(),
            stop.clone(),
        );
        floods.push(std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(raw_post(&url, Some(&token), CONTENT_TYPE, &request).0);
            }
            statuses
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let (_, push) = case(&innocent, B3, &format!("第{i}件"));
        let started = Instant::now();
        let (status, reply) = innocent.push(vec![push]);
        worst = worst.max(started.elapsed());
        assert_eq!(status, 200, "{:?}", reply.rejected);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses: Vec<u16> = floods.into_iter().flat_map(|t| t.join().unwrap()).collect();
    // How long the innocent waited is measured by `linli-flood` (BENCHMARKS.md), not asserted
    // here: this story checks that its pushes are served during the flood and the flood is
    // turned away.
    eprintln!("class 3: the innocent push waited at most {worst:?} during the flood");
    assert!(
        statuses.iter().all(|s| *s == 422 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "extra queued pushes are turned away"
    );
    // Each refused push stores at most ten rejection rows.
    let office = login_token(&server.url, "office1", &uuid_like());
    let (_, rejections) = raw_get_json(&format!("{}/v1/rejections?limit=500", server.url), &office);
    let rows = rejections["rejections"].as_array().unwrap();
    let pushes = statuses.iter().filter(|s| **s == 422).count();
    assert!(
        rows.len() <= 500 && rows.len() <= pushes * 10 + 10,
        "{}",
        rows.len()
    );
    assert!(rows.iter().any(|r| r["more"].as_i64() == Some(990)));
}

/// Class 4: a push to a known record outside one's grants answers what a random id would.
#[test]
fn class4_pushes_do_not_reveal_records_outside_ones_grants() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let owner = Attacker::new(&server, "steward2");
    let outsider = Attacker::new(&server, "steward1");
    let (doc, create) = case(&owner, "hz/baiyang/dabei/wenhuiyuan/b1", "文汇苑1幢");
    assert_eq!(owner.push(vec![create.clone()]).0, 200);

    let known = doc.id();
    let random = RecordId::new();
    let edit = raw_edit(&doc, &outsider.actor, |d| {
        d.put(ROOT, "room", "101").unwrap()
    });
    let tries: Vec<(&str, Vec<u8>, RecordKind)> = vec![
        ("junk", vec![1, 2, 3], RecordKind::Case),
        ("an edit", edit.clone(), RecordKind::Case),
        ("an edit as another kind", edit, RecordKind::Bus),
        (
            "the owner's own creation, relayed",
            create.change.clone(),
            RecordKind::Case,
        ),
    ];
    for (what, bytes, kind) in tries {
        let answer = |id: RecordId| {
            let (status, reply) = outsider.push(vec![push_of(id, kind, bytes.clone())]);
            let r = &reply.rejected[0];
            (status, r.code, r.message.clone())
        };
        let (a, b) = (answer(known), answer(random));
        assert_eq!(a, b, "{what}: the known record answers differently");
        assert!(
            !a.2.contains("wenhuiyuan") && !a.2.contains("case"),
            "{what}: {}",
            a.2
        );
    }
}

/// Class 6: unknown keys, oversized fields and unbounded growth are refused.
#[test]
fn class6_documents_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let steward = Attacker::new(&server, "steward1");
    let (mut doc, create) = case(&steward, B3, "3幢电梯");
    assert_eq!(steward.push(vec![create]).0, 200);

    let hidden = raw_edit(&doc, &steward.actor, |d| {
        d.put(ROOT, "hidden", "x".repeat(200 * 1024)).unwrap()
    });
    let (_, reply) = steward.push(vec![push_of(doc.id(), RecordKind::Case, hidden)]);
    assert_eq!(reply.rejected[0].code, RejectCode::InvalidRecord);
    assert!(reply.rejected[0].message.contains("hidden"));

    let long_note = raw_edit(&doc, &steward.actor, |d| {
        let (_, notes) = d.get(ROOT, "notes").unwrap().unwrap();
        let n = d
            .insert_object(&notes, 0, linli_sync_core::automerge::ObjType::Map)
            .unwrap();
        d.put(&n, "id", "n1").unwrap();
        d.put(&n, "author", "steward1").unwrap();
        d.put(&n, "at", NOW).unwrap();
        d.put(&n, "text", "长".repeat(70_000)).unwrap();
    });
    let (_, reply) = steward.push(vec![push_of(doc.id(), RecordKind::Case, long_note)]);
    assert_eq!(reply.rejected[0].code, RejectCode::InvalidRecord);

    // Growth: each push replaces the details with 20,000 new characters (about 60 KB of change);
    // the record fills at 2 MiB instead of growing without end.
    let mut accepted = 0;
    let mut full = false;
    for i in 0..60 {
        let text = char::from_u32(0x4e00 + i)
            .unwrap()
            .to_string()
            .repeat(20_000);
        let c = raw_edit(&doc, &steward.actor, |d| {
            let (_, details) = d.get(ROOT, "details").unwrap().unwrap();
            let len = d.length(&details) as isize;
            d.splice_text(&details, 0, len, &text).unwrap();
        });
        let (_, reply) = steward.push(vec![push_of(doc.id(), RecordKind::Case, c.clone())]);
        if reply.accepted.is_empty() {
            assert!(
                reply.rejected[0].message.contains("full"),
                "{:?}",
                reply.rejected
            );
            full = true;
            break;
        }
        doc.apply_change(&c).unwrap();
        accepted += 1;
    }
    assert!(
        full,
        "the record grew past its bound after {accepted} pushes"
    );
    assert!(accepted > 5, "{accepted}");
    let token = login_token(&server.url, "office1", &uuid_like());
    let started = Instant::now();
    let (status, _) = raw_get_json(&format!("{}/v1/records/{}", server.url, doc.id()), &token);
    assert_eq!(status, 200);
    eprintln!(
        "class 6: the bounded record read in {:?}",
        started.elapsed()
    );
}

/// Class 7: tallies cannot be set or stepped past what a person could count.
#[test]
fn class7_tallies_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bus = Attacker::new(&server, "bus1");
    let place: PlaceId = B3.parse().unwrap();
    let (doc, c) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Bus,
        &place,
        &bus.ctx(),
        &[("run_number".into(), "1801".into())],
    )
    .unwrap();
    assert_eq!(
        bus.push(vec![push_of(
            doc.id(),
            RecordKind::Bus,
            c.raw_bytes().to_vec()
        )])
        .0,
        200
    );
    let near = raw_edit(&doc, &bus.actor, |d| {
        d.put(ROOT, "leaflets", ScalarValue::counter(1 << 62))
            .unwrap()
    });
    let step = raw_edit(&doc, &bus.actor, |d| {
        d.increment(ROOT, "leaflets", i64::MAX).unwrap()
    });
    for bytes in [near, step] {
        let (status, reply) = bus.push(vec![push_of(doc.id(), RecordKind::Bus, bytes)]);
        assert_eq!(status, 422);
        assert_eq!(reply.rejected[0].code, RejectCode::InvalidRecord);
        assert!(reply.rejected[0].message.contains("tally"));
    }
    let token = login_token(&server.url, "office1", &uuid_like());
    let (_, detail) = raw_get_json(&format!("{}/v1/records/{}", server.url, doc.id()), &token);
    assert_eq!(detail["value"]["leaflets"], 0);
}

/// Class 9: a pulled page is bounded by bytes as well as by count.
#[test]
fn class9_pull_pages_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let bus = Attacker::new(&server, "bus1");
    // The reader's phone is set up first, so the records reach it as changes (a new phone gets
    // saved documents instead).
    let reader = Attacker::new(&server, "steward1");
    let (_, first) = reader.pull(Cursor::start(), 1000);
    let mut cursor = first.cursor;
    // 40 records of ~120 KB each: about 4.8 MB of changes.
    for i in 0..40 {
        let place: PlaceId = B3.parse().unwrap();
        let text = char::from_u32(0x4e00 + i)
            .unwrap()
            .to_string()
            .repeat(20_000);
        let (doc, c) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &place,
            &bus.ctx(),
            &[
                ("summary".into(), format!("第{i}件")),
                ("details".into(), text.clone()),
                ("resolution".into(), text),
            ],
        )
        .unwrap();
        let (status, reply) = bus.push(vec![push_of(
            doc.id(),
            RecordKind::Case,
            c.raw_bytes().to_vec(),
        )]);
        assert_eq!(status, 200, "{:?}", reply.rejected);
    }
    let mut pages = 0;
    let mut got = 0;
    loop {
        let (body, reply) = reader.pull(cursor, 1000);
        pages += 1;
        assert!(
            body.len() <= MAX_PAGE_BYTES + 64 * 1024,
            "a page of {} bytes",
            body.len()
        );
        got += reply.changes.len();
        cursor = reply.cursor;
        if !reply.more {
            break;
        }
        assert!(pages < 10);
    }
    assert!(pages >= 2, "4.8 MB came in {pages} page(s)");
    assert_eq!(got, 40);
}
