//! The server's Prometheus metrics, served by `GET /metrics` ([`crate::ops`]).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: small (no protobuf
//! unless asked for), it encodes the Prometheus text format, and it has no global registry —
//! each [`AppState`](crate::state::AppState) owns its [`Metrics`], so servers started side by side
//! in one test process never mix their counts.
//!
//! Labels take only fixed values (outcomes, reject codes, route families): no user, device,
//! place or record ever becomes a label, so the metrics carry no personal data and their number of
//! series stays bounded.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use linli_sync_core::protocol::RejectCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// One label: name and a value from a fixed set.
type Label = [(&'static str, &'static str); 1];

/// Upper bounds of the latency buckets, in seconds: from a cached read to the request timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every reject code, so each refused-changes series exists (at 0) from the start.
const REJECT_CODES: [RejectCode; 11] = [
    RejectCode::MalformedChange,
    RejectCode::MissingDependencies,
    RejectCode::InvalidRecord,
    RejectCode::ReadOnlyField,
    RejectCode::KindMismatch,
    RejectCode::OutOfScope,
    RejectCode::ForeignActor,
    RejectCode::Forbidden,
    RejectCode::ServerError,
    RejectCode::ClockSkew,
    RejectCode::RecordReplaced,
];

/// Outcomes of `POST /v1/sync`, by the reply's status.
const SYNC_OUTCOMES: [&str; 6] = ["ok", "all_refused", "denied", "busy", "invalid", "error"];

/// The route families latency is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteFamily {
    /// `POST /v1/sync`.
    Sync,
    /// `/v1/auth/*`: login and refresh.
    Auth,
    /// The back-office web application: `/`, `/login`, `/logout`, `/office/*`, `/admin/*`,
    /// `/static/*`.
    Office,
    /// Everything else (records and admin JSON APIs, health, metrics, unknown paths).
    Other,
}

impl RouteFamily {
    /// The family of a matched route (`None`: no route matched).
    pub fn of(route: Option<&str>) -> Self {
        let Some(route) = route else {
            return Self::Other;
        };
        let under = |prefix: &str| {
            route == prefix
                || route
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if route == "/v1/sync" {
            Self::Sync
        } else if under("/v1/auth") {
            Self::Auth
        } else if route == "/"
            || route == "/login"
            || route == "/logout"
            || under("/office")
            || under("/admin")
            || under("/static")
        {
            Self::Office
        } else {
            Self::Other
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Auth => "auth",
            Self::Office => "office",
            Self::Other => "other",
        }
    }
}

/// The metrics registry and the handles the server counts with. Handles are cheap clones of
/// shared atomics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sync_requests: Family<Label, Counter>,
    changes_accepted: Counter,
    changes_refused: Family<Label, Counter>,
    http_latency: Family<Label, Histogram, fn() -> Histogram>,
    doc_cache_hits: Counter,
    doc_cache_misses: Counter,
    live_streams: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered and its fixed label values at 0.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "linli_build_info",
            "The running linli-server's version",
            build_info,
        );

        let sync_requests = Family::<Label, Counter>::default();
        for outcome in SYNC_OUTCOMES {
            let _ = sync_requests.get_or_create(&[("outcome", outcome)]);
        }
        registry.register(
            "linli_sync_requests",
            "Sync requests (POST /v1/sync) by outcome: ok; all_refused (422, every pushed change \
             refused); denied (401/403); busy (429/503); invalid (other 4xx); error (5xx)",
            sync_requests.clone(),
        );

        let changes_accepted = Counter::default();
        registry.register(
            "linli_changes_accepted",
            "Changes accepted by the accept path (phones' pushes and back-office edits), \
             including changes the server already held",
            changes_accepted.clone(),
        );
        let changes_refused = Family::<Label, Counter>::default();
        for code in REJECT_CODES {
            let _ = changes_refused.get_or_create(&[("code", code.as_str())]);
        }
        registry.register(
            "linli_changes_refused",
            "Changes refused by the accept path, by reject code",
            changes_refused.clone(),
        );

        let http_latency: Family<Label, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        for family in [
            RouteFamily::Sync,
            RouteFamily::Auth,
            RouteFamily::Office,
            RouteFamily::Other,
        ] {
            let _ = http_latency.get_or_create(&[("route", family.as_str())]);
        }
        registry.register_with_unit(
            "linli_http_request_duration",
            "Time until an HTTP response's head was ready (streamed bodies continue after it), \
             by route family",
            Unit::Seconds,
            http_latency.clone(),
        );

        let doc_cache_hits = Counter::default();
        registry.register(
            "linli_doc_cache_hits",
            "Record documents the accept path found in its in-memory cache",
            doc_cache_hits.clone(),
        );
        let doc_cache_misses = Counter::default();
        registry.register(
            "linli_doc_cache_misses",
            "Record documents the accept path loaded from the database",
            doc_cache_misses.clone(),
        );

        let live_streams = Gauge::default();
        registry.register(
            "linli_office_live_streams",
            "Open back-office live-update streams (GET /office/events)",
            live_streams.clone(),
        );

        Self {
            registry,
            sync_requests,
            changes_accepted,
            changes_refused,
            http_latency,
            doc_cache_hits,
            doc_cache_misses,
            live_streams,
        }
    }

    /// The counters the document cache counts its hits and misses with.
    pub(crate) fn doc_cache_counters(&self) -> (Counter, Counter) {
        (self.doc_cache_hits.clone(), self.doc_cache_misses.clone())
    }

    /// Counts a change the accept path accepted.
    pub fn change_accepted(&self) {
        self.changes_accepted.inc();
    }

    /// Counts a change the accept path refused.
    pub fn change_refused(&self, code: RejectCode) {
        self.changes_refused
            .get_or_create(&[("code", code.as_str())])
            .inc();
    }

    /// Counts an open live-update stream until the returned guard is dropped.
    pub fn live_stream_opened(&self) -> LiveStreamGuard {
        self.live_streams.inc();
        LiveStreamGuard(self.live_streams.clone())
    }

    /// Records one answered request.
    fn observe(&self, family: RouteFamily, status: StatusCode, seconds: f64) {
        self.http_latency
            .get_or_create(&[("route", family.as_str())])
            .observe(seconds);
        if family == RouteFamily::Sync {
            self.sync_requests
                .get_or_create(&[("outcome", sync_outcome(status))])
                .inc();
        }
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Keeps [`Metrics`]' open-streams gauge raised while it lives.
#[derive(Debug)]
pub struct LiveStreamGuard(Gauge);

impl Drop for LiveStreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn sync_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        422 => "all_refused",
        401 | 403 => "denied",
        429 | 503 => "busy",
        400..=499 => "invalid",
        _ => "error",
    }
}

