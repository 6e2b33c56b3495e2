//! Access tokens and their signing keys.
//!
//! Access tokens are short-lived JWTs (15 minutes by default). The header carries the signing
//! key's `kid`; each key pins its algorithm (HS256), and validation requires `exp`, `aud`
//! (`linli`), `iss` (`linli-server`) and `sub`, with no leeway. Unknown key ids, other
//! algorithms, `alg: none` and keys past their retirement are refused. Each token also carries
//! the user's session epoch (`sev`): a password reset or a disable bumps it, ending every access
//! token issued before at once.
//!
//! Signing keys live in `jwt-keys.json` in the data directory (mode 0600). Rotation puts a new
//! signing key first and keeps the previous ones verifying for an overlap (by default one
//! access-token lifetime); after it they are removed, and their tokens are refused. A running
//! server notices a rotation made by the admin CLI within a tenth of a second.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{hex, now_ms, unhex};

/// The token audience.
pub const AUDIENCE: &str = "linli";
/// The token issuer.
pub const ISSUER: &str = "linli-server";

/// How often the key file's modification time is looked at (one `stat`): a rotation made by the
/// admin CLI in another process applies within this time.
const RELOAD_CHECK_EVERY: Duration = Duration::from_millis(100);

pub(crate) const BAD_TOKEN: &str = "missing, expired or invalid access token";

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// The secret, hex.
    key: String,
    /// When it was made (ms).
    #[serde(default)]
    created_at: i64,
    /// After this time (ms) it verifies nothing; `None` while it is the signing key or has no end.
    #[serde(default)]
    retire_at: Option<i64>,
}

impl StoredKey {
    fn fresh(now: i64) -> Self {
        Self {
            kid: hex(&rand::random::<[u8; 8]>()),
            alg: "HS256".into(),
            key: hex(&rand::random::<[u8; 32]>()),
            created_at: now,
            retire_at: None,
        }
    }
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    retire_at: Option<i64>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Validation pinned to this key's algorithm.
    validation: Validation,
}

/// A signing key as listed to admins (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Key id (the JWT `kid`).
    pub kid: String,
    /// Its pinned algorithm.
    pub alg: String,
    /// When it was made (ms).
    pub created_at: i64,
    /// When it stops verifying (ms), if it is retiring.
    pub retire_at: Option<i64>,
    /// Whether it signs new tokens.
    pub signing: bool,
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
    /// The user's session epoch at issue time: a password reset or a disable moves it on, and a
    /// token of an earlier epoch is refused.
    #[serde(default)]
    pub sev: i64,
}

/// The server's token signing keys (the first one signs; all verify, looked up by `kid`, until
/// they retire). Reloaded from the key file when it changes.
pub struct JwtKeys {
    path: PathBuf,
    keys: RwLock<Vec<SigningKey>>,
    /// When the file was last looked at, and its modification time then.
    checked: Mutex<(Instant, Option<FileStamp>)>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("JwtKeys")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

fn read_key_file(path: &Path) -> Result<Option<KeyFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Internal(format!("{}: {e}", path.display()))),
    }
}

/// What identifies a version of the key file: modification time, length and (on Unix) inode.
/// Rotation replaces the file by renaming a new one over it, so the inode changes even when the
/// clock tick does not.
type FileStamp = (Option<SystemTime>, u64, u64);

fn mtime(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok(), m.len(), ino))
}

fn build_keys(path: &Path, file: &KeyFile) -> Result<Vec<SigningKey>> {
    let now = now_ms();
    let mut keys = Vec::new();
    for k in &file.keys {
        let alg = match k.alg.as_str() {
            "HS256" => Algorithm::HS256,
            other => {
                return Err(Error::Internal(format!(
                    "key {}: unsupported alg {other}",
                    k.kid
                )));
            }
        };
        if k.retire_at.is_some_and(|t| t <= now) {
            continue;
        }
        let secret = unhex(&k.key)
            .filter(|s| s.len() >= 32)
            .ok_or_else(|| Error::Internal(format!("key {}: not a 32-byte hex secret", k.kid)))?;
        let mut validation = Validation::new(alg);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 0;
        keys.push(SigningKey {
            kid: k.kid.clone(),
            alg,
            retire_at: k.retire_at,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        });
    }
    if keys.is_empty() {
        return Err(Error::Internal(format!(
            "{}: no usable keys",
            path.display()
        )));
    }
    Ok(keys)
}

impl JwtKeys {
    /// Loads the key file, creating it with a fresh random key (mode 0600) if it is missing.
    pub fn load_or_create(path: &Path) -> Result<JwtKeys> {
        let file = match read_key_file(path)? {
            Some(f) => f,
            None => {
                let file = KeyFile {
                    keys: vec![StoredKey::fresh(now_ms())],
                };
                write_private(
                    path,
                    &serde_json::to_vec_pretty(&file).map_err(Error::internal)?,
                )?;
                file
            }
        };
        let keys = build_keys(path, &file)?;
        Ok(JwtKeys {
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
            checked: Mutex::new((Instant::now(), mtime(path))),
        })
    }

