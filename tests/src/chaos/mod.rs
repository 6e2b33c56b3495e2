//! The chaos and soak harness behind `linli-chaos` and the bounded `chaos` story: N phones
//! running the real device SDK (each with its own on-device store) against a real `linli-server`
//! process, through one fault proxy per phone, while faults are injected; then every fault is
//! healed, every phone synced until quiet, and the end state checked ([`check`]).
//!
//! A run is a sequence of steps drawn from a seed: local edits (creates, field sets, tallies,
//! notes; phones edit the same shared records while apart), syncs of one to three phones at once,
//! and faults — the server SIGKILLed between requests, during a request (mid-push) or during a new
//! phone's first sync (mid-bootstrap) and restarted on the same data after `PRAGMA
//! integrity_check`; proxy faults ([`proxy`]); phone clocks jumping far into the past or future;
//! phone processes dying between an edit's document save and its outbox row, or between a sync
//! reply and its application, then reopening their store; offline spells. Every step draws the
//! same count of random numbers whatever happened before, so a prefix of a run replays the same
//! decisions (timing still varies: requests race the server and each other), which is what
//! [`shrink`] relies on.
//!
//! The store is chosen with [`StoreKind`]. On SQLite one server process serves the phones; on
//! PostgreSQL several nodes share one database in a private cluster ([`pg`]), each phone's proxy
//! spreads its requests over the nodes, a kill strikes one node (the others keep serving), and
//! the database itself is crashed (`pg_ctl stop -m immediate`) and recovered, with `pg_amcheck`
//! after every recovery ([`ServerSide`]).

pub mod check;
pub mod pg;
pub mod proxy;
pub mod rng;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linli_ffi::chaos::CrashPoint;
use linli_ffi::{ApiError, FieldClient, FieldValue, RecordKind};

use crate::ServerProcess;
use proxy::{FaultCounters, FaultProxy};
use rng::Rng;

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// One SQLite file in the server's data directory.
    Sqlite,
    /// A private PostgreSQL cluster, with several server nodes on it.
    Postgres,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other => Err(format!("unknown store '{other}' (sqlite, postgres)")),
        }
    }
}

/// A fault planted on purpose, to prove the checks catch what it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Pushed changes are answered as accepted but never reach the server (what a server that
    /// acknowledged before committing, then lost the commit, looks like to a phone).
    AckWithoutCommit,
}

impl std::str::FromStr for Plant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ack-without-commit" | "ack-before-commit" => Ok(Self::AckWithoutCommit),
            other => Err(format!("unknown plant '{other}' (ack-without-commit)")),
        }
    }
}

/// Which fault kinds are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// SIGKILL the server (idle, mid-push, mid-bootstrap).
    pub kill: bool,
    /// Crash the database and recover it (PostgreSQL; idle and mid-request).
    pub database: bool,
    /// Proxy faults: drop, delay, duplicate, reorder, cut request, cut reply.
    pub proxy: bool,
    /// Phone clocks jumping far into the past or future.
    pub clock: bool,
    /// Phone processes dying at crash points, and reopening their store.
    pub phone_crash: bool,
    /// Phones going offline for a while.
    pub offline: bool,
}

impl Faults {
    /// Every fault kind.
    pub const ALL: Faults = Faults {
        kill: true,
        database: true,
        proxy: true,
        clock: true,
        phone_crash: true,
        offline: true,
    };
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The seed every decision is drawn from.
    pub seed: u64,
    /// Phones at the start.
    pub phones: usize,
    /// Most phones (new phones join during the run, up to this many).
    pub max_phones: usize,
    /// Most steps.
    pub steps: usize,
    /// Stop drawing steps after this long (the soak), whichever comes first.
    pub duration: Option<Duration>,
    /// Fault kinds that are on.
    pub faults: Faults,
    /// Chance of a proxy fault per request, when proxy faults are on.
    pub fault_rate: f64,
    /// The server's store.
    pub store: StoreKind,
    /// Server nodes on PostgreSQL (SQLite runs one).
    pub nodes: usize,
    /// A planted fault, and the chance per push that it strikes.
    pub plant: Option<(Plant, f64)>,
    /// The server's access-token lifetime, seconds (short, so refreshes happen under faults).
    pub token_ttl_secs: u64,
    /// Print every event as it happens.
    pub verbose: bool,
}

impl Config {
    /// A run of `steps` steps with every fault on.
    pub fn bounded(seed: u64, steps: usize) -> Self {
        Self {
            seed,
            phones: 5,
            max_phones: 7,
            steps,
            duration: None,
            faults: Faults::ALL,
            fault_rate: 0.25,
            store: StoreKind::Sqlite,
            nodes: 2,
            plant: None,
            token_ttl_secs: 20,
            verbose: false,
        }
    }
}

