//! Story: a phone stays offline past its access token's life and keeps every unsent change; the
//! next sync refreshes the token and sends them. When the refresh is refused too (the password
//! was changed), the changes stay on the phone until the user logs in again.

use std::time::Duration;

use crate::common::*;

#[test]
fn changes_made_past_the_token_life_sync_after_a_refresh_or_a_new_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_ACCESS_TOKEN_TTL", "1")]);
    let phone = Phone::login(&server, "steward1");
    let b3 = "hz/baiyang/haitian/haitiancheng/b3";

    // Step 1: offline, the steward logs two visits; the access token expires meanwhile.
    let first = phone.create(
        "contact",
        b3,
        &[("household", "3-101"), ("channel", "visit")],
    );
    phone.note(&first, "独居老人，需定期回访");
    std::thread::sleep(Duration::from_millis(2100));

    // Step 2: the sync refreshes the token and pushes both changes.
    let report = phone.sync();
    assert_eq!(report.accepted, 2, "{report:?}");
    assert_eq!(phone.client.whoami().unwrap().pending_changes, 0);

    // Step 3: the admin changes the password (which revokes every refresh token of the user);
    // the phone records another visit, and its token expires again.
    admin_cli(
        &server.data_dir,
        &["user", "passwd", "steward1"],
        "a-new-password\n",
    );
    let second = phone.create(
        "contact",
        b3,
        &[("household", "3-102"), ("channel", "phone")],
    );
    std::thread::sleep(Duration::from_millis(2100));

    // Step 4: the sync cannot refresh: Unauthorized, and the change is still waiting.
    let err = phone.client.sync().unwrap_err();
    assert_eq!(err.code(), "unauthorized", "{err}");
    let me = phone.client.whoami().unwrap();
    assert_eq!(me.pending_changes, 1);
    assert!(!me.logged_in);
    assert!(phone.client.get(second.clone()).is_ok());

    // Step 5: after logging in again, the sync sends it.
    phone
        .client
        .login(
            "steward1".into(),
            "a-new-password".into(),
            Some(server.url.clone()),
        )
        .unwrap();
    let report = phone.sync();
    assert_eq!(report.accepted, 1, "{report:?}");
    let office = login_token(
        &server.url,
        "office1",
        "7d0c3a4e-0000-4000-8000-0000000000e1",
    );
    let (status, _) = raw_get_json(&format!("{}/v1/records/{second}", server.url), &office);
    assert_eq!(status, 200);
}
