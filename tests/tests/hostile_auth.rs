//! What a hostile caller can do to logins and sessions, tried from outside against the real
//! server over HTTP ("What a hostile steward can do today", classes 5, 8 and 10).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// A JSON POST with an `X-Forwarded-For` address (the server trusts it with
/// `LINLI_TRUST_FORWARDED_FOR`): status, `Retry-After`, body.
fn post(url: &str, from: &str, body: &Value) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("x-forwarded-for", from)
        .send_json(body)
        .expect("the request is answered");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.body_mut().read_json().unwrap_or(Value::Null);
    (status, retry, body)
}

fn login_body(user: &str, password: &str, device: &str) -> Value {
    json!({ "username": user, "password": password, "device_id": device })
}

fn device() -> String {
    linli_sync_core::DeviceId::new().to_string()
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Class 5: a hundred concurrent logins with random names neither take the server's memory nor
/// lock out a real user; the excess is refused before any hashing, with `Retry-After`.
#[test]
fn class5_a_login_flood_is_refused_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::start_with_env(dir.path(), &[("LINLI_TRUST_FORWARDED_FOR", "true")]);
    let pid = server.pid().unwrap();
    let url = format!("{}/v1/auth/login", server.url);
    // Warm up: one real login, so the baseline includes what one hash leaves behind.
    let (status, _, _) = post(
        &url,
        "10.0.0.7",
        &login_body("bus1", DEMO_PASSWORD, &device()),
    );
    assert_eq!(status, 200);
    let before = vm_kib(pid, "VmRSS:");

    let flood: Vec<_> = (0..100)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let name = format!("nobody-{i}-{}", device());
                post(&url, "10.0.0.66", &login_body(&name, "guess", &device()))
            })
        })
        .collect();
    // A real user from another address logs in during the flood, honouring Retry-After.
    let started = Instant::now();
    let real = loop {
        let (status, retry, body) = post(
            &url,
            "10.0.0.7",
            &login_body("bus2", DEMO_PASSWORD, &device()),
        );
        if status == 503 {
            let wait = retry.and_then(|r| r.parse().ok()).unwrap_or(1);
            std::thread::sleep(Duration::from_secs(wait));
            continue;
        }
        break (status, body);
    };
    let took = started.elapsed();
    let answers: Vec<(u16, Option<String>, Value)> =
        flood.into_iter().map(|t| t.join().unwrap()).collect();
    let peak = vm_kib(pid, "VmHWM:");

    assert_eq!(real.0, 200, "{}", real.1);
    // Its latency is a benchmark figure (`linli-flood --logins`), not a test assertion.
    eprintln!("class 5: the real login took {took:?} during the flood");
    assert!(answers.iter().all(|(s, _, _)| [401, 429, 503].contains(s)));
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _, _)| *s == 429 || *s == 503)
        .collect();
    assert!(refused.len() >= 30, "only {} refused", refused.len());
    assert!(
        refused.iter().all(|(_, retry, body)| retry.is_some()
            && (body["error"] == "too_many_requests" || body["error"] == "unavailable")),
        "{refused:?}"
    );
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 100,
        "the flood took the server up by {grew_mib} MiB"
    );
}

/// Class 8: a password reset and a disable end every session at once, and enabling the user
/// again does not revive them.
#[test]
fn class8_sessions_end_at_a_password_reset_and_a_disable() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let login = |user: &str, password: &str| {
        let (status, _, body) = post(
            &format!("{}/v1/auth/login", server.url),
            "10.0.0.8",
            &login_body(user, password, &device()),
        );
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_string(),
            body["refresh_token"].as_str().unwrap().to_string(),
        )
    };
    let places = |token: &str| raw_get_json(&format!("{}/v1/places", server.url), token).0;
    let refresh = |rt: &str| {
        post(
            &format!("{}/v1/auth/refresh", server.url),
            "10.0.0.8",
            &json!({ "refresh_token": rt }),
        )
        .0
    };

    let (access, rt) = login("steward1", DEMO_PASSWORD);
    assert_eq!(places(&access), 200);
    admin_cli(
        &server.data_dir,
        &["user", "passwd", "steward1"],
        "a-brand-new-password\n",
    );
    assert_eq!(
        places(&access),
        401,
        "the old access token ends at the reset"
    );
    assert_eq!(refresh(&rt), 401, "and so does the refresh token");
    let (access, _) = login("steward1", "a-brand-new-password");
    assert_eq!(places(&access), 200);

    admin_cli(&server.data_dir, &["user", "disable", "steward1"], "");
    assert_eq!(places(&access), 401);
    admin_cli(&server.data_dir, &["user", "enable", "steward1"], "");
    assert_eq!(
        places(&access),
        401,
        "enabling again does not revive old sessions"
    );
    let (fresh, _) = login("steward1", "a-brand-new-password");
    assert_eq!(places(&fresh), 200);
}

/// Class 10: a phone whose refresh reply was lost retries with the spent token and gets the same
/// next token; reuse is still caught everywhere else.
#[test]
fn class10_a_lost_refresh_reply_can_be_retried_but_reuse_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let url = |p: &str| format!("{}{p}", server.url);
    let phone = device();
    let (_, _, body) = post(
        &url("/v1/auth/login"),
        "10.0.0.9",
        &login_body("bus1", DEMO_PASSWORD, &phone),
    );
    let first = body["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: &str, dev: &str| {
        post(
            &url("/v1/auth/refresh"),
            "10.0.0.9",
            &json!({ "refresh_token": rt, "device_id": dev }),
        )
    };

    // The reply to this refresh is "lost": the phone retries with the same token.
    let (status, _, lost) = refresh(&first, &phone);
    assert_eq!(status, 200);
    let (status, _, retried) = refresh(&first, &phone);
    assert_eq!(status, 200, "{retried}");
    assert_eq!(
        retried["refresh_token"], lost["refresh_token"],
        "the same next token"
    );
    let second = retried["refresh_token"].as_str().unwrap().to_string();
    let access = retried["access_token"].as_str().unwrap();
    assert_eq!(raw_get_json(&url("/v1/places"), access).0, 200);

    // From another device, the spent token is a copy: the family goes.
    let (status, _, _) = refresh(&second, &phone);
    assert_eq!(status, 200);
    let (status, _, body) = refresh(&second, &device());
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already used"));

    // After the successor was used, even the same device's retry is reuse.
    let phone2 = device();
    let (_, _, body) = post(
        &url("/v1/auth/login"),
        "10.0.0.9",
        &login_body("bus2", DEMO_PASSWORD, &phone2),
    );
    let t1 = body["refresh_token"].as_str().unwrap().to_string();
    let (_, _, r1) = refresh(&t1, &phone2);
    let t2 = r1["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&t2, &phone2).0, 200);
    let (status, _, _) = refresh(&t1, &phone2);
    assert_eq!(status, 401, "the successor was already used");
    assert_eq!(
        refresh(&t2, &phone2).0,
        401,
        "and the whole family is revoked"
    );
}
