//! For operators: `GET /readyz` (readiness) and `GET /metrics` (Prometheus). `GET /healthz`
//! (liveness) stays in [`crate::places`].
//!
//! `/readyz` is open to all, like `/healthz`: it says only whether the server can serve. `/metrics`
//! carries no personal data but describes the server's traffic, so it is not public by default:
//! it answers requests from loopback that no proxy relayed, and, when `--metrics-token` is set,
//! requests bearing that token.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::config::MetricsToken;
use crate::error::{Error, error_body};
use crate::extract::Peer;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// 200 `{"status":"ready","migrations":N}` when the database answers and every embedded
/// migration is applied; 503 `{"error":"not_ready","message":…,"migrations":[{version,
/// description,problem}]}` when some are not, or 503 `unavailable` when the database does not
/// answer.
async fn readyz(State(state): State<AppState>) -> Response {
    if let Err(e) = state.store.ping().await {
        tracing::error!(error = %e, "readiness: the database does not answer");
        return error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database does not answer",
        );
    }
    match state.store.unapplied_migrations().await {
        Ok(unapplied) if unapplied.is_empty() => Json(json!({
            "status": "ready",
            "database": state.store.backend(),
            "migrations": state.store.embedded_migrations(),
        }))
        .into_response(),
        Ok(unapplied) => {
            let names: Vec<String> = unapplied
                .iter()
                .map(|m| format!("{} {} ({})", m.version, m.description, m.problem))
                .collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "error": "not_ready",
                    "message": format!(
                        "migrations embedded in this server are not applied to its database: {}",
                        names.join(", ")
                    ),
                    "migrations": unapplied,
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "readiness: the migration table does not read");
            error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database's migration table could not be read",
            )
        }
    }
}

async fn metrics(State(state): State<AppState>, Peer(peer): Peer, headers: HeaderMap) -> Response {
    if let Err(e) = may_read_metrics(state.config.metrics_token.as_ref(), peer, &headers) {
        return e.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Headers a reverse proxy adds: a request carrying one came from elsewhere, whatever its TCP
/// peer (a proxy on the same machine connects from loopback).
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether a request may read the metrics: from loopback and not relayed, or with the bearer
/// token when one is set. The refusal says how to get in.
fn may_read_metrics(
    token: Option<&MetricsToken>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), Error> {
    let local = peer.is_some_and(|p| p.ip().to_canonical().is_loopback())
        && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
    if local {
        return Ok(());
    }
    let Some(token) = token else {
        return Err(Error::Forbidden(
            "metrics are served only to requests from this machine's loopback (not relayed by a \
             proxy); start the server with --metrics-token (LINLI_METRICS_TOKEN) to let a \
             scraper elsewhere in with a bearer token"
                .into(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => Ok(()),
        _ => Err(Error::Unauthorized(
            "metrics need the bearer token set with --metrics-token".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use sqlx::Connection;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn metrics_open_to_loopback_and_to_the_token_only() {
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let token = MetricsToken::new("s3cret");
        let none = HeaderMap::new();
        let bearer = headers(&[("authorization", "Bearer s3cret")]);
        let wrong = headers(&[("authorization", "Bearer guess")]);
        let relayed = headers(&[("x-forwarded-for", "192.0.2.7")]);

        assert!(may_read_metrics(None, Some(loopback), &none).is_ok());
        assert!(may_read_metrics(None, Some(mapped), &none).is_ok());
        let e = may_read_metrics(None, Some(remote), &none).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.to_string().contains("--metrics-token"), "{e}");
        // A proxy on the same machine connects from loopback: its requests are not local.
        let e = may_read_metrics(None, Some(loopback), &relayed).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        // A token set but not given (or wrong): 401; no token set, a bearer opens nothing.
        assert!(may_read_metrics(token.as_ref(), Some(remote), &bearer).is_ok());
        let e = may_read_metrics(token.as_ref(), Some(remote), &wrong).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = may_read_metrics(token.as_ref(), None, &none).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert!(may_read_metrics(None, Some(remote), &bearer).is_err());
        assert!(MetricsToken::new("").is_none(), "an empty token sets none");
    }

    async fn get(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let resp = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn readyz_is_503_naming_a_migration_the_database_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path());
        let db = config.database_path();
        let state = crate::open(config).await.unwrap();
        let router = crate::app(state);

        let (status, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ready");
        assert_eq!(body["migrations"], crate::store::embedded_migrations());

        // As if the database were restored from before the last migration.
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let (version, description): (i64, String) = sqlx::query_as(
            "SELECT version, description FROM _sqlx_migrations ORDER BY version DESC LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();

        let (status, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "not_ready");
        assert_eq!(body["migrations"][0]["version"], version);
        assert_eq!(body["migrations"][0]["problem"], "absent");
        assert_eq!(body["migrations"].as_array().unwrap().len(), 1, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(&description), "{message}");
        // Liveness is another question: the database still answers.
        let (status, _) = get(&router, "/healthz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_refuse_a_request_without_a_loopback_peer() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::open(Config::new(dir.path())).await.unwrap();
        // Driven without connect info: no peer, so not loopback.
        let (status, body) = get(&crate::app(state), "/metrics").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden");
    }
}
