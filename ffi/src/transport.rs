//! Blocking HTTP to the Linli server (ureq): login and the one-round-trip sync.
//!
//! Network failures become [`ApiError::Offline`], certificate problems [`ApiError::Tls`]; 401
//! becomes [`ApiError::Unauthorized`], 403 [`ApiError::Forbidden`] (or
//! [`ApiError::DeviceRevoked`] when the server says this device was revoked); other error replies
//! carry the server's JSON `message`.

use std::time::Duration;

use linli_sync_core::protocol::{CONTENT_TYPE, MAX_BODY_BYTES, SyncResponse};
use serde::{Deserialize, Serialize};
use ureq::Body;
use ureq::http::Response;

use crate::error::ApiError;

/// Connection set-up limit: past it the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-exchange limit (a large first sync on a slow link still fits).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest JSON reply read.
const MAX_JSON_BYTES: u64 = 1024 * 1024;

/// `POST /v1/auth/login` body.
#[derive(Debug, Serialize)]
struct LoginRequest<'a> {
    username: &'a str,
    password: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_name: Option<&'a str>,
}

/// A place in the login reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LoginPlace {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// The user in the login reply (also what `kv.user` stores).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LoginUser {
    pub username: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub places: Vec<LoginPlace>,
}

/// `POST /v1/auth/login` reply.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_at: serde_json::Value,
    /// Single use: `POST /v1/auth/refresh` spends it and returns the next one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub user: LoginUser,
    /// The server's clock (from its `Date` header), ms since the epoch.
    #[serde(skip)]
    pub server_time: Option<i64>,
}

/// The JSON error body of 4xx/5xx replies.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// An HTTP client bound to one server.
pub(crate) struct Transport<'a> {
    agent: &'a ureq::Agent,
    base: String,
}

/// How the SDK reaches servers: the app's extra CA certificates and the development option.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportOptions {
    /// Extra CA certificates (PEM), trusted beside the platform's store.
    pub extra_ca_certs_pem: Vec<String>,
    /// Allow plain `http://` to hosts other than this device (development only).
    pub allow_insecure_http: bool,
}

/// The agent the SDK uses: TLS with the platform's trust store plus the app's CAs
/// ([`crate::tls`]), no status-as-error (bodies are read), bounded timeouts.
pub(crate) fn agent(options: &TransportOptions) -> Result<ureq::Agent, ApiError> {
    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{ConnectProxyConnector, Connector, TcpConnector};
    let roots = crate::tls::parse_extra_roots(&options.extra_ca_certs_pem)?;
    let tls = crate::tls::TlsConnector {
        config: crate::tls::client_config(roots)?,
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(CALL_TIMEOUT))
        .user_agent(concat!("linli-ffi/", env!("CARGO_PKG_VERSION")))
        .build();
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(tls);
    Ok(ureq::Agent::with_parts(
        config,
        connector,
        DefaultResolver::default(),
    ))
}

