//! The HTTP error type: every handler returns [`Result<T>`], and every failure becomes a JSON body
//! `{"error": code, "message": text}` with its status decided here, in one place.
//!
//! Database and internal failures are logged (inside the request's span, so with its request id)
//! and answered with a generic 500: SQL text, file paths and personal data never reach a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A handler result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is malformed; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials. The message is deliberately generic.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `device_revoked`: an admin revoked the calling device. Phones erase their store when
    /// they hear it.
    #[error("this device was revoked by an admin: its data is erased; ask an admin")]
    DeviceRevoked,
    /// 404: nothing there (or nothing the caller may see).
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body has the wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but semantically refused.
    #[error("{0}")]
    Unprocessable(String),
    /// 429: the caller sent too many requests; `Retry-After` says when to come back.
    #[error("too many requests: try again in {retry_after_secs} s")]
    TooManyRequests {
        /// Whole seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// 503: the server is too busy for this now; `Retry-After` says when to come back.
    #[error("{message}")]
    Unavailable {
        /// Whole seconds until trying again makes sense.
        retry_after_secs: u64,
        /// What is busy.
        message: String,
    },
    /// 500: a database failure (logged, never echoed).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// 500: a migration failure at start-up.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// 500: any other internal failure (logged, never echoed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for an internal error from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::DeviceRevoked => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(e) if is_unique_violation(e) => StatusCode::CONFLICT,
            Self::Database(e) if database_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Migrate(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        if matches!(self, Self::DeviceRevoked) {
            return "device_revoked";
        }
        match self.status() {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }

    /// The message sent to the client: the error's own text for 4xx, a generic line for 5xx.
    fn public_message(&self) -> String {
        match self {
            Self::Database(e) if is_unique_violation(e) => "this already exists".to_string(),
            Self::Database(e) if database_unavailable(e) => DATABASE_UNAVAILABLE.to_string(),
            Self::Database(_) | Self::Migrate(_) | Self::Internal(_) => {
                "internal server error".to_string()
            }
            other => other.to_string(),
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// What a client hears while the database cannot be reached.
pub const DATABASE_UNAVAILABLE: &str = "the database is unavailable: try again shortly";

/// Seconds a client is told to wait while the database cannot be reached (a restarted
/// PostgreSQL recovers in about that).
pub const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// Whether `e` says the database cannot be reached right now (down, restarting, refusing
/// connections), rather than that the request or the data is wrong: such failures are answered
/// 503 with `Retry-After`, since trying again later will work and nothing was committed.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // Class 08: connection exceptions; 57P01–57P03: the server is shutting down, crashed,
        // or is still starting up.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
        _ => false,
    }
}

/// The JSON body of an error response.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Logged with the request span (method, route, request id); the detail stays here.
            tracing::error!(error = %self, "request failed");
        }
        let mut response = error_body(status, self.code(), &self.public_message());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"linli\""),
            );
        }
        let retry_after = match &self {
            Self::TooManyRequests { retry_after_secs }
            | Self::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Database(e) if database_unavailable(e) => Some(DATABASE_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Maps an axum extractor rejection (bad JSON, query, path or body) to our JSON error, keeping its
/// status and its message (which describes the input's shape, not its content).
pub fn from_rejection(status: StatusCode, text: String) -> Error {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge(text),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::UnsupportedMediaType(text),
        StatusCode::UNPROCESSABLE_ENTITY => Error::Unprocessable(text),
        s if s.is_server_error() => Error::Internal(text),
        _ => Error::BadRequest(text),
    }
}

macro_rules! impl_from_rejection {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(r: $t) -> Self {
                from_rejection(r.status(), r.body_text())
            }
        }
    )*};
}

impl_from_rejection!(
    axum::extract::rejection::JsonRejection,
    axum::extract::rejection::QueryRejection,
    axum::extract::rejection::PathRejection,
    axum::extract::rejection::BytesRejection
);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_are_generic() {
        let resp = Error::Internal("secret path /var/x".into()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("\"internal\""), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_503_with_retry_after() {
        let resp = Error::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("\"unavailable\"") && text.contains("try again"),
            "{text}"
        );
        assert!(!text.contains("pool"), "{text}");
        // A refused row is still the caller's or the server's fault, not an outage.
        assert_eq!(
            Error::Database(sqlx::Error::RowNotFound).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn statuses_map_in_one_place() {
        assert_eq!(Error::Conflict("x".into()).status(), StatusCode::CONFLICT);
        assert_eq!(
            Error::PayloadTooLarge("x".into()).code(),
            "payload_too_large"
        );
        assert_eq!(Error::Unauthorized("x".into()).code(), "unauthorized");
    }
}
