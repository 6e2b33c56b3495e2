//! TLS termination in the server (`serve --tls-cert FILE --tls-key FILE`): rustls with the ring
//! provider, served through axum-server. The certificate is reloaded when its files change, so
//! a renewal (certbot, an intranet CA's tooling) needs no restart: every handshake asks the
//! resolver, which looks at the files' modification time, size and inode at most once a second
//! and keeps serving the previous certificate if the new files do not load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// How often a handshake may look at the certificate files.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies a version of a file: modification time, length and (on Unix) inode.
type FileStamp = Option<(Option<SystemTime>, u64, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok(), m.len(), ino))
}

/// Loads a certificate chain and its key from PEM files.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::Internal(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("TLS certificate", cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("TLS certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("TLS certificate", cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("TLS key", key, &e))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| bad("TLS key", key, &e))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        bad(
            "TLS key",
            key,
            &format!("does not match the certificate ({e})"),
        )
    })?;
    Ok(Arc::new(certified))
}

struct Loaded {
    checked: Instant,
    stamps: (FileStamp, FileStamp),
    key: Arc<CertifiedKey>,
}

/// The server's certificate, reloaded from its files when they change.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the certificate and key (a clear error at start-up when they do not load).
    pub fn open(cert: &Path, key: &Path) -> Result<Self> {
        let provider = provider();
        let loaded = load(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            loaded: Mutex::new(Loaded {
                checked: Instant::now(),
                stamps: (stamp(cert), stamp(key)),
                key: loaded,
            }),
        })
    }

    /// The certificate to present now, reloaded first if its files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.checked.elapsed() >= RELOAD_CHECK_EVERY {
            loaded.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != loaded.stamps {
                match load(&self.cert, &self.key, &self.provider) {
                    Ok(key) => {
                        loaded.key = key;
                        loaded.stamps = stamps;
                        tracing::info!("TLS certificate reloaded from its files");
                    }
                    // Half-written files during a renewal, or a bad one: keep serving the
                    // previous certificate and look again at the next check.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The rustls configuration for `cert` and `key`, with the certificate reloaded on change.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let resolver = Arc::new(ReloadingCert::open(cert, key)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether serving on `addr` keeps traffic on this machine.
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The start-up warning for plain HTTP on an address other machines can reach.
pub const PLAIN_HTTP_WARNING: &str = "warning: serving plain HTTP on an address other machines can \
reach: passwords, tokens and residents' data would cross the network unencrypted. Give \
--tls-cert and --tls-key, or put a TLS-terminating reverse proxy in front and bind to \
127.0.0.1. 警告：未加密的HTTP服务";
