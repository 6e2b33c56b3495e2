//! Authentication: `POST /v1/auth/login`, token signing keys, and the [`AuthUser`] extractor.
//!
//! Tokens are HS256 JWTs signed with a random 32-byte key generated on first start into
//! `jwt-keys.json` in the data directory (mode 0600). The header carries the key's `kid`;
//! validation pins the algorithm, requires `exp`, `aud` (`linli`), `iss` (`linli-server`) and
//! `sub`, and refuses unknown key ids. Passwords are argon2id hashes, computed and verified on the
//! blocking pool. Neither tokens nor passwords are ever logged.

use std::path::Path;
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use linli_sync_core::{DeviceId, PlaceId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::extract::JsonBody;
use crate::model::{Role, hex, now_ms, unhex};
use crate::state::AppState;

/// The token audience.
pub const AUDIENCE: &str = "linli";
/// The token issuer.
pub const ISSUER: &str = "linli-server";

const BAD_LOGIN: &str = "wrong username or password";
const BAD_TOKEN: &str = "missing, expired or invalid access token";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/auth/login", post(login))
}

// ---------------------------------------------------------------------------------------------
// Passwords

/// Hashes a password with argon2id (default parameters, random salt) on the blocking pool.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

/// Verifies a password against a PHC string on the blocking pool. `None` runs a verification
/// against a throwaway hash, so unknown usernames take as long as wrong passwords.
async fn verify_password(password: String, hash: Option<String>) -> Result<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    tokio::task::spawn_blocking(move || {
        let hash = match hash {
            Some(h) => h,
            None => DUMMY
                .get_or_init(|| {
                    Argon2::default()
                        .hash_password(hex(&rand::random::<[u8; 16]>()).as_bytes())
                        .map(|h| h.to_string())
                        .unwrap_or_default()
                })
                .clone(),
        };
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok())
    })
    .await
    .map_err(Error::internal)?
}

// ---------------------------------------------------------------------------------------------
// Keys and tokens

#[derive(Debug, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// The secret, hex.
    key: String,
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Device id the token was issued to.
    pub dev: String,
    /// The user's role at issue time.
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    pub iat: u64,
    /// Audience, [`AUDIENCE`].
    pub aud: String,
    /// Issuer, [`ISSUER`].
    pub iss: String,
}

/// The server's token signing keys (the first one signs; all verify, looked up by `kid`).
pub struct JwtKeys {
    keys: Vec<SigningKey>,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("JwtKeys")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Loads the key file, creating it with a fresh random key (mode 0600) if it is missing.
    pub fn load_or_create(path: &Path) -> Result<JwtKeys> {
        let file: KeyFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = KeyFile {
                    keys: vec![StoredKey {
                        kid: hex(&rand::random::<[u8; 8]>()),
                        alg: "HS256".into(),
                        key: hex(&rand::random::<[u8; 32]>()),
                    }],
                };
                write_private(
                    path,
                    &serde_json::to_vec_pretty(&file).map_err(Error::internal)?,
                )?;
                file
            }
            Err(e) => return Err(Error::Internal(format!("{}: {e}", path.display()))),
        };
        let mut keys = Vec::new();
        for k in file.keys {
            if k.alg != "HS256" {
                return Err(Error::Internal(format!(
                    "key {}: unsupported alg {}",
                    k.kid, k.alg
                )));
            }
            let secret = unhex(&k.key).filter(|s| s.len() >= 32).ok_or_else(|| {
                Error::Internal(format!("key {}: not a 32-byte hex secret", k.kid))
            })?;
            keys.push(SigningKey {
                kid: k.kid,
                encoding: EncodingKey::from_secret(&secret),
                decoding: DecodingKey::from_secret(&secret),
            });
        }
        if keys.is_empty() {
            return Err(Error::Internal(format!("{}: no keys", path.display())));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 30;
        Ok(JwtKeys { keys, validation })
    }

    /// Signs claims with the current key.
    pub fn issue(&self, claims: &Claims) -> Result<String> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(Error::internal)
    }

    /// Verifies a token: known `kid`, HS256, signature, `exp`, `aud`, `iss`, `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized())?;
        let kid = header.kid.ok_or_else(unauthorized)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(unauthorized)?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| unauthorized())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Error::Internal(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// Login

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

/// `POST /v1/auth/login` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Expiry, ms since the epoch.
    pub expires_at: i64,
    /// Who signed in.
    pub user: UserInfo,
    /// The device the token is bound to.
    pub device_id: String,
}

