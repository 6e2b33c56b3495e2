//! Residents' phone numbers: masked for stewards and bus teams, never in error messages, never in
//! the server's logs (captured here at debug level while a phone pushes valid and invalid
//! values).

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use linli_sync_core::RecordKind;
use linli_sync_core::automerge::ROOT;
use linli_sync_core::automerge::transaction::Transactable;

use crate::common::{TestApp, push, push_personal};

const PHONE: &str = "13987654321";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn phone_numbers_never_reach_logs_or_error_messages() {
    let captured = Captured::default();
    let writer = captured.clone();
    let installed = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .is_ok();

    let app = TestApp::demo().await;
    let mut bus = app.login("bus1").await;
    let (doc, _personal, c, pc) = bus.create_full(
        RecordKind::Case,
        "hz/baiyang/haitian/haitiancheng/b3",
        &[
            ("summary", "楼道漏水"),
            ("source", "bus_session"),
            ("resident_name", "王阿姨"),
            ("resident_phone", PHONE),
        ],
    );
    // An invalid value that contains the number, made by hand past the phone's own checks.
    let mut raw = doc.automerge().clone();
    raw.put(ROOT, "resident_phone", format!("{PHONE} 晚上打"))
        .unwrap();
    raw.commit();
    let bad = raw.get_last_local_change().unwrap();
    let (status, reply) = app
        .sync(
            &mut bus,
            vec![
                push(&doc, RecordKind::Case, &c),
                push_personal(&doc, RecordKind::Case, &pc.unwrap()),
                push(&doc, RecordKind::Case, &bad),
            ],
            0,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply.accepted.len(), 2);
    let message = &reply.rejected[0].message;
    assert!(message.contains("resident_phone"), "{message}");
    assert!(message.contains("masked"), "{message}");
    assert!(
        !message.contains(PHONE),
        "the refusal does not echo the number"
    );

    // Masked for field roles, in lists and in the detail; shown to the office.
    let steward = app.login("steward1").await;
    let uri = format!("/v1/records/{}", doc.id());
    let (_, detail) = app.json("GET", &uri, Some(&steward.token), None).await;
    assert_eq!(detail["value"]["resident_phone"], "139****4321");
    assert_eq!(detail["value"]["resident_name"], "王**");
    assert!(!detail.to_string().contains(PHONE));
    assert!(!detail.to_string().contains("王阿姨"));
    let (_, list) = app.json("GET", "/v1/records", Some(&bus.token), None).await;
    assert!(!list.to_string().contains(PHONE));
    let office = app.login("office1").await;
    let (_, detail) = app.json("GET", &uri, Some(&office.token), None).await;
    assert_eq!(detail["value"]["resident_phone"], PHONE);
    assert_eq!(detail["value"]["resident_name"], "王阿姨");
    assert!(
        detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["part"] == "personal" && h["user"] == "bus1"),
        "the office sees who captured the resident's details: {detail}"
    );
    let (_, rejections) = app
        .json("GET", "/v1/rejections", Some(&office.token), None)
        .await;
    assert!(!rejections.to_string().contains(PHONE));

    if installed {
        let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
        assert!(logs.contains("changes rejected"), "logs were captured");
        assert!(
            !logs.contains(PHONE),
            "a resident's phone number reached the logs"
        );
        assert!(!logs.contains(&bus.token), "a token reached the logs");
    }
}
