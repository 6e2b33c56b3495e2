//! `POST /v1/sync`: framing errors, idempotent pushes, scopes, actors and paging.

use axum::http::StatusCode;
use linli_server::store::prelude::*;
use linli_sync_core::RecordKind;
use linli_sync_core::protocol::{self, PushChange, RejectCode, SyncRequest};

use crate::common::{TestApp, new_case, push};

#[tokio::test]
async fn garbage_is_a_400_with_the_codec_message_and_the_server_keeps_serving() {
    let app = TestApp::demo().await;
    let mut phone = app.login("bus1").await;
    let (status, ct, body) = app
        .sync_raw(
            &phone.token,
            protocol::CONTENT_TYPE,
            b"\x00\xffnot a sync message".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ct.as_deref(), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["message"].as_str().unwrap().contains("LNLS"), "{v}");

    // Truncated valid message.
    let (doc, change) = new_case(&phone, "hz/baiyang/haitian", "parking");
    let bytes = SyncRequest {
        changes: vec![push(&doc, RecordKind::Case, &change)],
        ..Default::default()
    }
    .encode();
    let (status, _, _) = app
        .sync_raw(
            &phone.token,
            protocol::CONTENT_TYPE,
            bytes[..bytes.len() - 3].to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Garbage change bytes inside a valid message: rejected, not a crash.
    let bad = PushChange {
        record: *doc.id().as_bytes(),
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: vec![0x85, 0x6f, 0x4a, 0x83, 9, 9, 9],
    };
    let (status, resp) = app.sync(&mut phone, vec![bad], 0).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.rejected[0].code, RejectCode::MalformedChange);

    let (status, resp) = app
        .sync(&mut phone, vec![push(&doc, RecordKind::Case, &change)], 0)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.accepted.len(), 1);
}

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_is_413() {
    let app = TestApp::demo().await;
    let phone = app.login("bus1").await;
    let body = SyncRequest::default().encode();
    let (status, _, body) = app.sync_raw(&phone.token, "application/json", body).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(protocol::CONTENT_TYPE)
    );

    // Sync bodies may be far larger than JSON bodies (64 KiB)...
    let mut phone = phone;
    let details = "漏".repeat(linli_sync_core::limits::MAX_TEXT_CHARS);
    let (doc, change) = phone.create(
        RecordKind::Case,
        "hz/baiyang/haitian",
        &[
            ("summary", "地下室渗水"),
            ("details", details.as_str()),
            ("resolution", details.as_str()),
            ("source", "hotline"),
        ],
    );
    assert!(change.raw_bytes().len() > 100_000);
    let (status, resp) = app
        .sync(&mut phone, vec![push(&doc, RecordKind::Case, &change)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);

    // ...but not larger than the protocol's limit.
    let huge = vec![0u8; protocol::MAX_BODY_BYTES + 1];
    let (status, _, body) = app
        .sync_raw(&phone.token, protocol::CONTENT_TYPE, huge)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "payload_too_large");
}

#[tokio::test]
async fn a_push_sent_twice_is_stored_once_and_acknowledged_twice() {
    let app = TestApp::demo().await;
    let mut phone = app.login("bus1").await;
    let (doc, change) = new_case(&phone, "hz/baiyang/haitian/haitiancheng", "noise");
    let p = push(&doc, RecordKind::Case, &change);

    let (status, first) = app.sync(&mut phone, vec![p.clone()], 0).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.accepted.len(), 1);
    assert_eq!(first.accepted[0].hash, change.hash().0);
    // The phone's own change is not sent back to it.
    assert!(first.changes.is_empty());

    // The reply was lost; the phone sends the very same push again (same change twice, too).
    phone.cursor = Default::default();
    let (status, second) = app.sync(&mut phone, vec![p.clone(), p], 0).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second.accepted.len(), 2);
    assert_eq!(
        second.accepted[0], first.accepted[0],
        "original received_at"
    );
    assert_eq!(app.state.store.change_count().await.unwrap(), 1);
}