async fn login(
    State(state): State<AppState>,
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
    let user = state.store.user_by_username(req.username.trim()).await?;
    let ok = verify_password(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(u) if ok => u,
        _ => return Err(Error::Unauthorized(BAD_LOGIN.into())),
    };
    if user.disabled {
        return Err(Error::Unauthorized("this account is disabled".into()));
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
    let iat = (now / 1000) as u64;
    let exp = iat + state.config.token_ttl.as_secs();
    let claims = Claims {
        sub: user.id.clone(),
        dev: device.to_string(),
        role: user.role.as_str().into(),
        exp,
        iat,
        aud: AUDIENCE.into(),
        iss: ISSUER.into(),
    };
    let access_token = state.keys.issue(&claims)?;
    tracing::info!(username = %user.username, device = %device, "login");
    Ok(Json(LoginResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at: (exp as i64) * 1000,
        user: UserInfo {
            username: user.username,
            display_name: user.display_name,
            role: user.role.as_str().into(),
            places,
        },
        device_id: device.to_string(),
    }))
}

// ---------------------------------------------------------------------------------------------
// The extractor

/// The caller of an authenticated request: a valid token of an enabled user, with their grants.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub user_id: String,
    /// Login name.
    pub username: String,
    /// Role (read from the database, so a role change applies at once).
    pub role: Role,
    /// The device the token was issued to.
    pub device_id: DeviceId,
    /// Granted places; each covers everything below it.
    pub places: Vec<PlaceId>,
}

impl AuthUser {
    /// Whether the user may read and write records at `place`.
    pub fn can_access(&self, place: &PlaceId) -> bool {
        self.places.iter().any(|g| place.is_within(g))
    }

    /// The caller's grants narrowed to `place` (when given): the scopes to query.
    pub fn scopes_within(&self, place: Option<&PlaceId>) -> Vec<PlaceId> {
        let Some(place) = place else {
            return self.places.clone();
        };
        let mut out: Vec<PlaceId> = Vec::new();
        for g in &self.places {
            if place.is_within(g) {
                out.push(place.clone());
            } else if g.is_within(place) {
                out.push(g.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let state = AppState::from_ref(state);
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let claims = state.keys.verify(token)?;
        let device_id: DeviceId = claims.dev.parse().map_err(|_| unauthorized())?;
        let user = state
            .store
            .user_by_id(&claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(unauthorized)?;
        let places = state.store.grants_of(&user.id).await?;
        Ok(AuthUser {
            user_id: user.id,
            username: user.username,
            role: user.role,
            device_id,
            places,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            dev: DeviceId::new().to_string(),
            role: "bus".into(),
            exp: now + 3600,
            iat: now,
            aud: AUDIENCE.into(),
            iss: ISSUER.into(),
        }
    }

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-keys.json");
        let keys = JwtKeys::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys.issue(&claims(now)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "u1");
        // Reloading the same file verifies the same tokens.
        let again = JwtKeys::load_or_create(&path).unwrap();
        assert!(again.verify(&token).is_ok());

        // Expired.
        let mut old = claims(now - 7200);
        old.exp = now - 3600;
        assert!(keys.verify(&keys.issue(&old).unwrap()).is_err());
        // Wrong audience.
        let mut aud = claims(now);
        aud.aud = "other".into();
        assert!(keys.verify(&keys.issue(&aud).unwrap()).is_err());
        // Another server's key, same kid-less header.
        let other_dir = tempfile::tempdir().unwrap();
        let other = JwtKeys::load_or_create(&other_dir.path().join("k.json")).unwrap();
        assert!(keys.verify(&other.issue(&claims(now)).unwrap()).is_err());
        // alg=none and garbage.
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        assert!(
            keys.verify(&format!("{none_header}.{}.", parts[1]))
                .is_err()
        );
        assert!(keys.verify("garbage").is_err());
    }

    #[test]
    fn scopes_narrow_to_the_asked_place() {
        let p = |s: &str| s.parse::<PlaceId>().unwrap();
        let user = AuthUser {
            user_id: "u".into(),
            username: "bus1".into(),
            role: Role::Bus,
            device_id: DeviceId::new(),
            places: vec![p("hz/baiyang/haitian")],
        };
        assert!(user.can_access(&p("hz/baiyang/haitian/tianyuan/b1")));
        assert!(!user.can_access(&p("hz/baiyang/dabei")));
        assert_eq!(
            user.scopes_within(Some(&p("hz"))),
            vec![p("hz/baiyang/haitian")]
        );
        assert_eq!(
            user.scopes_within(Some(&p("hz/baiyang/haitian/tianyuan"))),
            vec![p("hz/baiyang/haitian/tianyuan")]
        );
        assert!(user.scopes_within(Some(&p("hz/baiyang/dabei"))).is_empty());
    }
}
