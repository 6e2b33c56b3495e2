//! Typed configuration: the command line (with environment fallbacks) and the [`Config`] the
//! library is opened with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// `linli-server`: Linli's sync and back-office server.
#[derive(Debug, Parser)]
#[command(name = "linli-server", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The server's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open (and migrate) the data directory and serve HTTP.
    #[command(after_help = OPERATOR_HELP)]
    Serve(ServeArgs),
    /// Add, disable, enable, list users and set passwords.
    #[command(subcommand)]
    User(crate::admin::cli::UserCommand),
    /// Grant a user a place (and everything below it).
    Grant(crate::admin::cli::GrantArgs),
    /// Revoke a user's grant on a place.
    Revoke(crate::admin::cli::GrantArgs),
    /// List and revoke devices.
    #[command(subcommand)]
    Device(crate::admin::cli::DeviceCommand),
    /// List and rotate the token signing keys.
    #[command(subcommand)]
    Keys(crate::admin::cli::KeysCommand),
    /// Add and list places of the place tree.
    #[command(subcommand)]
    Place(crate::admin::cli::PlaceCommand),
    /// Move residents' names and phone numbers out of records stored before records had a
    /// personal part (rebuilds those records' history; see docs/PERSONAL_DATA.md).
    MigratePersonalData(crate::admin::cli::DataDir),
    /// Move a district from its SQLite file to a new, empty PostgreSQL database, and verify it.
    ///
    /// Every log position and grant epoch is kept, so phones sync on from their cursors, with
    /// their logins. Stop every server on the SQLite file first; it is only read.
    MigrateStore {
        /// The SQLite database: `data/linli.db`, `sqlite://data/linli.db` or the data directory.
        #[arg(long, value_name = "SQLITE")]
        from: String,
        /// The empty PostgreSQL database to fill (`postgres://user@host:port/db`).
        #[arg(long, value_name = "POSTGRES_URL")]
        to: String,
    },
}

/// What `linli-server serve --help` tells operators about the endpoints made for them.
pub const OPERATOR_HELP: &str = "\
For operators:
  GET /healthz  liveness: 200 while the database answers a query (open to all).
  GET /readyz   readiness: 200 when the database answers and every migration this binary
                embeds is applied; 503 with a JSON body naming what is wrong (open to all).
  GET /metrics  Prometheus text format (no personal data). Served to requests from loopback
                that no proxy relayed (no X-Forwarded-For, Forwarded or X-Real-IP header),
                and, when --metrics-token is set, to any request with
                `Authorization: Bearer TOKEN`. Others get 403 (no token set) or 401.";

/// Flags of `linli-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "LINLI_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory holding the SQLite database and the token signing keys.
    #[arg(long, env = "LINLI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL database to use instead of the SQLite file (`postgres://user@host:port/db`):
    /// any number of server processes can share it.
    #[arg(long, env = "LINLI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Create the demo district and users (idempotent) and print them at start-up; into a
    /// database without records, also demo records (a bus run, a problem list of 707 cases,
    /// contacts and volunteer activities).
    #[arg(long, env = "LINLI_DEMO")]
    pub demo: bool,
    /// With --demo, whether to seed the demo records too (`--demo-records false` seeds only the
    /// places and users, as the end-to-end tests want).
    #[arg(
        long,
        env = "LINLI_DEMO_RECORDS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub demo_records: bool,
    /// How many hot record documents the sync path keeps in memory.
    #[arg(long, env = "LINLI_DOC_CACHE", default_value_t = 512)]
    pub doc_cache: usize,
    /// Seconds before a request is abandoned.
    #[arg(long, env = "LINLI_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "LINLI_ACCESS_TOKEN_TTL", default_value_t = 900)]
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds (each use issues a new one).
    #[arg(long, env = "LINLI_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// Sustained requests per second allowed per user (token subject); 0 turns limiting off.
    #[arg(long, env = "LINLI_RATE_LIMIT", default_value_t = 20)]
    pub rate_limit: u32,
    /// Requests a user may send in a burst above the sustained rate.
    #[arg(long, env = "LINLI_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,
    /// Login attempts per minute allowed per user name (bursts of twice that); also scales the
    /// per-address (×6) and server-wide (×60) login limits. 0 turns login limits off.
    #[arg(long, env = "LINLI_LOGIN_RATE_LIMIT", default_value_t = 10)]
    pub login_rate_limit: u32,
    /// Take the client address for login limits from `X-Forwarded-For` (only behind a reverse
    /// proxy that sets it; otherwise clients could pick their own address).
    #[arg(long, env = "LINLI_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Seconds in which a phone whose refresh reply was lost may present the same refresh token
    /// again and get the same next one (instead of its login being revoked as copied).
    #[arg(long, env = "LINLI_REFRESH_GRACE", default_value_t = 60)]
    pub refresh_grace_secs: u64,
    /// Serve HTTPS with this certificate chain (PEM); reloaded when the file changes, so a
    /// renewal needs no restart. Needs --tls-key.
    #[arg(long, env = "LINLI_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "LINLI_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds without a request after which a back-office browser session ends.
    #[arg(long, env = "LINLI_WEB_IDLE_SECS", default_value_t = 30 * 60)]
    pub web_idle_secs: u64,
    /// Bearer token that lets a scraper on another machine (or behind a proxy) read GET /metrics;
    /// without it, /metrics answers only requests from loopback. Prefer the environment variable:
    /// other local users can read command lines.
    #[arg(
        long,
        env = "LINLI_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<MetricsToken>,
}

