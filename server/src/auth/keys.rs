//! Access tokens and their signing keys.
//!
//! Access tokens are short-lived JWTs (15 minutes by default). The header carries the signing
//! key's `kid`; each key pins its algorithm (HS256), and validation requires `exp`, `aud`
//! (`linli`), `iss` (`linli-server`) and `sub`, with no leeway. Unknown key ids, other
//! algorithms, `alg: none` and keys past their retirement are refused. Each token also carries
//! the user's session epoch (`sev`): a password reset or a disable bumps it, ending every access
//! token issued before at once.
//!
//! Signing keys live in the database (`signing_keys`), so every server process on it signs and
//! verifies the same ring. Rotation puts a new signing key first and keeps the previous ones
//! verifying for an overlap (by default one access-token lifetime); after it they are retired, and
//! their tokens are refused. Each process keeps the ring in memory as a cache: it reloads it every
//! [`RELOAD_EVERY`], and at once (at most once per [`UNKNOWN_KID_RELOAD_EVERY`], so forged key
//! ids cannot hammer the database) when a token names a key it does not know, so a token signed
//! with a key another process just made verifies here too.
//!
//! Older servers kept the keys in `jwt-keys.json` in the data directory. On the first start with
//! an empty table, its keys are imported (tokens signed before the upgrade stay valid) and the
//! file is renamed `jwt-keys.json.imported`; a key file found beside a filled table is not read,
//! and a warning says so.

use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{hex, now_ms, unhex};
use crate::store::prelude::*;
use crate::store::{SigningKeyRow, Store};

/// The token audience.
pub const AUDIENCE: &str = "linli";
/// The token issuer.
pub const ISSUER: &str = "linli-server";

/// How often the ring is reloaded from the database: another process's rotation starts signing
/// here, and its retirements apply here, within this time.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// The shortest time between two reloads caused by tokens naming an unknown key id.
pub const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(1);

pub(crate) const BAD_TOKEN: &str = "missing, expired or invalid access token";

/// The legacy key file (`jwt-keys.json`).
#[derive(Default, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// A key of the legacy file. No `Debug`: it holds the secret.
#[derive(Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// The secret, hex.
    key: String,
    /// When it was made (ms).
    #[serde(default)]
    created_at: i64,
    /// After this time (ms) it verifies nothing; `None` while it is the signing key.
    #[serde(default)]
    retire_at: Option<i64>,
}

fn fresh_key(now: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: hex(&rand::random::<[u8; 8]>()),
        algorithm: "HS256".into(),
        secret: hex(&rand::random::<[u8; 32]>()),
        created_at: now,
        retire_at: None,
    }
}

