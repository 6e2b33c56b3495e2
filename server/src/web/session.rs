//! Sign-in for browsers: a server-side session behind an HttpOnly, SameSite=Strict cookie (Secure
//! over TLS), CSRF tokens on every form, sign-out and idle expiry.
//!
//! Only `office` and `admin` sign in here; stewards and bus teams are told to use the phone app.
//! Each session registers a device of its own (the browser) and an Automerge actor on it, so the
//! office's edits are attributed, checked and synced exactly like a phone's. The session's
//! [`AuthUser`] is built like the API's: the same grants, the same checks of disabled users,
//! session epochs and revoked devices.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use linli_sync_core::DeviceId;
use sha2::{Digest, Sha256};

use super::{WebError, WebResult, render, view};
use crate::auth::AuthUser;
use crate::auth::passwords;
use crate::error::Error;
use crate::model::{Role, hex, now_ms};
use crate::state::AppState;
use crate::store::NewWebSession;
use crate::store::prelude::*;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "linli_session";
/// The cookie guarding the sign-in form against login CSRF.
const LOGIN_COOKIE: &str = "linli_login";
/// A session's last-seen time is written at most this often (ms), not on every request (and at
/// least twice per idle period, so an active session never expires).
const TOUCH_EVERY_MS: i64 = 60_000;

/// A signed-in back-office user, extracted from the session cookie on every request.
#[derive(Debug, Clone)]
pub struct WebUser {
    /// The same principal the API works with (the browser's device, the user's grants).
    pub auth: AuthUser,
    /// The user's display name.
    pub display_name: String,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// The Automerge actor of the session's edits (hex).
    pub actor: String,
    /// SHA-256 of the cookie token (hex): names the session to the live stream.
    pub session: String,
}

impl WebUser {
    /// Whether the user administers users, devices and places.
    pub fn is_admin(&self) -> bool {
        self.auth.role == Role::Admin
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_token() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// The path and query the request asked for, to come back to after signing in.
fn requested(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// The session of a request, or why there is none.
async fn session_user(parts: &Parts, state: &AppState) -> Result<Option<WebUser>, Error> {
    let Some(token) = cookie_value(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    if token.len() != 64 {
        return Ok(None);
    }
    let hash = token_hash(token);
    let now = now_ms();
    let idle_ms = state.config.web_idle.as_millis() as i64;
    let Some(session) = state.store.web_session(&hash, now - idle_ms).await? else {
        return Ok(None);
    };
    let Ok(device_id) = session.device_id.parse::<DeviceId>() else {
        return Ok(None);
    };
    let Some(principal) = state.store.principal(&session.user_id, device_id).await? else {
        return Ok(None);
    };
    let user = principal.user;
    if user.disabled
        || !principal.device_ok
        || user.session_epoch != session.session_epoch
        || !user.role.is_back_office()
    {
        return Ok(None);
    }
    if now - session.last_seen > TOUCH_EVERY_MS.min(idle_ms / 2) {
        state.store.touch_web_session(&hash, now).await?;
    }
    let places = principal.places;
    Ok(Some(WebUser {
        auth: AuthUser {
            user_id: user.id,
            username: user.username,
            role: user.role,
            device_id,
            places,
        },
        display_name: user.display_name,
        csrf: session.csrf,
        actor: session.actor,
        session: hex(&hash),
    }))
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> WebResult<Self> {
        match session_user(parts, state).await? {
            Some(user) => Ok(user),
            None => Err(WebError::SignIn {
                next: requested(parts),
            }),
        }
    }
}

impl OptionalFromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> WebResult<Option<Self>> {
        Ok(session_user(parts, state).await?)
    }
}

/// A submitted form's fields (`application/x-www-form-urlencoded`), in order.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// Parses a urlencoded body or query.
    pub fn parse(bytes: &[u8]) -> Self {
        Fields(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Compares in time independent of where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A request from another site: its `Origin` (sent by browsers on every POST) names a host other
/// than the one it was sent to.
fn cross_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// A state-changing form post by a signed-in user, with its CSRF token and origin checked. Every
/// POST handler of the back-office takes this, so none can forget the check.
#[derive(Debug)]
pub struct Posted {
    /// Who posted.
    pub user: WebUser,
    /// The form's fields (the CSRF token among them).
    pub form: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> WebResult<Self> {
        let (mut parts, body) = req.into_parts();
        let user =
            <WebUser as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
        let forged = || {
            WebError::page(
                StatusCode::FORBIDDEN,
                "表单已失效或来源不明（缺少有效的安全令牌），操作未执行。请返回页面刷新后重试。",
            )
        };
        if cross_origin(&parts.headers) {
            return Err(forged());
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| WebError::page(e.status(), "提交的内容过大或无法读取。"))?;
        let form = Fields::parse(&bytes);
        let token = form.get("_csrf").unwrap_or("");
        if !same_secret(token, &user.csrf) {
            return Err(forged());
        }
        Ok(Posted { user, form })
    }
}

fn cookie(state: &AppState, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let secure = if state.config.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where to go after signing in: a back-office path of this server, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n.starts_with("/office") || n.starts_with("/admin"))
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_string()
        }
        _ => "/office/records".into(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "use_phone.html")]
struct UsePhonePage<'a> {
    display_name: &'a str,
    role: &'a str,
}

fn login_form(
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> WebResult {
    let token = random_token();
    let mut resp = render(&LoginPage {
        csrf: &token,
        next,
        username,
        error,
    })?;
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(state, LOGIN_COOKIE, &token, Some(3600)),
    );
    Ok(resp)
}

/// `GET /login`: the sign-in form (or straight on, when already signed in).
pub async fn login_page(
    axum::extract::State(state): axum::extract::State<AppState>,
    user: Option<WebUser>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> WebResult {
    let q = Fields::parse(query.unwrap_or_default().as_bytes());
    let next = safe_next(q.get("next"));
    if user.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    login_form(&state, StatusCode::OK, &next, "", None)
}

/// `POST /login`: checks the password (with the API's login limits) and opens a session.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    crate::extract::Peer(peer): crate::extract::Peer,
    headers: HeaderMap,
    body: Bytes,
) -> WebResult {
    let form = Fields::parse(&body);
    let next = safe_next(form.get("next"));
    let username = form.get("username").unwrap_or("").to_string();
    let expected = cookie_value(&headers, LOGIN_COOKIE).unwrap_or("");
    if cross_origin(&headers)
        || expected.is_empty()
        || !same_secret(form.get("_csrf").unwrap_or(""), expected)
    {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            &username,
            Some("登录表单已过期，请重新输入。"),
        );
    }
    let bad = |state: &AppState| {
        login_form(
            state,
            StatusCode::UNAUTHORIZED,
            &next,
            &username,
            Some("用户名或密码错误。"),
        )
    };
    if username.is_empty() || username.chars().count() > 64 {
        return bad(&state);
    }
    let address = crate::auth::client_address(&state, peer, &headers);
    if let Err(e) = state.limits.check_login(&username, address) {
        let msg = format!("登录尝试过于频繁，请稍后再试。（{e}）");
        return login_form(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &username,
            Some(&msg),
        );
    }
    let user = state.store.user_by_username(&username).await?;
    let password = form.get("password").unwrap_or("").to_string();
    let ok = passwords::verify_password(password, user.as_ref().map(|u| u.password_hash.clone()))
        .await?;
    let user = match user {
        Some(u) if ok => u,
        _ => return bad(&state),
    };
    if user.disabled {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            &username,
            Some("该账号已停用，请联系管理员。"),
        );
    }
    if !user.role.is_back_office() {
        let mut resp = render(&UsePhonePage {
            display_name: &user.display_name,
            role: view::role_label(user.role),
        })?;
        *resp.status_mut() = StatusCode::FORBIDDEN;
        return Ok(resp);
    }
    let now = now_ms();
    let device = DeviceId::new();
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(view::browser_name)
        .unwrap_or("浏览器");
    state
        .store
        .register_device(device, &user.id, &format!("网页后台（{agent}）"), now)
        .await?;
    let token = random_token();
    let csrf = random_token();
    let actor = hex(automerge::ActorId::random().to_bytes());
    state
        .store
        .insert_web_session(&NewWebSession {
            hash: &token_hash(&token),
            user_id: &user.id,
            device_id: &device.to_string(),
            actor: &actor,
            csrf: &csrf,
            session_epoch: user.session_epoch,
            now,
        })
        .await?;
    tracing::info!(username = %user.username, device = %device, "web sign-in");
    let mut resp = Redirect::to(&next).into_response();
    let headers = resp.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, &token, None),
    );
    headers.append(
        header::SET_COOKIE,
        cookie(&state, LOGIN_COOKIE, "", Some(0)),
    );
    Ok(resp)
}

