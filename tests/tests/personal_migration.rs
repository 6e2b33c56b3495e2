//! Story: a district whose records were stored before records had a personal part (residents'
//! phone numbers in the shared document, synced to every phone of the place) runs
//! `linli-server migrate-personal-data`. Afterwards the number is in no pull a steward gets, the
//! steward's phone that had pulled it drops it at its next sync, and the office still sees it.

use linli_server::store::{Commit, NewChange, ProjectionUpdate, SqliteStore as Store};
use linli_sync_core::automerge::transaction::Transactable;
use linli_sync_core::automerge::{ActorId, ROOT};
use linli_sync_core::protocol::{CONTENT_TYPE, Cursor, Part, SyncRequest};
use linli_sync_core::{DeviceId, EditContext, PlaceId, RecordDoc, RecordId, RecordKind};

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const PHONE: &str = "13855556666";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Writes a case the way a version-1 server stored it: the resident's phone in full in the
/// shared document (past today's accept logic, straight into the store).
fn store_legacy_case(data_dir: &std::path::Path, device: DeviceId) -> RecordId {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open_sqlite(&data_dir.join("linli.db"))
            .await
            .unwrap();
        let bus1 = store.user_by_username("bus1").await.unwrap().unwrap();
        let place: PlaceId = B3.parse().unwrap();
        let ctx = EditContext {
            actor: ActorId::random(),
            user: "bus1".into(),
            now_ms: 1_700_000_000_000,
        };
        let id = RecordId::new();
        let (doc, created) = RecordDoc::create(
            id,
            RecordKind::Case,
            &place,
            &ctx,
            &[
                ("summary".into(), "3幢外墙脱落".into()),
                ("source".into(), "bus_session".into()),
            ],
        )
        .unwrap();
        let mut raw = doc.automerge().clone();
        raw.put(ROOT, "resident_phone", PHONE).unwrap();
        raw.commit();
        let legacy = raw.get_last_local_change().unwrap();
        let mut doc = doc;
        doc.apply_change(legacy.raw_bytes()).unwrap();
        for (version, change) in [(0, &created), (1, &legacy)] {
            let mut partial = RecordDoc::empty(id);
            for c in doc.changes().into_iter().take(version + 1) {
                partial.apply_change(c.raw_bytes()).unwrap();
            }
            let value = partial.record().unwrap();
            let outcome = store
                .commit_change(Commit {
                    change: NewChange {
                        hash: change.hash().0,
                        record: id,
                        part: Part::Record,
                        place: place.clone(),
                        kind: RecordKind::Case,
                        bytes: change.raw_bytes().to_vec(),
                        actor: ctx.actor.to_hex_string(),
                        device,
                        user_id: bus1.id.clone(),
                        claimed_at: ctx.now_ms,
                        received_at: ctx.now_ms,
                        touched: vec![],
                    },
                    projection: ProjectionUpdate::Record {
                        status: value.status().map(str::to_owned),
                        category: value.category().map(str::to_owned),
                        value: value.to_json(),
                        doc: Some(partial.save()),
                        has_conflicts: false,
                    },
                    expected_version: version as i64,
                })
                .await
                .unwrap();
            assert!(outcome.is_ok());
        }
        store.close().await;
        id
    })
}

fn pull_everything(url: &str, token: &str) -> Vec<u8> {
    let request = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![],
        max_pull: 0,
    };
    let (status, body) = raw_post(
        &format!("{url}/v1/sync"),
        Some(token),
        CONTENT_TYPE,
        &request.encode(),
    );
    assert_eq!(status, 200);
    body
}

#[test]
fn migrating_personal_data_takes_numbers_off_phones_and_pulls() {
    if let Some(why) = sqlite_only(
        "migrate-personal-data rewrites records stored by older versions, which only ever stored in SQLite",
    ) {
        eprintln!("{why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: a legacy case exists, and steward1's phone pulled it with the number.
    let bus_device = DeviceId::new();
    login_token(&server.url, "bus1", &bus_device.to_string());
    let case = store_legacy_case(&server.data_dir, bus_device);
    let steward = Phone::login(&server, "steward1");
    steward.sync();
    assert!(
        steward.store_bytes_contain(PHONE.as_bytes()),
        "before: on the phone"
    );
    let steward_token = login_token(&server.url, "steward1", &DeviceId::new().to_string());
    assert!(contains(
        &pull_everything(&server.url, &steward_token),
        PHONE
    ));
    // Until it is migrated, a record holding a full number in its shared document takes no
    // edit: the phone refuses it at once, and names the field.
    let err = steward
        .client
        .note(case.to_string(), "住户说已报修".into())
        .unwrap_err();
    assert!(err.to_string().contains("resident_phone"), "{err}");

    // Step 2: the operator migrates while the server runs.
    let out = admin_cli(&server.data_dir, &["migrate-personal-data"], "");
    assert!(out.contains("1 of 1 records"), "{out}");
    assert!(out.contains("done: 1 records rebuilt"), "{out}");
    let again = admin_cli(&server.data_dir, &["migrate-personal-data"], "");
    assert!(again.contains("0 of 1 records"), "idempotent: {again}");

    // Step 3: no pull of a steward's carries the number any more.
    let pulled = pull_everything(&server.url, &steward_token);
    assert!(contains(&pulled, "3幢外墙脱落"));
    assert!(!contains(&pulled, PHONE), "the number left the log");

    // Step 4: the steward's phone replaces its copy at its next sync, and the number is gone from
    // its files; the record takes edits again.
    steward.sync();
    assert_eq!(
        steward.value(&case.to_string())["resident_phone"],
        "138****6666"
    );
    assert!(
        !steward.store_bytes_contain(PHONE.as_bytes()),
        "after: gone from the phone"
    );
    steward.note(&case.to_string(), "住户说已报修");
    assert!(steward.sync().rejected.is_empty());

    // Step 5: the office sees the number in full, and the record works as before.
    let office = login_token(&server.url, "office1", &DeviceId::new().to_string());
    let (status, detail) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &office);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["value"]["resident_phone"], PHONE);
    assert_eq!(detail["value"]["summary"], "3幢外墙脱落");
    let bus = Phone::login(&server, "bus1");
    bus.sync();
    bus.set(&case.to_string(), &[("status", "assigned")]);
    assert!(bus.sync().rejected.is_empty());
    steward.sync();
    assert_eq!(steward.value(&case.to_string())["status"], "assigned");
}
