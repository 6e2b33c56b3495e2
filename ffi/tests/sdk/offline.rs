//! Story: a steward in a basement with no signal captures and edits records; nothing needs the
//! server, and everything is still there after the app is killed and reopened.

use linli_ffi::{ApiError, FieldClient};

use crate::{fv, home, phone, value};

const ESTATE: &str = "hz/baiyang/haitian/haitiancheng";

#[test]
fn capture_edit_list_and_show_without_a_server() {
    let (_dir, phone) = phone();

    // Step 1: a case raised at the bus, with its first fields.
    let case = phone
        .create(
            linli_ffi::RecordKind::Case,
            ESTATE.into(),
            fv(&[
                ("summary", "3幢楼道堆放杂物"),
                ("category", "fire_safety"),
                ("source", "bus_session"),
                ("building", "3幢"),
            ]),
        )
        .unwrap();
    // Step 2: it is handed to two departments, and a note is added.
    phone
        .set(
            case.clone(),
            fv(&[
                ("status", "assigned"),
                ("departments", "fire_brigade,property_company"),
            ]),
        )
        .unwrap();
    phone.note(case.clone(), "已通知物业清理".into()).unwrap();

    // Step 3: a bus session with a leaflet tally.
    let bus = phone
        .create(
            linli_ffi::RecordKind::Bus,
            ESTATE.into(),
            fv(&[("run_number", "1801")]),
        )
        .unwrap();
    phone.tally(bus.clone(), "leaflets".into(), 600).unwrap();
    phone.tally(bus.clone(), "leaflets".into(), 30).unwrap();

    let v = value(&phone, &case);
    assert_eq!(v["status"], "assigned");
    assert_eq!(
        v["departments"],
        serde_json::json!(["fire_brigade", "property_company"])
    );
    assert_eq!(v["notes"][0]["text"], "已通知物业清理");
    assert_eq!(value(&phone, &bus)["leaflets"], 630);

    let list = phone.list().unwrap();
    assert_eq!(list.len(), 2);
    let row = list.iter().find(|r| r.id == case).unwrap();
    assert_eq!(row.kind, Some(linli_ffi::RecordKind::Case));
    assert_eq!(row.place, ESTATE);
    assert_eq!(row.status.as_deref(), Some("assigned"));
    assert_eq!(row.title, "3幢楼道堆放杂物");
    assert_eq!(row.pending_changes, 3);

    let view = phone.get(case.clone()).unwrap();
    assert_eq!(view.kind_label, "诉求");
    assert!(view.conflicts.is_empty());
    assert_eq!(view.history.len(), 3);
    assert!(
        view.history
            .iter()
            .all(|h| h.state == "pending" && h.user == linli_ffi::ME_UNSYNCED)
    );
    assert_eq!(view.history[1].touched, ["departments", "status"]);

    let outbox = phone.outbox().unwrap();
    assert_eq!(outbox.len(), 6);
    assert!(
        outbox.windows(2).all(|w| w[0].id < w[1].id),
        "creation order"
    );
    assert!(
        outbox[0]
            .description
            .as_deref()
            .unwrap()
            .starts_with("create case ")
    );
    assert!(outbox.iter().all(|o| o.state == "pending"));

    let me = phone.whoami().unwrap();
    assert!(!me.logged_in);
    assert_eq!(me.pending_changes, 6);
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let (_dir, phone) = phone();
    // (An unknown kind cannot be asked for: `RecordKind` is a closed enum.)
    let err = phone
        .create(
            linli_ffi::RecordKind::Case,
            "Not A Place".into(),
            fv(&[("summary", "x")]),
        )
        .unwrap_err();
    assert!(
        matches!(err, ApiError::InvalidInput { ref field, .. } if field == "place"),
        "{err}"
    );
    let err = phone
        .create(linli_ffi::RecordKind::Case, ESTATE.into(), vec![])
        .unwrap_err();
    assert!(
        matches!(err, ApiError::InvalidInput { ref field, .. } if field == "summary"),
        "{err}"
    );

    let id = phone
        .create(
            linli_ffi::RecordKind::Case,
            ESTATE.into(),
            fv(&[("summary", "漏水")]),
        )
        .unwrap();
    let err = phone
        .set(id.clone(), fv(&[("resident_phone", "not-a-phone secret")]))
        .unwrap_err();
    assert!(matches!(err, ApiError::InvalidInput { ref field, .. } if field == "resident_phone"));
    assert!(!err.to_string().contains("secret"), "{err}");
    let err = phone.tally(id.clone(), "summary".into(), 1).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    let err = phone
        .set(id.clone(), fv(&[("created_by", "me")]))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    let err = phone.get("not-an-id".into()).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    let err = phone.note(uuid_like(), "x".into()).unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert_eq!(
        phone.outbox().unwrap().len(),
        1,
        "only the creation was recorded"
    );
    assert_eq!(phone.discard(99).unwrap_err().code(), "not_found");
}