/// Middleware timing every request by its route family (and counting sync requests by
/// outcome). Installed outside the timeout and panic layers, so timed-out and panicked requests
/// are counted too.
pub(crate) async fn track(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let family = RouteFamily::of(req.extensions().get::<MatchedPath>().map(|m| m.as_str()));
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics.observe(family, resp.status(), start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_their_families() {
        assert_eq!(RouteFamily::of(Some("/v1/sync")), RouteFamily::Sync);
        assert_eq!(RouteFamily::of(Some("/v1/auth/login")), RouteFamily::Auth);
        assert_eq!(
            RouteFamily::of(Some("/office/records/{id}")),
            RouteFamily::Office
        );
        assert_eq!(RouteFamily::of(Some("/admin/users")), RouteFamily::Office);
        assert_eq!(RouteFamily::of(Some("/")), RouteFamily::Office);
        assert_eq!(RouteFamily::of(Some("/officex")), RouteFamily::Other);
        assert_eq!(RouteFamily::of(Some("/v1/admin/users")), RouteFamily::Other);
        assert_eq!(RouteFamily::of(None), RouteFamily::Other);
    }

    #[test]
    fn the_text_names_every_metric_with_its_fixed_labels() {
        let m = Metrics::new();
        m.change_accepted();
        m.change_refused(RejectCode::OutOfScope);
        m.observe(RouteFamily::Sync, StatusCode::UNPROCESSABLE_ENTITY, 0.003);
        let guard = m.live_stream_opened();
        let text = m.encode();
        for line in [
            "# TYPE linli_changes_accepted_total counter",
            "linli_changes_accepted_total 1",
            "linli_changes_refused_total{code=\"out_of_scope\"} 1",
            "linli_changes_refused_total{code=\"clock_skew\"} 0",
            "linli_sync_requests_total{outcome=\"all_refused\"} 1",
            "linli_http_request_duration_seconds_bucket{route=\"sync\",le=\"0.005\"} 1",
            "linli_http_request_duration_seconds_count{route=\"office\"} 0",
            "linli_office_live_streams 1",
            "linli_doc_cache_hits_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        drop(guard);
        assert!(
            m.encode()
                .lines()
                .any(|l| l == "linli_office_live_streams 0")
        );
    }
}