/// Checks and normalises a server URL (`https://host:port` or, to this device only,
/// `http://127.0.0.1:8080`; no trailing slash). Plain HTTP to another host would carry
/// passwords, tokens and residents' data in clear text over mobile networks, so it is refused
/// unless the app sets the development option `allow_insecure_http` (then with a warning in the
/// log).
pub(crate) fn normalize_url(url: &str, allow_insecure_http: bool) -> Result<String, ApiError> {
    let url = url.trim().trim_end_matches('/');
    let lower = url.to_ascii_lowercase();
    let (secure, rest) = if lower.starts_with("https://") {
        (true, &url["https://".len()..])
    } else if lower.starts_with("http://") {
        (false, &url["http://".len()..])
    } else {
        return Err(ApiError::invalid(
            "server_url",
            "expected a URL such as https://linli.example.gov.cn or http://127.0.0.1:8080",
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || rest.contains(char::is_whitespace) {
        return Err(ApiError::invalid("server_url", "the URL has no host"));
    }
    if authority.contains('@') {
        return Err(ApiError::invalid(
            "server_url",
            "a server URL may not carry a user name or password",
        ));
    }
    let scheme = if secure { "https://" } else { "http://" };
    let normalized = format!("{scheme}{rest}");
    if secure {
        return Ok(normalized);
    }
    if is_loopback(authority) {
        return Ok(normalized);
    }
    if allow_insecure_http {
        log::warn!(
            "plain http:// to a host other than this device is allowed by the development \
             option allow_insecure_http: passwords, tokens and residents' data cross the network \
             unencrypted"
        );
        return Ok(normalized);
    }
    Err(ApiError::invalid(
        "server_url",
        "plain http:// is only for this device (127.0.0.1, ::1, localhost): use https://, or \
         set allow_insecure_http for development",
    ))
}

/// Whether the host of an authority (`host[:port]`) is this device.
fn is_loopback(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

impl<'a> Transport<'a> {
    /// A transport for `base` (already normalised).
    pub fn new(agent: &'a ureq::Agent, base: &str) -> Self {
        Self {
            agent,
            base: base.to_string(),
        }
    }

    /// Logs in; a 401 is a wrong name or password.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        device_id: &str,
    ) -> Result<LoginResponse, ApiError> {
        let body = LoginRequest {
            username,
            password,
            device_id,
            device_name: None,
        };
        self.auth_exchange("login", &body, "the user name or password was not accepted")
    }

    /// Trades the refresh token for a new access token and the next refresh token (the same reply
    /// as a login). A 401 means the login is over: expired, revoked, or the token was used twice.
    pub fn refresh(&self, refresh_token: &str, device_id: &str) -> Result<LoginResponse, ApiError> {
        self.auth_exchange(
            "refresh",
            &serde_json::json!({ "refresh_token": refresh_token, "device_id": device_id }),
            "the login has expired or was revoked: log in again",
        )
    }

    /// `POST /v1/auth/{path}` with a JSON body, answered by a login reply; a 401 becomes
    /// `Unauthorized` with `unauthorized` as its reason.
    fn auth_exchange(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        unauthorized: &str,
    ) -> Result<LoginResponse, ApiError> {
        let mut resp = self
            .agent
            .post(format!("{}/v1/auth/{path}", self.base))
            .send_json(body)
            .map_err(network_error)?;
        let status = resp.status().as_u16();
        if status == 401 {
            return Err(ApiError::Unauthorized {
                reason: unauthorized.into(),
            });
        }
        if status != 200 {
            return Err(error_reply(status, &mut resp));
        }
        let server_time = resp
            .headers()
            .get("date")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.timestamp_millis());
        let mut reply = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON_BYTES)
            .read_json::<LoginResponse>()
            .map_err(|e| match e {
                ureq::Error::Json(_) => ApiError::Server {
                    status,
                    reason: format!("the {path} reply is not what this app expects"),
                },
                other => network_error(other),
            })?;
        reply.server_time = server_time;
        Ok(reply)
    }

    /// One sync round trip. A 422 (every pushed change refused) carries a normal sync reply.
    pub fn sync(&self, token: &str, body: Vec<u8>) -> Result<SyncResponse, ApiError> {
        let mut resp = self
            .agent
            .post(format!("{}/v1/sync", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", CONTENT_TYPE)
            .content_type(CONTENT_TYPE)
            .send(&body[..])
            .map_err(network_error)?;
        let status = resp.status().as_u16();
        let binary = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(CONTENT_TYPE));
        match status {
            200 | 422 if binary => {
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY_BYTES as u64 + 1024)
                    .read_to_vec()
                    .map_err(network_error)?;
                SyncResponse::decode(&bytes).map_err(|e| ApiError::Server {
                    status,
                    reason: format!("the sync reply could not be read: {e}"),
                })
            }
            401 => Err(ApiError::Unauthorized {
                reason: "the server no longer accepts this login: log in again".into(),
            }),
            _ => Err(error_reply(status, &mut resp)),
        }
    }
}

/// What a live stream said, one event at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LiveFrame {
    /// An event: its name and data.
    Event { name: String, data: String },
    /// A keep-alive (a comment line).
    Alive,
}

