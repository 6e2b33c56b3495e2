//! Story 3: a server killed and restarted loses nothing it acknowledged; phones resume from their
//! cursors, and work done while it was down syncs afterwards.

use crate::common::*;

#[test]
fn a_killed_server_loses_nothing_acknowledged_and_phones_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let a = Phone::login(&server, "bus1");
    let b = Phone::login(&server, "bus2");

    // Step 1: bus1 records a session and a case; the server acknowledges both; bus2 catches up.
    let session = a.create("bus", HAITIANCHENG, &[("run_number", "1802")]);
    a.tally(&session, "consultations", 12);
    let case = a.create(
        "case",
        HAITIANCHENG,
        &[
            ("summary", "群租房消防隐患"),
            ("category", "rental_housing"),
        ],
    );
    assert_eq!(a.sync().accepted, 3);
    // A new phone gets the two records as saved documents (one each), not the three changes.
    assert_eq!(b.sync().pulled, 2);

    // Step 2: more acknowledged work, then the server dies at once (SIGKILL, no shutdown).
    a.tally(&session, "consultations", 5);
    a.set(
        &case,
        &[("status", "assigned"), ("departments", "fire_brigade")],
    );
    assert_eq!(a.sync().accepted, 2);
    server.kill();

    // Step 3: while it is down, both phones keep working; sync fails without losing anything.
    b.tally(&session, "leaflets", 40);
    assert!(b.client.sync().is_err(), "no server, no sync");
    a.note(&case, "消防大队约定周五检查");

    // Step 4: the server comes back on the same data directory.
    server.restart();
    let token = login_token(
        &server.url,
        "office1",
        "9a0f6f2e-3c37-4a40-8c55-00000000c001",
    );
    let (status, on_server) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &token);
    assert_eq!(status, 200);
    assert_eq!(
        on_server["value"]["status"], "assigned",
        "acknowledged before the crash"
    );
    assert_eq!(on_server["value"]["departments"][0], "fire_brigade");

    // bus2 resumes from its cursor: it pushes its tally and pulls exactly the 2 changes it missed.
    let rb = b.sync();
    assert_eq!((rb.accepted, rb.pulled), (1, 2));
    let ra = a.sync();
    assert_eq!((ra.accepted, ra.pulled), (1, 1));
    assert_eq!(b.sync().pulled, 1, "bus1's note");

    for phone in [&a, &b] {
        assert_eq!(phone.value(&session)["consultations"], 17);
        assert_eq!(phone.value(&session)["leaflets"], 40);
        assert_eq!(phone.value(&case)["notes"].as_array().unwrap().len(), 1);
    }
    let (_, s) = raw_get_json(&format!("{}/v1/records/{session}", server.url), &token);
    assert_eq!(s["value"]["consultations"], 17);
    assert_eq!(s["history"].as_array().unwrap().len(), 4);
}
