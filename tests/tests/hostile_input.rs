//! Story 4: malformed bodies, unknown kinds and invalid values get a clear 4xx; the server keeps
//! serving and stores nothing from them.

use linli_sync_core::RecordId;
use linli_sync_core::automerge::ROOT;
use linli_sync_core::automerge::transaction::Transactable;
use linli_sync_core::protocol::{
    CONTENT_TYPE, Cursor, PushChange, RejectCode, SyncRequest, SyncResponse,
};
use serde_json::Value;

use crate::common::*;

fn message(body: &[u8]) -> String {
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|_| panic!("JSON error body: {body:?}"));
    v["message"].as_str().unwrap().to_string()
}

#[test]
fn bad_sync_bodies_get_clear_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let token = login_token(&server.url, "bus1", "1c1d9a55-9d3d-4e0b-b1c0-00000000b001");
    let url = format!("{}/v1/sync", server.url);

    // Garbage bytes.
    let (status, body) = raw_post(
        &url,
        Some(&token),
        CONTENT_TYPE,
        b"\x00\xffnot a sync message",
    );
    assert_eq!(status, 400);
    assert!(
        message(&body).contains("not a linli sync message"),
        "{}",
        message(&body)
    );

    // A truncated message.
    let (doc, _, pushed) = hand_made_case("bus1", "噪音扰民");
    let good = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![pushed.clone()],
        max_pull: 0,
    }
    .encode();
    let (status, body) = raw_post(&url, Some(&token), CONTENT_TYPE, &good[..good.len() - 3]);
    assert_eq!(status, 400);
    assert!(
        message(&body).contains("ends too early"),
        "{}",
        message(&body)
    );

    // An unknown record kind (enum index 9 where the kind goes).
    let mut unknown_kind = good.clone();
    unknown_kind[6 + 1 + 1 + 16] = 9; // header, empty cursor, count, record id, then kind
    let (status, body) = raw_post(&url, Some(&token), CONTENT_TYPE, &unknown_kind);
    assert_eq!(status, 400);
    assert!(
        message(&body).contains("unknown record kind"),
        "{}",
        message(&body)
    );

    // Wrong content type; JSON instead of the binary protocol.
    let (status, _) = raw_post(&url, Some(&token), "application/json", b"{\"changes\":[]}");
    assert_eq!(status, 415);

    // A change with an invalid field value, made by hand to bypass the phone's own validation.
    let mut raw = doc.automerge().clone();
    raw.put(ROOT, "status", "exploded").unwrap();
    raw.put(ROOT, "resident_phone", "13800001111").unwrap();
    raw.commit();
    let invalid = raw.get_last_local_change().unwrap();
    let bad_value = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![
            pushed.clone(),
            PushChange {
                change: invalid.raw_bytes().to_vec(),
                ..pushed
            },
        ],
        max_pull: 0,
    };
    let (status, body) = raw_post(&url, Some(&token), CONTENT_TYPE, &bad_value.encode());
    assert_eq!(
        status, 200,
        "the valid creation is accepted, the invalid edit refused"
    );
    let reply = SyncResponse::decode(&body).unwrap();
    assert_eq!(reply.accepted.len(), 1);
    assert_eq!(reply.rejected.len(), 1);
    assert_eq!(reply.rejected[0].code, RejectCode::InvalidRecord);
    let message = &reply.rejected[0].message;
    assert!(
        message.contains("status") || message.contains("resident_phone"),
        "the message names a field at fault: {message}"
    );
    assert!(
        !reply.rejected[0].message.contains("13800001111"),
        "no personal data in messages"
    );

    // Only the invalid edit again: every change refused, so the reply says 422.
    let only_bad = SyncRequest {
        changes: vec![bad_value.changes[1].clone()],
        ..bad_value.clone()
    };
    let (status, body) = raw_post(&url, Some(&token), CONTENT_TYPE, &only_bad.encode());
    assert_eq!(status, 422);
    assert_eq!(
        SyncResponse::decode(&body).unwrap().rejected[0].code,
        RejectCode::InvalidRecord
    );

    // The server still serves, and holds only the valid creation.
    let (status, view) = raw_get_json(&format!("{}/v1/records/{}", server.url, doc.id()), &token);
    assert_eq!(status, 200);
    assert_eq!(view["value"]["status"], "received");
    assert_eq!(view["history"].as_array().unwrap().len(), 1);
    let (status, list) = raw_get_json(&format!("{}/v1/records", server.url), &token);
    assert_eq!(status, 200);
    assert_eq!(list["records"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn bad_queries_and_tokens_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let token = login_token(
        &server.url,
        "office1",
        "1c1d9a55-9d3d-4e0b-b1c0-00000000b002",
    );

    let (status, body) = raw_get_json(&format!("{}/v1/records?kind=spaceship", server.url), &token);
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("spaceship"),
        "{body}"
    );
    let (status, _) = raw_get_json(&format!("{}/v1/records?status=done", server.url), &token);
    assert_eq!(status, 400);
    let (status, _) = raw_get_json(&format!("{}/v1/records/not-a-uuid", server.url), &token);
    assert_eq!(status, 400);
    let (status, _) = raw_get_json(
        &format!("{}/v1/records/{}", server.url, RecordId::new()),
        &token,
    );
    assert_eq!(status, 404);
    let (status, _) = raw_get_json(&format!("{}/v1/records", server.url), "forged.token.value");
    assert_eq!(status, 401);

    let (status, body) = raw_post(
        &format!("{}/v1/auth/login", server.url),
        None,
        "application/json",
        br#"{"username":"office1","password":"wrong","device_id":"1c1d9a55-9d3d-4e0b-b1c0-00000000b003"}"#,
    );
    assert_eq!(status, 401);
    assert!(!message(&body).contains("office1"));

    // A 9 MiB body is refused from its Content-Length, before it is read. The server answers and
    // closes while a client would still be writing, so announce the size and read the answer.
    let status = announce_body(&server.url, &token, 9 * 1024 * 1024);
    assert_eq!(status, 413);

    let (status, _) = raw_get_json(&format!("{}/healthz", server.url), &token);
    assert_eq!(status, 200, "still serving");
}

/// Sends only the headers of a sync request announcing `len` body bytes; returns the status.
fn announce_body(url: &str, token: &str, len: usize) -> u16 {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /v1/sync HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line}"))
}