fn uuid_like() -> String {
    "7d7e8a3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f".into()
}

#[test]
fn everything_survives_closing_and_reopening() {
    let (dir, phone) = phone();
    let id = phone
        .create(
            linli_ffi::RecordKind::Volunteer,
            ESTATE.into(),
            fv(&[("activity", "义诊"), ("hours", "2.5")]),
        )
        .unwrap();
    phone
        .tally(id.clone(), "residents_served".into(), 42)
        .unwrap();
    let who = phone.whoami().unwrap();
    drop(phone);

    let again = FieldClient::new(home(&dir), None, None, None).unwrap();
    let v = value(&again, &id);
    assert_eq!(v["activity"], "义诊");
    assert_eq!(v["residents_served"], 42);
    assert_eq!(again.outbox().unwrap().len(), 2);
    let who_again = again.whoami().unwrap();
    assert_eq!(who_again.device_id, who.device_id);
    assert_eq!(who_again.actor_id, who.actor_id);
    // The reopened phone edits on as the same actor, without clashing with its earlier changes.
    again
        .tally(id.clone(), "residents_served".into(), 8)
        .unwrap();
    assert_eq!(value(&again, &id)["residents_served"], 50);
    assert!(dir.path().join(linli_ffi::DB_FILE).exists());
}

#[test]
fn sync_and_login_need_a_server_but_fail_cleanly() {
    let (_dir, phone) = phone();
    assert_eq!(phone.sync().unwrap_err().code(), "unauthorized");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = phone
        .login(
            "steward1".into(),
            "pw".into(),
            Some(format!("http://127.0.0.1:{port}")),
        )
        .unwrap_err();
    assert_eq!(err.code(), "offline", "{err}");
    let err = phone
        .login("steward1".into(), "pw".into(), Some("example.org".into()))
        .unwrap_err();
    assert!(matches!(err, ApiError::InvalidInput { ref field, .. } if field == "server_url"));
    phone.logout().unwrap();
    assert!(!phone.whoami().unwrap().logged_in);
}

#[test]
fn the_schema_is_available_for_forms() {
    let kinds = linli_ffi::record_kinds();
    assert_eq!(
        kinds.iter().map(|k| k.code.as_str()).collect::<Vec<_>>(),
        ["case", "bus", "contact", "volunteer"]
    );
    let case = &kinds[0];
    let status = case.fields.iter().find(|f| f.name == "status").unwrap();
    assert_eq!(status.label, "状态");
    assert!(
        status
            .choices
            .iter()
            .any(|c| c.code == "assigned" && c.label == "转办")
    );
    let leaflets = kinds[1]
        .fields
        .iter()
        .find(|f| f.name == "leaflets")
        .unwrap();
    assert_eq!(
        (leaflets.field_type.as_str(), leaflets.editable),
        ("tally", false)
    );
}
