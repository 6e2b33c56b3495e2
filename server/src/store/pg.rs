//! The PostgreSQL backend of the sync path ([`SyncStore`]), for several server processes on one
//! database.
//!
//! What differs from SQLite, and why:
//! - Writers run concurrently, so a sequence cannot give log positions (a transaction can take
//!   7, stay open while 8 commits, and commit after a reader moved past 8). A commit group writes
//!   its changes with no position, then, as its last statements, takes a range of positions
//!   from the one-row `log_head` (whose row lock is held until commit) and stamps them. Commits
//!   therefore take their ranges in commit order, and a reader that sees `log_head` at *n* sees
//!   every change up to *n* (see docs/PROTOCOL.md).
//! - Two processes may accept changes to one record at once: the version compare-and-set in
//!   the `UPDATE` (which waits for the other's row lock, then re-reads the version) makes one of
//!   them reload and ingest again.
//! - A group that deadlocks with another process's group (they lock records in different
//!   orders) is rolled back by PostgreSQL and written again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use linli_sync_core::protocol::Part;
use linli_sync_core::{DeviceId, PlaceId, RecordId, RecordKind};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row, SqlSafeStr};

use super::group::{GroupCommit, Outcome, Work, Writer};
use super::log::{
    ActorBinding, Commit, CommitConflict, ProjectionUpdate, PulledPage, PulledRow, RecordMeta,
};
use super::pg_office::{OFFICE_COLUMNS, OFFICE_VALUES, OfficeRow};
use super::seam::{AcceptFacts, Snapshot, StoreError, StoreResult, SyncStore};
use super::{place_from_db, push_within};
use crate::error::{Error, Result};
use crate::web::live::LiveHub;

/// The numbered migrations of the PostgreSQL backend (its own series, beside SQLite's).
const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "sync",
        include_str!("../../migrations/postgres/0001_sync.sql"),
    ),
    (
        2,
        "accounts",
        include_str!("../../migrations/postgres/0002_accounts.sql"),
    ),
    (
        3,
        "signing_keys",
        include_str!("../../migrations/postgres/0003_signing_keys.sql"),
    ),
    (
        4,
        "office",
        include_str!("../../migrations/postgres/0004_office.sql"),
    ),
    (
        5,
        "changes_archive",
        include_str!("../../migrations/postgres/0005_changes_archive.sql"),
    ),
    (
        6,
        "touched_text",
        include_str!("../../migrations/postgres/0006_touched_text.sql"),
    ),
];

