//! Server memory against stored records (issue 10): starts the real `linli-server` binary (use
//! `--release`) with `serve --demo` on an existing PostgreSQL database (filled by `linli-seed`),
//! runs one fixed workload on it, and reads the server's peak resident memory (`VmHWM`) after
//! each step. The workload does not depend on how many records the database holds, so two runs,
//! on 10,000 and on 1,000,000 records, compare what the stored records alone cost the server:
//!
//! 1. phones push new cases (protocol level, as `linli-bench`), each request also taking a page
//!    of its places' records (the first pages of a new phone's bootstrap);
//! 2. the back-office: sign-in, the case queue and its next page, a filtered queue, a search,
//!    statistics of the whole street and of its default period, a record's page;
//! 3. a new phone of `--bootstrap-user` catches up from nothing (with `linli-seed --keep-small`
//!    on that user's place, the same records at any size);
//! 4. a phone pulls the first pages of the log (a cursor at position 0 that needs no
//!    bootstrap);
//! 5. unless `--no-export`, an export of every case as CSV (and with `--xlsx` as `.xlsx`): work
//!    that grows with the records, streamed, so memory should not.
//!
//! Every snapshot and change received is loaded with Automerge, so a run also checks that the
//! server serves the database correctly.
//!
//! ```text
//! linli-seed --database-url postgres://postgres@127.0.0.1:5432/linli_bench_10k --records 10000 \
//!     --keep-small hz/baiyang/dabei/wenhuiyuan/b1
//! linli-memory-bench --database-url postgres://postgres@127.0.0.1:5432/linli_bench_10k
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use linli_sync_core::automerge::{ActorId, AutoCommit, Change};
use linli_sync_core::protocol::{Cursor, PushChange, SyncRequest, SyncResponse};
use linli_sync_core::{EditContext, RecordId};
use linli_tests::office_http::{agent, enc, sign_in};
use linli_tests::{ServerProcess, bench_case, login_token, post_sync, use_database, workspace_bin};

/// The phones share user names and push as fast as they can: the rate limits are not measured.
const NO_RATE_LIMITS: &[(&str, &str)] =
    &[("LINLI_RATE_LIMIT", "0"), ("LINLI_LOGIN_RATE_LIMIT", "0")];