    /// Re-reads the key file if it changed (looked at no more than once a second unless
    /// `force`). A file that fails to load keeps the keys in use.
    fn reload_if_changed(&self, force: bool) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if !force && checked.0.elapsed() < RELOAD_CHECK_EVERY {
            return;
        }
        let now_mtime = mtime(&self.path);
        checked.0 = Instant::now();
        if now_mtime == checked.1 {
            return;
        }
        match read_key_file(&self.path).and_then(|f| {
            f.ok_or_else(|| Error::Internal("the key file is gone".into()))
                .and_then(|f| build_keys(&self.path, &f))
        }) {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                checked.1 = now_mtime;
                tracing::info!("token signing keys reloaded");
            }
            Err(e) => tracing::error!(error = %e, "token signing keys could not be reloaded"),
        }
    }

    /// Signs claims with the current key.
    pub fn issue(&self, claims: &Claims) -> Result<String> {
        self.reload_if_changed(false);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys
            .first()
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(Error::internal)
    }

    /// Verifies a token: known, unretired `kid`; that key's algorithm; signature, `exp`, `aud`,
    /// `iss`, `sub`.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        self.reload_if_changed(false);
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized())?;
        let kid = header.kid.ok_or_else(unauthorized)?;
        let known = |keys: &[SigningKey]| keys.iter().any(|k| k.kid == kid);
        if !known(&self.keys.read().unwrap_or_else(|p| p.into_inner())) {
            // Perhaps rotated by another process this very second.
            self.reload_if_changed(true);
        }
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(unauthorized)?;
        if header.alg != key.alg || key.retire_at.is_some_and(|t| t <= now_ms()) {
            return Err(unauthorized());
        }
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map(|data| data.claims)
            .map_err(|_| unauthorized())
    }

    /// The keys in use (no secrets).
    pub fn list(&self) -> Vec<KeyInfo> {
        self.reload_if_changed(true);
        let file = read_key_file(&self.path).ok().flatten().unwrap_or_default();
        file.keys
            .iter()
            .enumerate()
            .map(|(i, k)| KeyInfo {
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                created_at: k.created_at,
                retire_at: k.retire_at,
                signing: i == 0,
            })
            .collect()
    }

    /// Rotates: a new signing key goes first; the keys in use keep verifying for `overlap`, and
    /// keys whose overlap has ended are removed. Returns the new key's id.
    pub fn rotate(&self, overlap: Duration) -> Result<String> {
        let now = now_ms();
        let mut file = read_key_file(&self.path)?.unwrap_or_default();
        let until = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
        for k in &mut file.keys {
            k.retire_at = Some(k.retire_at.map_or(until, |t| t.min(until)));
        }
        file.keys.retain(|k| k.retire_at.is_none_or(|t| t > now));
        let fresh = StoredKey::fresh(now);
        let kid = fresh.kid.clone();
        file.keys.insert(0, fresh);
        replace_private(
            &self.path,
            &serde_json::to_vec_pretty(&file).map_err(Error::internal)?,
        )?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = build_keys(&self.path, &file)?;
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) =
            (Instant::now(), mtime(&self.path));
        Ok(kid)
    }
}

/// Writes `bytes` to a temporary file beside `path` (mode 0600) and renames it over `path`, so
/// readers see the old file or the new one, never a half-written one.
fn replace_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", hex(&rand::random::<[u8; 4]>())));
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))
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

#[cfg(test)]
mod tests {
    use linli_sync_core::DeviceId;

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
            sev: 0,
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
    fn rotation_keeps_old_tokens_for_the_overlap_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-keys.json");
        let keys = JwtKeys::load_or_create(&path).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let t1 = keys.issue(&claims(now)).unwrap();
        let kid2 = keys.rotate(Duration::from_secs(3600)).unwrap();
        let t2 = keys.issue(&claims(now)).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&t2).unwrap().kid, Some(kid2));
        assert!(
            keys.verify(&t1).is_ok(),
            "the previous key verifies during the overlap"
        );
        // Another process on the same file (the admin CLI) rotates without overlap: this one
        // sees it at once for unknown kids, and the retired keys stop verifying.
        let cli = JwtKeys::load_or_create(&path).unwrap();
        cli.rotate(Duration::ZERO).unwrap();
        let t3 = cli.issue(&claims(now)).unwrap();
        assert!(keys.verify(&t3).is_ok());
        std::thread::sleep(RELOAD_CHECK_EVERY + Duration::from_millis(50));
        assert!(keys.verify(&t1).is_err());
        assert!(keys.verify(&t2).is_err());
        assert_eq!(keys.list().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
