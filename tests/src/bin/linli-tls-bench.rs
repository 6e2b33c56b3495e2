//! TLS against plain HTTP on loopback, in the same run: two real `linli-server` processes (one
//! with `--tls-cert/--tls-key` from a CA made here, one without), phones through the real device
//! SDK. Each phone records cases and syncs; then a phone that is already caught up syncs
//! repeatedly (the common case in the field). Prints Markdown for `BENCHMARKS.md`.
//!
//! ```sh
//! cargo run --release -p linli-tests --bin linli-tls-bench
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use linli_ffi::{ConnectionOptions, FieldClient, FieldValue, RecordKind};
use linli_tests::{DEMO_PASSWORD, HAITIANCHENG, ServerProcess};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

#[derive(Parser)]
#[command(about = "Measures sync over TLS against plain HTTP through the device SDK")]
struct Args {
    /// Phones (each a FieldClient with its own store), syncing one after another.
    #[arg(long, default_value_t = 20)]
    phones: usize,
    /// Cases each phone records before its sync.
    #[arg(long, default_value_t = 50)]
    records: usize,
    /// Idle syncs of a caught-up phone (each a new connection when `--fresh`).
    #[arg(long, default_value_t = 200)]
    idle: usize,
}

struct Figures {
    total: Duration,
    records: usize,
    first_login: Duration,
    idle: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(url: &str, ca: Option<&str>, args: &Args) -> Figures {
    let homes: Vec<tempfile::TempDir> = (0..=args.phones)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let connection = ConnectionOptions {
        extra_ca_certs_pem: ca.map(|c| vec![c.to_string()]).unwrap_or_default(),
        allow_insecure_http: false,
    };
    let client = |home: &tempfile::TempDir| {
        FieldClient::new(
            home.path().to_str().expect("utf-8").into(),
            Some(url.into()),
            Some(connection.clone()),
            None,
        )
        .expect("client")
    };
    let started = Instant::now();
    let mut first_login = Duration::ZERO;
    for (i, home) in homes[..args.phones].iter().enumerate() {
        let phone = client(home);
        let t = Instant::now();
        phone
            .login(
                if i % 2 == 0 { "bus1" } else { "bus2" }.into(),
                DEMO_PASSWORD.into(),
                None,
            )
            .expect("login");
        if i == 0 {
            first_login = t.elapsed();
        }
        for n in 0..args.records {
            phone
                .create(
                    RecordKind::Case,
                    HAITIANCHENG.into(),
                    vec![
                        FieldValue::new("summary", format!("第{i}台手机第{n}件")),
                        FieldValue::new("source", "bus_session"),
                    ],
                )
                .expect("create");
        }
        let report = phone.sync().expect("sync");
        assert_eq!(report.accepted as usize, args.records);
    }
    let total = started.elapsed();
    let watcher = client(&homes[args.phones]);
    watcher
        .login("bus1".into(), DEMO_PASSWORD.into(), None)
        .expect("login");
    while watcher.sync().expect("sync").more_pending {}
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        let t = Instant::now();
        watcher.sync().expect("sync");
        idle.push(t.elapsed());
    }
    idle.sort();
    Figures {
        total,
        records: args.phones * args.records,
        first_login,
        idle,
    }
}

fn main() {
    let args = Args::parse();
    // A CA of our own and a certificate for the loopback server, as an intranet would have.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("cert");
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (certs.path().join("s.crt"), certs.path().join("s.key"));
    std::fs::write(&cert_path, server_cert.pem()).expect("write");
    std::fs::write(&key_path, server_key.serialize_pem()).expect("write");

    let limits = [("LINLI_RATE_LIMIT", "0"), ("LINLI_LOGIN_RATE_LIMIT", "0")];
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let plain = ServerProcess::start_with_env(plain_dir.path(), &limits);
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let mut env = limits.to_vec();
    env.push(("LINLI_TLS_CERT", cert_path.to_str().expect("utf-8")));
    env.push(("LINLI_TLS_KEY", key_path.to_str().expect("utf-8")));
    let tls = ServerProcess::start_with_env(tls_dir.path(), &env);
    let tls_url = tls.url.replace("127.0.0.1", "localhost");

    let http = run(&plain.url, None, &args);
    let https = run(&tls_url, Some(&ca_cert.pem()), &args);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = |f: &Figures| f.records as f64 / f.total.as_secs_f64();
    println!(
        "{} phones × {} cases, each phone logging in, recording offline and syncing once; \
         then {} syncs of a caught-up phone.\n",
        args.phones, args.records, args.idle
    );
    println!("| figure | plain HTTP | TLS | TLS / HTTP |");
    println!("|---|---|---|---|");
    println!(
        "| records synced per second (login + record + sync, one phone after another) | {:.0} | {:.0} | {:.2} |",
        rate(&http),
        rate(&https),
        rate(&https) / rate(&http)
    );
    println!(
        "| first login (new connection, handshake included) | {:.1} ms | {:.1} ms | {:.2} |",
        ms(http.first_login),
        ms(https.first_login),
        ms(https.first_login) / ms(http.first_login)
    );
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (a, b) = (percentile(&http.idle, p), percentile(&https.idle, p));
        println!(
            "| idle sync {name} (kept-alive connection) | {:.2} ms | {:.2} ms | {:.2} |",
            ms(a),
            ms(b),
            ms(b) / ms(a)
        );
    }
}