fn pg_migrator() -> Migrator {
    Migrator::with_migrations(
        PG_MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// How many migrations this binary embeds for PostgreSQL.
pub fn embedded_migrations() -> usize {
    PG_MIGRATIONS.len()
}

/// How often a group that PostgreSQL rolled back (deadlock, serialization) is written again.
const GROUP_RETRIES: usize = 5;

/// The sync log on PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    group: GroupCommit,
    /// This process's name in change notifications, so it skips its own.
    node: Arc<str>,
    /// Which sets of places were lately found small ([`SMALL_SCOPE`]).
    scope_sizes: Arc<ScopeSizes>,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and runs pending migrations.
    pub async fn open(url: &str) -> Result<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::BadRequest(format!("bad database url: {e}")))?
            .application_name("linli-server");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        pg_migrator().run(&pool).await?;
        let node: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        Ok(PgStore {
            group: GroupCommit::start(PgWriter {
                pool: pool.clone(),
                node: node.clone(),
            }),
            pool,
            node,
            scope_sizes: Arc::default(),
        })
    }

    /// This store with every pull and bootstrap page walking its order's index, as on a large
    /// set of places ([`SMALL_SCOPE`]), so that tests on a few records take that path too.
    #[cfg(test)]
    pub(crate) fn walking_always(mut self) -> PgStore {
        self.scope_sizes = Arc::new(ScopeSizes {
            known: Mutex::default(),
            limit: -1,
        });
        self
    }

    /// Announces on `hub` the changes other processes on this database commit, as PostgreSQL
    /// delivers their notifications (this process announces its own as it commits them).
    /// Returns once listening, so nothing committed after it returns is missed while the
    /// connection holds. After a lost connection (the database restarted, say) it listens again
    /// and then tells every stream to sync ([`LiveHub::resync`]): what other processes committed
    /// meanwhile was not heard.
    pub async fn forward_changes(&self, hub: Arc<LiveHub>) -> Result<tokio::task::JoinHandle<()>> {
        let mut listener = listen(&self.pool).await?;
        let node = self.node.clone();
        let pool = self.pool.clone();
        Ok(tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => announce(&hub, &node, n.payload()),
                    // The connection ended, and the listener listens again on a new one.
                    Ok(None) => {
                        tracing::warn!("the change listener lost its connection; streams resync");
                        hub.resync();
                    }
                    // The store is closing (the server shuts down): let its pool close.
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "the change listener lost its connection");
                        listener = loop {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            match listen(&pool).await {
                                Ok(l) => break l,
                                Err(sqlx::Error::PoolClosed) => return,
                                Err(e) => tracing::debug!(error = %e, "listening again failed"),
                            }
                        };
                        tracing::info!("the change listener listens again; streams resync");
                        hub.resync();
                    }
                }
            }
        }))
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<()> {
        pg_migrator().run(&self.pool).await?;
        Ok(())
    }

    /// A cheap query proving the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The embedded migrations `_sqlx_migrations` does not record as applied with the same text.
    pub async fn unapplied_migrations(&self) -> Result<Vec<super::UnappliedMigration>> {
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        let applied: Vec<(i64, bool, Vec<u8>)> = if has_table {
            sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(super::unapplied(&pg_migrator(), &applied))
    }

    /// Number of records.
    pub async fn record_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Number of changes in the log.
    pub async fn change_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM changes")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Every logged change of a record (both parts), in log order, with its attribution.
    pub async fn change_meta(&self, record: RecordId) -> Result<Vec<super::ChangeMeta>> {
        let rows = sqlx::query(
            "SELECT c.seq, c.hash, c.actor, c.device_id, c.claimed_at, c.received_at, c.part,
                    c.touched, c.message,
                    CASE WHEN c.message IS NULL OR c.actor = '' THEN c.bytes END AS bytes,
                    u.username, u.display_name
             FROM changes c JOIN users u ON u.id = c.user_id
             WHERE c.record_id = $1 ORDER BY c.seq",
        )
        .bind(record.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let part: String = row.try_get("part")?;
                let touched: String = row.try_get("touched")?;
                let (message, actor) = super::log::read_from_change(
                    row.try_get("message")?,
                    row.try_get("actor")?,
                    row.try_get("bytes")?,
                );
                Ok(super::ChangeMeta {
                    seq: row.try_get("seq")?,
                    hash: row.try_get("hash")?,
                    actor,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    device_id: row.try_get("device_id")?,
                    claimed_at: row.try_get("claimed_at")?,
                    received_at: row.try_get("received_at")?,
                    part: part.parse().map_err(Error::Internal)?,
                    touched: super::touched::decode(&touched),
                    message,
                })
            })
            .collect()
    }

    /// The pool (for the parts of the server not yet behind the seam, and for tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

type MetaRow = (
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn meta_from_row(row: MetaRow) -> StoreResult<Option<RecordMeta>> {
    let (place, kind, version, bytes, personal_bytes, doc_tail, personal_tail) = row;
    let (Some(place), Some(kind)) = (place, kind) else {
        return Ok(None);
    };
    Ok(Some(RecordMeta {
        place: place_from_db(&place).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind: kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("{e}")))?,
        version: version.unwrap_or(0),
        bytes: bytes.unwrap_or(0),
        personal_bytes: personal_bytes.unwrap_or(0),
        doc_tail: doc_tail.unwrap_or(0),
        personal_tail: personal_tail.unwrap_or(0),
    }))
}

/// One statement (one snapshot) reading a saved document and the tail of changes after it.
const DOC_WITH_TAIL: &str = "SELECT CASE WHEN r.doc_tail > 0 THEN r.doc || COALESCE((
            SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) FROM changes c
            WHERE c.record_id = r.id AND c.part = 'record' AND c.seq > r.doc_seq), ''::bytea)
        ELSE r.doc END
     FROM records r WHERE r.id = $1";

const PERSONAL_WITH_TAIL: &str =
    "SELECT CASE WHEN r.personal_tail > 0 THEN r.personal_doc || COALESCE((
            SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) FROM changes c
            WHERE c.record_id = r.id AND c.part = 'personal' AND c.seq > r.personal_seq),
            ''::bytea)
        ELSE r.personal_doc END
     FROM records r WHERE r.id = $1";

impl SyncStore for PgStore {
    async fn accept_facts(
        &self,
        record: RecordId,
        hash: &[u8; 32],
        actor: &str,
    ) -> StoreResult<AcceptFacts> {
        let row = sqlx::query(
            "SELECT r.place, r.kind, r.version, r.bytes, r.personal_bytes, r.doc_tail,
                    r.personal_tail,
                    (SELECT received_at FROM changes WHERE record_id = $1 AND hash = $2) AS held,
                    (SELECT device_id FROM actors WHERE actor = $3) AS bound
             FROM (SELECT 1) AS one LEFT JOIN records r ON r.id = $1",
        )
        .bind(record.to_string())
        .bind(&hash[..])
        .bind(actor)
        .fetch_one(&self.pool)
        .await?;
        let meta = meta_from_row((
            row.try_get("place")?,
            row.try_get("kind")?,
            row.try_get("version")?,
            row.try_get("bytes")?,
            row.try_get("personal_bytes")?,
            row.try_get("doc_tail")?,
            row.try_get("personal_tail")?,
        ))?;
        let held: Option<i64> = row.try_get("held")?;
        let bound: Option<String> = row.try_get("bound")?;
        Ok((
            meta,
            held,
            bound.map_or(ActorBinding::Unknown, ActorBinding::Device),
        ))
    }

