//! Found by the chaos harness on PostgreSQL: while the database was down, every request waited
//! out the connection pool's 10 s and was answered 500 "internal server error", which tells an
//! app (and an operator's alerting) that the server is broken rather than that it should come
//! back shortly. Now a database that cannot be reached is answered 503 with `Retry-After`, the
//! phone keeps its edits in its outbox, and once the database is back the same phone syncs them
//! without anyone restarting the server. Always on PostgreSQL (a private cluster, so crashing it
//! disturbs no other story).

use std::time::Instant;

use linli_tests::chaos::pg::PgCluster;

use crate::common::*;

fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().expect("the server answers");
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.body_mut().read_json().unwrap_or(serde_json::Value::Null);
    (r.status().as_u16(), retry, body)
}

#[test]
fn a_crashed_database_is_answered_503_with_retry_after_and_phones_sync_once_it_is_back() {
    let cluster = PgCluster::start().expect("a private PostgreSQL cluster");
    let dir = tempfile::tempdir().unwrap();
    use_database(dir.path(), &cluster.url());
    let server = ServerProcess::start(dir.path());
    let phone = Phone::login(&server, "bus1");
    let token = login_token(
        &server.url,
        "office1",
        "0d0d0d0d-0000-4000-8000-000000000001",
    );
    let first = phone.create("case", HAITIANCHENG, &[("summary", "3幢楼道灯不亮")]);
    assert_eq!(phone.sync().accepted, 1);

    cluster.crash().expect("the database stops");
    let (status, _, body) = get(&format!("{}/readyz", server.url), None);
    assert_eq!(status, 503, "{body}");
    let asked = Instant::now();
    let (status, retry_after, body) =
        get(&format!("{}/v1/records/{first}", server.url), Some(&token));
    eprintln!(
        "a read while the database is down: {status} after {:?}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert!(
        !body.to_string().contains("pool") && !body.to_string().contains("127.0.0.1"),
        "no internals in the reply: {body}"
    );

    // The phone records offline-first; its sync fails with the server's 503, the edit waits.
    let second = phone.create("case", HAITIANCHENG, &[("summary", "5幢电梯异响")]);
    match phone.client.sync() {
        Err(linli_ffi::ApiError::Server { status, reason }) => {
            assert_eq!(status, 503, "{reason}");
            assert!(reason.contains("try again"), "{reason}");
        }
        other => panic!("a sync while the database is down: {other:?}"),
    }
    let waiting = phone.client.outbox().expect("outbox");
    assert_eq!(waiting.len(), 1, "the new case waits in the outbox");

    // The database comes back (recovering from its WAL); the same server process serves again.
    cluster.start_server().expect("the database starts again");
    assert_eq!(cluster.amcheck(), "ok");
    let report = phone.sync();
    assert_eq!(report.accepted, 1, "{report:?}");
    assert!(phone.client.outbox().expect("outbox").is_empty());
    let (status, _, body) = get(&format!("{}/v1/records/{second}", server.url), Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"]["summary"], "5幢电梯异响");
    let (status, _, _) = get(&format!("{}/readyz", server.url), None);
    assert_eq!(status, 200);
}
