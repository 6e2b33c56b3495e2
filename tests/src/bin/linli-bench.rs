//! Sync benchmark: starts the real `linli-server` binary (use `--release`) on a fresh data
//! directory and measures it with simulated phones that speak sync protocol v1 with the core's
//! own documents and codec. Prints the figures as Markdown for `BENCHMARKS.md`.
//!
//! ```sh
//! cargo run --release -p linli-tests --bin linli-bench
//! cargo run --release -p linli-tests --bin linli-bench -- --users 64 --concurrency 64
//! cargo run --release -p linli-tests --bin linli-bench -- --phones 500 --users 50 --every 10
//! ```
//!
//! By default the throughput run is a closed loop: `--concurrency` phones sync back to back, as
//! fast as the server answers, which measures saturation (latency is then mostly queueing).
//! `--every S` makes it an open loop instead: every phone is connected at once and sends its
//! next push every `S` seconds (its first at a random offset), whether or not the server kept
//! up, and a push's latency counts from when it was due: the latency phones see at that load.
//!
//! The server lets each user push one request at a time with at most four more waiting (429
//! beyond that), so concurrent phones need enough users: `--users N` above 2 creates bus users
//! `bench1`…`benchN` (granted the demo community) and spreads the phones over them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::{Cursor, PushChange, SyncRequest, SyncResponse};
use linli_sync_core::{EditContext, RecordDoc, RecordId};
use linli_tests::{
    DEMO_PASSWORD, ServerProcess, admin_cli_bin, bench_case, fresh_postgres_database, login_token,
    post_sync, share_database, use_database, workspace_bin,
};

/// The benchmark measures the sync path, not the per-user rate limiter (its simulated phones
/// share user names).
const NO_RATE_LIMITS: &[(&str, &str)] =
    &[("LINLI_RATE_LIMIT", "0"), ("LINLI_LOGIN_RATE_LIMIT", "0")];

#[derive(Parser)]
#[command(about = "Measures Linli sync against the real server binary")]
struct Args {
    /// Simulated phones in the throughput run.
    #[arg(long, default_value_t = 200)]
    phones: usize,
    /// Records each phone creates.
    #[arg(long, default_value_t = 50)]
    records: usize,
    /// Records per push in the throughput run.
    #[arg(long, default_value_t = 10)]
    per_push: usize,
    /// Concurrent phones syncing at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Size of the large server in the idle-sync comparison.
    #[arg(long, default_value_t = 100_000)]
    large: usize,
    /// Users the throughput run's phones are spread over (phone `i` is user `i % users`): 2 is
    /// the demo's bus1 and bus2; more creates bus users `bench1`… on the server first.
    #[arg(long, default_value_t = 2)]
    users: usize,
    /// The server binary (default: this workspace's, same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Run the servers on a fresh database of the local PostgreSQL (`LINLI_TEST_POSTGRES`)
    /// instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// Server processes sharing the database in the throughput run; phone `i` syncs with node
    /// `i % nodes`.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Open loop: every phone pushes once every this many seconds (all phones at once,
    /// `--concurrency` is ignored), latency counted from when each push was due.
    #[arg(long)]
    every: Option<f64>,
}

/// Starts `bin` on a fresh `dir` with the rate limits off.
fn start_server(bin: &Path, dir: &Path) -> ServerProcess {
    ServerProcess::start_bin(bin, dir, NO_RATE_LIMITS)
}

