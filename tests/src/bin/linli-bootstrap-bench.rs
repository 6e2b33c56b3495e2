//! Bootstrap benchmark: starts the real `linli-server` binary (use `--release`) on a fresh data
//! directory, seeds one place with many records at the protocol level, then times a new phone
//! (the real device SDK, `linli_ffi::FieldClient`, with its own store) catching up from nothing.
//! Also reports what the records cost the server on disk against their saved Automerge
//! documents. Runs against any build of the server (`--server-bin`), so a change to the sync path
//! can be measured against the code before it. Prints the figures as Markdown.
//!
//! ```sh
//! cargo run --release -p linli-tests --bin linli-bootstrap-bench -- --records 100000
//! cargo run --release -p linli-tests --bin linli-bootstrap-bench -- --server-bin OLD/linli-server
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::{
    Cursor, MAX_CHANGES_PER_PUSH, PushChange, SyncRequest, SyncResponse,
};
use linli_sync_core::{EditContext, RecordId};
use linli_tests::{DEMO_PASSWORD, ServerProcess, bench_case, login_token, post_sync};

/// Seeders share one user name and push as fast as they can: the per-user rate limit is not what
/// is measured.
const NO_RATE_LIMITS: &[(&str, &str)] =
    &[("LINLI_RATE_LIMIT", "0"), ("LINLI_LOGIN_RATE_LIMIT", "0")];

/// The server's database file in its data directory.
const SERVER_DB: &str = "linli.db";

