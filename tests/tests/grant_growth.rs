//! Story: a steward is granted a second building and receives its existing records at the next
//! sync (bootstrapped from the server's saved documents, not by replaying the log); when the
//! grant is revoked, that building's records stop arriving and leave the phone — from its list
//! and from its SQLite file, WAL included. Grants are made with the admin CLI while the server
//! runs.

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";
const B4: &str = "hz/baiyang/haitian/haitiancheng/b4";

#[test]
fn a_granted_building_arrives_whole_and_a_revoked_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: the bus team records three cases in building 4 (one edited twice) and a contact in
    // building 3.
    let bus = Phone::login(&server, "bus1");
    let mut b4_cases = vec![];
    for (summary, category) in [
        ("4幢消防通道堵塞", "fire_safety"),
        ("4幢漏水", "facilities"),
        ("4幢噪音", "noise"),
    ] {
        b4_cases.push(bus.create(
            "case",
            B4,
            &[
                ("summary", summary),
                ("category", category),
                ("source", "bus_session"),
            ],
        ));
    }
    bus.set(
        &b4_cases[1],
        &[("status", "assigned"), ("departments", "property_company")],
    );
    bus.note(&b4_cases[1], "物业已派人查看");
    let b3_contact = bus.create(
        "contact",
        B3,
        &[("household", "3-201"), ("channel", "visit")],
    );
    bus.sync();

    // Step 2: steward1 holds building 3 only: it gets the contact, none of building 4.
    let steward = Phone::login(&server, "steward1");
    steward.sync();
    let ids =
        |p: &Phone| -> Vec<String> { p.client.list().unwrap().into_iter().map(|r| r.id).collect() };
    assert_eq!(ids(&steward), vec![b3_contact.clone()]);

    // Step 3: the admin grants steward1 building 4 from the command line.
    let out = admin_cli(&server.data_dir, &["grant", "steward1", B4], "");
    assert!(out.contains("granted"), "{out}");

    // Step 4: the next sync delivers the three existing cases, with their merged values.
    let report = steward.sync();
    assert!(report.pulled >= 3, "{report:?}");
    let mut got = ids(&steward);
    got.sort();
    let mut want = b4_cases.clone();
    want.push(b3_contact.clone());
    want.sort();
    assert_eq!(got, want);
    let assigned = steward.value(&b4_cases[1]);
    assert_eq!(assigned["status"], "assigned");
    assert_eq!(assigned["departments"][0], "property_company");
    assert_eq!(assigned["notes"][0]["text"], "物业已派人查看");
    // A later sync sends nothing again.
    assert_eq!(steward.sync().pulled, 0);

    // Step 5: a new edit in building 4 arrives as a normal change.
    bus.note(&b4_cases[0], "已清理");
    bus.sync();
    assert_eq!(steward.sync().pulled, 1);
    assert_eq!(steward.value(&b4_cases[0])["notes"][0]["text"], "已清理");

    // Step 6: the grant is revoked: new cases and edits in building 4 stop arriving; building 3
    // still syncs.
    let out = admin_cli(&server.data_dir, &["revoke", "steward1", B4], "");
    assert!(out.contains("revoked"), "{out}");
    let late = bus.create(
        "case",
        B4,
        &[("summary", "4幢电梯困人"), ("source", "hotline")],
    );
    bus.note(&b4_cases[2], "已转办");
    bus.note(&b3_contact, "已回访");
    bus.sync();
    let report = steward.sync();
    assert_eq!(report.pulled, 1, "only the building-3 note: {report:?}");
    assert_eq!(
        ids(&steward),
        vec![b3_contact.clone()],
        "building 4's records left the phone, and the late case never came"
    );
    assert!(!ids(&steward).contains(&late));
    assert!(report.kept_outside_grants.is_empty());
    // Nothing of them remains in the phone's database file or its WAL.
    for needle in ["4幢消防通道堵塞", "4幢漏水", "物业已派人查看"] {
        assert!(
            !steward.store_bytes_contain(needle.as_bytes()),
            "{needle} is still in the phone's files"
        );
    }
    assert!(
        steward.store_bytes_contain("3-201".as_bytes()),
        "the search works"
    );

    // And the steward can no longer read them from the server either.
    let token = login_token(
        &server.url,
        "steward1",
        "7d0c3a4e-0000-4000-8000-0000000000c1",
    );
    let (status, _) = raw_get_json(
        &format!("{}/v1/records/{}", server.url, b4_cases[0]),
        &token,
    );
    assert_eq!(status, 404);
}

#[test]
fn revoking_a_stewards_building_takes_its_cases_off_the_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: steward1 records two cases in 3幢 and syncs; it edits one more while offline.
    let steward = Phone::login(&server, "steward1");
    let synced = steward.create(
        "case",
        B3,
        &[
            ("summary", "3幢楼顶水箱渗漏"),
            ("source", "steward_contact"),
        ],
    );
    let pending = steward.create(
        "case",
        B3,
        &[("summary", "3幢单车乱停"), ("source", "steward_contact")],
    );
    assert_eq!(steward.sync().accepted, 2);
    steward.note(&pending, "住户要求尽快处理");

    // Step 2: the admin revokes 3幢 from steward1.
    let out = admin_cli(&server.data_dir, &["revoke", "steward1", B3], "");
    assert!(out.contains("revoked"), "{out}");

    // Step 3: at the next sync the synced case leaves the phone and its files; the case with an
    // unsent note stays, reported, until the user gives it up.
    let report = steward.sync();
    assert_eq!(report.kept_outside_grants, vec![pending.clone()]);
    let outbox = steward.client.outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        outbox[0].reject_code.map(|c| c.as_str()),
        Some("out_of_scope")
    );
    let ids: Vec<String> = steward
        .client
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![pending.clone()]);
    assert!(!steward.store_bytes_contain("3幢楼顶水箱渗漏".as_bytes()));
    assert!(!ids.contains(&synced));

    // Step 4: the user gives the refused note up; the next sync takes the last case off too.
    steward.client.discard(outbox[0].id).unwrap();
    let report = steward.sync();
    assert!(report.kept_outside_grants.is_empty(), "{report:?}");
    assert!(steward.client.list().unwrap().is_empty());
    assert!(!steward.store_bytes_contain("3幢单车乱停".as_bytes()));
}
