//! Authentication: `POST /v1/auth/login` and `POST /v1/auth/refresh`, and what they stand on:
//!
//! - [`passwords`]: argon2id hashing, bounded to the machine's cores;
//! - [`keys`]: access tokens (JWT) and their signing keys;
//! - [`extractor`]: the [`AuthUser`] of an authenticated request.
//!
//! **Refresh tokens** are 256-bit values, stored only as SHA-256 hashes. Each use spends the
//! token and returns the next one of the same family, derived from the spent one with a server
//! secret (HMAC-SHA256), so the server can hand the *same* next token again, without storing it,
//! to a phone that retries within a short grace window because the reply was lost. Presenting a
//! spent token outside that window (or from another device, or after its successor was used)
//! revokes the whole family: someone copied it. Disabling a user, changing their password or
//! revoking a device revokes their refresh tokens and ends their access tokens.
//!
//! **Login floods** are refused before any hashing: per user name, per client address and in
//! total (429 with `Retry-After`); hashing itself runs at most one per core, and past a short
//! queue a login is answered 503 with `Retry-After`.
//!
//! Neither tokens nor passwords are ever logged.

pub mod extractor;
pub mod keys;
pub mod passwords;

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use linli_sync_core::DeviceId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use extractor::AuthUser;
pub use keys::{AUDIENCE, Claims, ISSUER, JwtKeys, KeyInfo};
pub use passwords::hash_password;

use crate::error::{Error, Result};
use crate::extract::{JsonBody, Peer};
use crate::model::{User, hex, now_ms};
use crate::state::AppState;
use crate::store::RefreshOutcome;
use crate::store::prelude::*;

const BAD_LOGIN: &str = "wrong username or password";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// The phone's own id (a UUID it chose at install).
    pub device_id: String,
    /// A name for the phone, shown to admins.
    #[serde(default)]
    pub device_name: Option<String>,
}

/// A place as listed to clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlaceRef {
    /// Path.
    pub id: String,
    /// Chinese name.
    pub name: String,
}

/// The signed-in user as described to the app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Role code.
    pub role: String,
    /// Granted places.
    pub places: Vec<PlaceRef>,
}

/// `POST /v1/auth/login` and `POST /v1/auth/refresh` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Expiry of the access token, ms since the epoch.
    pub expires_at: i64,
    /// The refresh token: send it to `POST /v1/auth/refresh` for the next pair. Single use.
    pub refresh_token: String,
    /// Expiry of the refresh token, ms since the epoch.
    pub refresh_expires_at: i64,
    /// Who signed in.
    pub user: UserInfo,
    /// The device the tokens are bound to.
    pub device_id: String,
}

/// `POST /v1/auth/refresh` body.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    pub refresh_token: String,
    /// The phone's device id. A phone that sends it and retries a refresh whose reply it lost
    /// (within the grace window) gets the same next token instead of a revoked family.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// SHA-256 of a refresh token: what the database keeps.
pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_refresh_token() -> String {
    format!("lr1_{}", hex(&rand::random::<[u8; 32]>()))
}

/// The refresh token that follows `token`: HMAC-SHA256 of it under the server's secret. Only the
/// server can compute it, and it can compute it again for a retry without ever storing it.
fn next_refresh_token(secret: &[u8], token: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(token.as_bytes());
    format!("lr1_{}", hex(&mac.finalize().into_bytes()))
}

/// The client's address: the TCP peer, or with `--trust-forwarded-for` (behind a reverse proxy)
/// the first address of `X-Forwarded-For`.
pub(crate) fn client_address(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Option<std::net::IpAddr> {
    if state.config.trust_forwarded_for
        && let Some(forwarded) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(forwarded);
    }
    peer.map(|p| p.ip())
}

async fn user_info(state: &AppState, user: &User) -> Result<UserInfo> {
    let grants = state.store.grants_of(&user.id).await?;
    let mut places = Vec::with_capacity(grants.len());
    for g in &grants {
        let name = state
            .store
            .place(g)
            .await?
            .map(|p| p.name)
            .unwrap_or_default();
        places.push(PlaceRef {
            id: g.to_string(),
            name,
        });
    }
    Ok(UserInfo {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        role: user.role.as_str().into(),
        places,
    })
}

/// Signs an access token for `user` on `device`.
pub async fn access_token(
    state: &AppState,
    user: &User,
    device: DeviceId,
) -> Result<(String, i64)> {
    let iat = (now_ms() / 1000) as u64;
    let exp = iat + state.config.token_ttl.as_secs();
    let claims = Claims {
        sub: user.id.clone(),
        dev: device.to_string(),
        role: user.role.as_str().into(),
        exp,
        iat,
        aud: AUDIENCE.into(),
        iss: ISSUER.into(),
        sev: user.session_epoch,
    };
    Ok((state.keys.issue(&claims).await?, (exp as i64) * 1000))
}