#[tokio::test]
async fn others_pull_what_is_in_their_places_only() {
    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut bus2 = app.login("bus2").await;
    // bus2's phone is set up (bootstrapped) before the push: the push reaches it as changes.
    app.sync(&mut bus2, vec![], 0).await;
    let mut steward1 = app.login("steward1").await;
    let mut steward2 = app.login("steward2").await;
    app.sync(&mut steward1, vec![], 0).await;
    app.sync(&mut steward2, vec![], 0).await;

    let (b3, c1) = new_case(&bus1, "hz/baiyang/haitian/haitiancheng/b3", "fire_safety");
    let (b1, c2) = new_case(&bus1, "hz/baiyang/haitian/haitiancheng/b1", "dogs");
    let (status, resp) = app
        .sync(
            &mut bus1,
            vec![
                push(&b3, RecordKind::Case, &c1),
                push(&b1, RecordKind::Case, &c2),
            ],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.accepted.len(), 2);

    let (_, pulled) = app.sync(&mut bus2, vec![], 0).await;
    assert_eq!(pulled.changes.len(), 2);
    assert!(pulled.changes.iter().all(|c| c.user == "bus1"));
    // Changes to different records of one push commit side by side, in either order.
    assert!(pulled.changes.iter().any(|c| c.change == c1.raw_bytes()));
    assert!(pulled.changes.iter().any(|c| c.change == c2.raw_bytes()));
    assert!(!pulled.more);

    let (_, pulled) = app.sync(&mut steward1, vec![], 0).await;
    assert_eq!(pulled.changes.len(), 1, "steward1 holds building 3 only");
    assert_eq!(pulled.changes[0].record, *b3.id().as_bytes());

    let (_, pulled) = app.sync(&mut steward2, vec![], 0).await;
    assert!(pulled.changes.is_empty());

    // Nothing new: the cursor holds and nothing is repeated.
    let (_, again) = app.sync(&mut bus2, vec![], 0).await;
    assert!(again.changes.is_empty());
}

#[tokio::test]
async fn pulls_are_paged() {
    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut bus2 = app.login("bus2").await;
    // bus2's phone is set up (bootstrapped) before the push: the push reaches it as changes.
    app.sync(&mut bus2, vec![], 0).await;
    let pushes: Vec<PushChange> = (0..5)
        .map(|_| {
            let (doc, c) = new_case(&bus1, "hz/baiyang/haitian/tianyuan", "parking");
            push(&doc, RecordKind::Case, &c)
        })
        .collect();
    let (_, resp) = app.sync(&mut bus1, pushes, 0).await;
    assert_eq!(resp.accepted.len(), 5);

    let mut seen = 0;
    let mut rounds = 0;
    loop {
        let (_, page) = app.sync(&mut bus2, vec![], 2).await;
        seen += page.changes.len();
        rounds += 1;
        assert!(page.changes.len() <= 2);
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, 5);
    assert_eq!(rounds, 3);
}

