//! Issue 10, a cursor that never skips: many phones push at once through two server nodes on
//! one database, some of them editing one shared case concurrently, while readers pull
//! continuously from both nodes. At the end every reader holds every acknowledged change exactly
//! once, and the shared case holds every pusher's edit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linli_sync_core::automerge::{ActorId, Change};
use linli_sync_core::protocol::{
    CONTENT_TYPE, Cursor, Part, PushChange, SyncRequest, SyncResponse,
};
use linli_sync_core::{EditContext, RecordDoc, RecordId, RecordKind};

use crate::common::*;

const PUSHERS: usize = 6;
const PUSHES: usize = 10;
const NEW_PER_PUSH: usize = 4;
const READERS: usize = 3;

/// One sync exchange; `None` when the server asked to come back later (429/503).
fn exchange(
    url: &str,
    token: &str,
    cursor: &Cursor,
    changes: Vec<PushChange>,
) -> Option<SyncResponse> {
    let body = SyncRequest {
        cursor: cursor.clone(),
        changes,
        max_pull: 50,
    }
    .encode();
    let (status, bytes) = raw_post(&format!("{url}/v1/sync"), Some(token), CONTENT_TYPE, &body);
    match status {
        200 => Some(SyncResponse::decode(&bytes).expect("reply decodes")),
        429 | 503 => None,
        other => panic!("sync answered {other}: {}", String::from_utf8_lossy(&bytes)),
    }
}

fn push_of(doc: &RecordDoc, change: &Change) -> PushChange {
    PushChange {
        record: *doc.id().as_bytes(),
        kind: RecordKind::Case,
        part: Part::Record,
        change: change.raw_bytes().to_vec(),
    }
}

fn ctx(actor: &ActorId, user: &str) -> EditContext {
    EditContext {
        actor: actor.clone(),
        user: user.into(),
        now_ms: 1_763_000_000_000,
    }
}

