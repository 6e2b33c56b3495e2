//! Story 5: the real `linli-server` binary and two `linli-field` phones, driven as a person would
//! from a shell, through run 1801.

use crate::common::*;

#[test]
fn two_field_phones_work_run_1801_through_the_real_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (a.path(), b.path());

    field(
        a,
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            "bus1",
            "--password",
            DEMO_PASSWORD,
        ],
    );
    field(
        b,
        &[
            "login",
            "--server",
            &server.url,
            "--user",
            "bus2",
            "--password",
            DEMO_PASSWORD,
        ],
    );

    let session = field(
        a,
        &[
            "new",
            "bus",
            "--place",
            HAITIANCHENG,
            "run_number=1801",
            "estate=海天城小区",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let case = field(
        a,
        &[
            "new",
            "case",
            "--place",
            HAITIANCHENG,
            "summary=3幢楼道堆放杂物",
            "source=bus_session",
        ],
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    field(a, &["sync"]);
    assert_eq!(field(b, &["sync"])["pulled"], 2);

    // Offline: the server is still up, but nobody syncs until the end.
    field(a, &["tally", &session, "leaflets", "300"]);
    field(b, &["tally", &session, "leaflets", "330"]);
    field(a, &["set", &case, "summary=3幢楼道堆放杂物，堵塞消防通道"]);
    field(b, &["set", &case, "category=fire_safety"]);
    field(b, &["note", &case, "已通知物业当天清理"]);
    field(a, &["set", &case, "status=assigned"]);
    field(b, &["set", &case, "status=answered_on_site"]);
    let listed = field(a, &["list"]);
    assert_eq!(listed.as_array().map(|l| l.len()), Some(2), "{listed}");

    let sb = field(b, &["sync"]);
    assert_eq!(sb["rejected"].as_array().map(|r| r.len()), Some(0), "{sb}");
    field(a, &["sync"]);
    field(b, &["sync"]);

    for home in [a, b] {
        let shown = field(home, &["show", &session]);
        assert_eq!(shown["value"]["leaflets"], 630, "{shown}");
        let shown = field(home, &["show", &case]);
        assert_eq!(shown["value"]["summary"], "3幢楼道堆放杂物，堵塞消防通道");
        assert_eq!(shown["value"]["category"], "fire_safety");
        assert_eq!(shown["value"]["notes"][0]["text"], "已通知物业当天清理");
        let conflicts = shown["conflicts"].as_array().unwrap();
        assert_eq!(conflicts.len(), 1, "{shown}");
        assert_eq!(conflicts[0]["field"], "status");
        let mut users: Vec<&str> = conflicts[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["user"].as_str().unwrap())
            .collect();
        users.sort();
        assert_eq!(users, ["bus1", "bus2"]);
    }
}
