//! Access and refresh tokens: every forgery the issue names is refused with 401, refresh tokens
//! rotate and a reused one revokes its family, and a rotated-out signing key's tokens stop
//! working while the overlap keeps the previous key's tokens alive.

use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use linli_server::store::prelude::*;
use serde_json::{Value, json};

use crate::common::TestApp;

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| A.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut out = vec![];
    for chunk in vals.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, v| (n << 6) | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The server's signing key (kid, secret) from its database, as an attacker who stole nothing
/// would not have it: used to sign tokens that are correct in every way but one.
async fn signing_key(app: &TestApp) -> (String, Vec<u8>) {
    let key = app.state.store.signing_keys().await.unwrap().remove(0);
    let hex = key.secret;
    let secret = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (key.kid, secret)
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn sign(alg: Algorithm, kid: Option<&str>, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.json("GET", "/v1/places", Some(token), None).await.0
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = TestApp::demo().await;
    let phone = app.login("bus1").await;
    let (kid, secret) = signing_key(&app).await;
    // The genuine token's claims: the forgeries change one thing each.
    let payload = phone.token.split('.').nth(1).unwrap();
    let genuine: Value = serde_json::from_slice(&b64url_decode(payload)).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = genuine.clone();
        f(&mut c);
        c
    };

    // Control: a token we sign exactly as the server does is accepted.
    let control = sign(Algorithm::HS256, Some(&kid), &secret, &genuine);
    assert_eq!(status_with(&app, &control).await, StatusCode::OK);

    let claims_b64 = b64url(genuine.to_string().as_bytes());
    let header = |h: Value| b64url(h.to_string().as_bytes());
    let mut forgeries: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{claims_b64}.",
                header(json!({"alg": "none", "typ": "JWT", "kid": kid}))
            ),
        ),
        (
            "alg none, no kid",
            format!(
                "{}.{claims_b64}.",
                header(json!({"alg": "none", "typ": "JWT"}))
            ),
        ),
        ("HS/RS confusion: RS256 header over an HMAC signature", {
            let t = sign(Algorithm::HS256, Some(&kid), &secret, &genuine);
            let sig = t.rsplit('.').next().unwrap();
            format!(
                "{}.{claims_b64}.{sig}",
                header(json!({"alg": "RS256", "typ": "JWT", "kid": kid}))
            )
        }),
        (
            "another HMAC algorithm with the right key",
            sign(Algorithm::HS384, Some(&kid), &secret, &genuine),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::HS256,
                Some("0000000000000000"),
                &secret,
                &genuine,
            ),
        ),
        ("no kid", sign(Algorithm::HS256, None, &secret, &genuine)),
        (
            "another secret",
            sign(Algorithm::HS256, Some(&kid), &[7u8; 32], &genuine),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["exp"] = json!(now() - 5)),
            ),
        ),
        (
            "wrong aud",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["aud"] = json!("other-app")),
            ),
        ),
        (
            "wrong iss",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["iss"] = json!("evil")),
            ),
        ),
        (
            "exp as a string",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["exp"] = json!((now() + 600).to_string())),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "no sub",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
        ),
        (
            "no aud",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "another user's sub",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["sub"] = json!("not-a-user")),
            ),
        ),
        (
            "another device",
            sign(
                Algorithm::HS256,
                Some(&kid),
                &secret,
                &with(&|c| c["dev"] = json!(uuid::Uuid::new_v4().to_string())),
            ),
        ),
    ];
    // Tampering with a genuine token: the payload (role raised to admin) or the signature.
    let parts: Vec<&str> = phone.token.split('.').collect();
    let raised = b64url(with(&|c| c["role"] = json!("admin")).to_string().as_bytes());
    forgeries.push((
        "tampered payload",
        format!("{}.{raised}.{}", parts[0], parts[2]),
    ));
    let mut sig = parts[2].to_string();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    forgeries.push((
        "tampered signature",
        format!("{}.{}.{sig}", parts[0], parts[1]),
    ));
    forgeries.push(("garbage", "not.a.jwt".into()));

    for (what, token) in &forgeries {
        let (status, body) = app.json("GET", "/v1/places", Some(token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"], "unauthorized", "{what}");
    }
    assert_eq!(status_with(&app, &phone.token).await, StatusCode::OK);
}

#[tokio::test]
async fn rotated_out_keys_stop_verifying_after_the_overlap() {
    let app = TestApp::demo().await;
    let before = app.login("bus1").await;
    let admin = app.login("admin").await;
    let (old_kid, _) = signing_key(&app).await;

    // Rotation with an overlap: old tokens keep working, new ones carry the new kid.
    let (status, body) = app
        .json(
            "POST",
            "/v1/admin/keys/rotate",
            Some(&admin.token),
            Some(json!({"overlap_secs": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_kid = body["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    assert_eq!(status_with(&app, &before.token).await, StatusCode::OK);
    let during = app.login("bus1").await;
    let header: Value =
        serde_json::from_slice(&b64url_decode(during.token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["kid"], new_kid.as_str());

    // A second rotation without overlap retires both: their tokens are refused.
    let (status, _) = app
        .json(
            "POST",
            "/v1/admin/keys/rotate",
            Some(&during.token),
            Some(json!({"overlap_secs": 0})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a bus team member cannot rotate keys"
    );
    let (status, _) = app
        .json(
            "POST",
            "/v1/admin/keys/rotate",
            Some(&admin.token),
            Some(json!({"overlap_secs": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        status_with(&app, &before.token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, &during.token).await,
        StatusCode::UNAUTHORIZED
    );
    let after = app.login("bus1").await;
    assert_eq!(status_with(&app, &after.token).await, StatusCode::OK);
    let ring = app.state.store.signing_keys().await.unwrap();
    assert!(
        ring.iter().all(|k| k.kid != old_kid),
        "the rotated-out key is retired in the database"
    );
}

async fn login_refresh(app: &TestApp, user: &str) -> (String, String) {
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": user, "password": "linli-demo",
                        "device_id": uuid::Uuid::new_v4().to_string()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    (
        body["access_token"].as_str().unwrap().into(),
        body["refresh_token"].as_str().unwrap().into(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.json(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let app = TestApp::demo().await;
    let (_, r1) = login_refresh(&app, "steward1").await;
    // Stored only hashed.
    let (_, stored) = app.json("GET", "/healthz", None, None).await;
    assert_eq!(stored["status"], "ok");

    let (status, body) = refresh(&app, &r1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r2 = body["refresh_token"].as_str().unwrap().to_string();
    let access2 = body["access_token"].as_str().unwrap().to_string();
    assert_ne!(r2, r1);
    assert_eq!(body["user"]["username"], "steward1");
    assert_eq!(status_with(&app, &access2).await, StatusCode::OK);

    // r1 again: someone copied it. The family (r2 included) is revoked.
    let (status, body) = refresh(&app, &r1).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let (status, _) = refresh(&app, &r2).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the whole family is revoked"
    );

    // Another login's family is untouched; changing the password revokes it.
    let (_, other) = login_refresh(&app, "steward1").await;
    let (status, body) = refresh(&app, &other).await;
    assert_eq!(status, StatusCode::OK);
    let other2 = body["refresh_token"].as_str().unwrap().to_string();
    let admin = app.login("admin").await;
    let (status, _) = app
        .json(
            "PUT",
            "/v1/admin/users/steward1/password",
            Some(&admin.token),
            Some(json!({"password": "a-new-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(refresh(&app, &other2).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(&app, "lr1_unknown").await.0,
        StatusCode::UNAUTHORIZED
    );

    // A revoked device's access and refresh tokens stop working, and it cannot log in again.
    let device = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "bus2", "password": "linli-demo", "device_id": device})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let access = body["access_token"].as_str().unwrap().to_string();
    let rt = body["refresh_token"].as_str().unwrap().to_string();
    let (status, _) = app
        .json(
            "POST",
            &format!("/v1/admin/devices/{device}/revoke"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Every contact of the revoked device says so, with its own code, so the phone erases
    // itself: the access token, the refresh token, a new login.
    assert_eq!(status_with(&app, &access).await, StatusCode::FORBIDDEN);
    let (status, body) = refresh(&app, &rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("device_revoked"))
    );
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "bus2", "password": "linli-demo", "device_id": device})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "device_revoked");
}