#[derive(Parser)]
#[command(about = "Measures a new phone catching up with a large place on the real server")]
struct Args {
    /// Records seeded into the place before the new phone syncs.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Concurrent seeders (each a device of user bus1 pushing full batches).
    #[arg(long, default_value_t = 4)]
    seeders: usize,
    /// Records per seeding push (at most the protocol's limit).
    #[arg(long, default_value_t = MAX_CHANGES_PER_PUSH)]
    per_push: usize,
    /// The server binary (default: this workspace's, same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Keep the server's data in this (new, empty) directory instead of a temporary one, to
    /// look into its database afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// A protocol-level seeder: a device identity, a token and a cursor.
struct Seeder {
    url: String,
    token: String,
    actor: ActorId,
    cursor: Cursor,
    agent: ureq::Agent,
}

impl Seeder {
    fn login(url: &str) -> Self {
        Self {
            url: url.to_string(),
            token: login_token(url, "bus1", &RecordId::new().to_string()),
            actor: ActorId::random(),
            cursor: Cursor::start(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// The same kind of case `linli-bench` pushes: five fields, Chinese text.
    fn new_case(&self, n: usize) -> PushChange {
        let ctx = EditContext {
            actor: self.actor.clone(),
            user: "bus1".into(),
            now_ms: now_ms(),
        };
        bench_case(&ctx, n).1
    }

    fn push(&mut self, changes: Vec<PushChange>) {
        let body = SyncRequest {
            cursor: self.cursor.clone(),
            changes,
            // The seeders do not care what others pushed; one change keeps replies small.
            max_pull: 1,
        }
        .encode();
        let (status, bytes) = post_sync(&self.agent, &self.url, &self.token, &body);
        assert!(status == 200, "sync answered {status}");
        let reply = SyncResponse::decode(&bytes).expect("reply decodes");
        assert!(
            reply.rejected.is_empty(),
            "seeding refused: {:?}",
            reply.rejected.first()
        );
        self.cursor = reply.cursor;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Pushes `n` new cases with `seeders` devices at once, printing progress to stderr.
fn seed(url: &str, n: usize, seeders: usize, per_push: usize) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..seeders.max(1) {
            s.spawn(|| {
                let mut seeder = Seeder::login(url);
                loop {
                    let from = next.fetch_add(per_push, Ordering::SeqCst);
                    if from >= n {
                        break;
                    }
                    let to = (from + per_push).min(n);
                    seeder.push((from..to).map(|i| seeder.new_case(i)).collect());
                    let total = done.fetch_add(to - from, Ordering::SeqCst) + (to - from);
                    // Progress about every tenth of the way (and at the end).
                    let step = (n / 10).max(per_push);
                    if total / step != (total - (to - from)) / step || total == n {
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!(
                            "  seeded {total}/{n} in {secs:.1}s ({:.0} records/s)",
                            total as f64 / secs
                        );
                    }
                }
            });
        }
    });
}

/// A loopback TCP relay in front of the server that counts the bytes each way (HTTP headers
/// included), since the device SDK does not report what it sent or received.
struct CountingProxy {
    url: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (up2, down2) = (up.clone(), down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c_read), Ok(s_read)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let up = up2.clone();
                std::thread::spawn(move || relay(c_read, server, &up));
                let down = down2.clone();
                std::thread::spawn(move || relay(s_read, client, &down));
            }
        });
        Self { url, up, down }
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A line of `/proc/PID/status` in KiB (e.g. `VmHWM`, the peak resident memory).
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.split(':').next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds a process has used so far (user and system, all its threads), from
/// `/proc/PID/stat`, whose times count USER_HZ ticks (100 a second on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `fields` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Total size of the regular files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The records' documents as Automerge saves them: each part's stored save with its tail of
/// logged changes, loaded and saved again (a new record's stored save is empty: its document is
/// its first change, in the log). Returns (records, shared bytes, personal bytes).
fn saved_docs(db: &Path) -> (u64, u64, u64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the server's database read-only");
    // Record → (shared, its save's position, personal, its save's position).
    type Parts = (Vec<u8>, i64, Option<Vec<u8>>, i64);
    let mut records: std::collections::HashMap<String, Parts> = conn
        .prepare("SELECT id, doc, doc_seq, personal_doc, personal_seq FROM records")
        .and_then(|mut q| {
            q.query_map([], |r| {
                Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            })?
            .collect()
        })
        .expect("read the records");
    let mut changes = conn
        .prepare("SELECT record_id, part, seq, bytes FROM changes ORDER BY seq")
        .expect("read the log");
    let mut rows = changes.query([]).expect("read the log");
    while let Some(row) = rows.next().expect("a logged change") {
        let (id, part, seq, bytes): (String, String, i64, Vec<u8>) = (
            row.get(0).expect("id"),
            row.get(1).expect("part"),
            row.get(2).expect("seq"),
            row.get(3).expect("bytes"),
        );
        let Some((doc, doc_seq, personal, personal_seq)) = records.get_mut(&id) else {
            continue;
        };
        match (part.as_str(), personal) {
            ("record", _) if seq > *doc_seq => doc.extend_from_slice(&bytes),
            ("personal", Some(p)) if seq > *personal_seq => p.extend_from_slice(&bytes),
            _ => {}
        }
    }
    let saved = |d: &[u8]| {
        linli_sync_core::automerge::Automerge::load(d)
            .expect("a stored document loads")
            .save()
            .len() as u64
    };
    let (mut shared, mut personal) = (0, 0);
    for (doc, _, p, _) in records.values() {
        shared += saved(doc);
        personal += p.as_deref().map_or(0, saved);
    }
    (records.len() as u64, shared, personal)
}

/// The database's size and its records' saved documents, as [`saved_docs`], on PostgreSQL.
fn postgres_sizes(url: &str) -> (u64, (u64, u64, u64)) {
    let size: u64 = psql(url, "SELECT pg_database_size(current_database())")
        .trim()
        .parse()
        .expect("a number");
    let with_tail = |column: &str, seq: &str, part: &str| {
        format!(
            "encode({column} || COALESCE((SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) \
             FROM changes c WHERE c.record_id = r.id AND c.part = '{part}' AND c.seq > r.{seq}), \
             ''::bytea), 'hex')"
        )
    };
    let text = psql(
        url,
        &format!(
            "SELECT {}, COALESCE({}, '') FROM records r",
            with_tail("r.doc", "doc_seq", "record"),
            with_tail("r.personal_doc", "personal_seq", "personal"),
        ),
    );
    let saved = |hex: &str| -> u64 {
        if hex.is_empty() {
            return 0;
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        linli_sync_core::automerge::Automerge::load(&bytes)
            .expect("a stored document loads")
            .save()
            .len() as u64
    };
    let (mut rows, mut shared, mut personal) = (0, 0, 0);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (doc, p) = line.split_once(',').expect("two columns");
        rows += 1;
        shared += saved(doc);
        personal += saved(p);
    }
    (size, (rows, shared, personal))
}

/// Where the server's bytes go: each table and index with its size, largest first.
fn sqlite_breakdown(db: &Path) -> Vec<(String, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the server's database read-only");
    conn.prepare("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        .and_then(|mut q| {
            q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
        .expect("read dbstat")
}

/// The record row's columns the sync path reads or writes (accept, pull, bootstrap); the rest
/// are the back-office's projection.
const SYNC_RECORD_COLUMNS: &str = "id, kind, place, last_seq, version, bytes, personal_bytes, doc, \
     doc_seq, doc_tail, personal_doc, personal_seq, personal_tail";

/// The database compacted (`VACUUM INTO` a copy), and the same copy holding only what sync reads
/// and writes: without the back-office's search tables, its indexes on `records` and the
/// projection's columns. Both in bytes, without a WAL.
fn sqlite_sync_store(db: &Path) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.db");
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.execute("VACUUM INTO ?1", [copy.to_str().expect("a UTF-8 path")]))
        .expect("copy the server's database");
    let whole = file_len(&copy);
    let conn = rusqlite::Connection::open(&copy).expect("open the copy");
    let back_office: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records'
               AND name NOT LIKE 'sqlite_autoindex%' AND name <> 'records_bootstrap'",
        )
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .expect("list the back-office's indexes");
    let mut sql: String = back_office
        .iter()
        .map(|i| format!("DROP INDEX {i};"))
        .collect();
    sql.push_str(&format!(
        "DROP TABLE record_fts; DROP TABLE record_grams; DROP TABLE record_text;
         CREATE TABLE sync_records (id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL,
             place TEXT NOT NULL, last_seq INTEGER NOT NULL, version INTEGER NOT NULL,
             bytes INTEGER NOT NULL, personal_bytes INTEGER NOT NULL, doc BLOB NOT NULL,
             doc_seq INTEGER NOT NULL, doc_tail INTEGER NOT NULL, personal_doc BLOB,
             personal_seq INTEGER NOT NULL, personal_tail INTEGER NOT NULL);
         INSERT INTO sync_records SELECT {SYNC_RECORD_COLUMNS} FROM records ORDER BY id;
         DROP TABLE records;
         ALTER TABLE sync_records RENAME TO records;
         CREATE INDEX records_bootstrap ON records(id, place);
         VACUUM;"
    ));
    conn.execute_batch(&sql)
        .expect("reduce the copy to the sync store");
    drop(conn);
    (whole, file_len(&copy))
}

