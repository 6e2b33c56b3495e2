//! Commit throughput of the sync log's stores, without HTTP: concurrent tasks commit new cases
//! (real Automerge documents, as the accept path builds them) through [`SyncStore::commit`],
//! on SQLite, or on PostgreSQL through one or more store handles (each with its own pool and
//! committer, as separate server processes would have).
//!
//! ```text
//! linli-store-bench --backend sqlite --tasks 64 --records 20000
//! linli-store-bench --backend postgres --nodes 2 --tasks 64 --records 20000
//! linli-store-bench --backend postgres --tasks 64 --records 20000 --disk
//! ```
//!
//! `--disk` (PostgreSQL) also reports what the run left on disk against the saved Automerge
//! documents (each record's document loaded with its tail and saved): the database, and `records` and `changes` with their
//! indexes and TOAST, right after the run (dead row versions included) and after `VACUUM FULL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use linli_server::store::{Commit, NewChange, ProjectionUpdate, SqliteStore, Store, SyncStore};
use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::Part;
use linli_sync_core::{DeviceId, EditContext, RecordDoc, RecordId, RecordKind};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Measures commits per second and commit latency of a store.
#[derive(Parser, Debug)]
struct Args {
    /// Which store.
    #[arg(long, value_enum)]
    backend: Backend,
    /// Store handles (PostgreSQL: like server processes on one database).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Concurrent committing tasks, spread over the handles.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// New records to commit in all.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// PostgreSQL server (a fresh database is made on it and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    url: String,
    /// PostgreSQL: report the database's size against the saved documents after the run, and
    /// again after `VACUUM FULL`.
    #[arg(long)]
    disk: bool,
    /// PostgreSQL: `ALTER TABLE records SET (fillfactor = N)` before the run, to measure a
    /// table setting before it goes into a migration.
    #[arg(long)]
    fillfactor: Option<u8>,
}

const SEED: &[&str] = &[
    "INSERT INTO places (id, parent, name, level) VALUES ('hz', NULL, '杭州', 'district')",
    "INSERT INTO places (id, parent, name, level) VALUES ('hz/a', 'hz', '街道', 'street')",
    "INSERT INTO users (id, username, password_hash, role, display_name, created_at)
     VALUES ('u1', 'bench', 'x', 'steward', '测试', 0)",
];