    async fn record_meta(&self, record: RecordId) -> StoreResult<Option<RecordMeta>> {
        let row: Option<MetaRow> = sqlx::query_as(
            "SELECT place, kind, version, bytes, personal_bytes, doc_tail, personal_tail
             FROM records WHERE id = $1",
        )
        .bind(record.to_string())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => meta_from_row(row),
            None => Ok(None),
        }
    }

    async fn change_received_at(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar(
                "SELECT received_at FROM changes WHERE record_id = $1 AND hash = $2",
            )
            .bind(record.to_string())
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    async fn record_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(DOC_WITH_TAIL)
            .bind(record.to_string())
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn personal_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        let doc: Option<Option<Vec<u8>>> = sqlx::query_scalar(PERSONAL_WITH_TAIL)
            .bind(record.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(doc.flatten())
    }

    async fn commit(
        &self,
        commit: Commit,
    ) -> StoreResult<std::result::Result<i64, CommitConflict>> {
        Ok(self.group.commit(Work::Commit(Box::new(commit))).await?)
    }

    async fn log_end(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT seq FROM log_head")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn pull(
        &self,
        cursor: i64,
        me: DeviceId,
        scopes: &[PlaceId],
        personal: bool,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<PulledPage> {
        // One snapshot for the end and the page: the end it reads covers what it can see.
        let mut tx = read_tx(&self.pool).await?;
        let end: i64 = sqlx::query_scalar("SELECT seq FROM log_head")
            .fetch_one(&mut *tx)
            .await?;
        let mut page = PulledPage {
            rows: Vec::new(),
            end,
            full: false,
        };
        if end > cursor && !scopes.is_empty() {
            let small = self.scope_sizes.is_small(&mut tx, scopes).await?;
            if small {
                collect_by_place(&mut tx).await?;
            } else {
                walk_index(&mut tx).await?;
            }
            let mut qb = QueryBuilder::<Postgres>::new("");
            if small {
                // Every change of the places after the cursor, then the first of them.
                qb.push("WITH s AS MATERIALIZED (SELECT c.seq FROM changes c WHERE ");
                pull_filter(&mut qb, cursor, end, me, scopes, personal);
                qb.push(") ");
            }
            qb.push(
                "SELECT c.seq, c.record_id, c.part, c.replaces, c.bytes, c.received_at,
                        c.device_id, u.username
                 FROM changes c JOIN users u ON u.id = c.user_id WHERE ",
            );
            if small {
                qb.push("c.seq IN (SELECT seq FROM s ORDER BY seq LIMIT ");
                qb.push_bind(i64::from(limit) + 1);
                qb.push(")");
            } else {
                pull_filter(&mut qb, cursor, end, me, scopes, personal);
            }
            qb.push(" ORDER BY c.seq LIMIT ");
            qb.push_bind(i64::from(limit) + 1);
            let query = qb.build();
            let mut rows = query.fetch(&mut *tx);
            let mut bytes = 0usize;
            while let Some(row) = rows.try_next().await? {
                let data: Vec<u8> = row.try_get("bytes")?;
                let over_bytes = !page.rows.is_empty() && bytes + data.len() > max_bytes;
                if page.rows.len() == limit as usize || over_bytes {
                    page.full = true;
                    break;
                }
                bytes += data.len();
                let part: String = row.try_get("part")?;
                page.rows.push(PulledRow {
                    seq: row.try_get("seq")?,
                    record_id: row.try_get("record_id")?,
                    part: part.parse().map_err(StoreError::Corrupt)?,
                    replaces: row.try_get("replaces")?,
                    bytes: data,
                    received_at: row.try_get("received_at")?,
                    username: row.try_get("username")?,
                    device_id: row.try_get("device_id")?,
                });
            }
        }
        tx.commit().await?;
        Ok(page)
    }

    async fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
        personal: bool,
    ) -> StoreResult<Vec<Snapshot>> {
        let mut tx = read_tx(&self.pool).await?;
        let small = self.scope_sizes.is_small(&mut tx, scopes).await?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        if small {
            // Every record of the places after `after`, then the first of them.
            qb.push("WITH s AS MATERIALIZED (SELECT r.id FROM records r WHERE ");
            snapshot_filter(&mut qb, scopes, after);
            qb.push(") ");
            collect_by_place(&mut tx).await?;
        } else {
            walk_index(&mut tx).await?;
        }
        // Each row carries its document with its tail appended, all in the statement's snapshot.
        qb.push(
            "SELECT r.id,
                    CASE WHEN r.doc_tail > 0 THEN r.doc || COALESCE((
                        SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) FROM changes c
                        WHERE c.record_id = r.id AND c.part = 'record' AND c.seq > r.doc_seq),
                        ''::bytea) ELSE r.doc END AS doc, ",
        );
        qb.push(if personal {
            "CASE WHEN r.personal_tail > 0 THEN r.personal_doc || COALESCE((
                 SELECT string_agg(c.bytes, ''::bytea ORDER BY c.seq) FROM changes c
                 WHERE c.record_id = r.id AND c.part = 'personal' AND c.seq > r.personal_seq),
                 ''::bytea) ELSE r.personal_doc END AS personal_doc"
        } else {
            "NULL::bytea AS personal_doc"
        });
        qb.push(" FROM records r WHERE ");
        if small {
            qb.push("r.id IN (SELECT id FROM s ORDER BY id LIMIT ")
                .push_bind(i64::from(limit))
                .push(")");
        } else {
            snapshot_filter(&mut qb, scopes, after);
        }
        qb.push(" ORDER BY r.id LIMIT ").push_bind(i64::from(limit));
        let mut out = Vec::new();
        {
            let query = qb.build();
            let mut rows = query.fetch(&mut *tx);
            let mut bytes = 0usize;
            while let Some(row) = rows.try_next().await? {
                let id: String = row.try_get("id")?;
                let doc: Vec<u8> = row.try_get("doc")?;
                let personal_doc: Option<Vec<u8>> = row.try_get("personal_doc")?;
                bytes += doc.len() + personal_doc.as_ref().map_or(0, Vec::len);
                out.push((id, doc, personal_doc));
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// The notification channel of committed changes.
const CHANNEL: &str = "linli_changes";
/// PostgreSQL refuses payloads of 8,000 bytes and more; a group's announcements are split below.
const MAX_PAYLOAD: usize = 7_000;

/// A group's committed changes as notifications: `{"node": …, "changes": [[record, place, kind,
/// device], …]}`, each under [`MAX_PAYLOAD`].
fn notifications(node: &str, logged: &[Logged]) -> Vec<String> {
    let mut out = Vec::new();
    let mut batch: Vec<[&str; 4]> = Vec::new();
    let mut size = 0;
    for l in logged {
        let entry = [
            l.record.as_str(),
            l.place.as_str(),
            l.kind.as_str(),
            l.device.as_str(),
        ];
        let len: usize = entry.iter().map(|s| s.len() + 8).sum();
        if size + len > MAX_PAYLOAD - 100 && !batch.is_empty() {
            out.push(serde_json::json!({ "node": node, "changes": batch }).to_string());
            batch.clear();
            size = 0;
        }
        batch.push(entry);
        size += len;
    }
    if !batch.is_empty() {
        out.push(serde_json::json!({ "node": node, "changes": batch }).to_string());
    }
    out
}

/// Announces another process's notification on the hub (its own are skipped; a payload that does
/// not parse is logged and dropped).
fn announce(hub: &LiveHub, me: &str, payload: &str) {
    #[derive(serde::Deserialize)]
    struct Payload {
        node: String,
        changes: Vec<[String; 4]>,
    }
    let parsed: Payload = match serde_json::from_str(payload) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "a change notification did not parse");
            return;
        }
    };
    if parsed.node == me {
        return;
    }
    for [record, place, kind, device] in parsed.changes {
        let (Ok(place), Ok(kind)) = (place.parse::<PlaceId>(), kind.parse::<RecordKind>()) else {
            continue;
        };
        hub.record_changed(record, place, kind.as_str(), device);
    }
}

