//! Story: phone B tries to pass off a change as phone A's. Every Automerge actor is bound to the
//! device that first pushed it, so a NEW change under A's actor pushed by B is refused (and the
//! back-office sees the refusal, with user, device and reason); a change the server already
//! holds may be relayed by anyone entitled to the record. Both phones are hand-made clients here,
//! so the test holds the raw change bytes a relaying phone would hold.

use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::{
    CONTENT_TYPE, Cursor, PushChange, RejectCode, SyncRequest, SyncResponse,
};
use linli_sync_core::{EditContext, RecordDoc, RecordId, RecordKind};

use crate::common::*;

const DEVICE_A: &str = "7d0c3a4e-0000-4000-8000-00000000a0a1";
const DEVICE_B: &str = "7d0c3a4e-0000-4000-8000-00000000b0b2";

fn sync_raw(url: &str, token: &str, changes: Vec<PushChange>) -> (u16, SyncResponse) {
    let req = SyncRequest {
        cursor: Cursor::start(),
        changes,
        max_pull: 0,
    };
    let (status, body) = raw_post(
        &format!("{url}/v1/sync"),
        Some(token),
        CONTENT_TYPE,
        &req.encode(),
    );
    let reply = SyncResponse::decode(&body).unwrap_or_else(|e| panic!("{status}: {e}"));
    (status, reply)
}

fn push(record: RecordId, change: &[u8]) -> PushChange {
    PushChange {
        record: *record.as_bytes(),
        kind: RecordKind::Case,
        part: linli_sync_core::protocol::Part::Record,
        change: change.to_vec(),
    }
}

#[test]
fn a_forged_actor_is_refused_and_a_relay_of_a_held_change_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let a_token = login_token(&server.url, "bus1", DEVICE_A);
    let b_token = login_token(&server.url, "bus2", DEVICE_B);
    let a_ctx = EditContext {
        actor: ActorId::random(),
        user: "bus1".into(),
        now_ms: 1_763_000_000_000,
    };

    // Step 1: phone A records a case at 海天城 and syncs: its actor is now bound to phone A.
    let record = RecordId::new();
    let (mut a_doc, created) = RecordDoc::create(
        record,
        RecordKind::Case,
        &HAITIANCHENG.parse().unwrap(),
        &a_ctx,
        &[
            ("summary".into(), "2幢电梯故障".into()),
            ("source".into(), "bus_session".into()),
        ],
    )
    .unwrap();
    let (status, reply) = sync_raw(
        &server.url,
        &a_token,
        vec![push(record, created.raw_bytes())],
    );
    assert_eq!((status, reply.accepted.len()), (200, 1));

    // Step 2: phone B pulls the case, so it holds A's change bytes.
    let (status, pulled) = sync_raw(&server.url, &b_token, vec![]);
    assert_eq!(status, 200);
    // A new phone gets the case as its saved document: A's change is in it.
    let snapshot = pulled
        .snapshots
        .iter()
        .find(|s| s.record == *record.as_bytes())
        .expect("B pulled A's case");
    let a_change = RecordDoc::load(record, &snapshot.doc).unwrap().changes()[0]
        .raw_bytes()
        .to_vec();
    let mut b_doc = RecordDoc::empty(record);
    b_doc.apply_change(&a_change).unwrap();

    // Step 3: B writes a note under A's actor and pushes it: refused as a foreign actor.
    let forged = b_doc
        .add_note(
            &EditContext {
                user: "bus1".into(),
                ..a_ctx.clone()
            },
            "（伪造）已处理完毕",
        )
        .unwrap();
    let (status, reply) = sync_raw(
        &server.url,
        &b_token,
        vec![push(record, forged.raw_bytes())],
    );
    assert_eq!(status, 422);
    assert_eq!(reply.rejected[0].code, RejectCode::ForeignActor);
    assert!(reply.rejected[0].message.contains("another device"));

    // Step 4: B relays A's own change, which the server already holds: accepted, stored once,
    // with A's original receive time.
    let (status, reply) = sync_raw(&server.url, &b_token, vec![push(record, &a_change)]);
    assert_eq!(status, 200, "{:?}", reply.rejected);
    assert_eq!(reply.accepted.len(), 1);

    // Step 5: A edits offline and B gets hold of that change before A syncs (say, over
    // Bluetooth): new to the server and made under A's actor, the relay is refused. Once A has
    // synced it, the same relay is accepted.
    let edit = a_doc
        .set_fields(&a_ctx, &[("status".into(), "assigned".into())])
        .unwrap();
    let (status, reply) = sync_raw(&server.url, &b_token, vec![push(record, edit.raw_bytes())]);
    assert_eq!(status, 422);
    assert_eq!(reply.rejected[0].code, RejectCode::ForeignActor);
    let (status, reply) = sync_raw(&server.url, &a_token, vec![push(record, edit.raw_bytes())]);
    assert_eq!(
        (status, reply.accepted.len()),
        (200, 1),
        "A's own push is accepted: its actor is its own"
    );
    let (status, reply) = sync_raw(&server.url, &b_token, vec![push(record, edit.raw_bytes())]);
    assert_eq!(status, 200, "{:?}", reply.rejected);

    // Step 6: the forged note reached no one: the record has A's two changes only.
    let office = login_token(
        &server.url,
        "office1",
        "7d0c3a4e-0000-4000-8000-0000000000f1",
    );
    let (status, view) = raw_get_json(&format!("{}/v1/records/{record}", server.url), &office);
    assert_eq!(status, 200);
    assert_eq!(view["history"].as_array().unwrap().len(), 2, "{view}");
    assert!(view["value"]["notes"].as_array().unwrap().is_empty());
    assert!(
        view["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["user"] == "bus1" && h["device"] == DEVICE_A)
    );

    // The back-office sees both refusals with user, device and reason; a steward may not.
    let (status, list) = raw_get_json(&format!("{}/v1/rejections", server.url), &office);
    assert_eq!(status, 200, "{list}");
    let rows = list["rejections"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    for row in rows {
        assert_eq!(row["user"], "bus2");
        assert_eq!(row["device"], DEVICE_B);
        assert_eq!(row["code"], "foreign_actor");
        assert_eq!(row["record"], record.to_string());
        assert_eq!(row["place"], HAITIANCHENG);
    }
    let steward = login_token(
        &server.url,
        "steward1",
        "7d0c3a4e-0000-4000-8000-0000000000f2",
    );
    let (status, _) = raw_get_json(&format!("{}/v1/rejections", server.url), &steward);
    assert_eq!(status, 403);
}
