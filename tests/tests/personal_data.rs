//! Story: residents' names and phone numbers reach only the phones and people allowed to see
//! them. bus1 records a case with a resident's name and phone in 3幢; steward1, whose building it
//! is, gets the case with both masked — and neither the number nor the name is in the bytes it
//! pulled or anywhere in its phone's files. bus1 keeps what it typed; office1 sees both in full.
//! A steward who captures a phone number sees it on their own phone, and the office sees it.

use linli_sync_core::protocol::{CONTENT_TYPE, Cursor, SyncRequest};
use serde_json::Value;

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const NAME: &str = "王秀英";
const PHONE: &str = "13812345678";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn residents_details_reach_only_those_allowed_to_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: on the bus, bus1 records a case with the resident's name and phone, and syncs.
    let bus1 = Phone::login(&server, "bus1");
    let case = bus1.create(
        "case",
        B3,
        &[
            ("summary", "3幢302漏水到楼下"),
            ("source", "bus_session"),
            ("resident_name", NAME),
            ("resident_phone", PHONE),
        ],
    );
    assert!(
        bus1.store_bytes_contain(PHONE.as_bytes()),
        "the raw-bytes search finds what a phone holds"
    );
    let report = bus1.sync();
    assert_eq!(report.accepted, 2, "the record and its personal part");

    // Step 2: steward1 syncs: the case arrives, masked.
    let steward1 = Phone::login(&server, "steward1");
    steward1.sync();
    let seen = steward1.value(&case);
    assert_eq!(seen["resident_phone"], "138****5678");
    assert_eq!(seen["resident_name"], "王**");
    assert_eq!(seen["summary"], "3幢302漏水到楼下");
    let view = steward1.view(&case);
    let shown = serde_json::to_string(&view).unwrap();
    assert!(!shown.contains(PHONE) && !shown.contains(NAME), "{shown}");

    // Neither is anywhere in steward1's database file or its WAL…
    assert!(steward1.store_bytes_contain("3幢302漏水到楼下".as_bytes()));
    assert!(!steward1.store_bytes_contain(PHONE.as_bytes()));
    assert!(!steward1.store_bytes_contain(NAME.as_bytes()));

    // …nor in the bytes the server sends to a steward's phone pulling everything from the start.
    let token = login_token(
        &server.url,
        "steward1",
        "5f0c3a4e-0000-4000-8000-00000000aa01",
    );
    let request = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![],
        max_pull: 0,
    };
    let (status, pulled) = raw_post(
        &format!("{}/v1/sync", server.url),
        Some(&token),
        CONTENT_TYPE,
        &request.encode(),
    );
    assert_eq!(status, 200);
    assert!(
        contains(&pulled, "3幢302漏水到楼下"),
        "the pull carries the case"
    );
    assert!(!contains(&pulled, PHONE), "the number left the server");
    assert!(!contains(&pulled, NAME), "the name left the server");

    // Step 3: bus1 still sees what it typed.
    let own = bus1.value(&case);
    assert_eq!(own["resident_phone"], PHONE);
    assert_eq!(own["resident_name"], NAME);

    // Step 4: office1 sees both in full through the API, with who captured them.
    let office = login_token(
        &server.url,
        "office1",
        "5f0c3a4e-0000-4000-8000-00000000aa02",
    );
    let (status, detail) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &office);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["value"]["resident_phone"], PHONE);
    assert_eq!(detail["value"]["resident_name"], NAME);
    assert!(
        detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["part"] == "personal" && h["user"] == "bus1")
    );
    // The steward's own API view is masked too.
    let (_, masked) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &token);
    assert_eq!(masked["value"]["resident_phone"], "138****5678");
    assert!(!masked.to_string().contains(PHONE));

    // Step 5: steward1 visits the household and captures a new number; it keeps it, the office
    // sees it, bus1 (a role without access) gets only the mask.
    steward1.set(&case, &[("resident_phone", "13900001111")]);
    assert_eq!(steward1.value(&case)["resident_phone"], "13900001111");
    let report = steward1.sync();
    assert!(report.rejected.is_empty(), "{report:?}");
    // The steward never held bus1's value, so its capture is concurrent with it: the office sees
    // both numbers, with who captured each, and decides.
    let (_, detail) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &office);
    let conflict = detail["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "resident_phone")
        .unwrap_or_else(|| panic!("no resident_phone conflict: {detail}"));
    let mut who: Vec<(String, String)> = conflict["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["user"].as_str().unwrap().into(),
                v["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    who.sort();
    assert_eq!(
        who,
        [
            ("bus1".to_string(), PHONE.to_string()),
            ("steward1".to_string(), "13900001111".to_string())
        ]
    );
    bus1.sync();
    let at_bus1: Value = bus1.value(&case);
    assert_eq!(
        at_bus1["resident_name"], NAME,
        "bus1 keeps what it captured"
    );
    assert_ne!(at_bus1["resident_phone"], "13900001111");
    assert!(!bus1.store_bytes_contain(b"13900001111"));

    // Step 6: an office phone receives the personal parts.
    let office_phone = Phone::login(&server, "office1");
    office_phone.sync();
    let full = office_phone.value(&case);
    assert_eq!(full["resident_name"], NAME);
    let phone = full["resident_phone"].as_str().unwrap();
    assert!(phone == PHONE || phone == "13900001111", "{phone}");
    let view = office_phone.view(&case);
    assert!(
        view.conflicts
            .iter()
            .any(|c| c.field == "resident_phone" && c.values.len() == 2)
    );
}
