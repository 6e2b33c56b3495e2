//! Story: steward2 loses a phone. An admin revokes the device; at its next contact with the
//! server the phone tells the app, erases every record, unsent change and token it held, and
//! reports how many of the user's changes never reached the server.

use std::sync::{Arc, Mutex};

use linli_ffi::{ApiError, SyncListener, SyncProgress};

use crate::common::*;

const B1: &str = "hz/baiyang/dabei/wenhuiyuan/b1";

#[derive(Default)]
struct Heard(Mutex<Vec<u32>>);

impl SyncListener for Heard {
    fn on_progress(&self, _progress: SyncProgress) {}
    fn on_new_data(&self, _record_ids: Vec<String>) {}
    fn on_device_revoked(&self, unsent_changes: u32) {
        self.0.lock().unwrap().push(unsent_changes);
    }
}

#[test]
fn a_revoked_device_erases_itself_at_its_next_contact() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());

    // Step 1: steward2 records a visit and syncs it; then a second one, unsent.
    let phone = Phone::login(&server, "steward2");
    let heard = Arc::new(Heard::default());
    phone.client.set_sync_listener(Some(heard.clone()));
    phone.create(
        "contact",
        B1,
        &[("household", "1-101 李阿姨家"), ("channel", "visit")],
    );
    assert_eq!(phone.sync().accepted, 1);
    phone.create(
        "case",
        B1,
        &[
            ("summary", "1幢楼道灯不亮已三天"),
            ("source", "steward_contact"),
        ],
    );
    let device = phone.client.whoami().unwrap().device_id;
    assert!(phone.store_bytes_contain("1-101 李阿姨家".as_bytes()));
    assert!(phone.store_bytes_contain("1幢楼道灯不亮已三天".as_bytes()));

    // Step 2: the admin revokes the device from the command line.
    let out = admin_cli(&server.data_dir, &["device", "revoke", &device], "");
    assert!(out.contains("revoked"), "{out}");

    // Step 3: the next sync hears it, tells the app first, erases, and reports.
    let err = phone.client.sync().unwrap_err();
    assert!(
        matches!(err, ApiError::DeviceRevoked { unsent_changes: 1 }),
        "{err}"
    );
    assert_eq!(*heard.0.lock().unwrap(), vec![1], "the app was told first");
    assert!(phone.client.list().unwrap().is_empty());
    assert!(phone.client.outbox().unwrap().is_empty());
    let me = phone.client.whoami().unwrap();
    assert!(!me.logged_in && me.user.is_none(), "{me:?}");
    for gone in ["1-101 李阿姨家", "1幢楼道灯不亮已三天", "eyJ", "lr1_"] {
        assert!(
            !phone.store_bytes_contain(gone.as_bytes()),
            "{gone} is still in the phone's files"
        );
    }

    // The same login cannot come back on this device.
    let again = phone
        .client
        .login(
            "steward2".into(),
            DEMO_PASSWORD.into(),
            Some(server.url.clone()),
        )
        .unwrap_err();
    assert!(matches!(again, ApiError::DeviceRevoked { .. }), "{again}");
}
