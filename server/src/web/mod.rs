//! The back-office web application (后台): pages rendered on the server with askama templates
//! (checked at compile time), a few lines of plain JavaScript for live updates and partial
//! refreshes, and ECharts for charts, all embedded in the binary and served on the API's port.
//!
//! - [`session`]: sign-in for `office` and `admin`, the session cookie, CSRF, idle expiry.
//! - [`queue`]: the record queue with its filters, search, keyset pages and exports.
//! - [`detail`]: one record, its conflicts and history, and the office's actions on it.
//! - [`stats`]: figures computed from records at request time, with charts and tables.
//! - [`admin_pages`]: users, grants, devices, places, keys and rejected pushes.
//! - [`live`]: server-sent events telling open pages that a record changed.
//! - [`export`]: CSV and `.xlsx` of any filtered list, streamed.
//!
//! Everything a phone sent is untrusted and reaches pages only through askama's HTML escaping
//! (templates never use `|safe` on record data), exports as plain cells, and charts as text.

pub mod admin_pages;
pub mod assets;
pub mod detail;
pub mod export;
pub mod live;
pub mod queue;
pub mod session;
pub mod stats;
mod view;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::error::Error;
use crate::state::AppState;

pub use session::WebUser;

/// The routes of the web application.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/office", get(home))
        .route("/office/records", get(queue::page))
        .route("/office/records/export.csv", get(queue::export_csv))
        .route("/office/records/export.xlsx", get(queue::export_xlsx))
        .route("/office/records/{id}", get(detail::page))
        .route("/office/records/{id}/note", post(detail::add_note))
        .route("/office/records/{id}/assign", post(detail::assign))
        .route("/office/records/{id}/status", post(detail::set_status))
        .route("/office/records/{id}/resolution", post(detail::resolution))
        .route(
            "/office/records/{id}/resolve",
            post(detail::resolve_conflict),
        )
        .route("/office/events", get(live::events))
        .route("/office/stats", get(stats::page))
        .merge(admin_pages::router())
        .route("/static/{*file}", get(assets::serve))
        .layer(axum::middleware::map_response(page_headers))
}

/// Headers of every page: no script but the server's own files (so text from phones can never
/// run, even if a template slipped), no framing, and no caching of pages that may show residents'
/// details.
async fn page_headers(mut resp: Response) -> Response {
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    resp
}

async fn home(user: Option<WebUser>) -> Redirect {
    match user {
        Some(_) => Redirect::to("/office/records"),
        None => Redirect::to("/login"),
    }
}

/// What a page handler fails with: a page explaining it (status and a Chinese message), or a
/// redirect to sign-in.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in (or the session ended): go to the sign-in page, then come back.
    SignIn {
        /// Where to return after signing in.
        next: String,
    },
    /// An error page.
    Page {
        /// HTTP status.
        status: StatusCode,
        /// What went wrong, for the person reading it.
        message: String,
    },
}

impl WebError {
    /// An error page with this status and message.
    pub fn page(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            message: message.into(),
        }
    }

    /// 404 with the message every record outside the caller's grants gets too.
    pub fn not_found() -> Self {
        Self::page(StatusCode::NOT_FOUND, "找不到该记录，或您无权查看。")
    }
}

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        let status = e.status();
        let message = match status {
            StatusCode::NOT_FOUND => "找不到该页面或记录，或您无权查看。".to_string(),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                format!("服务器繁忙，请稍后再试。（{e}）")
            }
            s if s.is_server_error() => {
                tracing::error!(error = %e, "web page failed");
                "服务器内部错误，请稍后再试；问题已记录。".to_string()
            }
            _ => e.to_string(),
        };
        Self::Page { status, message }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        Error::from(e).into()
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        Error::Internal(format!("template: {e}")).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::SignIn { next } => {
                let to = format!("/login?next={}", view::url_encode(&next));
                Redirect::to(&to).into_response()
            }
            WebError::Page { status, message } => {
                let title = match status {
                    StatusCode::NOT_FOUND => "未找到",
                    StatusCode::FORBIDDEN => "无权操作",
                    StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "无法办理",
                    StatusCode::CONFLICT => "有冲突",
                    _ if status.is_server_error() => "服务器错误",
                    _ => "出错了",
                };
                let page = ErrorPage {
                    status: status.as_u16(),
                    title,
                    message: &message,
                };
                match page.render() {
                    Ok(html) => (status, Html(html)).into_response(),
                    Err(_) => (status, message).into_response(),
                }
            }
        }
    }
}

/// A page handler's result.
pub type WebResult<T = Response> = std::result::Result<T, WebError>;

/// Renders a template into an HTML response.
pub(crate) fn render(t: &impl Template) -> WebResult {
    Ok(Html(t.render()?).into_response())
}