/// Figures of a run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Steps run.
    pub steps: usize,
    /// Phones that took part (joined ones included).
    pub phones: usize,
    /// Edits the SDK reported saved (creates included).
    pub edits_saved: u64,
    /// Records created.
    pub creates: u64,
    /// Edits the SDK refused at once (role rules, unknown record on that phone).
    pub edits_refused_locally: u64,
    /// Sync calls made, and those that failed (by error code).
    pub syncs: u64,
    /// Failed syncs and logins by error code.
    pub errors: BTreeMap<String, u64>,
    /// Server kills between requests.
    pub kills_idle: u64,
    /// Server kills during a request (a phone's push or pull).
    pub kills_mid_request: u64,
    /// Of those, during a new phone's first sync.
    pub kills_mid_bootstrap: u64,
    /// Server restarts (each after `PRAGMA integrity_check` on SQLite).
    pub restarts: u64,
    /// Database crashes between requests (PostgreSQL).
    pub db_crashes_idle: u64,
    /// Database crashes during a request.
    pub db_crashes_mid_request: u64,
    /// Database recoveries (each followed by `pg_amcheck`).
    pub db_recoveries: u64,
    /// Server nodes.
    pub nodes: usize,
    /// Phone clock jumps.
    pub clock_jumps: u64,
    /// Phone processes killed at a crash point (and reopened).
    pub phone_crashes: u64,
    /// Phones reopened on their store without a crash.
    pub phone_restarts: u64,
    /// Offline spells.
    pub offline_spells: u64,
    /// Logins after the server refused the stored login (a refresh lost on the way).
    pub relogins: u64,
    /// Proxy faults injected, by kind.
    pub faults: Vec<(&'static str, u64)>,
    /// Changes checked at the end: every saved edit's changes plus every acknowledgement a phone
    /// holds.
    pub changes_checked: u64,
    /// Of the saved edits' changes, those the server refused (kept with a reason, then discarded).
    pub refused_with_reason: u64,
    /// Changes in the server's log.
    pub server_log: u64,
    /// Records on the server.
    pub records: u64,
    /// Acknowledged or saved changes missing from the server's log.
    pub losses: u64,
    /// Changes in the server's log more than once.
    pub duplicates: u64,
    /// (phone, record) pairs whose merged values differ from the server's.
    pub divergent_records: u64,
    /// Peak resident memory of any server process, KiB (`VmHWM`).
    pub peak_server_rss_kib: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "steps               {}", self.steps)?;
        writeln!(f, "phones              {}", self.phones)?;
        writeln!(f, "server nodes        {}", self.nodes)?;
        writeln!(
            f,
            "edits saved         {} ({} creates; {} refused at once by the SDK)",
            self.edits_saved, self.creates, self.edits_refused_locally
        )?;
        writeln!(f, "syncs               {}", self.syncs)?;
        writeln!(
            f,
            "server kills        {} idle, {} mid-request (of them {} mid-bootstrap); {} restarts",
            self.kills_idle, self.kills_mid_request, self.kills_mid_bootstrap, self.restarts
        )?;
        if self.db_recoveries > 0 || self.db_crashes_idle > 0 {
            writeln!(
                f,
                "database crashes    {} idle, {} mid-request; {} recoveries (pg_amcheck after each)",
                self.db_crashes_idle, self.db_crashes_mid_request, self.db_recoveries
            )?;
        }
        writeln!(
            f,
            "phone faults        {} crashes, {} restarts, {} clock jumps, {} offline spells, {} re-logins",
            self.phone_crashes,
            self.phone_restarts,
            self.clock_jumps,
            self.offline_spells,
            self.relogins
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "proxy faults        {}", faults.join(", "))?;
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "failed calls        {}", errors.join(", "))?;
        writeln!(
            f,
            "changes checked     {} ({} refused with a reason); server log {}, records {}",
            self.changes_checked, self.refused_with_reason, self.server_log, self.records
        )?;
        writeln!(f, "losses              {}", self.losses)?;
        writeln!(f, "duplicates          {}", self.duplicates)?;
        writeln!(f, "divergent records   {}", self.divergent_records)?;
        writeln!(
            f,
            "peak server RSS     {:.1} MiB",
            self.peak_server_rss_kib as f64 / 1024.0
        )?;
        write!(f, "elapsed             {:.1} s", self.elapsed.as_secs_f64())
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Figures.
    pub figures: Figures,
    /// What the end check found wrong (empty: the run passed).
    pub problems: Vec<String>,
    /// Every event, in order.
    pub history: Vec<String>,
}

impl Outcome {
    /// Whether the run passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The seed, the problems and the last `lines` events of the history.
    pub fn failure_report(&self, lines: usize) -> String {
        let mut s = format!(
            "chaos run FAILED (seed {}, {} steps; replay with --seed {} --steps {})\n",
            self.seed, self.figures.steps, self.seed, self.figures.steps
        );
        for p in self.problems.iter().take(40) {
            s.push_str(&format!("  problem: {p}\n"));
        }
        if self.problems.len() > 40 {
            s.push_str(&format!("  … {} more problems\n", self.problems.len() - 40));
        }
        let skip = self.history.len().saturating_sub(lines);
        s.push_str(&format!(
            "history (last {} of {} events):\n",
            self.history.len() - skip,
            self.history.len()
        ));
        for h in &self.history[skip..] {
            s.push_str("  ");
            s.push_str(h);
            s.push('\n');
        }
        s
    }
}

/// A demo user a phone signs in as: name, whether the role reads residents' personal data, the
/// granted place, the kinds it records.
struct User {
    name: &'static str,
    personal: bool,
    grant: &'static str,
    kinds: &'static [RecordKind],
}

const USERS: [User; 4] = [
    User {
        name: "bus1",
        personal: false,
        grant: "hz/baiyang/haitian",
        kinds: &[RecordKind::Bus, RecordKind::Case, RecordKind::Bus],
    },
    User {
        name: "steward1",
        personal: false,
        grant: "hz/baiyang/haitian/haitiancheng/b3",
        kinds: &[RecordKind::Case, RecordKind::Contact, RecordKind::Volunteer],
    },
    User {
        name: "office1",
        personal: true,
        grant: "hz/baiyang",
        kinds: &[RecordKind::Case, RecordKind::Volunteer, RecordKind::Bus],
    },
    User {
        name: "bus2",
        personal: false,
        grant: "hz/baiyang/haitian",
        kinds: &[RecordKind::Bus, RecordKind::Case, RecordKind::Volunteer],
    },
];