#[tokio::test]
async fn out_of_scope_and_foreign_actor_are_rejected_and_recorded() {
    let app = TestApp::demo().await;
    let mut steward1 = app.login("steward1").await;
    let (doc, change) = new_case(&steward1, "hz/baiyang/dabei/wenhuiyuan/b1", "noise");
    let (status, resp) = app
        .sync(
            &mut steward1,
            vec![push(&doc, RecordKind::Case, &change)],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "all rejected");
    assert_eq!(resp.rejected.len(), 1);
    assert_eq!(resp.rejected[0].code, RejectCode::OutOfScope);
    assert_eq!(resp.rejected[0].hash, change.hash().0);

    // bus1 creates a case; bus2 forges a change under bus1's actor.
    let mut bus1 = app.login("bus1").await;
    let mut bus2 = app.login("bus2").await;
    let (mut case, c0) = new_case(&bus1, "hz/baiyang/haitian", "parking");
    let (status, _) = app
        .sync(&mut bus1, vec![push(&case, RecordKind::Case, &c0)], 0)
        .await;
    assert_eq!(status, StatusCode::OK);
    bus2.actor = bus1.actor.clone();
    let forged = bus2.set(&mut case, &[("status", "withdrawn")]);
    let (status, resp) = app
        .sync(&mut bus2, vec![push(&case, RecordKind::Case, &forged)], 0)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(resp.rejected[0].code, RejectCode::ForeignActor);
    assert_eq!(app.state.store.rejection_count().await.unwrap(), 2);

    // The forged change left no trace: bus1's next edit applies on the committed document.
    let next = bus1.set(&mut new_case_copy(&case, &c0), &[("status", "assigned")]);
    let (status, resp) = app
        .sync(&mut bus1, vec![push(&case, RecordKind::Case, &next)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);
}

/// A copy of a document holding only its creating change.
fn new_case_copy(
    doc: &linli_sync_core::RecordDoc,
    c0: &linli_sync_core::automerge::Change,
) -> linli_sync_core::RecordDoc {
    let mut copy = linli_sync_core::RecordDoc::empty(doc.id());
    copy.apply_change(c0.raw_bytes()).unwrap();
    copy
}

#[tokio::test]
async fn identical_creating_changes_of_two_records_are_both_kept() {
    // One actor, same content, same second. The core names the record in the creating change, so
    // the hashes differ; the server would keep both even if they did not (it keys by record and hash).
    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut bus2 = app.login("bus2").await;
    // bus2's phone is set up (bootstrapped) before the push: the push reaches it as changes.
    app.sync(&mut bus2, vec![], 0).await;
    let (a, ca) = new_case(&bus1, "hz/baiyang/haitian", "parking");
    let (b, cb) = new_case(&bus1, "hz/baiyang/haitian", "parking");
    assert_ne!(ca.hash(), cb.hash());
    let (status, resp) = app
        .sync(
            &mut bus1,
            vec![
                push(&a, RecordKind::Case, &ca),
                push(&b, RecordKind::Case, &cb),
            ],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.accepted.len(), 2);
    assert_eq!(app.state.store.change_count().await.unwrap(), 2);
    let (_, pulled) = app.sync(&mut bus2, vec![], 0).await;
    let mut records: Vec<[u8; 16]> = pulled.changes.iter().map(|c| c.record).collect();
    records.sort();
    let mut expected = vec![*a.id().as_bytes(), *b.id().as_bytes()];
    expected.sort();
    assert_eq!(records, expected);
}

#[tokio::test]
async fn documents_evicted_from_the_cache_are_reloaded_from_the_store() {
    let app = TestApp::demo_with(|c| c.doc_cache = 1).await;
    let mut bus1 = app.login("bus1").await;
    let (mut a, ca) = new_case(&bus1, "hz/baiyang/haitian", "parking");
    let (b, cb) = new_case(&bus1, "hz/baiyang/haitian", "noise");
    let (status, _) = app
        .sync(
            &mut bus1,
            vec![
                push(&a, RecordKind::Case, &ca),
                push(&b, RecordKind::Case, &cb),
            ],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // `a` was evicted by `b`; its next edit applies on the document loaded from the store.
    let edit = bus1.set(&mut a, &[("status", "assigned")]);
    let (status, resp) = app
        .sync(&mut bus1, vec![push(&a, RecordKind::Case, &edit)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);

    let office = app.login("office1").await;
    let (_, list) = app
        .json(
            "GET",
            "/v1/records?status=assigned",
            Some(&office.token),
            None,
        )
        .await;
    assert_eq!(list["records"][0]["id"], a.id().to_string());
}

#[tokio::test]
async fn a_new_phone_starts_from_paged_snapshots_and_then_pulls_what_came_after() {
    use std::collections::HashMap;

    use linli_sync_core::RecordDoc;

    let app = TestApp::demo().await;
    let mut bus1 = app.login("bus1").await;
    let mut docs = Vec::new();
    let mut pushes = Vec::new();
    let mut creations = HashMap::new();
    for _ in 0..5 {
        let (d, c) = new_case(&bus1, "hz/baiyang/haitian", "parking");
        pushes.push(push(&d, RecordKind::Case, &c));
        creations.insert(*d.id().as_bytes(), c.raw_bytes().to_vec());
        docs.push(d);
    }
    // One record with a long history: its stored document is saved whole only now and then, the
    // changes in between are its tail in the log.
    for i in 0..40 {
        let c = bus1.set(&mut docs[0], &[("room", &format!("{}", 100 + i))]);
        pushes.push(push(&docs[0], RecordKind::Case, &c));
    }
    let (status, resp) = app.sync(&mut bus1, pushes, 0).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.accepted.len(), 45);
    let meta = app
        .state
        .store
        .record_meta(docs[0].id())
        .await
        .unwrap()
        .unwrap();
    assert!(
        (1..16).contains(&meta.doc_tail),
        "saved whole now and then: tail {}",
        meta.doc_tail
    );
    // A record with one change is not saved at all: that change, in the log, is its document.
    for d in &docs[1..] {
        let meta = app.state.store.record_meta(d.id()).await.unwrap().unwrap();
        assert_eq!(meta.doc_tail, 1);
    }

    // A new phone gets pages of whole documents, not the log's 45 changes one by one.
    let mut bus2 = app.login("bus2").await;
    let (_, first) = app.sync(&mut bus2, vec![], 2).await;
    assert_eq!(first.snapshots.len(), 2);
    assert!(first.changes.is_empty());
    assert!(first.more);
    // Such a record's snapshot is its one change, read from the log.
    let mut unsaved = 0;
    for s in &first.snapshots {
        if s.record != *docs[0].id().as_bytes() {
            assert_eq!(s.doc, creations[&s.record]);
            unsaved += 1;
        }
    }
    assert!(unsaved >= 1);
    let mut held: HashMap<[u8; 16], RecordDoc> = HashMap::new();
    let take = |page: &protocol::SyncResponse, held: &mut HashMap<[u8; 16], RecordDoc>| {
        for s in &page.snapshots {
            let id = linli_sync_core::RecordId::from_bytes(s.record);
            let mut theirs = RecordDoc::load(id, &s.doc).unwrap();
            match held.get_mut(&s.record) {
                Some(mine) => mine.apply_changes(theirs.changes()).unwrap(),
                None => {
                    held.insert(s.record, theirs);
                }
            }
        }
        for c in &page.changes {
            let id = linli_sync_core::RecordId::from_bytes(c.record);
            held.entry(c.record)
                .or_insert_with(|| RecordDoc::empty(id))
                .apply_change(&c.change)
                .unwrap();
        }
    };
    take(&first, &mut held);

    // Meanwhile bus1 edits every record: some were sent to bus2 already, some not yet.
    let mut edits = Vec::new();
    for d in docs.iter_mut() {
        let c = bus1.set(d, &[("status", "assigned")]);
        edits.push(push(d, RecordKind::Case, &c));
    }
    let (_, resp) = app.sync(&mut bus1, edits, 0).await;
    assert_eq!(resp.accepted.len(), 5);
    let mut rounds = 1;
    loop {
        let (_, page) = app.sync(&mut bus2, vec![], 2).await;
        take(&page, &mut held);
        rounds += 1;
        if !page.more {
            break;
        }
    }
    assert!(rounds <= 6, "{rounds} rounds");

    // Every record, with every change bus1 made, as bus1 holds it.
    assert_eq!(held.len(), 5);
    for d in docs.iter_mut() {
        let mine = held.get_mut(d.id().as_bytes()).unwrap();
        let (mut a, mut b) = (mine.heads(), d.heads());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(
            mine.record().unwrap().to_json(),
            d.record().unwrap().to_json()
        );
    }
    // Caught up: nothing more, nothing repeated.
    let (_, again) = app.sync(&mut bus2, vec![], 2).await;
    assert!(again.snapshots.is_empty() && again.changes.is_empty());
}
