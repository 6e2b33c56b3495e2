//! Fills a PostgreSQL database with many records in minutes, for measuring a server at scale
//! (issue 10: its memory with 1,000,000 stored records against 10,000). Through HTTP a server
//! takes a few hundred records a second; here most of the records are copies made in SQL.
//!
//! 1. The demo district, its users and the demo records are made the real way, by
//!    `linli_server::open` as `serve --demo` with demo records does: each record is captured with
//!    sync-core under a demo user's device and committed through the accept path of a phone's
//!    push (rules, projection, back-office columns, log).
//! 2. Those records are the templates, except bus runs (their run numbers would repeat, and a
//!    run counts the cases that name it) and the records within `--keep-small` places (which
//!    then hold the same records at any size, for a workload that should not grow with it). In
//!    SQL, round after round, each template is copied under a fresh id (a random UUID) into its
//!    own place, with every column of its row (saved documents, projection, back-office columns)
//!    and every change of its log (the same bytes, so the same Automerge hash: a hash is unique
//!    per record, not across records), at new log positions after the last one in the
//!    templates' log order; `last_seq`, `doc_seq` and `personal_seq` point at the copies'
//!    positions, and `log_head` moves on with them, in the same transaction, under its row lock
//!    (so a server running meanwhile would still hand out positions after them).
//! 3. `VACUUM ANALYZE` of the records and the log, so the planner knows the tables' sizes.
//!
//! A copy is a record as the server would have stored it, but for its id being absent from its
//! changes' messages ("create case <template id>"), which nothing reads. Records, their places,
//! documents and log positions agree, so phones bootstrap and pull copies like any record.
//!
//! The database is made when missing; it must hold no records yet (demo places and users are
//! fine). Then serve it:
//!
//! ```text
//! linli-seed --database-url postgres://postgres@127.0.0.1:5432/linli_bench_1m --records 1000000
//! linli-server serve --demo --database-url postgres://postgres@127.0.0.1:5432/linli_bench_1m
//! ```

use std::time::Instant;

use clap::Parser;
use linli_server::Config;
use linli_server::store::Store;
use sqlx::{Connection, PgConnection, Row};

/// Fills a PostgreSQL database with copies of the demo records.
#[derive(Parser, Debug)]
struct Args {
    /// The database to fill (made on its server when missing).
    #[arg(long)]
    database_url: String,
    /// Records in the database when done (templates included).
    #[arg(long, default_value_t = 1_000_000)]
    records: i64,
    /// Places whose records are not copied (they keep only the demo's). Repeatable.
    #[arg(long)]
    keep_small: Vec<String>,
    /// Records copied per transaction.
    #[arg(long, default_value_t = 50_000)]
    batch: i64,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("linli-seed: {e}");
        std::process::exit(1);
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn run(args: Args) -> Res<()> {
    let started = Instant::now();
    create_database(&args.database_url).await?;
    let mut conn = PgConnection::connect(&args.database_url).await?;
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('records') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    let existing: i64 = if migrated {
        sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&mut conn)
            .await?
    } else {
        0
    };
    if existing > 0 {
        return Err("the database already holds records: seed a fresh one".into());
    }

