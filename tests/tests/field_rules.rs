//! Story: field rules per role, and rejections that are never silent. Signed in, the steward's
//! phone refuses at once to mark a case evaluated (the server's own rule, run on the phone).
//! Signed out, the phone cannot know whose role applies, so the steward's edits are kept and the
//! server refuses both (a steward may neither evaluate nor assign); the phone keeps the refused
//! changes with the reason until the steward discards them, and the back-office sees the
//! refusals. The office then makes the same edits, accepted.

use crate::common::*;

const B3: &str = "hz/baiyang/haitian/haitiancheng/b3";

#[test]
fn a_steward_cannot_evaluate_or_assign_and_the_refusal_is_kept_shown_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let steward = Phone::login(&server, "steward1");
    let office = Phone::login(&server, "office1");

    // Step 1: the steward raises two cases from visits; accepted.
    let case = steward.create(
        "case",
        B3,
        &[
            ("summary", "3幢302漏水"),
            ("source", "steward_contact"),
            ("category", "facilities"),
        ],
    );
    let other = steward.create(
        "case",
        B3,
        &[
            ("summary", "3幢楼道灯坏"),
            ("source", "steward_contact"),
            ("category", "facilities"),
        ],
    );
    assert_eq!(steward.sync().accepted, 2);

    // Step 2: signed in, the phone refuses at once, with the reason, and keeps nothing.
    let err = steward
        .client
        .set(
            case.clone(),
            vec![
                linli_ffi::FieldValue::new("status", "evaluated"),
                linli_ffi::FieldValue::new("satisfaction", "satisfied"),
            ],
        )
        .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert!(err.to_string().contains("evaluated"), "{err}");
    assert!(steward.client.outbox().unwrap().is_empty());

    // Step 3: signed out (a phone shared between shifts), the steward marks the first evaluated
    // and assigns the second a department; after signing in again, the server refuses both.
    steward.client.logout().unwrap();
    steward.set(
        &case,
        &[("status", "evaluated"), ("satisfaction", "satisfied")],
    );
    steward.set(&other, &[("departments", "property_company")]);
    steward
        .client
        .login(
            "steward1".into(),
            DEMO_PASSWORD.into(),
            Some(server.url.clone()),
        )
        .unwrap();
    let report = steward.sync();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.rejected.len(), 2, "{report:?}");
    assert!(
        report
            .rejected
            .iter()
            .all(|r| r.code == "forbidden" && !r.retryable)
    );
    assert!(
        report.rejected[0].message.contains("evaluated"),
        "{:?}",
        report.rejected
    );
    assert!(
        report.rejected[1].message.contains("departments"),
        "{:?}",
        report.rejected
    );

    // Step 4: the phone keeps both, with the reason, and does not send them again.
    let outbox = steward.client.outbox().unwrap();
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|o| o.state == "rejected"));
    assert_eq!(outbox[0].reject_code.map(|c| c.as_str()), Some("forbidden"));
    assert_eq!(
        steward.sync().rejected.len(),
        0,
        "refused changes are not resent"
    );

    // Step 5: the back-office lists them with user, device and reason.
    let token = login_token(
        &server.url,
        "office1",
        "7d0c3a4e-0000-4000-8000-0000000000d1",
    );
    let (status, list) = raw_get_json(&format!("{}/v1/rejections", server.url), &token);
    assert_eq!(status, 200);
    let rows = list["rejections"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    let steward_device = steward.client.whoami().unwrap().device_id;
    assert!(rows.iter().all(|r| r["user"] == "steward1"
        && r["device"] == steward_device.as_str()
        && r["code"] == "forbidden"
        && r["place"] == B3));

    // Step 6: the steward discards both refusals; the records are as the server has them.
    assert_eq!(steward.client.discard(outbox[0].id).unwrap(), 1);
    assert_eq!(steward.client.discard(outbox[1].id).unwrap(), 1);
    assert!(steward.client.outbox().unwrap().is_empty());
    assert_eq!(steward.value(&case)["status"], "received");
    assert!(
        steward.value(&other)["departments"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Step 7: the office makes the same edits: accepted, and they reach the steward.
    office.sync();
    office.set(
        &case,
        &[
            ("departments", "property_company"),
            ("deadline", "2024-06-30"),
        ],
    );
    office.set(
        &case,
        &[("status", "evaluated"), ("satisfaction", "satisfied")],
    );
    assert_eq!(office.sync().accepted, 2);
    steward.sync();
    assert_eq!(steward.value(&case)["status"], "evaluated");
    assert_eq!(steward.value(&case)["departments"][0], "property_company");
}