/// A connection listening for other processes' commits.
async fn listen(pool: &PgPool) -> std::result::Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// How many records a phone's places may hold for its pulls and bootstrap pages to collect
/// every candidate row of the places and sort them. Beyond it they walk the order's index instead
/// (`enable_sort = off`) and stop after a page. Either way is the planner's choice when its
/// statistics are fresh, but they are not on a database filling fast (a district just moved,
/// statistics from when the tables were empty: 190–240 ms a page at 50,000 records collecting
/// and sorting, 4–6 ms walking), nor do they help a small place among a million records (a
/// walk of the whole index, 2–6 s, where collecting its 26 records takes under a millisecond).
const SMALL_SCOPE: i64 = 5_000;

/// How long a set of places stays known as large before it is counted again. One known as small
/// is counted again sooner, as a small count is cheap and a district filling fast (one just
/// moved, say) grows past [`SMALL_SCOPE`] within a minute.
const LARGE_SCOPE_TTL: Duration = Duration::from_secs(60);
/// See [`LARGE_SCOPE_TTL`].
const SMALL_SCOPE_TTL: Duration = Duration::from_secs(5);

/// Sets of places recently counted against [`SMALL_SCOPE`], so that a phone's pulls do not
/// count its places every time.
#[derive(Debug)]
struct ScopeSizes {
    known: Mutex<HashMap<Vec<PlaceId>, (bool, Instant)>>,
    /// [`SMALL_SCOPE`], or in tests -1, so that every read walks its index.
    limit: i64,
}