async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<LoginResponse>> {
    let device: DeviceId = req
        .device_id
        .parse()
        .map_err(|e: linli_sync_core::IdError| Error::BadRequest(e.to_string()))?;
    let device_name = req.device_name.unwrap_or_default();
    if device_name.chars().count() > 100 {
        return Err(Error::BadRequest(
            "device_name: at most 100 characters".into(),
        ));
    }
    let username = req.username.trim();
    if username.is_empty() || username.chars().count() > 64 {
        return Err(Error::Unauthorized(BAD_LOGIN.into()));
    }
    // Every limit before any hashing: in total, per client address, per user name.
    let address = client_address(&state, peer, &headers);
    state.limits.check_login(username, address)?;
    let user = state.store.user_by_username(username).await?;
    let ok =
        passwords::verify_password(req.password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
    let user = match user {
        Some(u) if ok => u,
        _ => return Err(Error::Unauthorized(BAD_LOGIN.into())),
    };
    if user.disabled {
        return Err(Error::Unauthorized("this account is disabled".into()));
    }
    if state.store.device_revoked(device).await? {
        return Err(Error::DeviceRevoked);
    }
    let now = now_ms();
    if !state
        .store
        .register_device(device, &user.id, device_name.trim(), now)
        .await?
    {
        return Err(Error::Conflict(
            "this device is registered to another user; ask an admin to release it".into(),
        ));
    }
    let (access_token, expires_at) = access_token(&state, &user, device).await?;
    let refresh_token = new_refresh_token();
    let refresh_expires_at = now + state.config.refresh_ttl.as_millis() as i64;
    let family = uuid::Uuid::new_v4().to_string();
    state
        .store
        .insert_refresh_token(&crate::store::NewRefreshToken {
            hash: &refresh_token_hash(&refresh_token),
            family: &family,
            user_id: &user.id,
            device_id: &device.to_string(),
            issued_at: now,
            expires_at: refresh_expires_at,
        })
        .await?;
    tracing::info!(username = %user.username, device = %device, "login");
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at,
        refresh_token,
        refresh_expires_at,
        user: user_info(&state, &user).await?,
        device_id: device.to_string(),
    }))
}

async fn refresh(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Json<LoginResponse>> {
    let dead = || Error::Unauthorized("the refresh token is not valid: log in again".into());
    let token = req.refresh_token.trim();
    if token.is_empty() || token.len() > 200 {
        return Err(dead());
    }
    let now = now_ms();
    let secret = state.store.server_secret("refresh-token-successor").await?;
    let next = next_refresh_token(&secret, token);
    let refresh_expires_at = now + state.config.refresh_ttl.as_millis() as i64;
    let outcome = state
        .store
        .rotate_refresh_token(&crate::store::RefreshAttempt {
            hash: &refresh_token_hash(token),
            next_hash: &refresh_token_hash(&next),
            now,
            next_expires_at: refresh_expires_at,
            grace_ms: state.config.refresh_grace.as_millis() as i64,
            device_id: req.device_id.as_deref(),
        })
        .await?;
    let (user_id, device_id) = match outcome {
        RefreshOutcome::Rotated { user_id, device_id } => (user_id, device_id),
        RefreshOutcome::Retried { user_id, device_id } => {
            tracing::info!("a refresh was retried within the grace window: same next token");
            (user_id, device_id)
        }
        RefreshOutcome::Reused => {
            tracing::warn!("a spent refresh token was presented again: its family is revoked");
            return Err(Error::Unauthorized(
                "this refresh token was already used, so every session of this login is \
                 revoked: log in again"
                    .into(),
            ));
        }
        RefreshOutcome::Dead { device_id } => {
            let revoked = match device_id.parse::<DeviceId>() {
                Ok(d) => state.store.device_revoked(d).await?,
                Err(_) => false,
            };
            return Err(if revoked {
                Error::DeviceRevoked
            } else {
                dead()
            });
        }
        RefreshOutcome::Unknown => return Err(dead()),
    };
    let device: DeviceId = device_id.parse().map_err(Error::internal)?;
    let principal = state
        .store
        .principal(&user_id, device)
        .await?
        .ok_or_else(dead)?;
    if principal.device_revoked {
        return Err(Error::DeviceRevoked);
    }
    if principal.user.disabled || !principal.device_ok {
        return Err(dead());
    }
    state.limits.check_user(&principal.user.id)?;
    let (access_token, expires_at) = access_token(&state, &principal.user, device).await?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at,
        refresh_token: next,
        refresh_expires_at,
        user: user_info(&state, &principal.user).await?,
        device_id: device.to_string(),
    }))
}