/// The user names of the throughput run: the demo's two bus users, or `n` bus users made with
/// the admin CLI and granted the demo community.
fn bench_users(bin: &Path, server: &ServerProcess, n: usize) -> Vec<String> {
    if n <= 2 {
        return ["bus1", "bus2"][..n.max(1)]
            .iter()
            .map(|u| u.to_string())
            .collect();
    }
    let started = Instant::now();
    let users: Vec<String> = (1..=n).map(|i| format!("bench{i}")).collect();
    for user in &users {
        admin_cli_bin(
            bin,
            &server.data_dir,
            &["user", "add", user, "--role", "bus"],
            &format!("{DEMO_PASSWORD}\n"),
        );
        admin_cli_bin(
            bin,
            &server.data_dir,
            &["grant", user, "hz/baiyang/haitian"],
            "",
        );
    }
    eprintln!(
        "  made {n} users in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    users
}

/// A phone at the protocol level: a device identity, a token and a cursor.
struct SimPhone {
    url: String,
    user: String,
    token: String,
    actor: ActorId,
    cursor: Cursor,
    agent: ureq::Agent,
}

/// One request's measurements.
struct Exchange {
    reply: SyncResponse,
    sent: usize,
    received: usize,
    elapsed: Duration,
}

impl SimPhone {
    fn login(url: &str, user: &str) -> Self {
        let device = uuid_like();
        Self {
            url: url.to_string(),
            user: user.to_string(),
            token: login_token(url, user, &device),
            actor: ActorId::random(),
            cursor: Cursor::start(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn ctx(&self) -> EditContext {
        EditContext {
            actor: self.actor.clone(),
            user: self.user.clone(),
            now_ms: chrono_now(),
        }
    }

    fn new_case(&self, n: usize) -> (RecordDoc, PushChange) {
        bench_case(&self.ctx(), n)
    }

    fn sync(&mut self, changes: Vec<PushChange>, max_pull: u32) -> Exchange {
        let body = SyncRequest {
            cursor: self.cursor.clone(),
            changes,
            max_pull,
        }
        .encode();
        let started = Instant::now();
        let (status, bytes) = post_sync(&self.agent, &self.url, &self.token, &body);
        let elapsed = started.elapsed();
        assert!(status == 200, "sync answered {status}");
        let reply = SyncResponse::decode(&bytes).expect("reply decodes");
        self.cursor = reply.cursor.clone();
        Exchange {
            sent: body.len(),
            received: bytes.len(),
            elapsed,
            reply,
        }
    }

    /// Pulls until caught up; returns the number of changes and document snapshots pulled (a
    /// server that bootstraps sends a new phone snapshots, not changes).
    fn catch_up(&mut self) -> usize {
        let mut n = 0;
        loop {
            let x = self.sync(vec![], 1000);
            n += x.reply.changes.len() + x.reply.snapshots.len();
            if !x.reply.more {
                return n;
            }
        }
    }
}

fn uuid_like() -> String {
    RecordId::new().to_string()
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Fills a server with `n` records through the sync endpoint, 1000 per push.
fn seed(url: &str, n: usize) {
    let mut phone = SimPhone::login(url, "bus1");
    let mut made = 0;
    while made < n {
        let batch: Vec<PushChange> = (made..(made + 1000).min(n))
            .map(|i| phone.new_case(i).1)
            .collect();
        made += batch.len();
        let x = phone.sync(batch, 1);
        assert!(
            x.reply.rejected.is_empty(),
            "{:?}",
            x.reply.rejected.first()
        );
    }
}

/// Idle-sync cost on a server holding `n` records: median latency and bytes each way.
/// Also returns the server's peak resident memory in KiB, to show it does not grow with records.
fn idle_sync_cost(bin: &Path, n: usize) -> (Duration, usize, usize, Option<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(bin, dir.path());
    let started = Instant::now();
    seed(&server.url, n);
    eprintln!(
        "  seeded {n} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut phone = SimPhone::login(&server.url, "bus2");
    phone.catch_up();
    let mut lat = vec![];
    let (mut sent, mut received) = (0, 0);
    for _ in 0..1000 {
        let x = phone.sync(vec![], 500);
        assert!(x.reply.changes.is_empty());
        lat.push(x.elapsed);
        sent = x.sent;
        received = x.received;
    }
    lat.sort();
    let peak = server.pid().and_then(peak_rss_kib);
    (percentile(&lat, 0.5), sent, received, peak)
}

fn main() {
    let args = Args::parse();
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| workspace_bin("linli-server"));
    println!("## Sync benchmark\n");
    println!(
        "Command: `linli-bench {}` on {} cores; `{}` with {}, phones simulated at the protocol level on loopback.\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        bin.display(),
        if args.postgres {
            "PostgreSQL 15 on the same machine (synchronous_commit on)"
        } else {
            "its SQLite store (WAL, synchronous=FULL) on local disk"
        }
    );

    // 1. Throughput: many phones each pushing their offline records.
    let dir = tempfile::tempdir().expect("tempdir");
    if args.postgres {
        use_database(dir.path(), &fresh_postgres_database());
    }
    let server = start_server(&bin, dir.path());
    // Further nodes on the same database, each with a data directory of its own.
    let more_dirs: Vec<tempfile::TempDir> = (1..args.nodes.max(1))
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let more_nodes: Vec<ServerProcess> = more_dirs
        .iter()
        .map(|d| {
            share_database(dir.path(), d.path());
            start_server(&bin, d.path())
        })
        .collect();
    let urls: Vec<&str> = std::iter::once(server.url.as_str())
        .chain(more_nodes.iter().map(|n| n.url.as_str()))
        .collect();
    let total = args.phones * args.records;
    eprintln!(
        "throughput: {} phones x {} records, {} users",
        args.phones, args.records, args.users
    );
    let users = bench_users(&bin, &server, args.users);
    let mut phones: Vec<SimPhone> = (0..args.phones)
        .map(|i| SimPhone::login(urls[i % urls.len()], &users[i % users.len()]))
        .collect();
    // Each phone captures its records offline first; the sync itself is what is timed.
    let mut plan: Vec<Vec<Vec<PushChange>>> = vec![];
    let mut sample_json = 0usize;
    let mut sample_change = 0usize;
    for (p, phone) in phones.iter().enumerate() {
        let mut pushes = vec![];
        let mut batch = vec![];
        for r in 0..args.records {
            let (doc, push) = phone.new_case(p * args.records + r);
            if p == 0 && r == 0 {
                sample_json = serde_json::to_vec(&doc.record().expect("record").to_json())
                    .expect("json")
                    .len();
                sample_change = push.change.len();
            }
            batch.push(push);
            if batch.len() == args.per_push {
                pushes.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            pushes.push(batch);
        }
        plan.push(pushes);
    }
    let latencies = Mutex::new(Vec::with_capacity(total / args.per_push + 1));
    // The open loop's latencies again, split: each phone's first sync (its bootstrap rides
    // along) and the ones after it.
    let first_later = Mutex::new((Vec::new(), Vec::new()));
    let bytes_up = AtomicUsize::new(0);
    let bytes_down = AtomicUsize::new(0);
    let pulled = AtomicUsize::new(0);
    let snapshots = AtomicUsize::new(0);
    let work: Vec<Mutex<(SimPhone, Vec<Vec<PushChange>>)>> =
        phones.drain(..).zip(plan).map(Mutex::new).collect();
    let started = Instant::now();
    if let Some(every) = args.every {
        let every = Duration::from_secs_f64(every);
        std::thread::scope(|s| {
            for (i, slot) in work.iter().enumerate() {
                let (latencies, first_later, bytes_up, bytes_down, pulled, snapshots) = (
                    &latencies,
                    &first_later,
                    &bytes_up,
                    &bytes_down,
                    &pulled,
                    &snapshots,
                );
                s.spawn(move || {
                    let mut guard = slot.lock().expect("phone");
                    let (phone, pushes) = &mut *guard;
                    // Spread the first pushes over one period, the same way every run.
                    let offset = every.mul_f64((i as f64 * 0.618_034).fract());
                    let mut due = started + offset;
                    for (n, batch) in std::mem::take(pushes).into_iter().enumerate() {
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let x = phone.sync(batch, 100);
                        assert!(x.reply.rejected.is_empty());
                        bytes_up.fetch_add(x.sent, Ordering::Relaxed);
                        bytes_down.fetch_add(x.received, Ordering::Relaxed);
                        pulled.fetch_add(x.reply.changes.len(), Ordering::Relaxed);
                        snapshots.fetch_add(x.reply.snapshots.len(), Ordering::Relaxed);
                        // From when the push was due, so a server falling behind shows.
                        let latency = due.elapsed();
                        latencies.lock().expect("lat").push(latency);
                        let mut split = first_later.lock().expect("lat");
                        if n == 0 { &mut split.0 } else { &mut split.1 }.push(latency);
                        due += every;
                    }
                });
            }
        });
    }
    // The closed loop's workers (none when the open loop above did the pushing).
    let workers = if args.every.is_some() {
        0
    } else {
        args.concurrency
    };
    std::thread::scope(|s| {
        for t in 0..workers {
            let (work, latencies, bytes_up, bytes_down, pulled, snapshots) = (
                &work,
                &latencies,
                &bytes_up,
                &bytes_down,
                &pulled,
                &snapshots,
            );
            // Worker `t` syncs phones t, t + concurrency, …: with a number of users that divides
            // the concurrency, each user then has at most concurrency / users pushes at once.
            s.spawn(move || {
                for slot in work.iter().skip(t).step_by(args.concurrency) {
                    let mut guard = slot.lock().expect("phone");
                    let (phone, pushes) = &mut *guard;
                    for batch in std::mem::take(pushes) {
                        let x = phone.sync(batch, 100);
                        assert!(x.reply.rejected.is_empty());
                        bytes_up.fetch_add(x.sent, Ordering::Relaxed);
                        bytes_down.fetch_add(x.received, Ordering::Relaxed);
                        pulled.fetch_add(x.reply.changes.len(), Ordering::Relaxed);
                        snapshots.fetch_add(x.reply.snapshots.len(), Ordering::Relaxed);
                        latencies.lock().expect("lat").push(x.elapsed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut lat = latencies.into_inner().expect("lat");
    lat.sort();
    let peak = server.pid().and_then(peak_rss_kib);
    let peaks_more: Vec<u64> = more_nodes
        .iter()
        .filter_map(|n| n.pid().and_then(peak_rss_kib))
        .collect();
    println!("### {} phones × {} records\n", args.phones, args.records);
    println!("| figure | value |\n|---|---|");
    println!("| records synced | {total} |");
    println!(
        "| sync requests | {} ({} records per push, each also pulling up to 100 others' changes) |",
        lat.len(),
        args.per_push
    );
    match args.every {
        Some(every) => println!(
            "| pace (open loop) | every phone connected, one push every {every} s each: {:.0} pushes/s offered |",
            args.phones as f64 / every
        ),
        None => println!("| phones syncing at once | {} |", args.concurrency),
    }
    println!("| server processes (nodes) | {} |", urls.len());
    println!("| users the phones belong to | {} |", users.len());
    println!("| total time | {:.2} s |", elapsed.as_secs_f64());
    println!(
        "| records per second | {:.0} |",
        total as f64 / elapsed.as_secs_f64()
    );
    println!("| request latency p50 | {} |", ms(percentile(&lat, 0.5)));
    println!("| request latency p99 | {} |", ms(percentile(&lat, 0.99)));
    if args.every.is_some() {
        let (mut first, mut later) = first_later.into_inner().expect("lat");
        first.sort();
        later.sort();
        for (what, lat) in [
            ("each phone's first sync (with its bootstrap)", &first),
            ("the syncs after it", &later),
        ] {
            if !lat.is_empty() {
                println!(
                    "| latency p50 / p99, {what} | {} / {} ({} requests) |",
                    ms(percentile(lat, 0.5)),
                    ms(percentile(lat, 0.99)),
                    lat.len()
                );
            }
        }
    }
    println!(
        "| bytes up per record (whole request bodies) | {:.0} |",
        bytes_up.load(Ordering::Relaxed) as f64 / total as f64
    );
    println!("| one new case: Automerge change on the wire | {sample_change} bytes |");
    println!("| the same case as plain JSON | {sample_json} bytes |");
    println!(
        "| bytes down (pulled {} changes and {} document snapshots) | {} |",
        pulled.load(Ordering::Relaxed),
        snapshots.load(Ordering::Relaxed),
        bytes_down.load(Ordering::Relaxed)
    );
    println!(
        "| server peak memory (VmHWM) | {} |",
        peak.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    );
    for (i, k) in peaks_more.iter().enumerate() {
        println!(
            "| node {} peak memory (VmHWM) | {:.1} MiB |",
            i + 2,
            *k as f64 / 1024.0
        );
    }
    println!();
    drop(more_nodes);

    // 2. One new change on a server holding the records above: one small round trip.
    let mut watcher = SimPhone::login(&server.url, "office1");
    let caught = watcher.catch_up();
    let mut editor = SimPhone::login(&server.url, "bus1");
    let (_doc, push) = editor.new_case(999_999);
    editor.sync(vec![push], 1);
    let x = watcher.sync(vec![], 500);
    println!("### One new change on a server holding {total} records\n");
    println!("| figure | value |\n|---|---|");
    println!("| changes and snapshots the watcher pulled to catch up first | {caught} |");
    println!(
        "| round trips for the next sync | 1 (more = {}) |",
        x.reply.more
    );
    println!("| changes delivered | {} |", x.reply.changes.len());
    println!("| request bytes | {} |", x.sent);
    println!("| reply bytes | {} |", x.received);
    println!("| total on the wire (bodies) | {} |", x.sent + x.received);
    println!("| latency | {} |", ms(x.elapsed));
    println!();
    drop(server);

    // 3. A phone with nothing new: the same cost whatever the server holds.
    eprintln!("idle sync: 100 records");
    let (small_lat, small_up, small_down, small_mem) = idle_sync_cost(&bin, 100);
    eprintln!("idle sync: {} records", args.large);
    let (large_lat, large_up, large_down, large_mem) = idle_sync_cost(&bin, args.large);
    println!("### A sync with nothing new (median of 1000)\n");
    let mib = |k: Option<u64>| {
        k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    };
    println!(
        "| server holds | latency | request bytes | reply bytes | server peak memory (seeding included) |\n|---|---|---|---|---|"
    );
    println!(
        "| 100 records | {} | {small_up} | {small_down} | {} |",
        ms(small_lat),
        mib(small_mem)
    );
    println!(
        "| {} records | {} | {large_up} | {large_down} | {} |",
        args.large,
        ms(large_lat),
        mib(large_mem)
    );
}
