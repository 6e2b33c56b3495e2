//! Story 1: two bus-team phones work run 1801 at 海天城 offline, then sync in either order.

use serde_json::Value;

use crate::common::*;

fn run_1801(first_syncs_a: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: before the bus leaves, bus1 opens run 1801 and logs the first case; both phones sync.
    let a = Phone::login(&server, "bus1");
    let b = Phone::login(&server, "bus2");
    let session = a.create(
        "bus",
        HAITIANCHENG,
        &[
            ("run_number", "1801"),
            ("estate", "海天城小区"),
            ("leader", "bus1"),
        ],
    );
    let case = a.create(
        "case",
        HAITIANCHENG,
        &[
            ("summary", "3幢楼道堆放杂物"),
            ("source", "bus_session"),
            ("session_id", &session),
            ("building", "3幢"),
        ],
    );
    assert_eq!(a.sync().accepted, 2);
    assert_eq!(b.sync().pulled, 2);
    assert_eq!(b.value(&case)["summary"], "3幢楼道堆放杂物");

    // Step 2: in the courtyard, no signal. Both hand out leaflets and work the same case.
    a.tally(&session, "leaflets", 300);
    b.tally(&session, "leaflets", 330);
    a.set(&case, &[("summary", "3幢楼道堆放杂物，堵塞消防通道")]);
    b.set(&case, &[("category", "fire_safety")]);
    b.note(&case, "已通知物业当天清理");
    a.set(&case, &[("status", "assigned")]);
    b.set(&case, &[("status", "answered_on_site")]);

    // Step 3: back in signal, they sync in either order; the first syncs once more to catch up.
    let (first, second) = if first_syncs_a { (&a, &b) } else { (&b, &a) };
    let r1 = first.sync();
    assert!(r1.rejected.is_empty(), "{:?}", r1.rejected);
    let r2 = second.sync();
    assert!(r2.rejected.is_empty(), "{:?}", r2.rejected);
    first.sync();

    // Step 4: the server and both phones show one merged record.
    let token = login_token(
        &server.url,
        "office1",
        "3f1f6a44-1b57-4c1e-9d7e-000000000001",
    );
    let (status, on_server) = raw_get_json(&format!("{}/v1/records/{case}", server.url), &token);
    assert_eq!(status, 200, "{on_server}");
    let (status, session_on_server) =
        raw_get_json(&format!("{}/v1/records/{session}", server.url), &token);
    assert_eq!(status, 200);
    assert_eq!(session_on_server["value"]["leaflets"], 630);

    for (who, value) in [
        ("server", on_server["value"].clone()),
        ("bus1", a.value(&case)),
        ("bus2", b.value(&case)),
    ] {
        assert_eq!(value["summary"], "3幢楼道堆放杂物，堵塞消防通道", "{who}");
        assert_eq!(value["category"], "fire_safety", "{who}");
        let notes = value["notes"].as_array().unwrap();
        assert_eq!(notes.len(), 1, "{who}");
        assert_eq!(notes[0]["text"], "已通知物业当天清理", "{who}");
        assert_eq!(notes[0]["author"], "bus2", "{who}");
    }
    assert_eq!(a.value(&session)["leaflets"], 630);
    assert_eq!(b.value(&session)["leaflets"], 630);

    // The status is a conflict: both values, each with who set it, on the server and both phones.
    let server_conflicts = on_server["conflicts"].as_array().unwrap();
    assert_eq!(server_conflicts.len(), 1, "{server_conflicts:?}");
    assert_eq!(server_conflicts[0]["field"], "status");
    let mut by_user: Vec<(String, String)> = server_conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["user"].as_str().unwrap().to_string(),
                v["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_user.sort();
    let expected = vec![
        ("bus1".to_string(), "assigned".to_string()),
        ("bus2".to_string(), "answered_on_site".to_string()),
    ];
    assert_eq!(by_user, expected);
    let winner = on_server["conflicts"][0]["winner"].clone();

    for phone in [&a, &b] {
        let view = phone.view(&case);
        assert_eq!(view.conflicts.len(), 1, "{}", phone.user);
        let c = &view.conflicts[0];
        assert_eq!(c.field, "status");
        let mut seen: Vec<(String, String)> = c
            .values
            .iter()
            .map(|v| {
                let value: Value = serde_json::from_str(&v.value_json).unwrap();
                (v.user.clone(), value.as_str().unwrap().to_string())
            })
            .collect();
        seen.sort();
        assert_eq!(seen, expected, "{}", phone.user);
        assert_eq!(
            serde_json::from_str::<Value>(&c.winner_json).unwrap(),
            winner,
            "same winner everywhere"
        );
    }

    // The history names who changed what, with the server's receive time beside the claimed time.
    let history = on_server["history"].as_array().unwrap();
    assert_eq!(history.len(), 6, "create + 5 edits: {history:?}");
    assert!(
        history
            .iter()
            .all(|h| h["received_at"].as_i64().unwrap() > 0)
    );
    // Each change's own message, read back from the change (the log keeps no copy).
    assert!(
        history[0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("create case ")),
        "{history:?}"
    );
    assert!(history.iter().all(|h| h["message"].is_string()));
    assert!(
        history
            .iter()
            .all(|h| h["actor"].as_str().is_some_and(|a| a.len() == 32))
    );
    assert!(history.iter().any(|h| {
        h["user"] == "bus2"
            && h["touched"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "category")
    }));
}

#[test]
fn run_1801_merges_when_bus1_syncs_first() {
    run_1801(true);
}

#[test]
fn run_1801_merges_when_bus2_syncs_first() {
    run_1801(false);
}