/// Where records are created: the first is within every user's grants (the shared building).
const PLACES: [&str; 4] = [
    "hz/baiyang/haitian/haitiancheng/b3",
    "hz/baiyang/haitian/haitiancheng/b3",
    "hz/baiyang/haitian/tianyuan/b1",
    "hz/baiyang/dabei/wenhuiyuan/b1",
];

fn within(place: &str, grant: &str) -> bool {
    place == grant || place.starts_with(&format!("{grant}/"))
}

fn tally_fields(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Bus => &["consultations", "answered_on_site", "leaflets"],
        RecordKind::Volunteer => &["residents_served"],
        _ => &[],
    }
}

/// One edit the SDK reported saved.
#[derive(Debug, Clone)]
pub(crate) struct SavedEdit {
    step: usize,
    what: String,
    /// Its changes (a creation with residents' details has two).
    hashes: Vec<[u8; 32]>,
    /// A tally: (record, field, n).
    tally: Option<(String, &'static str, i64)>,
}

/// A phone: the SDK client on its own store, its proxy, and what it reported saved.
pub(crate) struct Phone {
    idx: usize,
    user: &'static User,
    home: tempfile::TempDir,
    client: FieldClient,
    proxy: FaultProxy,
    device_id: String,
    /// Offline until this step (0: online).
    offline_until: usize,
    edits: Vec<SavedEdit>,
}

impl Phone {
    fn db(&self) -> PathBuf {
        self.home.path().join(linli_ffi::DB_FILE)
    }

    fn label(&self) -> String {
        format!("p{}({})", self.idx, self.user.name)
    }

    /// Opens the store again, as the app does after its process died.
    fn reopen(&mut self) -> Result<(), ApiError> {
        let home = self.home.path().to_string_lossy().into_owned();
        self.client = FieldClient::new(home, None, None, None)?;
        Ok(())
    }
}

/// A read-only look into a SQLite file another process (or client) writes.
pub(crate) fn open_ro(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(30))?;
    Ok(c)
}

/// `PRAGMA integrity_check` of a SQLite file: `ok`, or what it found.
pub(crate) fn integrity(path: &Path) -> String {
    let run = || -> rusqlite::Result<String> {
        let c = rusqlite::Connection::open(path)?;
        c.busy_timeout(Duration::from_secs(30))?;
        let rows: Vec<String> = c
            .prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows.join("; "))
    };
    run().unwrap_or_else(|e| format!("could not be checked: {e}"))
}

/// The server side of a run: its node processes, their store and its log. On SQLite one node on
/// one file; on PostgreSQL several nodes on one private cluster's database, which can itself be
/// crashed and restarted.
pub(crate) struct ServerSide {
    nodes: Vec<Node>,
    db: Db,
    /// Base URL of the first node (for the checker's own reads).
    pub url: String,
    peak_rss_kib: Arc<AtomicU64>,
    /// What a proxy's mid-request strike hits: [`STRIKE_NODE`] or [`STRIKE_DATABASE`].
    strike: Arc<AtomicU8>,
}

/// A mid-request strike kills the node serving the request.
const STRIKE_NODE: u8 = 0;
/// A mid-request strike crashes the database.
const STRIKE_DATABASE: u8 = 1;

struct Node {
    process: Arc<Mutex<ServerProcess>>,
    /// Keeps the node's data directory alive.
    _data: tempfile::TempDir,
    addr: String,
}

enum Db {
    /// The one node's SQLite file.
    Sqlite(PathBuf),
    /// The private cluster, and whether it is down (crashed, not yet restarted).
    Postgres(Arc<pg::PgCluster>, Arc<AtomicBool>),
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn kill_process(process: &Mutex<ServerProcess>, peak: &AtomicU64) -> bool {
    let mut p = process.lock().unwrap_or_else(|e| e.into_inner());
    let Some(pid) = p.pid() else {
        return false;
    };
    peak.fetch_max(vm_hwm_kib(pid), Ordering::Relaxed);
    p.kill();
    true
}

fn crash_database(cluster: &pg::PgCluster, down: &AtomicBool) -> bool {
    if down.swap(true, Ordering::SeqCst) {
        return false;
    }
    if let Err(e) = cluster.crash() {
        eprintln!("[chaos] the database did not stop: {e}");
    }
    true
}

impl ServerSide {
    fn start(store: StoreKind, nodes: usize, token_ttl_secs: u64) -> Result<Self, String> {
        let ttl = token_ttl_secs.to_string();
        let env = [
            ("LINLI_RATE_LIMIT", "0"),
            ("LINLI_LOGIN_RATE_LIMIT", "0"),
            ("LINLI_ACCESS_TOKEN_TTL", ttl.as_str()),
            ("RUST_LOG", "error"),
        ];
        let db = match store {
            StoreKind::Sqlite => Db::Sqlite(PathBuf::new()),
            StoreKind::Postgres => Db::Postgres(
                Arc::new(pg::PgCluster::start()?),
                Arc::new(AtomicBool::new(false)),
            ),
        };
        let count = match store {
            // Two processes on one SQLite file are tested elsewhere (`no_skip`); here a kill of
            // one node must leave the district served, which is the PostgreSQL deployment.
            StoreKind::Sqlite => 1,
            StoreKind::Postgres => nodes.max(1),
        };
        let mut list = Vec::new();
        for _ in 0..count {
            let data = tempfile::tempdir().map_err(|e| e.to_string())?;
            if let Db::Postgres(cluster, _) = &db {
                crate::use_database(data.path(), &cluster.url());
            }
            let process = ServerProcess::start_with_env(data.path(), &env);
            list.push(Node {
                addr: process.url.trim_start_matches("http://").to_string(),
                process: Arc::new(Mutex::new(process)),
                _data: data,
            });
        }
        let db = match db {
            Db::Sqlite(_) => Db::Sqlite(list[0]._data.path().join("linli.db")),
            pg => pg,
        };
        Ok(Self {
            url: format!("http://{}", list[0].addr),
            nodes: list,
            db,
            peak_rss_kib: Arc::new(AtomicU64::new(0)),
            strike: Arc::new(AtomicU8::new(STRIKE_NODE)),
        })
    }

