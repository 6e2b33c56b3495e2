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
    Serve(ServeArgs),
}

/// Flags of `linli-server serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "LINLI_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory holding the SQLite database and the token signing keys.
    #[arg(long, env = "LINLI_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Create the demo district and users (idempotent) and print them at start-up.
    #[arg(long, env = "LINLI_DEMO")]
    pub demo: bool,
    /// How many hot record documents the sync path keeps in memory.
    #[arg(long, env = "LINLI_DOC_CACHE", default_value_t = 512)]
    pub doc_cache: usize,
    /// Seconds before a request is abandoned.
    #[arg(long, env = "LINLI_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,
}

impl ServeArgs {
    /// The library configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            data_dir: self.data_dir.clone(),
            demo: self.demo,
            doc_cache: self.doc_cache,
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            ..Config::new(&self.data_dir)
        }
    }
}

/// How to open a server: everything except where to listen.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of `linli.db` and `jwt-keys.json` (created if missing).
    pub data_dir: PathBuf,
    /// Seed the demo district and users.
    pub demo: bool,
    /// Capacity of the hot-document cache (entries, at least 1).
    pub doc_cache: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Lifetime of access tokens.
    pub token_ttl: Duration,
}

impl Config {
    /// Defaults for a data directory: no demo, 512 cached documents, 30 s timeout, 12 h tokens.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            demo: false,
            doc_cache: 512,
            request_timeout: Duration::from_secs(30),
            token_ttl: Duration::from_secs(12 * 3600),
        }
    }

    /// The same configuration with the demo data seeded.
    pub fn with_demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// Path of the SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("linli.db")
    }

    /// Path of the token signing keys.
    pub fn keys_path(&self) -> PathBuf {
        self.data_dir.join("jwt-keys.json")
    }
}