#[derive(Parser)]
#[command(about = "Measures the server's memory under a fixed workload on an existing database")]
struct Args {
    /// The PostgreSQL database to serve (e.g. filled by `linli-seed`).
    #[arg(long)]
    database_url: String,
    /// Phones pushing new cases.
    #[arg(long, default_value_t = 32)]
    phones: usize,
    /// Cases each phone pushes.
    #[arg(long, default_value_t = 50)]
    records: usize,
    /// Cases per push (each push also takes a page of up to 100 of the phone's places' records).
    #[arg(long, default_value_t = 10)]
    per_push: usize,
    /// Phones pushing at once (at most 10: they are users bus1 and bus2, and the server lets a
    /// user have one request running and four waiting).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The user whose new phone catches up from nothing.
    #[arg(long, default_value = "steward2")]
    bootstrap_user: String,
    /// Pages of up to 1,000 changes pulled from the log's start.
    #[arg(long, default_value_t = 5)]
    log_pages: usize,
    /// Skip the export of every case (CSV), which grows with the records.
    #[arg(long)]
    no_export: bool,
    /// Also export every case as `.xlsx`.
    #[arg(long)]
    xlsx: bool,
    /// The server binary (default: this workspace's, same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// A phone at the protocol level.
struct SimPhone {
    url: String,
    token: String,
    ctx_user: String,
    actor: ActorId,
    cursor: Cursor,
    agent: ureq::Agent,
}

impl SimPhone {
    fn login(url: &str, user: &str) -> Self {
        let device = RecordId::new().to_string();
        Self {
            url: url.to_string(),
            token: login_token(url, user, &device),
            ctx_user: user.to_string(),
            actor: ActorId::random(),
            cursor: Cursor::start(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn sync(&mut self, changes: Vec<PushChange>, max_pull: u32) -> SyncResponse {
        let body = SyncRequest {
            cursor: self.cursor.clone(),
            changes,
            max_pull,
        }
        .encode();
        let (status, bytes) = post_sync(&self.agent, &self.url, &self.token, &body);
        assert!(status == 200, "sync answered {status}");
        let reply = SyncResponse::decode(&bytes).expect("reply decodes");
        self.cursor = reply.cursor.clone();
        reply
    }

    fn new_case(&self, n: usize) -> PushChange {
        let ctx = EditContext {
            actor: self.actor.clone(),
            user: self.ctx_user.clone(),
            now_ms: now_ms(),
        };
        bench_case(&ctx, n).1
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A line of `/proc/PID/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.split(':').next() == Some(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A page the workload needs: its body and time (panics unless a 200 with a body).
fn get_page(base: &str, cookie: &str, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut resp = agent()
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
    assert!(
        status == 200 && !body.is_empty(),
        "GET {path} answered {status}"
    );
    (body, started.elapsed())
}

/// The first record page linked from a queue page.
fn first_record(page: &str) -> Option<String> {
    page.split("href=\"/office/records/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .find(|id| id.len() == 36 && !id.contains('?'))
        .map(String::from)
}

/// The next-page link of a queue page, as a path.
fn next_link(page: &str) -> Option<String> {
    let at = page.find("id=\"next-page\" href=\"")? + "id=\"next-page\" href=\"".len();
    Some(page[at..].split('"').next()?.replace("&amp;", "&"))
}

/// Downloads an export as it streams: (bytes, lines).
fn download(base: &str, cookie: &str, path: &str) -> (u64, u64) {
    let resp = agent()
        .get(format!("{base}{path}"))
        .header("Cookie", cookie)
        .config()
        .timeout_global(Some(Duration::from_secs(3600)))
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut lines) = (0u64, 0u64);
    loop {
        let n = reader.read(&mut buf).expect("export body");
        if n == 0 {
            break;
        }
        bytes += n as u64;
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
    (bytes, lines)
}

/// The number of records in the database (`psql`).
fn records_in(url: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-tAc", "SELECT COUNT(*) FROM records"])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn main() {
    let args = Args::parse();
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(|| workspace_bin("linli-server"));
    let stored = records_in(&args.database_url);
    let dir = tempfile::tempdir().expect("tempdir");
    use_database(dir.path(), &args.database_url);
    let started = Instant::now();
    let server = ServerProcess::start_bin(&bin, dir.path(), NO_RATE_LIMITS);
    let pid = server.pid().expect("server pid");
    let base = server.url.clone();
    let mut rows: Vec<(String, String, u64, u64)> = Vec::new();
    let mark = |what: &str, took: Duration, rows: &mut Vec<(String, String, u64, u64)>| {
        rows.push((
            what.to_string(),
            format!("{:.2} s", took.as_secs_f64()),
            status_kib(pid, "VmHWM"),
            status_kib(pid, "VmRSS"),
        ));
    };
    let ready = ureq::get(format!("{base}/readyz"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(ready, 200, "/readyz");
    mark("started, ready", started.elapsed(), &mut rows);

    // 1. Phones push new cases, each request also taking a page of their places' records.
    let t = Instant::now();
    // Worker `w` syncs phones w, w + workers, …, all of user `w % 2`: each user has at most
    // half the workers' requests at once (the server lets a user have one running and four
    // waiting, and answers 429 beyond).
    let users = ["bus1", "bus2"];
    let workers = args.concurrency.clamp(1, 2 * 5).min(args.phones.max(1));
    let mut buckets: Vec<Vec<(usize, SimPhone)>> = (0..workers).map(|_| Vec::new()).collect();
    for p in 0..args.phones {
        let w = p % workers;
        buckets[w].push((p, SimPhone::login(&base, users[w % users.len()])));
    }
    let (mut pushed, mut pulled) = (0usize, 0usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = buckets
            .iter_mut()
            .map(|bucket| {
                let args = &args;
                s.spawn(move || {
                    let (mut pushed, mut pulled) = (0, 0);
                    for (p, phone) in bucket.iter_mut() {
                        let cases: Vec<PushChange> = (0..args.records)
                            .map(|r| phone.new_case(*p * args.records + r))
                            .collect();
                        for batch in cases.chunks(args.per_push.max(1)) {
                            let reply = phone.sync(batch.to_vec(), 100);
                            assert!(reply.rejected.is_empty(), "{:?}", reply.rejected.first());
                            pushed += reply.accepted.len();
                            pulled += reply.snapshots.len() + reply.changes.len();
                        }
                    }
                    (pushed, pulled)
                })
            })
            .collect();
        for h in handles {
            let (a, b) = h.join().expect("a pushing thread");
            pushed += a;
            pulled += b;
        }
    });
    assert_eq!(pushed, args.phones * args.records);
    mark(
        &format!(
            "{} phones pushed {pushed} cases ({} per request, taking {pulled} records and changes back)",
            args.phones, args.per_push
        ),
        t.elapsed(),
        &mut rows,
    );

    // 2. The back-office.
    let t = Instant::now();
    let cookie = sign_in(&base);
    let mut times: Vec<(String, Duration)> = Vec::new();
    let (queue, took) = get_page(&base, &cookie, "/office/records?kind=case");
    times.push(("queue".into(), took));
    let next = next_link(&queue).expect("the queue has a next page");
    times.push(("queue, next page".into(), get_page(&base, &cookie, &next).1));
    for (name, path) in [
        (
            "queue, one category, by deadline",
            "/office/records?kind=case&category=fire_safety&sort=deadline".to_string(),
        ),
        (
            "search",
            format!("/office/records?kind=case&q={}", enc("消防通道")),
        ),
        (
            "statistics, whole street",
            "/office/stats?place=hz/baiyang".to_string(),
        ),
        ("statistics, default period", "/office/stats".to_string()),
    ] {
        times.push((name.into(), get_page(&base, &cookie, &path).1));
    }
    let id = first_record(&queue).expect("a record in the queue");
    times.push((
        "record page".into(),
        get_page(&base, &cookie, &format!("/office/records/{id}")).1,
    ));
    mark(
        "back-office: sign-in, queue, next page, filtered, search, statistics ×2, record",
        t.elapsed(),
        &mut rows,
    );

    // 3. A new phone catches up from nothing.
    let t = Instant::now();
    let mut phone = SimPhone::login(&base, &args.bootstrap_user);
    let (mut requests, mut snapshots, mut changes) = (0, 0, 0);
    loop {
        let reply = phone.sync(vec![], 1000);
        requests += 1;
        for s in &reply.snapshots {
            AutoCommit::load(&s.doc).expect("a snapshot loads");
        }
        snapshots += reply.snapshots.len();
        changes += reply.changes.len();
        if !reply.more {
            break;
        }
    }
    mark(
        &format!(
            "a new phone of {} caught up: {snapshots} snapshots, {changes} changes, {requests} requests",
            args.bootstrap_user
        ),
        t.elapsed(),
        &mut rows,
    );

    // 4. A phone bootstrapped before the records were stored pulls the log from its start (its
    //    cursor names a grant epoch no grant has reached, so nothing is bootstrapped).
    let t = Instant::now();
    let mut watcher = SimPhone::login(&base, "office1");
    watcher.cursor = Cursor::with_epoch(0, i64::MAX / 2, None);
    let (mut pages, mut logged) = (0, 0);
    while pages < args.log_pages {
        let reply = watcher.sync(vec![], 1000);
        pages += 1;
        for c in &reply.changes {
            Change::try_from(&c.change[..]).expect("a pulled change decodes");
        }
        logged += reply.changes.len();
        if !reply.more {
            break;
        }
    }
    mark(
        &format!("office1 pulled the log from position 0: {logged} changes in {pages} pages"),
        t.elapsed(),
        &mut rows,
    );

    // 5. Exports of every case: work that grows with the records, memory that should not.
    let formats: &[&str] = match (args.no_export, args.xlsx) {
        (true, _) => &[],
        (false, false) => &["csv"],
        (false, true) => &["csv", "xlsx"],
    };
    for ext in formats {
        let t = Instant::now();
        let (bytes, lines) = download(
            &base,
            &cookie,
            &format!("/office/records/export.{ext}?kind=case"),
        );
        let what = if *ext == "csv" {
            format!("export of every case as CSV: {bytes} bytes, {lines} lines")
        } else {
            format!("export of every case as .xlsx: {bytes} bytes")
        };
        mark(&what, t.elapsed(), &mut rows);
    }
    drop(server);

    println!("## Server memory on {stored} stored records\n");
    println!(
        "Command: `linli-memory-bench {}`; server `{}` on PostgreSQL.\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        bin.display()
    );
    println!("| step | time | VmHWM after | VmRSS after |\n|---|---|---|---|");
    for (what, took, hwm, rss) in &rows {
        println!("| {what} | {took} | {} | {} |", mib(*hwm), mib(*rss));
    }
    println!("\n| back-office request | time |\n|---|---|");
    for (what, took) in &times {
        println!("| {what} | {:.1} ms |", took.as_secs_f64() * 1e3);
    }
    let peak = rows.last().map(|r| r.2).unwrap_or(0);
    println!("\npeak={} records={stored}", mib(peak));
}