fn case(device: DeviceId, n: usize) -> Commit {
    let ctx = EditContext {
        actor: ActorId::random(),
        user: "bench".into(),
        now_ms: 1_763_000_000_000,
    };
    let fields = vec![
        (
            "summary".to_string(),
            format!("{n}号问题：楼道堆放杂物，影响消防通道"),
        ),
        ("category".to_string(), "fire_safety".to_string()),
        ("building".to_string(), "3幢".to_string()),
    ];
    let (doc, change) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &"hz/a".parse().expect("place"),
        &ctx,
        &fields,
    )
    .expect("a valid case");
    let record = doc.record().expect("a record");
    Commit {
        change: NewChange {
            hash: change.hash().0,
            record: doc.id(),
            part: Part::Record,
            place: "hz/a".parse().expect("place"),
            kind: RecordKind::Case,
            bytes: change.raw_bytes().to_vec(),
            actor: ctx.actor.to_hex_string(),
            device,
            user_id: "u1".into(),
            claimed_at: ctx.now_ms,
            received_at: ctx.now_ms,
            touched: fields.iter().map(|(k, _)| k.clone()).collect(),
        },
        projection: ProjectionUpdate::Record {
            status: record.status().map(str::to_owned),
            category: record.category().map(str::to_owned),
            value: record.to_json(),
            // As the accept path commits a new record: not saved, its change is its document.
            doc: None,
            has_conflicts: false,
        },
        expected_version: 0,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let devices: Vec<DeviceId> = (0..args.tasks).map(|_| DeviceId::new()).collect();
    let mut cleanup: Option<(String, String)> = None;
    let _dir;
    let nodes: Vec<Arc<Store>> = match args.backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("linli.db");
            _dir = dir;
            let first = Store::open_sqlite(&path).await.expect("open");
            let mut nodes = vec![Arc::new(first)];
            for _ in 1..args.nodes {
                nodes.push(Arc::new(Store::open_sqlite(&path).await.expect("open")));
            }
            nodes
        }
        Backend::Postgres => {
            let name = format!("linli_bench_{}", uuid::Uuid::new_v4().simple());
            let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&args.url)
                .await
                .expect("PostgreSQL must be reachable at --url");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("create the bench database");
            let (base, _) = args.url.rsplit_once('/').expect("a url with a path");
            let url = format!("{base}/{name}");
            cleanup = Some((args.url.clone(), name));
            let mut nodes = Vec::new();
            for _ in 0..args.nodes {
                nodes.push(Arc::new(Store::open_postgres(&url).await.expect("open")));
            }
            nodes
        }
    };
    // Seed through the first handle, in its dialect.
    match &*nodes[0] {
        Store::Sqlite(s) => {
            let pool = sqlite_pool(s).await;
            for sql in SEED {
                sqlx::query(*sql).execute(&pool).await.expect("seed");
            }
            for d in &devices {
                sqlx::query("INSERT INTO devices (id, user_id, created_at, last_seen) VALUES (?, 'u1', 0, 0)")
                    .bind(d.to_string())
                    .execute(&pool)
                    .await
                    .expect("seed a device");
            }
        }
        Store::Postgres(s) => {
            if let Some(f) = args.fillfactor {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER TABLE records SET (fillfactor = {f})"
                )))
                .execute(s.pool())
                .await
                .expect("set the fillfactor");
            }
            for sql in SEED {
                sqlx::query(*sql).execute(s.pool()).await.expect("seed");
            }
            for d in &devices {
                sqlx::query("INSERT INTO devices (id, user_id, created_at, last_seen) VALUES ($1, 'u1', 0, 0)")
                    .bind(d.to_string())
                    .execute(s.pool())
                    .await
                    .expect("seed a device");
            }
        }
    }
    let each = args.records.div_ceil(args.tasks);
    // Documents are built before the clock starts: the store is measured, not Automerge.
    let work: Vec<Vec<Commit>> = devices
        .iter()
        .map(|d| (0..each).map(|n| case(*d, n)).collect())
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, commits) in work.into_iter().enumerate() {
        let node = nodes[i % nodes.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(commits.len());
            for c in commits {
                let t = Instant::now();
                SyncStore::commit(&*node, c)
                    .await
                    .expect("the store answers")
                    .expect("a new record commits");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "backend={:?} nodes={} tasks={} commits={} elapsed={:.2}s commits/s={:.0} p50={:.1}ms p99={:.1}ms",
        args.backend,
        args.nodes,
        args.tasks,
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    if args.disk
        && let Store::Postgres(s) = &*nodes[0]
    {
        disk(s.pool(), "after the run").await;
        sqlx::raw_sql("VACUUM FULL")
            .execute(s.pool())
            .await
            .expect("VACUUM FULL");
        disk(s.pool(), "after VACUUM FULL").await;
    }
    drop(nodes);
    if let Some((url, name)) = cleanup {
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("reconnect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop the bench database");
    }
}

/// Prints the database's size, and that of `records` and `changes` (indexes and TOAST
/// included), against the saved Automerge documents: each record's stored document with its
/// tail in the log, loaded and saved as Automerge saves it.
async fn disk(pool: &sqlx::PgPool, when: &str) {
    let (db, records, changes): (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_database_size(current_database()), pg_total_relation_size('records'),
                pg_total_relation_size('changes')",
    )
    .fetch_one(pool)
    .await
    .expect("sizes");
    let whole: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT r.doc || COALESCE((
             SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) FROM changes c
             WHERE c.record_id = r.id AND c.part = 'record' AND c.seq > r.doc_seq), ''::bytea)
         FROM records r",
    )
    .fetch_all(pool)
    .await
    .expect("the documents");
    let rows = whole.len();
    let docs: i64 = whole
        .iter()
        .map(|(d,)| {
            let saved = linli_sync_core::automerge::Automerge::load(d)
                .expect("a stored document loads")
                .save();
            i64::try_from(saved.len()).unwrap_or(i64::MAX)
        })
        .sum();
    let mib = |b: i64| b as f64 / 1048576.0;
    let x = |b: i64| b as f64 / docs.max(1) as f64;
    println!(
        "disk {when}: saved documents={:.1} MiB ({rows} records) database={:.1} MiB ({:.1}x) records={:.1} MiB changes={:.1} MiB (records+changes {:.1}x)",
        mib(docs),
        mib(db),
        x(db),
        mib(records),
        mib(changes),
        x(records + changes),
    );
}

/// A second pool on the SQLite file, for seeding (the store keeps its own private).
async fn sqlite_pool(store: &SqliteStore) -> sqlx::SqlitePool {
    let path = store.path().await.expect("the database's path");
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .expect("open the file")
}