/// The bearer token of `GET /metrics` (`--metrics-token`). Its `Debug` form is redacted, so
/// printing a configuration never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken(String);

impl MetricsToken {
    /// A token; `None` when `token` is empty (an empty environment variable sets none).
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        (!token.is_empty()).then_some(Self(token))
    }

    /// Whether `presented` is this token. Both sides are hashed first, so the comparison's
    /// timing says nothing about the token's bytes.
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes()) == Sha256::digest(presented.as_bytes())
    }
}

impl std::str::FromStr for MetricsToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(redacted)")
    }
}

impl ServeArgs {
    /// The library configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            demo: self.demo,
            demo_records: self.demo && self.demo_records,
            doc_cache: self.doc_cache,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            token_ttl: Duration::from_secs(self.access_token_ttl_secs.max(1)),
            refresh_ttl: Duration::from_secs(self.refresh_token_ttl_secs.max(60)),
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst.max(1),
            login_per_minute: self.login_rate_limit,
            login_burst: self.login_rate_limit.saturating_mul(2).max(1),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            trust_forwarded_for: self.trust_forwarded_for,
            refresh_grace: Duration::from_secs(self.refresh_grace_secs),
            web_idle: Duration::from_secs(self.web_idle_secs.max(1)),
            metrics_token: self
                .metrics_token
                .as_ref()
                .and_then(|t| MetricsToken::new(t.0.clone())),
        }
    }
}

/// How to open a server: everything except where to listen.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of `linli.db` (created if missing).
    pub data_dir: PathBuf,
    /// PostgreSQL instead of `linli.db`, when set.
    pub database_url: Option<String>,
    /// Seed the demo district and users.
    pub demo: bool,
    /// Also seed demo records (only into a database without records; implies `demo`).
    pub demo_records: bool,
    /// Capacity of the hot-document cache (entries, at least 1).
    pub doc_cache: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_ttl: Duration,
    /// Sustained requests per second per user (token subject); 0 turns limiting off.
    pub rate_limit: u32,
    /// Burst above the sustained rate.
    pub rate_burst: u32,
    /// Login attempts per minute per user name (sustained), with a burst of
    /// `login_burst`; 0 turns limiting off.
    pub login_per_minute: u32,
    /// Burst of login attempts per user name.
    pub login_burst: u32,
    /// Certificate chain and key files (PEM) to serve HTTPS with; `None` serves plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Take the client address from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_forwarded_for: bool,
    /// How long a spent refresh token may be presented again by its device (a lost reply).
    pub refresh_grace: Duration,
    /// Idle time after which a back-office browser session ends.
    pub web_idle: Duration,
    /// The bearer token that opens `GET /metrics` to requests from other machines; `None`:
    /// loopback only.
    pub metrics_token: Option<MetricsToken>,
}

impl Config {
    /// Defaults for a data directory: no demo, 512 cached documents, 30 s timeout, 15 min access
    /// tokens, 30 day refresh tokens, 20 requests/s per user with bursts of 200, 10 login
    /// attempts/min per user name with bursts of 20, browser sessions ending after 30 idle
    /// minutes.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            demo: false,
            demo_records: false,
            doc_cache: 512,
            request_timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            rate_limit: 20,
            rate_burst: 200,
            login_per_minute: 10,
            login_burst: 20,
            tls: None,
            trust_forwarded_for: false,
            refresh_grace: Duration::from_secs(60),
            web_idle: Duration::from_secs(30 * 60),
            metrics_token: None,
        }
    }

    /// The same configuration serving HTTPS with these PEM files.
    pub fn with_tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some((cert.into(), key.into()));
        self
    }

    /// The same configuration with `GET /metrics` also open to requests bearing `token`.
    pub fn with_metrics_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = MetricsToken::new(token);
        self
    }

    /// The same configuration with the demo data seeded.
    pub fn with_demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// The same configuration with the demo district, users and records seeded.
    pub fn with_demo_records(mut self) -> Self {
        self.demo = true;
        self.demo_records = true;
        self
    }

    /// Path of the SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("linli.db")
    }

    /// Path of the key file older servers kept the token signing keys in: imported into the
    /// database on the first start with an empty key table, then renamed `jwt-keys.json.imported`.
    pub fn legacy_keys_path(&self) -> PathBuf {
        self.data_dir.join("jwt-keys.json")
    }
}