    // 1. The demo district, users and records, through the server's own code.
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(dir.path());
    config.database_url = Some(args.database_url.clone());
    config.demo = true;
    config.demo_records = true;
    let state = linli_server::open(config).await?;
    let Store::Postgres(_) = &state.store else {
        return Err("not a PostgreSQL store".into());
    };
    state.store.close().await;
    drop(state);
    let demo: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM records")
        .fetch_one(&mut conn)
        .await?;
    eprintln!(
        "{demo} demo records committed through the accept path in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 2. The templates, and their changes ranked in log order.
    sqlx::raw_sql("SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TEMP TABLE seed_templates AS
         SELECT r.id, r.last_seq, r.doc_seq, r.personal_seq FROM records r
         WHERE r.kind <> 'bus'
           AND NOT EXISTS (SELECT 1 FROM unnest($1::text[]) AS k(place)
                           WHERE r.place = k.place OR starts_with(r.place, k.place || '/'))",
    )
    .bind(&args.keep_small)
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(
        "CREATE TEMP TABLE seed_changes AS
         SELECT c.id, c.seq, c.record_id, row_number() OVER (ORDER BY c.seq) AS k
         FROM changes c JOIN seed_templates t ON t.id = c.record_id;
         ANALYZE seed_templates; ANALYZE seed_changes;",
    )
    .execute(&mut conn)
    .await?;
    let templates: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM seed_templates")
        .fetch_one(&mut conn)
        .await?;
    if templates == 0 {
        return Err("no record to copy".into());
    }
    let records_cols = columns(&mut conn, "records").await?;
    let changes_cols = columns(&mut conn, "changes").await?;
    // Every column is copied but the row's identity and its log positions.
    let copied = |cols: &[String], skip: &[&str]| -> Vec<String> {
        cols.iter()
            .filter(|c| !skip.contains(&c.as_str()))
            .cloned()
            .collect()
    };
    let record_copied = copied(
        &records_cols,
        &["id", "last_seq", "doc_seq", "personal_seq"],
    );
    let change_copied = copied(&changes_cols, &["id", "seq", "record_id"]);
    let insert_changes = format!(
        "INSERT INTO changes (seq, record_id, {cols})
         SELECT n.seq, n.nid, {from_c}
         FROM seed_new n JOIN changes c ON c.id = n.cid ORDER BY n.seq",
        cols = quoted(&change_copied),
        from_c = prefixed("c", &change_copied),
    );
    let insert_records = format!(
        "INSERT INTO records (id, last_seq, doc_seq, personal_seq, {cols})
         SELECT d.nid, l.seq, COALESCE(s.seq, 0), COALESCE(p.seq, 0), {from_r}
         FROM seed_dup d JOIN records r ON r.id = d.tid
         JOIN seed_new l ON l.nid = d.nid AND l.tseq = d.last_seq
         LEFT JOIN seed_new s ON s.nid = d.nid AND s.tseq = d.doc_seq
         LEFT JOIN seed_new p ON p.nid = d.nid AND p.tseq = d.personal_seq",
        cols = quoted(&record_copied),
        from_r = prefixed("r", &record_copied),
    );

    // 3. Copies, a batch of whole rounds per transaction (the last round may be cut short).
    let per_batch = (args.batch / templates).max(1);
    let mut have = demo;
    let mut round = 1i64;
    while have < args.records {
        let want = (args.records - have).min(per_batch * templates);
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        let base: i64 = sqlx::query_scalar("SELECT seq FROM log_head FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TEMP TABLE seed_dup ON COMMIT DROP AS
             SELECT g.r, t.id AS tid, t.last_seq, t.doc_seq, t.personal_seq,
                    gen_random_uuid()::text AS nid
             FROM generate_series($1::bigint, $2::bigint) AS g(r) CROSS JOIN seed_templates t
             ORDER BY g.r, t.id LIMIT $3",
        )
        .bind(round)
        .bind(round + per_batch - 1)
        .bind(want)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "CREATE TEMP TABLE seed_new ON COMMIT DROP AS
             SELECT $1::bigint + row_number() OVER (ORDER BY d.r, c.k) AS seq, d.nid,
                    c.seq AS tseq, c.id AS cid
             FROM seed_dup d JOIN seed_changes c ON c.record_id = d.tid",
        )
        .bind(base)
        .execute(&mut *tx)
        .await?;
        sqlx::raw_sql("ANALYZE seed_dup; ANALYZE seed_new;")
            .execute(&mut *tx)
            .await?;
        let changes = sqlx::query(sqlx::AssertSqlSafe(insert_changes.clone()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let records = sqlx::query(sqlx::AssertSqlSafe(insert_records.clone()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if records as i64 != want {
            return Err(format!("copied {records} records of {want}").into());
        }
        sqlx::query("UPDATE log_head SET seq = $1")
            .bind(base + changes as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        have += want;
        round += per_batch;
        eprintln!(
            "  {have} records ({records} copied with {changes} changes in {:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }

    // 4. Statistics for the planner, as autovacuum would gather them in time.
    let t = Instant::now();
    for table in ["records", "changes"] {
        // One statement a call: VACUUM cannot run in the block several would make.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {table}")))
            .execute(&mut conn)
            .await?;
    }
    eprintln!("VACUUM ANALYZE in {:.1} s", t.elapsed().as_secs_f64());
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM records) AS records, (SELECT COUNT(*) FROM changes) AS changes,
                (SELECT seq FROM log_head) AS head,
                (SELECT MAX(seq) FROM changes) AS max_seq,
                pg_database_size(current_database()) AS size",
    )
    .fetch_one(&mut conn)
    .await?;
    let (records, changes, head, max_seq, size): (i64, i64, i64, Option<i64>, i64) = (
        row.try_get("records")?,
        row.try_get("changes")?,
        row.try_get("head")?,
        row.try_get("max_seq")?,
        row.try_get("size")?,
    );
    if max_seq != Some(head) || changes != head {
        return Err(format!(
            "log positions disagree: {changes} changes, log_head {head}, highest {max_seq:?}"
        )
        .into());
    }
    println!(
        "seeded: records={records} changes={changes} log_head={head} templates={templates} database={:.1} MiB elapsed={:.1}s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Makes the database of `url` on its server when it does not exist yet.
async fn create_database(url: &str) -> Res<()> {
    let (base, name) = url.rsplit_once('/').ok_or("a database url ends in /NAME")?;
    let name = name.split('?').next().unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("database name {name:?}: letters, digits and _ only").into());
    }
    let mut admin = PgConnection::connect(&format!("{base}/postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        eprintln!("made database {name}");
    }
    Ok(())
}

/// The columns of `table`, in order.
async fn columns(conn: &mut PgConnection, table: &str) -> Res<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?)
}

/// `a.x, a.y, …`
fn prefixed(alias: &str, cols: &[String]) -> String {
    cols.iter()
        .map(|c| format!("{alias}.\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"x", "y", …`
fn quoted(cols: &[String]) -> String {
    cols.iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
