//! Story: an operator watches a running server. `/readyz` says it is ready; `/metrics` is
//! Prometheus text whose counters follow what phones do — accepted changes rise by what a phone
//! pushed, a refused change counts under its reject code, sync latency lands in histogram buckets,
//! an open back-office live stream shows in a gauge until it is closed. Metrics are open to loopback only, or to a
//! scraper with the configured bearer token.

use std::collections::BTreeMap;

use linli_sync_core::protocol::{CONTENT_TYPE, Cursor, RejectCode, SyncRequest, SyncResponse};
use linli_sync_core::{EditContext, RecordDoc, RecordId, RecordKind};

use crate::common::*;

const TOKEN: &str = "scrape-me-7f3a";

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format strictly enough to catch a malformed exposition: every line
/// is `# HELP`, `# TYPE` or a sample; every sample belongs to the family its last `# TYPE`
/// declared (with `_bucket`/`_sum`/`_count` for histograms); label values are quoted.
fn parse(text: &str) -> Vec<Sample> {
    let mut family: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "HELP without text: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown type: {line}"
            );
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        if line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("value of {line}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label k=v");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value in {line}"));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        let (fname, kind) = family.as_ref().expect("a sample after its TYPE");
        let fits = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{fname}{s}")),
            _ => &name == fname,
        };
        assert!(fits, "{name} is not of the {kind} family {fname}");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` with exactly these labels (panics if absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
        .value
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET /metrics` from loopback: the parsed samples.
fn scrape(url: &str) -> Vec<Sample> {
    let mut r = agent().get(&format!("{url}/metrics")).call().unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&r.body_mut().read_to_string().unwrap())
}

fn accepted(s: &[Sample]) -> f64 {
    value(s, "linli_changes_accepted_total", &[])
}

fn refused(s: &[Sample], code: &str) -> f64 {
    value(s, "linli_changes_refused_total", &[("code", code)])
}

fn sync_count(s: &[Sample]) -> f64 {
    value(
        s,
        "linli_http_request_duration_seconds_count",
        &[("route", "sync")],
    )
}

#[test]
fn an_operator_sees_readiness_and_metrics_that_follow_the_phones() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[("LINLI_METRICS_TOKEN", TOKEN)]);

    // Step 1: the server is ready: its database answers and every migration is applied.
    let mut r = agent()
        .get(&format!("{}/readyz", server.url))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.body_mut().read_json().unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    let before = scrape(&server.url);
    for code in ["out_of_scope", "foreign_actor", "clock_skew"] {
        assert_eq!(refused(&before, code), 0.0, "every code starts at 0");
    }

    // Step 2: a bus-team phone records a case, adds a note and sets a field: three changes.
    let phone = Phone::login(&server, "bus1");
    let id = phone.create("case", HAITIANCHENG, &[("summary", "3幢楼道灯不亮")]);
    phone.note(&id, "已报物业");
    phone.set(&id, &[("summary", "3幢楼道灯不亮（二楼）")]);
    let report = phone.sync();
    assert_eq!(report.accepted, 3);
    assert!(report.rejected.is_empty());

    let after_push = scrape(&server.url);
    assert_eq!(accepted(&after_push) - accepted(&before), 3.0);
    assert!(
        value(
            &after_push,
            "linli_sync_requests_total",
            &[("outcome", "ok")]
        ) > value(&before, "linli_sync_requests_total", &[("outcome", "ok")])
    );
    // The record's first change loaded it (a miss); the next two found it in the cache.
    assert!(value(&after_push, "linli_doc_cache_misses_total", &[]) >= 1.0);
    assert!(value(&after_push, "linli_doc_cache_hits_total", &[]) >= 2.0);
    // Sync latency is bucketed, with cumulative buckets ending at +Inf = count.
    assert!(sync_count(&after_push) > sync_count(&before));
    let buckets: Vec<&Sample> = after_push
        .iter()
        .filter(|s| {
            s.name == "linli_http_request_duration_seconds_bucket"
                && s.labels.get("route").map(String::as_str) == Some("sync")
        })
        .collect();
    assert!(buckets.len() > 5, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "cumulative: {buckets:?}"
    );
    let inf = buckets
        .iter()
        .find(|s| s.labels["le"] == "+Inf")
        .expect("a +Inf bucket");
    assert_eq!(inf.value, sync_count(&after_push));

    // Step 3: a hand-made case at 文汇苑, outside bus1's 海天社区, is refused as out of scope.
    let ctx = EditContext {
        actor: linli_sync_core::automerge::ActorId::random(),
        user: "bus1".into(),
        now_ms: 1_763_000_000_000,
    };
    let (doc, change) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &"hz/baiyang/dabei/wenhuiyuan".parse().unwrap(),
        &ctx,
        &[("summary".into(), "越界的记录".into())],
    )
    .unwrap();
    let token = login_token(&server.url, "bus1", "5a1e0000-0000-4000-8000-0000000000c1");
    let push = SyncRequest {
        cursor: Cursor::start(),
        changes: vec![linli_sync_core::protocol::PushChange {
            record: *doc.id().as_bytes(),
            kind: RecordKind::Case,
            part: linli_sync_core::protocol::Part::Record,
            change: change.raw_bytes().to_vec(),
        }],
        max_pull: 0,
    };
    let (status, body) = raw_post(
        &format!("{}/v1/sync", server.url),
        Some(&token),
        CONTENT_TYPE,
        &push.encode(),
    );
    assert_eq!(status, 422);
    let reply = SyncResponse::decode(&body).unwrap();
    assert_eq!(reply.rejected[0].code, RejectCode::OutOfScope);

    let after_refusal = scrape(&server.url);
    assert_eq!(
        refused(&after_refusal, "out_of_scope") - refused(&after_push, "out_of_scope"),
        1.0
    );
    assert_eq!(accepted(&after_refusal), accepted(&after_push));
    assert_eq!(
        value(
            &after_refusal,
            "linli_sync_requests_total",
            &[("outcome", "all_refused")]
        ) - value(
            &after_push,
            "linli_sync_requests_total",
            &[("outcome", "all_refused")]
        ),
        1.0
    );

    // Step 4: an office worker's open live page counts as a live stream while it is open.
    let web = web::sign_in(&server.url, "office1").unwrap_or_else(|a| panic!("{}", a.body));
    let stream = agent()
        .get(&format!("{}/office/events", server.url))
        .header("Cookie", &web.cookie)
        .call()
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(
        value(&scrape(&server.url), "linli_office_live_streams", &[]),
        1.0
    );
    // Closing the page closes the stream: the server notices the connection end (at the latest
    // at the stream's next keep-alive write) and the gauge falls back.
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while value(&scrape(&server.url), "linli_office_live_streams", &[]) != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed live stream still counts as open"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Step 5: from elsewhere (here: relayed by a proxy) metrics need the bearer token.
    let relayed = |auth: Option<&str>| {
        let mut req = agent()
            .get(&format!("{}/metrics", server.url))
            .header("X-Forwarded-For", "198.51.100.20");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut r = req.call().unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap())
    };
    let (status, body) = relayed(None);
    assert_eq!(status, 401, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "unauthorized");
    assert!(
        err["message"].as_str().unwrap().contains("--metrics-token"),
        "{err}"
    );
    assert_eq!(relayed(Some("Bearer wrong-token")).0, 401);
    let (status, body) = relayed(Some(&format!("Bearer {TOKEN}")));
    assert_eq!(status, 200);
    assert!(accepted(&parse(&body)) >= 3.0);
}
