//! Hostile load: one user floods the sync endpoint with pushes of junk changes while another
//! user pushes real cases; measures the innocent user's latency, what the flood got back and how
//! many rejection rows it left. Runs against any build of the server (`--server-bin`), speaking
//! the protocol version that build speaks (`--protocol 1` for servers before records had a
//! personal part), so a fix can be measured against the code before it.
//!
//! With `--logins`, the flood is of logins instead: many concurrent logins with random user names
//! (from one client address, given as `X-Forwarded-For`; the server is started trusting it) while
//! a real user logs in from another address now and then.
//!
//! ```sh
//! cargo run --release -p linli-tests --bin linli-flood
//! cargo run --release -p linli-tests --bin linli-flood -- --protocol 1 --server-bin OLD/linli-server
//! cargo run --release -p linli-tests --bin linli-flood -- --logins
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::{CONTENT_TYPE, Cursor, Part, PushChange, SyncRequest};
use linli_sync_core::{DeviceId, EditContext, RecordDoc, RecordId, RecordKind};
use linli_tests::{HAITIANCHENG, ServerProcess, login_token, raw_get_json, raw_post};
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Measures an innocent user's pushes while another floods the server")]
struct Args {
    /// The server binary (default: this workspace's, same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The sync protocol version that server speaks (1 or 2).
    #[arg(long, default_value_t = 2)]
    protocol: u8,
    /// Concurrent flooding requests (all from one user).
    #[arg(long, default_value_t = 40)]
    flooders: usize,
    /// Junk changes per flooding request.
    #[arg(long, default_value_t = 1000)]
    junk: usize,
    /// Pushes (or logins) the innocent user makes, one after the other, during the flood.
    #[arg(long, default_value_t = 100)]
    innocent: usize,
    /// Flood logins with random user names instead of pushes.
    #[arg(long)]
    logins: bool,
}

/// A version-1 push (before records had parts), postcard-encoded exactly as v1 phones did.
#[derive(Serialize)]
struct PushV1 {
    record: [u8; 16],
    kind: RecordKind,
    #[serde(with = "bytes")]
    change: Vec<u8>,
}

#[derive(Serialize)]
struct RequestV1 {
    #[serde(with = "bytes")]
    cursor: Vec<u8>,
    changes: Vec<PushV1>,
    max_pull: u32,
}

mod bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
}

fn encode(protocol: u8, changes: Vec<PushChange>) -> Vec<u8> {
    match protocol {
        1 => {
            let req = RequestV1 {
                cursor: Vec::new(),
                changes: changes
                    .into_iter()
                    .map(|p| PushV1 {
                        record: p.record,
                        kind: p.kind,
                        change: p.change,
                    })
                    .collect(),
                max_pull: 1,
            };
            let mut out = b"LNLS\x01\x01".to_vec();
            out.extend(postcard::to_allocvec(&req).expect("encodes"));
            out
        }
        _ => SyncRequest {
            cursor: Cursor::start(),
            changes,
            max_pull: 1,
        }
        .encode(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn peak_mib(server: &ServerProcess) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap()))
        .unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn login(url: &str, from: &str, user: &str, password: &str) -> (u16, Option<u64>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = serde_json::json!({
        "username": user, "password": password, "device_id": DeviceId::new().to_string(),
    });
    match agent
        .post(url)
        .header("x-forwarded-for", from)
        .send_json(&body)
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
        Err(_) => (0, None),
    }
}

