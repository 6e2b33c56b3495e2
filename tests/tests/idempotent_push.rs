//! Story 2: the same push twice is stored once; a push whose reply was lost is resent safely.

use linli_sync_core::protocol::{CONTENT_TYPE, Cursor, SyncRequest, SyncResponse};

use crate::common::*;

#[test]
fn the_same_push_twice_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let device = "0b7e7c3e-54a1-4d7c-8f00-00000000a001";
    let token = login_token(&server.url, "bus1", device);

    let (doc, change, pushed) = hand_made_case("bus1", "天元公寓电梯停运");
    let push = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![pushed],
        max_pull: 0,
    }
    .encode();

    let url = format!("{}/v1/sync", server.url);
    let (s1, b1) = raw_post(&url, Some(&token), CONTENT_TYPE, &push);
    let (s2, b2) = raw_post(&url, Some(&token), CONTENT_TYPE, &push);
    assert_eq!((s1, s2), (200, 200));
    let (r1, r2) = (
        SyncResponse::decode(&b1).unwrap(),
        SyncResponse::decode(&b2).unwrap(),
    );
    assert_eq!(r1.accepted.len(), 1);
    assert_eq!(
        r1.accepted, r2.accepted,
        "same hash and the original receive time"
    );
    assert_eq!(r1.accepted[0].hash, change.hash().0);

    let (_, view) = raw_get_json(&format!("{}/v1/records/{}", server.url, doc.id()), &token);
    assert_eq!(
        view["history"].as_array().unwrap().len(),
        1,
        "stored once: {view}"
    );

    // Another phone pulls it exactly once.
    let other = Phone::login(&server, "bus2");
    assert_eq!(other.sync().pulled, 1);
    assert_eq!(other.sync().pulled, 0);
}

#[test]
fn a_push_whose_reply_is_lost_is_resent_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let proxy = LossyProxy::start(&server.url);

    // Step 1: a bus-team phone talks to the server through a flaky link.
    let home = tempfile::tempdir().unwrap();
    let phone = linli_ffi::FieldClient::new(home.path().to_str().unwrap().into(), None, None, None)
        .unwrap();
    phone
        .login("bus1".into(), DEMO_PASSWORD.into(), Some(proxy.url.clone()))
        .unwrap();
    let id = phone
        .create(
            linli_ffi::RecordKind::Case,
            HAITIANCHENG.into(),
            vec![linli_ffi::FieldValue {
                name: "summary".into(),
                value: "5幢地下室积水".into(),
            }],
        )
        .unwrap();
    phone.note(id.clone(), "物业已到场抽水".into()).unwrap();

    // Step 2: the push reaches the server and commits, but the reply never arrives.
    proxy.lose_replies(true);
    assert!(phone.sync().is_err(), "the phone sees the sync fail");
    assert_eq!(
        phone.outbox().unwrap().len(),
        2,
        "nothing is lost on the phone"
    );

    let office = login_token(
        &server.url,
        "office1",
        "0b7e7c3e-54a1-4d7c-8f00-00000000a002",
    );
    let (status, view) = raw_get_json(&format!("{}/v1/records/{id}", server.url), &office);
    assert_eq!(status, 200, "the server committed the push");
    assert_eq!(view["history"].as_array().unwrap().len(), 2);

    // Step 3: signal is back; the phone resends the same outbox and it is accepted once.
    proxy.lose_replies(false);
    let report = phone.sync().unwrap();
    assert_eq!(report.accepted, 2);
    assert!(report.rejected.is_empty());
    assert!(phone.outbox().unwrap().is_empty());
    let (_, view) = raw_get_json(&format!("{}/v1/records/{id}", server.url), &office);
    assert_eq!(
        view["history"].as_array().unwrap().len(),
        2,
        "no duplicates: {view}"
    );
    assert_eq!(view["value"]["notes"].as_array().unwrap().len(), 1);
}