/// As [`sqlite_breakdown`], on PostgreSQL: a table's size counts its TOAST, an index its own.
fn postgres_breakdown(url: &str) -> Vec<(String, u64)> {
    psql(
        url,
        "SELECT c.relname, CASE WHEN c.relkind = 'r' THEN pg_table_size(c.oid) \
         ELSE pg_relation_size(c.oid) END AS size FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') ORDER BY size DESC",
    )
    .lines()
    .map(|l| {
        let (name, size) = l.split_once(',').expect("two columns");
        (name.to_string(), size.trim().parse().expect("a size"))
    })
    .collect()
}

/// What `psql` prints for one statement: unaligned, comma-separated, no headers.
fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-tAF,", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("psql prints text")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib_as_mib(k: Option<u64>) -> String {
    k.map(|k| mib(k * 1024)).unwrap_or_else(|| "n/a".into())
}

fn main() {
    let args = Args::parse();
    let n = args.records;
    let per_push = args.per_push.clamp(1, MAX_CHANGES_PER_PUSH);
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("create the data directory");
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let server = match &args.server_bin {
        Some(bin) => ServerProcess::start_bin(bin, &dir, NO_RATE_LIMITS),
        None => ServerProcess::start_with_env(&dir, NO_RATE_LIMITS),
    };
    let pid = server.pid().expect("server pid");

    eprintln!("seeding {n} records with {} seeders", args.seeders);
    let seeding = Instant::now();
    seed(&server.url, n, args.seeders, per_push);
    let seed_secs = seeding.elapsed().as_secs_f64();
    let hwm_seeded = proc_status_kib(pid, "VmHWM");

    // The new phone: the real SDK with its own store, talking through the counting relay.
    eprintln!("a new phone catches up");
    let proxy = CountingProxy::start(&server.url);
    let home = tempfile::tempdir().expect("phone home");
    let phone =
        linli_ffi::FieldClient::new(home.path().to_string_lossy().into_owned(), None, None, None)
            .expect("phone store opens");
    phone
        .login("bus2".into(), DEMO_PASSWORD.into(), Some(proxy.url.clone()))
        .expect("bus2 logs in");
    let (up_login, down_login) = (
        proxy.up.load(Ordering::SeqCst),
        proxy.down.load(Ordering::SeqCst),
    );
    let server_pid = pid.to_string();
    let cpu_before = (cpu_secs(&server_pid), cpu_secs("self"));
    let started = Instant::now();
    let (mut calls, mut rounds, mut pulled, mut skipped) = (0u32, 0u64, 0u64, 0u64);
    loop {
        let report = phone.sync().expect("sync");
        calls += 1;
        rounds += u64::from(report.rounds);
        pulled += u64::from(report.pulled);
        skipped += u64::from(report.skipped);
        eprintln!(
            "  sync call {calls}: {} rounds, {pulled} changes pulled so far, {:.1}s",
            report.rounds,
            started.elapsed().as_secs_f64()
        );
        if !report.more_pending {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = |before: Option<f64>, who: &str| match (before, cpu_secs(who)) {
        (Some(b), Some(a)) => format!("{:.1} s", a - b),
        _ => "not known".into(),
    };
    let (server_cpu, phone_cpu) = (cpu(cpu_before.0, &server_pid), cpu(cpu_before.1, "self"));
    let up = proxy.up.load(Ordering::SeqCst) - up_login;
    let down = proxy.down.load(Ordering::SeqCst) - down_login;
    let on_phone = phone.list().expect("list").len();
    assert_eq!(skipped, 0, "the phone could not apply {skipped} changes");
    assert_eq!(
        on_phone, n,
        "the phone holds {on_phone} records after catching up"
    );

    let hwm = proc_status_kib(pid, "VmHWM");
    let rss = proc_status_kib(pid, "VmRSS");
    let db = dir.as_path().join(SERVER_DB);
    let (db_len, wal_len) = (file_len(&db), file_len(&db.with_extension("db-wal")));
    // On PostgreSQL (`LINLI_STORIES_POSTGRES`) the data is the database's, not the directory's.
    let (data_dir, (rows, doc_bytes, personal_bytes), parts, sync_store) =
        match linli_tests::database_url_for(dir.as_path()) {
            Some(url) => {
                let (size, docs) = postgres_sizes(&url);
                (size, docs, postgres_breakdown(&url), None)
            }
            None => (
                dir_size(dir.as_path()),
                saved_docs(&db),
                sqlite_breakdown(&db),
                Some(sqlite_sync_store(&db)),
            ),
        };
    let phone_db = home.path().join(linli_ffi::DB_FILE);
    let (phone_db_len, phone_wal_len) = (
        file_len(&phone_db),
        file_len(&phone_db.with_extension("db-wal")),
    );
    drop(phone);
    drop(server);

    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let server_bin = args
        .server_bin
        .as_ref()
        .map(|p| format!("`{}`", p.display()))
        .unwrap_or_else(|| "this workspace's `linli-server`".into());
    println!("## Bootstrap: a new phone catches up with {n} records\n");
    let store = if linli_tests::stories_postgres().is_some() {
        "PostgreSQL on the same machine"
    } else {
        "its SQLite store on local disk"
    };
    println!(
        "Command: `linli-bootstrap-bench --records {n} --seeders {}{}` on {cores} cores; server: {server_bin} with {store}; the phone is the real device SDK (`FieldClient`, own store in a temp dir) on loopback, through a byte-counting relay.\n",
        args.seeders,
        args.server_bin
            .as_ref()
            .map(|p| format!(" --server-bin {}", p.display()))
            .unwrap_or_default()
    );
    println!("| figure | value |\n|---|---|");
    println!("| records | {n} |");
    println!(
        "| seeding ({} devices, {per_push} per push) | {seed_secs:.1} s ({:.0} records/s) |",
        args.seeders,
        n as f64 / seed_secs
    );
    println!("| catch-up time (login excluded) | {secs:.2} s |");
    println!("| catch-up records per second | {:.0} |", n as f64 / secs);
    println!(
        "| CPU during the catch-up: server / phone and relay (this process) | {server_cpu} / {phone_cpu} |"
    );
    println!(
        "| sync requests (round trips) | {rounds} (in {calls} `sync()` call{}) |",
        if calls == 1 { "" } else { "s" }
    );
    println!("| changes pulled | {pulled} |");
    println!(
        "| bytes down (HTTP, headers included) | {down} ({}, {:.0} per record) |",
        mib(down),
        down as f64 / n as f64
    );
    println!("| bytes up (HTTP, headers included) | {up} |");
    println!(
        "| server peak memory (VmHWM) after seeding | {} |",
        kib_as_mib(hwm_seeded)
    );
    println!(
        "| server peak memory (VmHWM) after catch-up | {} |",
        kib_as_mib(hwm)
    );
    println!(
        "| server resident memory (VmRSS) at the end | {} |",
        kib_as_mib(rss)
    );
    println!(
        "| server data dir on disk | {} (`linli.db` {}, WAL {}) |",
        mib(data_dir),
        mib(db_len),
        mib(wal_len)
    );
    println!(
        "| server disk per record (whole data dir / records) | {:.0} bytes |",
        data_dir as f64 / n as f64
    );
    println!(
        "| saved Automerge documents (each record's loaded with its tail and saved, {rows} rows) | {doc_bytes} ({:.0} per record) |",
        doc_bytes as f64 / n as f64
    );
    if personal_bytes > 0 {
        println!("| saved personal documents (likewise) | {personal_bytes} |");
    }
    println!(
        "| disk per record ÷ saved document per record | {:.2} |",
        data_dir as f64 / (doc_bytes + personal_bytes).max(1) as f64
    );
    if let Some((whole, sync)) = sync_store {
        let saved = (doc_bytes + personal_bytes).max(1) as f64;
        println!(
            "| the database compacted (`VACUUM INTO` a copy, no WAL): per record; ÷ saved document | {:.0} bytes; {:.2} |",
            whole as f64 / n as f64,
            whole as f64 / saved
        );
        println!(
            "| the sync store alone (that copy without the back-office's search tables, indexes and projection columns): per record; ÷ saved document | {:.0} bytes; {:.2} |",
            sync as f64 / n as f64,
            sync as f64 / saved
        );
    }
    println!(
        "| phone store after catch-up | {} (db {}, WAL {}) |",
        mib(phone_db_len + phone_wal_len),
        mib(phone_db_len),
        mib(phone_wal_len)
    );
    let total: u64 = parts.iter().map(|(_, b)| b).sum::<u64>().max(1);
    println!("\n### Where the server's bytes go (tables and indexes, largest first)\n");
    println!("| table or index | size | per record | share |\n|---|---|---|---|");
    for (name, bytes) in &parts {
        if *bytes * 200 < total {
            continue;
        }
        println!(
            "| `{name}` | {} | {:.0} bytes | {:.1}% |",
            mib(*bytes),
            *bytes as f64 / n as f64,
            *bytes as f64 * 100.0 / total as f64
        );
    }
}
