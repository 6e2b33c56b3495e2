//! Login, tokens and the health check.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use linli_server::store::prelude::*;
use serde_json::json;

use crate::common::TestApp;

#[tokio::test]
async fn login_returns_a_token_that_opens_the_api() {
    let app = TestApp::demo().await;
    let device = uuid::Uuid::new_v4().to_string();
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "bus1", "password": "linli-demo", "device_id": device})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["device_id"], device);
    assert_eq!(body["user"]["role"], "bus");
    assert_eq!(
        body["user"]["places"],
        json!([{"id": "hz/baiyang/haitian", "name": "海天社区"}])
    );
    assert!(body["expires_at"].as_i64().unwrap() > chrono_now_ms());

    let token = body["access_token"].as_str().unwrap();
    let (status, places) = app.json("GET", "/v1/places", Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = places["places"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"hz/baiyang/haitian/tianyuan/b2"));
    assert!(!ids.iter().any(|p| p.starts_with("hz/baiyang/dabei")));
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = TestApp::demo().await;
    let mut messages = vec![];
    for (user, pw) in [("bus1", "nope"), ("nobody", "linli-demo")] {
        let req = Request::post("/v1/auth/login")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"username": user, "password": pw,
                       "device_id": uuid::Uuid::new_v4().to_string()})
                .to_string(),
            ))
            .unwrap();
        let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "unauthorized");
        messages.push(v["message"].clone());
    }
    assert_eq!(messages[0], messages[1]);
}

#[tokio::test]
async fn a_device_stays_with_its_first_user() {
    let app = TestApp::demo().await;
    let device = uuid::Uuid::new_v4().to_string();
    let login = |user: &str| json!({"username": user, "password": "linli-demo", "device_id": device.clone()});
    let (status, _) = app
        .json("POST", "/v1/auth/login", None, Some(login("bus1")))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .json("POST", "/v1/auth/login", None, Some(login("bus1")))
        .await;
    assert_eq!(status, StatusCode::OK, "the same user logs in again");
    let (status, body) = app
        .json("POST", "/v1/auth/login", None, Some(login("bus2")))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "conflict");
}

#[tokio::test]
async fn bad_requests_and_tokens_are_refused_in_json() {
    let app = TestApp::demo().await;
    let (status, body) = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"username": "bus1", "password": "linli-demo", "device_id": "phone-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("device id"),
        "{body}"
    );

    let (status, body) = app
        .json("POST", "/v1/auth/login", None, Some(json!({"x": 1})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    for token in [None, Some("garbage"), Some("a.b.c")] {
        let (status, body) = app.json("GET", "/v1/records", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["error"], "unauthorized");
    }

    // A disabled user's token stops working at once.
    let phone = app.login("bus2").await;
    let user = app
        .state
        .store
        .user_by_username("bus2")
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .set_user_disabled(&user.id, true)
        .await
        .unwrap();
    let (status, _) = app
        .json("GET", "/v1/places", Some(&phone.token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let app = TestApp::demo().await;
    let (status, body) = app.json("GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = app.json("GET", "/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}