struct SigningKey {
    kid: String,
    alg: Algorithm,
    created_at: i64,
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

/// The server's token signing keys: a cache of the database's ring (the first one signs; all
/// verify, looked up by `kid`, until they retire).
pub struct JwtKeys {
    store: Store,
    keys: RwLock<Vec<SigningKey>>,
    /// When the ring was last loaded.
    loaded: Mutex<Instant>,
    /// When a token with an unknown key id last caused a reload.
    unknown_reload: Mutex<Option<Instant>>,
    reload_every: Duration,
    unknown_kid_every: Duration,
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

/// Builds the usable keys of a ring (in its order), leaving out those past their retirement.
fn build_keys(rows: &[SigningKeyRow]) -> Result<Vec<SigningKey>> {
    let now = now_ms();
    let mut keys = Vec::new();
    for k in rows {
        if k.retire_at.is_some_and(|t| t <= now) {
            continue;
        }
        let alg = match k.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            other => {
                return Err(Error::Internal(format!(
                    "signing key {}: unsupported alg {other}",
                    k.kid
                )));
            }
        };
        let secret = unhex(&k.secret).filter(|s| s.len() >= 32).ok_or_else(|| {
            Error::Internal(format!("signing key {}: not a 32-byte hex secret", k.kid))
        })?;
        let mut validation = Validation::new(alg);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 0;
        keys.push(SigningKey {
            kid: k.kid.clone(),
            alg,
            created_at: k.created_at,
            retire_at: k.retire_at,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        });
    }
    if keys.is_empty() {
        return Err(Error::Internal("no usable token signing key".into()));
    }
    Ok(keys)
}

/// Imports the legacy key file into an empty table and renames it `*.imported`.
async fn import_legacy(store: &Store, path: &Path) -> Result<()> {
    let Some(file) = read_key_file(path)? else {
        return Ok(());
    };
    let now = now_ms();
    let rows: Vec<SigningKeyRow> = file
        .keys
        .into_iter()
        .filter(|k| k.retire_at.is_none_or(|t| t > now))
        .map(|k| SigningKeyRow {
            kid: k.kid,
            algorithm: k.alg,
            secret: k.key,
            created_at: k.created_at,
            retire_at: k.retire_at,
        })
        .collect();
    // Refuse a broken file before it reaches the table.
    build_keys(&rows).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
    if store.import_signing_keys(&rows).await? {
        let done = path.with_extension("json.imported");
        match std::fs::rename(path, &done) {
            Ok(()) => tracing::info!(
                keys = rows.len(),
                from = %path.display(),
                to = %done.display(),
                "token signing keys imported into the database; the key file is renamed"
            ),
            // Another process starting at the same time renamed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                error = %e,
                file = %path.display(),
                "token signing keys imported into the database; the key file could not be renamed and is no longer used"
            ),
        }
    } else {
        tracing::warn!(
            file = %path.display(),
            "token signing keys are in the database: this key file is not used (remove it)"
        );
    }
    Ok(())
}