#[test]
fn concurrent_pushers_on_two_nodes_never_make_a_reader_skip_or_repeat_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::start_with_env(dir.path(), &[("LINLI_RATE_LIMIT", "0")]);
    let dir_b = tempfile::tempdir().unwrap();
    share_database(dir.path(), dir_b.path());
    let b = ServerProcess::start_with_env(dir_b.path(), &[("LINLI_RATE_LIMIT", "0")]);
    let nodes = [a.url.clone(), b.url.clone()];

    // Readers start on an empty log, so everything they get comes as changes, each countable.
    let readers: Vec<(String, Cursor)> = (0..READERS)
        .map(|i| {
            let token = login_token(
                &nodes[i % 2],
                "office1",
                &linli_sync_core::DeviceId::new().to_string(),
            );
            let first = exchange(&nodes[i % 2], &token, &Cursor::start(), vec![]).unwrap();
            assert!(first.snapshots.is_empty() && first.changes.is_empty());
            (token, first.cursor)
        })
        .collect();

    // The shared case every pusher edits.
    let setup_actor = ActorId::random();
    let (shared, created) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &HAITIANCHENG.parse().unwrap(),
        &ctx(&setup_actor, "bus1"),
        &[("summary".into(), "海天城3幢电梯异响".into())],
    )
    .unwrap();
    let setup_token = login_token(
        &nodes[0],
        "bus1",
        &linli_sync_core::DeviceId::new().to_string(),
    );
    let r = exchange(
        &nodes[0],
        &setup_token,
        &Cursor::start(),
        vec![push_of(&shared, &created)],
    )
    .unwrap();
    assert_eq!(r.accepted.len(), 1);
    let mut shared = shared;
    let shared_bytes = shared.save();
    let shared_id = shared.id();
    let accepted: Arc<Mutex<HashSet<[u8; 32]>>> =
        Arc::new(Mutex::new(HashSet::from([created.hash().0])));

    let done = Arc::new(AtomicBool::new(false));
    // Changes a node could not commit at once (two SQLite processes take turns at one write
    // lock): refused as retryable, sent again, never lost.
    let retried = Arc::new(AtomicUsize::new(0));
    let reader_threads: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, (token, mut cursor))| {
            let nodes = nodes.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen: HashMap<[u8; 32], usize> = HashMap::new();
                let mut turn = i;
                let mut quiet_after_done = 0;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    turn += 1;
                    let Some(reply) = exchange(&nodes[turn % 2], &token, &cursor, vec![]) else {
                        continue;
                    };
                    assert!(
                        reply.snapshots.is_empty(),
                        "a reader past its bootstrap gets changes"
                    );
                    for c in &reply.changes {
                        let hash = Change::from_bytes(c.change.clone()).unwrap().hash().0;
                        *seen.entry(hash).or_default() += 1;
                    }
                    cursor = reply.cursor;
                    if finished && !reply.more && reply.changes.is_empty() {
                        // Twice quiet, once on each node, after every pusher finished.
                        quiet_after_done += 1;
                        if quiet_after_done == 2 {
                            return seen;
                        }
                    }
                }
            })
        })
        .collect();

    let pusher_threads: Vec<_> = (0..PUSHERS)
        .map(|p| {
            let nodes = nodes.clone();
            let accepted = accepted.clone();
            let retried = retried.clone();
            let shared_bytes = shared_bytes.clone();
            std::thread::spawn(move || {
                let user = if p % 2 == 0 { "bus1" } else { "bus2" };
                let actor = ActorId::random();
                let url = &nodes[p % 2];
                let token = login_token(url, user, &linli_sync_core::DeviceId::new().to_string());
                let mut mine = RecordDoc::load(shared_id, &shared_bytes).unwrap();
                let mut cursor = Cursor::start();
                for n in 0..PUSHES {
                    let mut changes = Vec::new();
                    for k in 0..NEW_PER_PUSH {
                        let (doc, change) = RecordDoc::create(
                            RecordId::new(),
                            RecordKind::Case,
                            &HAITIANCHENG.parse().unwrap(),
                            &ctx(&actor, user),
                            &[("summary".into(), format!("{p}号手机第{n}次第{k}条"))],
                        )
                        .unwrap();
                        changes.push(push_of(&doc, &change));
                    }
                    let edit = mine
                        .add_note(&ctx(&actor, user), &format!("{p}号手机第{n}次跟进"))
                        .unwrap();
                    changes.push(push_of(&mine, &edit));
                    // As a phone does: what the server asks to send again is sent again.
                    let mut outbox = changes;
                    while !outbox.is_empty() {
                        let Some(reply) = exchange(url, &token, &cursor, outbox.clone()) else {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        };
                        assert!(
                            reply.rejected.iter().all(|r| r.code.is_retryable()),
                            "refused: {:?}",
                            reply.rejected
                        );
                        retried.fetch_add(reply.rejected.len(), Ordering::SeqCst);
                        cursor = reply.cursor;
                        let acked: HashSet<[u8; 32]> =
                            reply.accepted.iter().map(|a| a.hash).collect();
                        outbox.retain(|c| {
                            !acked.contains(&Change::from_bytes(c.change.clone()).unwrap().hash().0)
                        });
                        accepted.lock().unwrap().extend(acked);
                    }
                }
            })
        })
        .collect();
    for t in pusher_threads {
        t.join().expect("pusher");
    }
    done.store(true, Ordering::SeqCst);
    let accepted = accepted.lock().unwrap().clone();
    eprintln!(
        "{} changes acknowledged, {} sent again after a retryable refusal",
        accepted.len(),
        retried.load(Ordering::SeqCst)
    );
    assert_eq!(accepted.len(), 1 + PUSHERS * PUSHES * (NEW_PER_PUSH + 1));
    for (i, t) in reader_threads.into_iter().enumerate() {
        let seen = t.join().expect("reader");
        let repeated: Vec<_> = seen.values().filter(|n| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "reader {i} got {} changes twice",
            repeated.len()
        );
        let held: HashSet<[u8; 32]> = seen.into_keys().collect();
        let missing = accepted.difference(&held).count();
        assert_eq!(
            missing, 0,
            "reader {i} never got {missing} acknowledged changes"
        );
        assert_eq!(
            held.len(),
            accepted.len(),
            "reader {i} got changes nobody pushed"
        );
    }

    // The shared case merged every pusher's note.
    let token = login_token(
        &nodes[1],
        "office1",
        &linli_sync_core::DeviceId::new().to_string(),
    );
    let (_, view) = raw_get_json(&format!("{}/v1/records/{}", nodes[1], shared_id), &token);
    let notes = view["value"]["notes"].as_array().map_or(0, Vec::len);
    assert_eq!(notes, PUSHERS * PUSHES, "{view}");
}
