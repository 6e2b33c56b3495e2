//! The state every handler shares.

use std::sync::Arc;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::limit::RateLimits;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync::DocCache;
use crate::turns::PushTurns;
use crate::web::live::LiveHub;

/// Shared by all handlers; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Token signing keys.
    pub keys: Arc<JwtKeys>,
    /// The configuration the server was opened with.
    pub config: Arc<Config>,
    /// Per-user rate limits.
    pub limits: Arc<RateLimits>,
    /// The hot-document cache and the per-record locks of the accept path.
    pub(crate) docs: Arc<DocCache>,
    /// Per-user push turns: one push at a time per user.
    pub turns: Arc<PushTurns>,
    /// Committed changes, announced to open back-office pages.
    pub live: Arc<LiveHub>,
    /// This server's Prometheus metrics (its own registry, served by `GET /metrics`).
    pub metrics: Arc<Metrics>,
    /// Devices whose check-in this process stored lately.
    pub(crate) seen: Arc<crate::sync::SeenDevices>,
}

/// Devices whose check-ins a process remembers (a district's phones, with room to spare).
const SEEN_DEVICES: usize = 20_000;

impl AppState {
    /// Assembles the state from its parts.
    pub fn new(store: Store, keys: JwtKeys, config: Config) -> Self {
        let metrics = Arc::new(Metrics::new());
        let (hits, misses) = metrics.doc_cache_counters();
        let docs = Arc::new(DocCache::new(config.doc_cache).counting(hits, misses));
        Self {
            store,
            keys: Arc::new(keys),
            limits: Arc::new(RateLimits::new(&config)),
            config: Arc::new(config),
            docs,
            turns: Arc::new(PushTurns::default()),
            live: Arc::new(LiveHub::default()),
            metrics,
            seen: Arc::new(crate::sync::SeenDevices::new(SEEN_DEVICES)),
        }
    }

    /// The accept path over this server's store.
    pub(crate) fn sync(&self) -> crate::sync::SyncService<'_, Store> {
        crate::sync::SyncService {
            store: &self.store,
            docs: &self.docs,
            live: &self.live,
        }
    }
}