impl Transport<'_> {
    /// Opens `GET /v1/live` and hands every frame to `on_frame` until the server ends the
    /// stream (`Ok`), `on_frame` returns false (`Ok`), or the connection fails. The stream has no
    /// overall timeout (the server ends it when the token expires); a silence longer than
    /// `idle` (the server sends keep-alives more often) counts as a lost connection.
    pub fn live(
        &self,
        token: &str,
        idle: std::time::Duration,
        mut on_frame: impl FnMut(LiveFrame) -> bool,
    ) -> Result<(), ApiError> {
        use std::io::BufRead;
        let mut resp = self
            .agent
            .get(format!("{}/v1/live", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .config()
            .timeout_global(None)
            .timeout_recv_body(None)
            .build()
            .call()
            .map_err(network_error)?;
        match resp.status().as_u16() {
            200 => {}
            401 => {
                return Err(ApiError::Unauthorized {
                    reason: "the server no longer accepts this login: log in again".into(),
                });
            }
            status => return Err(error_reply(status, &mut resp)),
        }
        let reader = IdleReader::new(resp.into_body().into_reader(), idle);
        let lines = std::io::BufReader::new(reader).lines();
        let (mut name, mut data) = (String::new(), String::new());
        for line in lines {
            let line = line.map_err(|e| ApiError::Offline {
                reason: format!("the live stream broke off: {e}"),
            })?;
            let go_on = if line.is_empty() {
                if name.is_empty() && data.is_empty() {
                    true
                } else {
                    on_frame(LiveFrame::Event {
                        name: std::mem::take(&mut name),
                        data: std::mem::take(&mut data),
                    })
                }
            } else if line.starts_with(':') {
                on_frame(LiveFrame::Alive)
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_string();
                true
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.trim_start());
                true
            } else {
                true
            };
            if !go_on {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A reader that fails once nothing arrived for `idle`: a live stream whose server vanished
/// (no FIN, e.g. a phone that changed networks) must not block its thread forever. The read
/// itself runs on a helper thread, as the body reader has no read timeout of its own.
struct IdleReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    idle: std::time::Duration,
    pending: Vec<u8>,
    at: usize,
}

impl IdleReader {
    fn new(mut inner: impl std::io::Read + Send + 'static, idle: std::time::Duration) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            loop {
                match inner.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(Ok(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        Self {
            rx,
            idle,
            pending: Vec::new(),
            at: 0,
        }
    }
}

impl std::io::Read for IdleReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            match self.rx.recv_timeout(self.idle) {
                Ok(Ok(bytes)) => {
                    self.pending = bytes;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(0),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the server sent nothing for too long",
                    ));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Maps an error reply: 403 to Forbidden, the rest to Server with the server's message.
fn error_reply(status: u16, resp: &mut Response<Body>) -> ApiError {
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_JSON_BYTES)
        .read_json::<ErrorBody>()
        .ok();
    if status == 403 && body.as_ref().is_some_and(|b| b.error == "device_revoked") {
        return ApiError::DeviceRevoked { unsent_changes: 0 };
    }
    let reason = match body {
        Some(b) if !b.message.is_empty() => b.message,
        Some(b) if !b.error.is_empty() => b.error,
        _ => format!("unexpected reply (HTTP {status})"),
    };
    match status {
        401 => ApiError::Unauthorized { reason },
        403 => ApiError::Forbidden { reason },
        _ => ApiError::Server { status, reason },
    }
}

/// Maps a ureq failure that is not an HTTP status.
fn network_error(e: ureq::Error) -> ApiError {
    use std::io::ErrorKind as K;
    if let Some(reason) = crate::tls::certificate_problem(&e) {
        log::warn!("TLS: {reason}");
        return ApiError::Tls { reason };
    }
    let reason = match &e {
        ureq::Error::Io(io) => match io.kind() {
            K::ConnectionRefused => "connection refused".to_string(),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                "the connection was cut".to_string()
            }
            K::TimedOut | K::WouldBlock => "timed out".to_string(),
            K::NotConnected | K::AddrNotAvailable | K::NetworkUnreachable | K::HostUnreachable => {
                "no network".to_string()
            }
            _ => "network error".to_string(),
        },
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::BadUri(_) => {
            return ApiError::invalid("server_url", "the server URL is not valid");
        }
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::LargeResponseHeader(..) => {
            return ApiError::Server {
                status: 0,
                reason: "the reply is too large".into(),
            };
        }
        ureq::Error::Protocol(_) => {
            return ApiError::Server {
                status: 0,
                reason: "the reply is not valid HTTP (is the server speaking TLS?)".into(),
            };
        }
        _ => "network error".to_string(),
    };
    ApiError::Offline { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        assert_eq!(
            normalize_url(" http://127.0.0.1:8080/ ", false).unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(normalize_url("ftp://x", false).is_err());
        assert!(normalize_url("http://", false).is_err());
        // Plain HTTP: this device only, unless the development option is set.
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "HTTP://localhost:1",
            "http://[::1]:8080",
            "https://linli.example.gov.cn",
            "https://10.0.0.5:8443",
        ] {
            assert!(normalize_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.5:8080",
            "http://linli.example.gov.cn",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example",
            "http://[::2]:80",
            "http://127.0.0.1@evil.example",
            "https://user:pw@linli.example",
        ] {
            let err = normalize_url(refused, false).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{refused}");
        }
        assert_eq!(
            normalize_url("http://10.0.0.5:8080", true).unwrap(),
            "http://10.0.0.5:8080"
        );
    }

    #[test]
    fn an_unreachable_server_is_offline() {
        // Bind then drop a listener: the port is closed, so the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let agent = agent(&TransportOptions::default()).unwrap();
        let t = Transport::new(&agent, &format!("http://127.0.0.1:{port}"));
        let err = t.sync("token", vec![]).unwrap_err();
        assert_eq!(err.code(), "offline", "{err}");
    }
}