/// `POST /logout`: ends the session (and its live streams) and clears the cookie.
pub async fn logout(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    posted: Posted,
) -> WebResult {
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE) {
        state
            .store
            .end_web_session(&token_hash(token), now_ms())
            .await?;
    }
    state.live.end_session(&posted.user.session);
    tracing::info!(username = %posted.user.auth.username, "web sign-out");
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(&state, SESSION_COOKIE, "", Some(0)),
    );
    Ok(resp)
}

/// Whether the session named by `session` (hex hash) is still live: asked by long-lived streams.
pub async fn still_live(state: &AppState, session: &str) -> bool {
    let Some(bytes) = linli_sync_core::hex::decode(session) else {
        return false;
    };
    let Ok(hash) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        return false;
    };
    let idle_ms = state.config.web_idle.as_millis() as i64;
    matches!(
        state.store.web_session(&hash, now_ms() - idle_ms).await,
        Ok(Some(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(
            safe_next(Some("/office/records?kind=case")),
            "/office/records?kind=case"
        );
        assert_eq!(safe_next(Some("//evil.example/office")), "/office/records");
        assert_eq!(safe_next(Some("https://evil.example")), "/office/records");
        assert_eq!(safe_next(Some("/office//evil")), "/office/records");
        assert_eq!(safe_next(None), "/office/records");
    }

    #[test]
    fn origins_of_other_sites_are_cross_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!cross_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(!cross_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(cross_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_origin(&h));
    }

    #[test]
    fn fields_keep_repeats_and_drop_empties() {
        let f = Fields::parse(b"d=police&d=fire_brigade&x=&y=%E6%B6%88%E9%98%B2");
        assert_eq!(f.all("d"), vec!["police", "fire_brigade"]);
        assert_eq!(f.get("x"), None);
        assert_eq!(f.get("y"), Some("消防"));
    }
}