impl Default for ScopeSizes {
    fn default() -> Self {
        ScopeSizes {
            known: Mutex::default(),
            limit: SMALL_SCOPE,
        }
    }
}

impl ScopeSizes {
    /// Whether the records within `scopes` number at most [`SMALL_SCOPE`], counted (in `tx`, an
    /// index-only scan that stops past the limit) unless known lately.
    async fn is_small(&self, tx: &mut PgConnection, scopes: &[PlaceId]) -> StoreResult<bool> {
        let now = Instant::now();
        if let Some(&(small, at)) = self.lock().get(scopes)
            && now.duration_since(at)
                < if small {
                    SMALL_SCOPE_TTL
                } else {
                    LARGE_SCOPE_TTL
                }
        {
            return Ok(small);
        }
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT count(*) FROM (SELECT 1 FROM records r WHERE ");
        push_within(&mut qb, "r.place", scopes);
        qb.push(" LIMIT ").push_bind(self.limit + 1).push(") s");
        let count: i64 = qb.build_query_scalar().fetch_one(&mut *tx).await?;
        let small = count <= self.limit;
        let mut known = self.lock();
        // Bounded by forgetting everything now and then: a recount costs a few milliseconds.
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(scopes.to_vec(), (small, now));
        Ok(small)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<PlaceId>, (bool, Instant)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A read-only snapshot transaction: a pull's end and page, or a bootstrap page's documents and
/// their tails, all from one snapshot.
async fn read_tx(pool: &PgPool) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    Ok(pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?)
}

/// Makes the rest of `tx` walk its `ORDER BY` index rather than sort (see [`SMALL_SCOPE`]).
async fn walk_index(tx: &mut PgConnection) -> StoreResult<()> {
    plan_with(tx, "enable_sort").await
}

/// Makes the rest of `tx` collect a small set of places' rows through the place index rather
/// than read the whole table, which stale statistics can suggest (all the rows were in one
/// place when they were taken).
async fn collect_by_place(tx: &mut PgConnection) -> StoreResult<()> {
    plan_with(tx, "enable_seqscan").await
}

/// Turns `setting` off for the rest of `tx`, and JIT compilation with it: a page read never
/// gains from it, yet a walk the planner costs high (it cannot know the page fills early) was
/// compiled first, 290 ms on a 1,000,000-record table.
async fn plan_with(tx: &mut PgConnection, setting: &str) -> StoreResult<()> {
    sqlx::query("SELECT set_config($1, 'off', true), set_config('jit', 'off', true)")
        .bind(setting)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A pull's rows: after `cursor` up to `end`, within `scopes`, not `me`'s own, personal parts
/// only if `personal`.
fn pull_filter(
    qb: &mut QueryBuilder<Postgres>,
    cursor: i64,
    end: i64,
    me: DeviceId,
    scopes: &[PlaceId],
    personal: bool,
) {
    qb.push("c.seq > ").push_bind(cursor);
    qb.push(" AND c.seq <= ").push_bind(end);
    qb.push(" AND c.device_id <> ").push_bind(me.to_string());
    if !personal {
        qb.push(" AND c.part = 'record'");
    }
    qb.push(" AND ");
    push_within(qb, "c.place", scopes);
}

/// A bootstrap page's records: within `scopes`, after `after`.
fn snapshot_filter(qb: &mut QueryBuilder<Postgres>, scopes: &[PlaceId], after: Option<&str>) {
    push_within(qb, "r.place", scopes);
    if let Some(a) = after {
        qb.push(" AND r.id > ").push_bind(a.to_string());
    }
}

/// The committer's side: writes groups to PostgreSQL.
#[derive(Debug)]
struct PgWriter {
    pool: PgPool,
    node: Arc<str>,
}

impl Writer for PgWriter {
    async fn commit_group(&self, works: &[&Work]) -> Result<Vec<Outcome>> {
        let mut attempt = 0;
        loop {
            match commit_group(&self.pool, &self.node, works).await {
                Err(Error::Database(e)) if attempt < GROUP_RETRIES && is_retryable(&e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "a commit group was rolled back; writing it again");
                }
                other => return other,
            }
        }
    }
}

/// Deadlock or serialization failure: PostgreSQL rolled the transaction back, and writing it
/// again may succeed.
fn is_retryable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// What a change written in the group still needs once positions are handed out.
struct Logged {
    /// Index of its work in the group.
    work: usize,
    /// Its row in `changes`.
    row: i64,
    record: String,
    place: String,
    kind: RecordKind,
    device: String,
    /// The part saved whole by this commit, if any.
    whole: Option<Part>,
}

async fn commit_group(pool: &PgPool, node: &str, works: &[&Work]) -> Result<Vec<Outcome>> {
    // Records are written in id order (a change's commits keep their order within a record), so
    // two processes' groups lock the records they share in the same order and rarely deadlock.
    let mut order: Vec<usize> = (0..works.len()).collect();
    order.sort_by(|&a, &b| group_key(works[a]).cmp(&group_key(works[b])));
    let mut tx = pool.begin().await?;
    let mut outcomes: Vec<Option<Outcome>> = (0..works.len()).map(|_| None).collect();
    let mut logged = Vec::new();
    for i in order {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let outcome = match works[i] {
            Work::Commit(commit) => match commit_in(&mut savepoint, commit).await {
                Ok(Ok((row, whole))) => {
                    logged.push(Logged {
                        work: i,
                        row,
                        record: commit.change.record.to_string(),
                        place: commit.change.place.as_str().to_string(),
                        kind: commit.change.kind,
                        device: commit.change.device.to_string(),
                        whole,
                    });
                    Ok(Ok(0))
                }
                Ok(Err(conflict)) => Ok(Err(conflict)),
                Err(e) => Err(e),
            },
            Work::Touch { device, now } => {
                sqlx::query("UPDATE devices SET last_seen = $1 WHERE id = $2 AND last_seen < $3")
                    .bind(now)
                    .bind(device)
                    .bind(now - 60_000)
                    .execute(&mut *savepoint)
                    .await
                    .map(|_| Ok(0))
                    .map_err(Error::from)
            }
        };
        if matches!(outcome, Ok(Ok(_))) {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
        outcomes[i] = Some(outcome);
    }
    if !logged.is_empty() {
        stamp_positions(&mut tx, &mut logged).await?;
        for l in &logged {
            outcomes[l.work] = Some(Ok(Ok(l.row)));
        }
        // Delivered by PostgreSQL only if and when the transaction commits.
        for payload in notifications(node, &logged) {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal("a work was not written".into()))))
        .collect())
}

fn group_key(work: &Work) -> Option<String> {
    match work {
        Work::Commit(c) => Some(c.change.record.to_string()),
        Work::Touch { .. } => None,
    }
}

/// The group's last statements: takes a range of log positions from `log_head` (its row lock,
/// held until commit, puts the ranges in commit order) and writes them into the group's changes
/// and their records. Replaces each `Logged::row` with the change's position.
async fn stamp_positions(tx: &mut PgConnection, logged: &mut [Logged]) -> Result<()> {
    let n = logged.len() as i64;
    let base: i64 = sqlx::query_scalar("UPDATE log_head SET seq = seq + $1 RETURNING seq - $1")
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
    // Positions follow the order the changes were written in, so a record's changes keep their
    // order in the log (every change after its dependencies).
    let mut rows = Vec::with_capacity(logged.len());
    let mut seqs = Vec::with_capacity(logged.len());
    // Record → (last position, position of its last whole save of each part, or 0).
    let mut records: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    for (k, l) in logged.iter().enumerate() {
        let seq = base + 1 + k as i64;
        rows.push(l.row);
        seqs.push(seq);
        let r = records.entry(l.record.as_str()).or_insert((0, 0, 0));
        r.0 = seq;
        match l.whole {
            Some(Part::Record) => r.1 = seq,
            Some(Part::Personal) => r.2 = seq,
            None => {}
        }
    }
    sqlx::query(
        "UPDATE changes SET seq = v.seq
         FROM UNNEST($1::bigint[], $2::bigint[]) AS v(id, seq) WHERE changes.id = v.id",
    )
    .bind(&rows)
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    let (mut ids, mut last, mut doc, mut personal) = (vec![], vec![], vec![], vec![]);
    for (id, (l, d, p)) in records {
        ids.push(id.to_string());
        last.push(l);
        doc.push(d);
        personal.push(p);
    }
    sqlx::query(
        "UPDATE records r SET last_seq = v.last,
                doc_seq = CASE WHEN v.doc > 0 THEN v.doc ELSE r.doc_seq END,
                personal_seq = CASE WHEN v.personal > 0 THEN v.personal ELSE r.personal_seq END
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
              AS v(id, last, doc, personal)
         WHERE r.id = v.id",
    )
    .bind(&ids)
    .bind(&last)
    .bind(&doc)
    .bind(&personal)
    .execute(&mut *tx)
    .await?;
    for (l, seq) in logged.iter_mut().zip(seqs) {
        l.row = seq;
    }
    Ok(())
}

/// A new record: its value, document and back-office columns in one write of its row (office
/// parameters first, `$1`–`$20`, as [`OfficeRow::bind`] binds them). Without a saved document
/// (`$29` NULL) the record's document is its first change, in the log (see migration 0013).
static INSERT_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO records (id, kind, place, status, category, created_at, updated_at,
                              last_seq, value, has_conflicts, doc, doc_tail, bytes, version,
                              {OFFICE_COLUMNS})
         VALUES ($21, $22, $23, $24, $25, $26, $26, 0, $27::jsonb, $28,
                 COALESCE($29, ''::bytea), CASE WHEN $29::bytea IS NULL THEN 1 ELSE 0 END,
                 $30, 1, {OFFICE_VALUES})
         ON CONFLICT (id) DO NOTHING"
    )
});