/// Claims a rate-limited slot: true (and now marked) if `every` has passed since the last one.
fn claim(slot: &Mutex<Option<Instant>>, every: Duration) -> bool {
    let mut last = slot.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

impl JwtKeys {
    /// Loads the ring from the database, importing the legacy key file at `legacy_file` into an
    /// empty table first, and making the first key when there is none.
    pub async fn open(store: Store, legacy_file: &Path) -> Result<JwtKeys> {
        Self::open_with(store, legacy_file, RELOAD_EVERY, UNKNOWN_KID_RELOAD_EVERY).await
    }

    /// [`JwtKeys::open`] with other reload intervals (tests).
    pub async fn open_with(
        store: Store,
        legacy_file: &Path,
        reload_every: Duration,
        unknown_kid_every: Duration,
    ) -> Result<JwtKeys> {
        import_legacy(&store, legacy_file).await?;
        let now = now_ms();
        if store.ensure_signing_key(&fresh_key(now)).await? {
            tracing::info!("a first token signing key was made");
        }
        store.retire_signing_keys(now).await?;
        let keys = build_keys(&store.signing_keys().await?)?;
        Ok(JwtKeys {
            store,
            keys: RwLock::new(keys),
            loaded: Mutex::new(Instant::now()),
            unknown_reload: Mutex::new(None),
            reload_every,
            unknown_kid_every,
        })
    }

    /// Reloads the ring from the database. A ring that fails to load keeps the keys in use.
    async fn reload(&self) {
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let loaded = async {
            let rows = self.store.signing_keys().await?;
            let now = now_ms();
            if rows.iter().any(|k| k.retire_at.is_some_and(|t| t <= now)) {
                self.store.retire_signing_keys(now).await?;
            }
            build_keys(&rows)
        }
        .await;
        match loaded {
            Ok(keys) => {
                let mut ring = self.keys.write().unwrap_or_else(|p| p.into_inner());
                let changed = ring.len() != keys.len()
                    || ring
                        .iter()
                        .zip(&keys)
                        .any(|(a, b)| a.kid != b.kid || a.retire_at != b.retire_at);
                *ring = keys;
                if changed {
                    tracing::info!("token signing keys reloaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "token signing keys could not be reloaded"),
        }
    }

    /// Reloads if the last load is older than the reload interval. Only the caller that finds it
    /// due reloads; the others go on with the ring in memory.
    async fn reload_if_due(&self) {
        let due = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if loaded.elapsed() >= self.reload_every {
                *loaded = Instant::now();
                true
            } else {
                false
            }
        };
        if due {
            self.reload().await;
        }
    }

    /// Signs claims with the current key.
    pub async fn issue(&self, claims: &Claims) -> Result<String> {
        self.reload_if_due().await;
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
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let unauthorized = || Error::Unauthorized(BAD_TOKEN.into());
        self.reload_if_due().await;
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized())?;
        let kid = header.kid.ok_or_else(unauthorized)?;
        let known = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            keys.iter().any(|k| k.kid == kid)
        };
        if !known && claim(&self.unknown_reload, self.unknown_kid_every) {
            // Perhaps made by another process this very second.
            self.reload().await;
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

    /// The keys in use (no secrets), the signing key first, as the database has them now.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        self.reload().await;
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        Ok(keys
            .iter()
            .enumerate()
            .map(|(i, k)| KeyInfo {
                kid: k.kid.clone(),
                alg: match k.alg {
                    Algorithm::HS256 => "HS256".into(),
                    other => format!("{other:?}"),
                },
                created_at: k.created_at,
                retire_at: k.retire_at,
                signing: i == 0,
            })
            .collect())
    }

    /// Rotates: a new signing key goes first; the keys in use keep verifying for `overlap`, and
    /// keys whose overlap has ended are retired. Safe with other processes rotating at once (one
    /// transaction each). Returns the new key's id.
    pub async fn rotate(&self, overlap: Duration) -> Result<String> {
        let now = now_ms();
        let fresh = fresh_key(now);
        let overlap_ms = i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX);
        self.store
            .rotate_signing_keys(&fresh, overlap_ms, now)
            .await?;
        self.reload().await;
        Ok(fresh.kid)
    }
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

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open_sqlite(&dir.path().join("linli.db"))
            .await
            .unwrap()
    }

    fn legacy(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("jwt-keys.json")
    }

    #[tokio::test]
    async fn tokens_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let keys = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        assert!(!legacy(&dir).exists(), "no key file is made");
        let now = jsonwebtoken::get_current_timestamp();
        let token = keys.issue(&claims(now)).await.unwrap();
        assert_eq!(keys.verify(&token).await.unwrap().sub, "u1");
        // Reopening the same database verifies the same tokens.
        let again = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        assert!(again.verify(&token).await.is_ok());
        assert_eq!(again.list().await.unwrap().len(), 1);

        // Expired.
        let mut old = claims(now - 7200);
        old.exp = now - 3600;
        assert!(keys.verify(&keys.issue(&old).await.unwrap()).await.is_err());
        // Wrong audience.
        let mut aud = claims(now);
        aud.aud = "other".into();
        assert!(keys.verify(&keys.issue(&aud).await.unwrap()).await.is_err());
        // Another server's key.
        let other_dir = tempfile::tempdir().unwrap();
        let other = JwtKeys::open(store(&other_dir).await, &legacy(&other_dir))
            .await
            .unwrap();
        assert!(
            keys.verify(&other.issue(&claims(now)).await.unwrap())
                .await
                .is_err()
        );
        // alg=none and garbage.
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        assert!(
            keys.verify(&format!("{none_header}.{}.", parts[1]))
                .await
                .is_err()
        );
        assert!(keys.verify("garbage").await.is_err());
        // Neither the ring's Debug nor a key row's shows a secret.
        let row = &keys.store.signing_keys().await.unwrap()[0];
        assert!(!format!("{keys:?}").contains(&row.secret));
        assert!(!format!("{row:?}").contains(&row.secret));
    }

    #[tokio::test]
    async fn rotation_keeps_old_tokens_for_the_overlap_only() {
        let dir = tempfile::tempdir().unwrap();
        // This process reloads often; the other one (say the admin CLI) keeps the defaults.
        let keys = JwtKeys::open_with(
            store(&dir).await,
            &legacy(&dir),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let t1 = keys.issue(&claims(now)).await.unwrap();
        let kid2 = keys.rotate(Duration::from_secs(3600)).await.unwrap();
        let t2 = keys.issue(&claims(now)).await.unwrap();
        assert_eq!(jsonwebtoken::decode_header(&t2).unwrap().kid, Some(kid2));
        assert!(
            keys.verify(&t1).await.is_ok(),
            "the previous key verifies during the overlap"
        );
        // Another process on the same database rotates without overlap: this one verifies its
        // new key's tokens at once (unknown kid), and after its next reload signs with it and
        // refuses the retired keys.
        let cli = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        let kid3 = cli.rotate(Duration::ZERO).await.unwrap();
        let t3 = cli.issue(&claims(now)).await.unwrap();
        assert!(keys.verify(&t3).await.is_ok());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(keys.verify(&t1).await.is_err());
        assert!(keys.verify(&t2).await.is_err());
        let t4 = keys.issue(&claims(now)).await.unwrap();
        assert_eq!(jsonwebtoken::decode_header(&t4).unwrap().kid, Some(kid3));
        assert_eq!(keys.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_kids_reload_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let keys = JwtKeys::open_with(
            store(&dir).await,
            &legacy(&dir),
            RELOAD_EVERY,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        // A forged kid spends the reload...
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("0000000000000000".into());
        let forged =
            jsonwebtoken::encode(&header, &claims(now), &EncodingKey::from_secret(&[7; 32]))
                .unwrap();
        assert!(keys.verify(&forged).await.is_err());
        // ...so a genuine new key of another process is not seen before the next one.
        let other = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        other.rotate(Duration::from_secs(60)).await.unwrap();
        let fresh = other.issue(&claims(now)).await.unwrap();
        assert!(keys.verify(&fresh).await.is_err());
        keys.reload().await;
        assert!(keys.verify(&fresh).await.is_ok());
    }

    #[tokio::test]
    async fn the_legacy_key_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        // As older servers wrote it: the signing key first, a retiring one, a retired one.
        let secret = "5a".repeat(32);
        let file = serde_json::json!({"keys": [
            {"kid": "c0ffee0000000001", "alg": "HS256", "key": secret, "created_at": now - 10},
            {"kid": "c0ffee0000000000", "alg": "HS256", "key": "6b".repeat(32),
             "created_at": now - 20, "retire_at": now + 600_000},
            {"kid": "c0ffee00000000ff", "alg": "HS256", "key": "7c".repeat(32),
             "created_at": now - 30, "retire_at": now - 5},
        ]});
        std::fs::write(legacy(&dir), file.to_string()).unwrap();
        // A token signed before the upgrade.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("c0ffee0000000001".into());
        let secret_bytes = unhex(&secret).unwrap();
        let before = jsonwebtoken::encode(
            &header,
            &claims(jsonwebtoken::get_current_timestamp()),
            &EncodingKey::from_secret(&secret_bytes),
        )
        .unwrap();

        let keys = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        assert!(keys.verify(&before).await.is_ok());
        assert!(!legacy(&dir).exists());
        assert!(dir.path().join("jwt-keys.json.imported").exists());
        let listed = keys.list().await.unwrap();
        let kids: Vec<(&str, bool)> = listed.iter().map(|k| (k.kid.as_str(), k.signing)).collect();
        assert_eq!(
            kids,
            [("c0ffee0000000001", true), ("c0ffee0000000000", false)]
        );
        let issued = keys
            .issue(&claims(jsonwebtoken::get_current_timestamp()))
            .await
            .unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&issued).unwrap().kid.as_deref(),
            Some("c0ffee0000000001"),
            "the imported signing key goes on signing"
        );

        // A key file put back beside the filled table is not read.
        std::fs::write(
            legacy(&dir),
            serde_json::json!({"keys": [{"kid": "bad", "alg": "HS256", "key": "00".repeat(32)}]})
                .to_string(),
        )
        .unwrap();
        let again = JwtKeys::open(store(&dir).await, &legacy(&dir))
            .await
            .unwrap();
        assert!(again.verify(&before).await.is_ok());
        assert_eq!(again.list().await.unwrap().len(), 2);
        assert!(legacy(&dir).exists(), "left in place, with a warning");
    }
}