fn login_flood(args: &Args, server: &ServerProcess) {
    let url = format!("{}/v1/auth/login", server.url);
    assert_eq!(login(&url, "10.0.0.7", "bus1", "linli-demo").0, 200);
    let before = peak_mib(server);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.flooders)
        .map(|t| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    statuses.push(login(&url, "10.0.0.66", &format!("x{t}-{n}"), "guess").0);
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut latencies = Vec::new();
    let mut failed = 0;
    for _ in 0..args.innocent {
        let t = Instant::now();
        // A real client honours Retry-After; the latency counts the waiting.
        loop {
            match login(&url, "10.0.0.7", "bus2", "linli-demo") {
                (200, _) => break,
                (429 | 503, retry) => {
                    std::thread::sleep(Duration::from_secs(retry.unwrap_or(1)));
                }
                _ => {
                    failed += 1;
                    break;
                }
            }
        }
        latencies.push(t.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    let flood: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect();
    latencies.sort();
    let count = |s: u16| flood.iter().filter(|x| **x == s).count();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| concurrent random-name logins | {} |", args.flooders);
    println!(
        "| flood logins answered | {} (401: {}, 429: {}, 503: {}) |",
        flood.len(),
        count(401),
        count(429),
        count(503)
    );
    println!("| real logins | {} ({} failed) |", args.innocent, failed);
    println!(
        "| real login latency p50 | {:.1} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "| real login latency p99 | {:.1} ms |",
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!("| server peak memory before the flood | {before:.1} MiB |");
    println!(
        "| server peak memory after the flood | {:.1} MiB |",
        peak_mib(server)
    );
    println!("| run time | {:.1} s |", started.elapsed().as_secs_f64());
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let env: &[(&str, &str)] = if args.logins {
        &[("LINLI_TRUST_FORWARDED_FOR", "true")]
    } else {
        &[]
    };
    let server = match &args.server_bin {
        Some(bin) => ServerProcess::start_bin(bin, dir.path(), env),
        None => ServerProcess::start_with_env(dir.path(), env),
    };
    if args.logins {
        login_flood(&args, &server);
        return;
    }
    let url = format!("{}/v1/sync", server.url);
    let flooder = login_token(&server.url, "steward1", &DeviceId::new().to_string());
    let innocent = login_token(&server.url, "bus1", &DeviceId::new().to_string());
    let junk: Vec<PushChange> = (0..args.junk)
        .map(|i| PushChange {
            record: *RecordId::new().as_bytes(),
            kind: RecordKind::Case,
            part: Part::Record,
            change: vec![i as u8],
        })
        .collect();
    let flood_body = encode(args.protocol, junk);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.flooders)
        .map(|_| {
            let (url, token, body, stop) = (
                url.clone(),
                flooder.clone(),
                flood_body.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    statuses.push(raw_post(&url, Some(&token), CONTENT_TYPE, &body).0);
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    let actor = ActorId::random();
    let mut latencies = Vec::new();
    let mut innocent_statuses = Vec::new();
    for i in 0..args.innocent {
        let ctx = EditContext {
            actor: actor.clone(),
            user: "bus1".into(),
            now_ms: 1_763_000_000_000,
        };
        let (doc, change) = RecordDoc::create(
            RecordId::new(),
            RecordKind::Case,
            &HAITIANCHENG.parse().expect("place"),
            &ctx,
            &[("summary".into(), format!("第{i}件"))],
        )
        .expect("a valid case");
        let body = encode(
            args.protocol,
            vec![PushChange {
                record: *doc.id().as_bytes(),
                kind: RecordKind::Case,
                part: Part::Record,
                change: change.raw_bytes().to_vec(),
            }],
        );
        let t = Instant::now();
        let (status, _) = raw_post(&url, Some(&innocent), CONTENT_TYPE, &body);
        latencies.push(t.elapsed());
        innocent_statuses.push(status);
    }
    stop.store(true, Ordering::SeqCst);
    let flood: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("flood thread"))
        .collect();
    let elapsed = started.elapsed();

    let office = login_token(&server.url, "office1", &DeviceId::new().to_string());
    let mut rejection_rows = 0;
    let mut before = String::new();
    loop {
        let (_, page) = raw_get_json(
            &format!("{}/v1/rejections?limit=500{before}", server.url),
            &office,
        );
        rejection_rows += page["rejections"].as_array().map_or(0, Vec::len);
        match page["next"].as_i64() {
            Some(n) => before = format!("&before={n}"),
            None => break,
        }
    }
    latencies.sort();
    let count = |s: u16| flood.iter().filter(|x| **x == s).count();
    let ok = innocent_statuses.iter().filter(|s| **s == 200).count();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| protocol | {} |", args.protocol);
    println!(
        "| flooding requests in flight (one user) | {} |",
        args.flooders
    );
    println!("| junk changes per request | {} |", args.junk);
    println!(
        "| flood requests answered | {} (422: {}, 429: {}, 503: {}) |",
        flood.len(),
        count(422),
        count(429),
        count(503)
    );
    println!("| innocent pushes | {} ({} accepted) |", args.innocent, ok);
    println!(
        "| innocent push latency p50 | {:.1} ms |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3
    );
    println!(
        "| innocent push latency p99 | {:.1} ms |",
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| innocent push latency max | {:.1} ms |",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("| rejection rows stored | {rejection_rows} |");
    println!("| run time | {:.1} s |", elapsed.as_secs_f64());
    println!(
        "| server peak memory (VmHWM) | {:.1} MiB |",
        peak_mib(&server)
    );
}