/// A record's new state at an expected version, with its back-office columns, in one write of
/// its row (office parameters first, as for [`INSERT_RECORD`]).
static UPDATE_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE records SET ({OFFICE_COLUMNS}) = ({OFFICE_VALUES}),
                status = $21, category = $22, updated_at = $23, value = $24::jsonb,
                has_conflicts = $25, bytes = bytes + $26, version = version + 1,
                doc = COALESCE($27, doc),
                doc_tail = CASE WHEN $27::bytea IS NULL THEN doc_tail + 1 ELSE 0 END
         WHERE id = $28 AND version = $29"
    )
});

/// Within the group's transaction: binds the actor, compares and bumps the record's version
/// (writing its new state), and writes the change without a position. Returns the change's row
/// and the part this commit saved whole.
async fn commit_in(
    conn: &mut PgConnection,
    commit: &Commit,
) -> Result<std::result::Result<(i64, Option<Part>), CommitConflict>> {
    let Commit {
        change,
        projection,
        expected_version,
    } = commit;
    let device = change.device.to_string();
    let record = change.record.to_string();
    let size = i64::try_from(change.bytes.len()).unwrap_or(i64::MAX);
    // Bound here or by another process's committed (or, waited for, committing) transaction.
    let bound: Option<String> = sqlx::query_scalar(
        "INSERT INTO actors (actor, device_id, first_seen) VALUES ($1, $2, $3)
         ON CONFLICT (actor) DO NOTHING RETURNING device_id",
    )
    .bind(&change.actor)
    .bind(&device)
    .bind(change.received_at)
    .fetch_optional(&mut *conn)
    .await?;
    if bound.is_none() {
        let owner: String = sqlx::query_scalar("SELECT device_id FROM actors WHERE actor = $1")
            .bind(&change.actor)
            .fetch_one(&mut *conn)
            .await?;
        if owner != device {
            return Ok(Err(CommitConflict::ForeignActor));
        }
    }
    let whole = match projection {
        ProjectionUpdate::Record { doc: Some(_), .. } => Some(Part::Record),
        ProjectionUpdate::Personal { doc: Some(_), .. } => Some(Part::Personal),
        _ => None,
    };
    let updated = match projection {
        ProjectionUpdate::Record {
            status,
            category,
            value,
            doc,
            has_conflicts,
        } if *expected_version == 0 => {
            let office = OfficeRow::derive(&change.place, value);
            office
                .bind(sqlx::query(INSERT_RECORD.as_str()))
                .bind(&record)
                .bind(change.kind.as_str())
                .bind(change.place.as_str())
                .bind(status.as_deref())
                .bind(category.as_deref())
                .bind(change.received_at)
                .bind(value.to_string())
                .bind(has_conflicts)
                .bind(doc.as_deref())
                .bind(size)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
        ProjectionUpdate::Record {
            status,
            category,
            value,
            doc,
            has_conflicts,
        } => {
            let office = OfficeRow::derive(&change.place, value);
            office
                .bind(sqlx::query(UPDATE_RECORD.as_str()))
                .bind(status.as_deref())
                .bind(category.as_deref())
                .bind(change.received_at)
                .bind(value.to_string())
                .bind(has_conflicts)
                .bind(size)
                .bind(doc.as_deref())
                .bind(&record)
                .bind(expected_version)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
        ProjectionUpdate::Personal { doc, values } => sqlx::query(
            "UPDATE records SET personal = $1::jsonb, updated_at = $2,
                    personal_bytes = personal_bytes + $3, version = version + 1,
                    personal_doc = COALESCE($4, personal_doc),
                    personal_tail = CASE WHEN $4::bytea IS NULL THEN personal_tail + 1 ELSE 0 END
             WHERE id = $5 AND version = $6",
        )
        .bind(values.to_string())
        .bind(change.received_at)
        .bind(size)
        .bind(doc.as_deref())
        .bind(&record)
        .bind(expected_version)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    if updated != 1 {
        return Ok(Err(CommitConflict::Version));
    }
    let touched = super::touched::encode(&change.touched);
    let row: Option<i64> = sqlx::query_scalar(
        "INSERT INTO changes (hash, record_id, place, kind, part, bytes, actor, device_id,
                              user_id, claimed_at, received_at, touched)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (record_id, hash) DO NOTHING RETURNING id",
    )
    .bind(&change.hash[..])
    .bind(&record)
    .bind(change.place.as_str())
    .bind(change.kind.as_str())
    .bind(change.part.as_str())
    .bind(&change.bytes)
    .bind(super::log::LOGGED_ACTOR)
    .bind(&device)
    .bind(&change.user_id)
    .bind(change.claimed_at)
    .bind(change.received_at)
    .bind(touched)
    .fetch_optional(&mut *conn)
    .await?;
    // Another process committed this very change first: the caller reloads and finds it held.
    Ok(row.map(|row| (row, whole)).ok_or(CommitConflict::Version))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::conformance::{Fixture, PgTest, new_case};
    use crate::web::live::LiveEvent;

    async fn next_record(rx: &mut tokio::sync::broadcast::Receiver<LiveEvent>) -> (String, String) {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Ok(LiveEvent::Record { id, device, .. })) => (id, device),
            other => panic!("no record event within a second: {other:?}"),
        }
    }

    /// A process hears, within a second, of the changes another process on the same database
    /// commits; not of its own (it announces those itself), nor of a commit that wrote nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_process_hears_of_committed_changes_within_a_second() {
        let a = PgTest::create().await;
        let b = PgTest::another_node(&a).await;
        let (da, db) = (DeviceId::new(), DeviceId::new());
        a.seed(&[da, db]).await;
        let hub = Arc::new(LiveHub::default());
        let mut rx = hub.subscribe();
        let listening = b.forward_changes(hub.clone()).await.unwrap();

        // B's own commit and A's conflicting one announce nothing through the listener.
        b.commit(new_case(db, "hz/a")).await.unwrap().unwrap();
        let mut stale = new_case(da, "hz/a");
        stale.expected_version = 3;
        assert_eq!(a.commit(stale).await.unwrap(), Err(CommitConflict::Version));
        let first = new_case(da, "hz/a");
        let id = first.change.record.to_string();
        a.commit(first).await.unwrap().unwrap();
        assert_eq!(next_record(&mut rx).await, (id, da.to_string()));

        // A group larger than one notification's payload arrives whole, in several.
        let mut ids = std::collections::BTreeSet::new();
        let commits: Vec<_> = (0..120).map(|_| new_case(da, "hz/b")).collect();
        let mut tasks = Vec::new();
        for c in commits {
            ids.insert(c.change.record.to_string());
            let store = a.clone();
            tasks.push(tokio::spawn(async move { store.commit(c).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap().unwrap();
        }
        let mut heard = std::collections::BTreeSet::new();
        while heard.len() < ids.len() {
            heard.insert(next_record(&mut rx).await.0);
        }
        assert_eq!(heard, ids);
        listening.abort();
        b.finish().await;
        a.finish().await;
    }

    /// After its connection is cut (as when the database restarts), the listener listens again
    /// and tells every stream to sync, since what was committed meanwhile went unheard.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_that_lost_its_connection_listens_again_and_streams_resync() {
        let a = PgTest::create().await;
        let b = PgTest::another_node(&a).await;
        let da = DeviceId::new();
        a.seed(&[da]).await;
        let hub = Arc::new(LiveHub::default());
        let mut rx = hub.subscribe();
        let listening = b.forward_changes(hub.clone()).await.unwrap();
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'
               AND pid <> pg_backend_pid()",
        )
        .fetch_all(&a.pool)
        .await
        .unwrap();
        assert_eq!(cut, [true], "one listening connection");
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Ok(LiveEvent::Resync)) => {}
            other => panic!("no resync within 5 s: {other:?}"),
        }
        // And it hears again.
        let first = new_case(da, "hz/a");
        let id = first.change.record.to_string();
        a.commit(first).await.unwrap().unwrap();
        assert_eq!(next_record(&mut rx).await, (id, da.to_string()));
        listening.abort();
        b.finish().await;
        a.finish().await;
    }

    #[test]
    fn notifications_stay_under_postgres_payload_limit() {
        let logged: Vec<Logged> = (0..256)
            .map(|i| Logged {
                work: i,
                row: i as i64,
                record: RecordId::new().to_string(),
                place: "hz/bai_yang/hai_tian_cheng/b3".into(),
                kind: RecordKind::Case,
                device: DeviceId::new().to_string(),
                whole: None,
            })
            .collect();
        let payloads = notifications("node", &logged);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < MAX_PAYLOAD));
        let hub = LiveHub::default();
        let mut rx = hub.subscribe();
        for p in &payloads {
            announce(&hub, "me", p);
        }
        let mut n = 0;
        while let Ok(LiveEvent::Record { .. }) = rx.try_recv() {
            n += 1;
        }
        assert_eq!(n, 256);
        // Its own node's announcements are skipped.
        announce(&hub, "node", &payloads[0]);
        assert!(rx.try_recv().is_err());
    }
}