    /// The nodes' `host:port`, for the phones' proxies.
    fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(..))
    }

    /// Whether every node and the database are up.
    fn running(&self) -> bool {
        let db_up = match &self.db {
            Db::Sqlite(_) => true,
            Db::Postgres(_, down) => !down.load(Ordering::SeqCst),
        };
        db_up
            && self.nodes.iter().all(|n| {
                n.process
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pid()
                    .is_some()
            })
    }

    /// SIGKILLs node `i`; false if it was already down.
    fn kill(&self, i: usize) -> bool {
        kill_process(&self.nodes[i].process, &self.peak_rss_kib)
    }

    /// SIGKILLs every node and removes the private database cluster, if any.
    fn shut_down(&self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Db::Postgres(cluster, down) = &self.db {
            down.store(true, Ordering::SeqCst);
            cluster.remove();
        }
    }

    /// Crashes the database (PostgreSQL); false if it was down already or there is none.
    fn crash_database(&self) -> bool {
        match &self.db {
            Db::Sqlite(_) => false,
            Db::Postgres(cluster, down) => crash_database(cluster, down),
        }
    }

    /// Makes the proxies' next mid-request strikes hit the database (true) or the node.
    fn strike_database(&self, database: bool) {
        self.strike.store(
            if database {
                STRIKE_DATABASE
            } else {
                STRIKE_NODE
            },
            Ordering::SeqCst,
        );
    }

    /// What proxies call to strike during a request, with the index of the node serving it.
    fn kill_hook(&self) -> proxy::KillHook {
        let nodes: Vec<_> = self.nodes.iter().map(|n| n.process.clone()).collect();
        let peak = self.peak_rss_kib.clone();
        let strike = self.strike.clone();
        let db = match &self.db {
            Db::Postgres(cluster, down) => Some((cluster.clone(), down.clone())),
            Db::Sqlite(_) => None,
        };
        Arc::new(
            move |node: usize| match (&db, strike.load(Ordering::SeqCst)) {
                (Some((cluster, down)), STRIKE_DATABASE) => {
                    crash_database(cluster, down);
                }
                _ => {
                    kill_process(&nodes[node % nodes.len()], &peak);
                }
            },
        )
    }

    /// Brings back what is down: the database first (then `pg_amcheck`), then every stopped
    /// node (on SQLite after `PRAGMA integrity_check` of its file). Returns what was restarted
    /// and each check's verdict.
    fn restart(&self) -> Result<Vec<(String, String)>, String> {
        let mut done = Vec::new();
        if let Db::Postgres(cluster, down) = &self.db
            && down.load(Ordering::SeqCst)
        {
            let took = cluster
                .start_server()
                .map_err(|e| format!("the database did not come back after a crash: {e}"))?;
            down.store(false, Ordering::SeqCst);
            done.push((
                format!("database (recovered in {:.1} s)", took.as_secs_f64()),
                cluster.amcheck(),
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let mut p = node.process.lock().unwrap_or_else(|e| e.into_inner());
            if p.pid().is_some() {
                continue;
            }
            let report = match &self.db {
                Db::Sqlite(file) => integrity(file),
                // Nothing of the district is in a node: its store is the database.
                Db::Postgres(..) => "ok".to_string(),
            };
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.restart()))
                .map_err(|_| format!("node {i} did not come back after a kill"))?;
            done.push((format!("node {i}"), report));
        }
        Ok(done)
    }

    /// How many times each hash is in the server's log.
    fn log_counts(&self) -> Result<HashMap<[u8; 32], u64>, String> {
        match &self.db {
            Db::Sqlite(file) => check::sqlite_log(file).map_err(|e| e.to_string()),
            Db::Postgres(cluster, _) => {
                let out = cluster
                    .psql("SELECT encode(hash, 'hex'), COUNT(*) FROM changes GROUP BY hash")?;
                let mut log = HashMap::new();
                for line in out.lines().filter(|l| !l.is_empty()) {
                    let (h, n) = line.split_once('\t').ok_or("a psql row without a tab")?;
                    let bytes = (0..h.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|e| e.to_string())?;
                    let hash = <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| format!("a hash of {} bytes", bytes.len()))?;
                    log.insert(hash, n.parse().map_err(|e| format!("{e}"))?);
                }
                Ok(log)
            }
        }
    }

    /// Log positions that are missing or given twice (must be none).
    fn position_faults(&self) -> Result<(u64, u64), String> {
        let sql = "SELECT COUNT(*) - COUNT(seq), COUNT(seq) - COUNT(DISTINCT seq) FROM changes";
        let line = match &self.db {
            Db::Sqlite(file) => {
                let c = open_ro(file).map_err(|e| e.to_string())?;
                let (a, b): (i64, i64) = c
                    .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(|e| e.to_string())?;
                format!("{a}\t{b}")
            }
            Db::Postgres(cluster, _) => cluster.psql(sql)?,
        };
        let (a, b) = line.trim().split_once('\t').ok_or("no row")?;
        Ok((
            a.parse().map_err(|e| format!("{e}"))?,
            b.parse().map_err(|e| format!("{e}"))?,
        ))
    }

    /// Every record's id and place.
    fn records(&self) -> Result<Vec<(String, String)>, String> {
        match &self.db {
            Db::Sqlite(file) => check::sqlite_records(file).map_err(|e| e.to_string()),
            Db::Postgres(cluster, _) => Ok(cluster
                .psql("SELECT id, place FROM records ORDER BY id")?
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()),
        }
    }

    /// The store's own consistency check: `ok` or what it found.
    fn integrity(&self) -> String {
        match &self.db {
            Db::Sqlite(file) => integrity(file),
            Db::Postgres(cluster, _) => cluster.amcheck(),
        }
    }

    fn peak_rss(&self) -> u64 {
        for n in &self.nodes {
            if let Some(pid) = n.process.lock().unwrap_or_else(|e| e.into_inner()).pid() {
                self.peak_rss_kib
                    .fetch_max(vm_hwm_kib(pid), Ordering::Relaxed);
            }
        }
        self.peak_rss_kib.load(Ordering::Relaxed)
    }
}

