//! # linli-server
//!
//! Linli's sync and back-office server: axum + tokio + sqlx (SQLite, or PostgreSQL for several
//! server processes on one database).
//!
//! - [`config`]: command line and [`Config`].
//! - [`store`]: the database and its migrations (all SQL lives there): SQLite or PostgreSQL
//!   behind the storage seams; [`migrate_store`]: `migrate-store`, moving a district from
//!   SQLite to PostgreSQL.
//! - [`auth`]: login, refresh, signing keys and the [`AuthUser`](auth::AuthUser) extractor.
//! - [`admin`]: users, grants, devices, keys and places: the admin HTTP API and CLI.
//! - [`limit`]: per-user rate limits.
//! - [`sync`]: `POST /v1/sync`, push and pull in one round trip; [`turns`]: one push at a time
//!   per user; [`live`]: `GET /v1/live`, events telling a phone to sync.
//! - [`records`]: the JSON records API over the projection.
//! - [`places`]: `GET /v1/places` and `GET /healthz` (liveness).
//! - [`ops`]: `GET /readyz` (readiness) and `GET /metrics`; [`metrics`]: the Prometheus
//!   registry and the request-timing middleware.
//! - [`rejections`]: `GET /v1/rejections`, refused pushes for the back-office.
//! - [`personal_migration`]: `migrate-personal-data`, moving residents' details out of records
//!   stored before they had a personal part.
//! - [`web`]: the back-office web application (sign-in, queue, detail, statistics, exports,
//!   administration), on the same port.
//! - [`demo`]: the demo district and users; [`demo_records`]: demo records, pushed through the
//!   accept path.
//! - [`error`]: the JSON error type and its status mapping.
//! - [`run`]: listening, graceful shutdown, and in-process servers for tests; [`tls`]: HTTPS
//!   with a certificate reloaded when its files change.
//!
//! ```no_run
//! # async fn demo() -> Result<(), linli_server::error::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let server = linli_server::run::RunningServer::start(
//!     linli_server::Config::new(dir.path()).with_demo(),
//! )
//! .await?;
//! println!("{}", server.url()); // http://127.0.0.1:PORT
//! server.stop().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod demo_records;
pub mod error;
pub mod extract;
pub mod limit;
pub mod live;
pub mod metrics;
pub mod migrate_store;
pub mod model;
pub mod ops;
pub mod personal_migration;
pub mod places;
pub mod records;
pub mod rejections;
pub mod run;
pub mod state;
pub mod store;
pub mod sync;
pub mod tls;
pub mod turns;
pub mod web;

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use config::Config;
pub use error::Error;
pub use run::{open, serve};
pub use state::AppState;

/// Largest body of the JSON endpoints (the sync route allows
/// [`MAX_BODY_BYTES`](linli_sync_core::protocol::MAX_BODY_BYTES)).
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    let metrics = state.metrics.clone();
    let routes = Router::new()
        .merge(places::router())
        .merge(ops::router())
        .merge(auth::router())
        .merge(sync::router())
        .merge(live::router())
        .merge(records::router())
        .merge(rejections::router())
        .merge(admin::router())
        .merge(web::router())
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .with_state(state);
    // Outermost, so requests that time out or panic are timed and counted too.
    with_layers(routes, timeout).layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::track,
    ))
}

/// The cross-cutting layers: request ids, tracing spans, panic containment, a timeout, the
/// refusal of compressed bodies and the default body limit.
pub(crate) fn with_layers(router: Router, timeout: Duration) -> Router {
    router
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_encoded_bodies))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    timeout,
                )),
        )
}

/// A span per request with its method, matched route and request id (never the query string,
/// headers or body: no tokens or personal data in logs).
fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("-", |m| m.as_str());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), route, request_id)
}

/// Request bodies must arrive as they are (`Content-Encoding` absent or `identity`): the body
/// limits count the bytes received, and nothing here inflates a compressed body, so a gzip bomb
/// is refused with 415 before a byte of it is read.
async fn refuse_encoded_bodies(req: Request, next: Next) -> Response {
    let encoded = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        return Error::UnsupportedMediaType(
            "compressed request bodies are not accepted: send the body without Content-Encoding"
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// A panic in a handler becomes a JSON 500 for that request only.
fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic");
    tracing::error!(panic = detail, "handler panicked");
    error::error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_json_500_and_the_router_keeps_serving() {
        let router = with_layers(
            Router::new()
                .route("/boom", get(|| async { panic!("boom") as &str }))
                .route("/ok", get(|| async { "ok" })),
            Duration::from_secs(5),
        );
        let resp = router
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().contains_key("x-request-id"));
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "internal");
        assert!(!json["message"].as_str().unwrap().contains("boom"));

        let resp = router
            .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