/// A record a phone holds: id and kind.
#[derive(Debug, Clone)]
struct Rec {
    id: String,
    kind: RecordKind,
}

/// The driver's state.
pub(crate) struct World {
    cfg: Config,
    rng: Rng,
    server: ServerSide,
    counters: Arc<FaultCounters>,
    phones: Vec<Phone>,
    history: Vec<String>,
    figures: Figures,
    problems: Vec<String>,
    /// The server stays down until this step.
    down_until: usize,
    step: usize,
    seq: u64,
    started: Instant,
}

fn fv(name: &str, value: impl Into<String>) -> FieldValue {
    FieldValue::new(name, value)
}

impl World {
    fn log(&mut self, event: String) {
        let event = format!("{:>8.3}s {event}", self.started.elapsed().as_secs_f64());
        if self.cfg.verbose {
            eprintln!("[chaos] {event}");
        }
        self.history.push(event);
    }

    fn error(&mut self, what: &str, e: &ApiError) {
        *self
            .figures
            .errors
            .entry(format!("{what}:{}", e.code()))
            .or_default() += 1;
    }

    fn new_phone(&mut self) -> Result<usize, String> {
        let idx = self.phones.len();
        let user = &USERS[idx % USERS.len()];
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let client = FieldClient::new(home.path().to_string_lossy().into_owned(), None, None, None)
            .map_err(|e| e.to_string())?;
        let proxy = FaultProxy::start(
            &self.server.addrs(),
            Rng::stream(self.cfg.seed, idx as u64 + 1),
            self.counters.clone(),
            self.server.kill_hook(),
        )
        .map_err(|e| e.to_string())?;
        let device_id = client.whoami().map_err(|e| e.to_string())?.device_id;
        self.phones.push(Phone {
            idx,
            user,
            home,
            client,
            proxy,
            device_id,
            offline_until: 0,
            edits: Vec::new(),
        });
        self.figures.phones = self.phones.len();
        // Signing in goes through the proxy too; faults on the way are retried.
        for attempt in 0..30 {
            self.ensure_server();
            let p = &self.phones[idx];
            match p.client.login(
                user.name.into(),
                crate::DEMO_PASSWORD.into(),
                Some(p.proxy.url.clone()),
            ) {
                Ok(_) => {
                    self.log(format!(
                        "s{} {} joins (login attempt {attempt})",
                        self.step,
                        self.phones[idx].label()
                    ));
                    return Ok(idx);
                }
                Err(e) => {
                    self.error("login", &e);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Err(format!("phone {idx} could not sign in"))
    }

    /// Whether database crashes are on and there is a database to crash.
    fn db_faults(&self) -> bool {
        self.cfg.faults.database && self.server.is_postgres()
    }

    /// Restarts what is down (the database, server nodes) when its downtime is over.
    fn ensure_server(&mut self) {
        if self.server.running() {
            return;
        }
        match self.server.restart() {
            Ok(done) => {
                for (what, report) in done {
                    if what.starts_with("database") {
                        self.figures.db_recoveries += 1;
                    } else {
                        self.figures.restarts += 1;
                    }
                    if report != "ok" {
                        self.problems.push(format!(
                            "step {}: the store's check after {what} came back: {report}",
                            self.step
                        ));
                    }
                    self.log(format!(
                        "s{} {what} restarted (store check: {report})",
                        self.step
                    ));
                }
            }
            Err(e) => self.problems.push(e),
        }
    }

    /// An edit on phone `p`: runs it, and if the SDK reports it saved, notes its changes (the
    /// outbox rows it added).
    fn edit(
        &mut self,
        p: usize,
        what: String,
        tally: Option<(String, &'static str, i64)>,
        f: impl FnOnce(&FieldClient) -> Result<Option<String>, ApiError>,
    ) -> Option<String> {
        let phone = &self.phones[p];
        let before = outbox_seq(&phone.db());
        let result = f(&phone.client);
        let label = phone.label();
        match result {
            Ok(created) => {
                let hashes = outbox_hashes_after(&self.phones[p].db(), before);
                let event = format!(
                    "s{} {label} {what} → saved [{}]",
                    self.step,
                    hashes
                        .iter()
                        .map(|h| crate::chaos::hex8(h))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                if hashes.is_empty() {
                    self.problems.push(format!(
                        "step {}: {label} {what}: reported saved but queued no change",
                        self.step
                    ));
                }
                self.figures.edits_saved += 1;
                self.phones[p].edits.push(SavedEdit {
                    step: self.step,
                    what,
                    hashes,
                    tally,
                });
                self.log(event);
                created
            }
            Err(e) => {
                self.figures.edits_refused_locally += 1;
                self.log(format!("s{} {label} {what} → not saved: {e}", self.step));
                None
            }
        }
    }

    /// Syncs phone `p` (a failed call is retried by the next sync, as an app would).
    fn sync_one(phone: &Phone) -> Result<linli_ffi::SyncReport, ApiError> {
        phone.client.sync()
    }

    /// Syncs several phones at once.
    fn sync_phones(&mut self, which: &[usize]) {
        let results: Vec<(usize, Result<linli_ffi::SyncReport, ApiError>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = which
                    .iter()
                    .map(|&i| {
                        let phone = &self.phones[i];
                        s.spawn(move || (i, Self::sync_one(phone)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a sync thread"))
                    .collect()
            });
        for (i, r) in results {
            self.figures.syncs += 1;
            let label = self.phones[i].label();
            match r {
                Ok(rep) => self.log(format!(
                    "s{} {label} sync: pushed {} accepted {} pulled {} refused {}{}",
                    self.step,
                    rep.pushed,
                    rep.accepted,
                    rep.pulled,
                    rep.rejected.len(),
                    if rep.more_pending { " (more)" } else { "" }
                )),
                Err(e) => {
                    self.error("sync", &e);
                    self.log(format!("s{} {label} sync failed: {e}", self.step));
                    if matches!(e, ApiError::Unauthorized { .. }) {
                        self.relogin(i);
                    }
                }
            }
        }
    }

    /// Signs in again after the server refused the stored login (as the user would be asked to).
    fn relogin(&mut self, i: usize) {
        let p = &self.phones[i];
        match p.client.login(
            p.user.name.into(),
            crate::DEMO_PASSWORD.into(),
            Some(p.proxy.url.clone()),
        ) {
            Ok(_) => {
                self.figures.relogins += 1;
                self.log(format!("s{} {} signed in again", self.step, p.label()));
            }
            Err(e) => self.error("login", &e),
        }
    }

    fn reopen(&mut self, p: usize, crashed: bool) {
        let label = self.phones[p].label();
        match self.phones[p].reopen() {
            Ok(()) => {
                let report = integrity(&self.phones[p].db());
                if report != "ok" {
                    self.problems.push(format!(
                        "step {}: {label}'s store after a crash: integrity_check {report}",
                        self.step
                    ));
                }
                self.log(format!(
                    "s{} {label} process {} and reopened (integrity_check: {report})",
                    self.step,
                    if crashed { "died" } else { "restarted" }
                ));
            }
            Err(e) => self.problems.push(format!(
                "step {}: {label}'s store does not open after a crash: {e}",
                self.step
            )),
        }
    }

    /// A random edit on phone `p`, from the step's draws.
    fn random_edit(&mut self, p: usize, d: &[u64; 8]) {
        let user = self.phones[p].user;
        let action = d[1] % 100;
        // Records this phone holds (and may edit): phones edit the same shared records while
        // apart. Which ones it holds depends on earlier syncs, so replays may pick others.
        let visible: Vec<Rec> = self.phones[p]
            .client
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                Some(Rec {
                    kind: r.kind?,
                    id: r.id,
                })
            })
            .filter(|r| user.kinds.contains(&r.kind) || r.kind != RecordKind::Bus)
            .collect();
        self.seq += 1;
        let n = self.seq;
        if action < 20 || visible.is_empty() {
            let kind = user.kinds[(d[2] % user.kinds.len() as u64) as usize];
            let mut place = PLACES[(d[3] % PLACES.len() as u64) as usize];
            if !within(place, user.grant) {
                place = PLACES[0];
            }
            let mut fields = match kind {
                RecordKind::Case => vec![
                    fv("summary", format!("诉求{n}")),
                    fv(
                        "category",
                        ["noise", "parking", "facilities", "rental_housing"][(d[4] % 4) as usize],
                    ),
                ],
                RecordKind::Bus => vec![fv("run_number", format!("18{:02}", n % 100))],
                RecordKind::Contact => vec![fv("household", format!("3-{n}"))],
                RecordKind::Volunteer => vec![fv("activity", format!("义诊{n}"))],
            };
            if user.personal && kind == RecordKind::Case && d[5].is_multiple_of(2) {
                fields.push(fv("resident_name", format!("王{n}")));
                fields.push(fv("resident_phone", format!("138{:08}", n % 100_000_000)));
            }
            let what = format!("create {kind} at {place}");
            if self
                .edit(p, what, None, |c| {
                    c.create(kind, place.into(), fields).map(Some)
                })
                .is_some()
            {
                self.figures.creates += 1;
            }
            return;
        }
        let rec = visible[(d[2] % visible.len() as u64) as usize].clone();
        let short = &rec.id[..8];
        if action < 50 {
            let fields: Vec<FieldValue> = match rec.kind {
                RecordKind::Case => match d[4] % 6 {
                    0 => vec![fv("summary", format!("诉求{n}（更新）"))],
                    1 => vec![fv("room", format!("{}", 100 + n % 900))],
                    2 => vec![fv(
                        "status",
                        ["assigned", "in_progress", "resolved"][(d[5] % 3) as usize],
                    )],
                    3 if user.personal => vec![fv("resident_phone", format!("139{:08}", n))],
                    3 => vec![fv("details", format!("详情{n}"))],
                    4 => vec![fv("satisfaction", "satisfied")],
                    _ => vec![fv("details", format!("现场核实{n}"))],
                },
                RecordKind::Bus => match d[4] % 3 {
                    0 => vec![fv("leader", format!("车长{n}"))],
                    1 => vec![fv("estate", format!("海天城{n}"))],
                    _ => vec![fv("summary", format!("记录{n}"))],
                },
                RecordKind::Contact => match d[4] % 2 {
                    0 => vec![fv("needs", format!("诉求{n}"))],
                    _ => vec![fv("topics", format!("垃圾分类,停车{n}"))],
                },
                RecordKind::Volunteer => match d[4] % 2 {
                    0 => vec![fv("venue", format!("活动室{n}"))],
                    _ => vec![fv("hours", format!("{}", 1 + n % 8))],
                },
            };
            let what = format!(
                "set {short} {}",
                fields
                    .iter()
                    .map(|f| format!("{}={}", f.name, f.value))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            self.edit(p, what, None, |c| {
                c.set(rec.id.clone(), fields).map(|()| None)
            });
        } else if action < 80 && !tally_fields(rec.kind).is_empty() {
            let fields = tally_fields(rec.kind);
            let field = fields[(d[4] % fields.len() as u64) as usize];
            let by = if d[5].is_multiple_of(10) {
                -1
            } else {
                1 + (d[5] % 20) as i64
            };
            let what = format!("tally {short} {field} {by:+}");
            self.edit(p, what, Some((rec.id.clone(), field, by)), |c| {
                c.tally(rec.id.clone(), field.into(), by).map(|()| None)
            });
        } else {
            let text = format!("p{}-记{n}", self.phones[p].idx);
            let what = format!("note {short} {text}");
            self.edit(p, what, None, |c| {
                c.note(rec.id.clone(), text).map(|()| None)
            });
        }
    }

    /// One step.
    fn step(&mut self) {
        let mut d = [0u64; 8];
        for x in &mut d {
            *x = self.rng.next_u64();
        }
        if self.step >= self.down_until {
            self.ensure_server();
        }
        for i in 0..self.phones.len() {
            let until = self.phones[i].offline_until;
            if until != 0 && self.step >= until {
                self.phones[i].offline_until = 0;
                self.phones[i].proxy.set_offline(false);
                let label = self.phones[i].label();
                self.log(format!("s{} {label} is back online", self.step));
            }
        }
        let faults = self.cfg.faults;
        let p = (d[6] % self.phones.len() as u64) as usize;
        let a = d[0] % 1000;
        match a {
            0..600 => self.random_edit(p, &d),
            800..830 if faults.offline && self.phones[p].offline_until == 0 => {
                let until = self.step + 5 + (d[5] % 60) as usize;
                let phone = &mut self.phones[p];
                phone.offline_until = until;
                phone.proxy.set_offline(true);
                let label = phone.label();
                self.figures.offline_spells += 1;
                self.log(format!(
                    "s{} {label} goes offline until s{until}",
                    self.step
                ));
            }
            830..850 if faults.clock => {
                // A year either way at most; a third of jumps put the clock right again.
                let skew = match d[5] % 3 {
                    0 => 0,
                    1 => (1 + (d[4] % 365) as i64) * 86_400_000,
                    _ => -(1 + (d[4] % 365) as i64) * 86_400_000,
                };
                self.phones[p].client.chaos_set_clock_skew(skew);
                self.figures.clock_jumps += 1;
                let label = self.phones[p].label();
                self.log(format!(
                    "s{} {label} clock jumps to {:+} days",
                    self.step,
                    skew / 86_400_000
                ));
            }
            850..870 if faults.kill || self.db_faults() => {
                // On PostgreSQL a quarter of the strikes crash the database instead of a node.
                if self.db_faults() && (!faults.kill || d[4].is_multiple_of(4)) {
                    if self.server.crash_database() {
                        self.figures.db_crashes_idle += 1;
                        self.down_until = self.step + (d[5] % 4) as usize;
                        self.log(format!(
                            "s{} database crashed (down until s{})",
                            self.step, self.down_until
                        ));
                    }
                } else {
                    let node = (d[4] % self.server.node_count() as u64) as usize;
                    if self.server.kill(node) {
                        self.figures.kills_idle += 1;
                        self.down_until = self.step + (d[5] % 4) as usize;
                        self.log(format!(
                            "s{} server node {node} SIGKILLed (down until s{})",
                            self.step, self.down_until
                        ));
                    }
                }
            }
            870..890 if faults.kill || self.db_faults() => {
                self.ensure_server();
                let database = self.db_faults() && (!faults.kill || d[4].is_multiple_of(4));
                self.server.strike_database(database);
                self.phones[p].proxy.kill_on_next_request(Some(25));
                let label = self.phones[p].label();
                self.log(format!(
                    "s{} {} to be {} during {label}'s next request",
                    self.step,
                    if database { "database" } else { "server node" },
                    if database { "crashed" } else { "SIGKILLed" }
                ));
                let before = self.counters.0[6].load(Ordering::Relaxed);
                self.sync_phones(&[p]);
                self.phones[p].proxy.kill_on_next_request(None);
                if database && self.counters.0[6].load(Ordering::Relaxed) > before {
                    self.figures.db_crashes_mid_request += 1;
                }
                self.server.strike_database(false);
                self.down_until = self.step + 1;
            }
            890..910 if faults.phone_crash => {
                self.phones[p]
                    .client
                    .chaos_arm_crash(Some(CrashPoint::EditBeforeOutbox));
                let label = self.phones[p].label();
                self.log(format!(
                    "s{} {label} will die between an edit's document save and its outbox row",
                    self.step
                ));
                self.random_edit(p, &d);
                self.phones[p].client.chaos_arm_crash(None);
                self.figures.phone_crashes += 1;
                self.reopen(p, true);
            }
            910..925 if faults.phone_crash => {
                self.phones[p]
                    .client
                    .chaos_arm_crash(Some(CrashPoint::SyncBeforeApply));
                let label = self.phones[p].label();
                self.log(format!(
                    "s{} {label} will die between a sync reply and applying it",
                    self.step
                ));
                self.sync_phones(&[p]);
                self.phones[p].client.chaos_arm_crash(None);
                self.figures.phone_crashes += 1;
                self.reopen(p, true);
            }
            925..935 if faults.phone_crash => {
                self.figures.phone_restarts += 1;
                self.reopen(p, false);
            }
            935..945 if self.phones.len() < self.cfg.max_phones => {
                self.ensure_server();
                match self.new_phone() {
                    Ok(i) => {
                        let kills_before = self.counters.0[6].load(Ordering::Relaxed);
                        if faults.kill && d[5].is_multiple_of(2) {
                            self.phones[i].proxy.kill_on_next_request(Some(3));
                            let label = self.phones[i].label();
                            self.log(format!(
                                "s{} server to be SIGKILLed during {label}'s first sync",
                                self.step
                            ));
                        }
                        self.apply_proxy_faults(i);
                        self.sync_phones(&[i]);
                        self.phones[i].proxy.kill_on_next_request(None);
                        if self.counters.0[6].load(Ordering::Relaxed) > kills_before {
                            self.figures.kills_mid_bootstrap += 1;
                        }
                        self.down_until = self.step + 1;
                    }
                    Err(e) => self.problems.push(e),
                }
            }
            945..1000 => {
                let all: Vec<usize> = (0..self.phones.len()).collect();
                self.sync_phones(&all);
            }
            _ => {
                let k = 1 + (d[7] % 3) as usize;
                let mut which: Vec<usize> = (0..k)
                    .map(|j| ((d[7] >> 8) as usize + j * 7 + p) % self.phones.len())
                    .collect();
                which.sort_unstable();
                which.dedup();
                self.sync_phones(&which);
            }
        }
    }

    fn apply_proxy_faults(&self, i: usize) {
        let proxy = &self.phones[i].proxy;
        if self.cfg.faults.proxy {
            proxy.set_fault_rate(self.cfg.fault_rate);
        }
        if let Some((_, rate)) = self.cfg.plant {
            proxy.set_plant_rate(rate);
        }
    }
}

/// The first 8 hex digits of a hash.
pub(crate) fn hex8(h: &[u8]) -> String {
    h.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The phone's last outbox id ever used (ids only grow).
fn outbox_seq(db: &Path) -> i64 {
    open_ro(db)
        .and_then(|c| {
            c.query_row(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

/// The hashes of outbox rows added after id `after`.
fn outbox_hashes_after(db: &Path, after: i64) -> Vec<[u8; 32]> {
    let run = || -> rusqlite::Result<Vec<[u8; 32]>> {
        let c = open_ro(db)?;
        let mut stmt = c.prepare("SELECT hash FROM outbox WHERE id > ?1 ORDER BY id")?;
        let rows = stmt.query_map([after], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for r in rows {
            if let Ok(h) = <[u8; 32]>::try_from(r?.as_slice()) {
                out.push(h);
            }
        }
        Ok(out)
    };
    run().unwrap_or_default()
}

/// Runs the harness once.
pub fn run(cfg: &Config) -> Outcome {
    let started = Instant::now();
    let server = match ServerSide::start(cfg.store, cfg.nodes, cfg.token_ttl_secs) {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                seed: cfg.seed,
                figures: Figures::default(),
                problems: vec![format!("the server side could not start: {e}")],
                history: Vec::new(),
            };
        }
    };
    let mut world = World {
        cfg: cfg.clone(),
        rng: Rng::new(cfg.seed),
        server,
        counters: Arc::new(FaultCounters::default()),
        phones: Vec::new(),
        history: Vec::new(),
        figures: Figures::default(),
        problems: Vec::new(),
        down_until: 0,
        step: 0,
        seq: 0,
        started,
    };
    world.log(format!(
        "seed {} store {:?} nodes {}",
        cfg.seed,
        cfg.store,
        world.server.addrs().join(" ")
    ));
    world.figures.nodes = world.server.node_count();
    for _ in 0..cfg.phones.max(1) {
        if let Err(e) = world.new_phone() {
            world.problems.push(e);
        }
    }
    for i in 0..world.phones.len() {
        world.apply_proxy_faults(i);
    }
    while world.step < cfg.steps
        && cfg.duration.is_none_or(|d| started.elapsed() < d)
        && world.problems.is_empty()
    {
        world.step();
        world.step += 1;
    }
    world.figures.steps = world.step;
    world.log(format!("s{} healing every fault", world.step));
    check::heal_and_check(&mut world);
    world.figures.faults = world.counters.snapshot();
    // The proxies count every mid-request strike; those that crashed the database are apart.
    world.figures.kills_mid_request = world.counters.0[6]
        .load(Ordering::Relaxed)
        .saturating_sub(world.figures.db_crashes_mid_request);
    world.figures.peak_server_rss_kib = world.server.peak_rss();
    world.figures.elapsed = started.elapsed();
    world.server.shut_down();
    Outcome {
        seed: cfg.seed,
        figures: world.figures,
        problems: world.problems,
        history: world.history,
    }
}

/// Finds the shortest prefix of a failing run that still fails, by bisection over the step
/// count (each try is a fresh run of the same seed). Returns that failing outcome, or `None` when
/// no shorter prefix failed.
pub fn shrink(cfg: &Config, failing_steps: usize) -> Option<Outcome> {
    let (mut lo, mut hi) = (0usize, failing_steps);
    let mut best = None;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let mut c = cfg.clone();
        c.steps = mid;
        c.duration = None;
        let out = run(&c);
        eprintln!(
            "[chaos] shrink: {mid} steps → {}",
            if out.ok() { "passes" } else { "fails" }
        );
        if out.ok() {
            lo = mid + 1;
        } else {
            hi = mid;
            best = Some(out);
        }
    }
    best
}
