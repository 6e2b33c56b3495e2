//! Group commit: changes that wait to commit at the same moment share one transaction, so the
//! number of fsyncs follows the number of commit rounds, not the number of changes.
//!
//! One task owns the write path of the sync log. Each change commits in its own savepoint, so a
//! version conflict or a failing statement rolls back that change alone; the replies are sent
//! only after the group's transaction has committed, so an acknowledgement still means "on
//! disk". The task is independent of the requests: a phone that hangs up mid-commit does not
//! abort the others' commits (its change is committed, and its retry is answered from the log).

use std::future::Future;
use std::sync::Arc;

use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::log::{Commit, CommitConflict, commit_in};
use crate::error::{Error, Result};

/// Most changes in one transaction: bounds how long the write lock is held at a time.
const MAX_GROUP: usize = 256;
/// Changes waiting for the committer before senders wait for room.
const QUEUE: usize = 4096;

pub(super) type Outcome = Result<std::result::Result<i64, CommitConflict>>;

/// A write the committer makes for its sender.
#[derive(Debug)]
pub(super) enum Work {
    /// A change to the log and its record.
    Commit(Box<Commit>),
    /// A device's `last_seen`, when stale by a minute. Every sync request may write it: queued
    /// here, it joins a group instead of waiting for SQLite's write lock on its own.
    Touch {
        /// The device id.
        device: String,
        /// Now (ms).
        now: i64,
    },
}

/// A database the committer writes groups to: one transaction per group, one savepoint per
/// work, outcomes in the works' order.
pub(super) trait Writer: Send + Sync + 'static {
    /// Writes the group; `Err` when the transaction as a whole failed.
    fn commit_group(&self, works: &[&Work]) -> impl Future<Output = Result<Vec<Outcome>>> + Send;
}

/// The committer's own SQLite connection, outside the pool. SQLite empties a connection's page
/// cache whenever another connection has written since its last transaction; when every group
/// took whichever pooled connection was free, the pages of the log's and the records' indexes
/// were read again from the file for every group. On its own connection the writer is the only
/// one writing, so its cache stays warm.
///
/// That connection checkpoints the WAL every [`WRITER_AUTOCHECKPOINT_BYTES`] instead of SQLite's
/// 1,000 pages. Checkpointing from another connection in the background, once a second, was
/// tried and not kept (BENCHMARKS.md): it copied hot index pages more often, and SQLite still
/// needs the writer's own checkpoint to start the WAL over.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pool: SqlitePool,
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
    closed: std::sync::atomic::AtomicBool,
}

/// The writer's page cache (KiB): the indexes a commit walks stay in it.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// WAL bytes after which the writer's commit checkpoints (SQLite's default is 1,000 pages): index
/// pages rewritten by almost every group are copied once for many groups. Turned into pages of
/// the database's own size when the connection opens, so the WAL stays 32 MiB whatever the page.
const WRITER_AUTOCHECKPOINT_BYTES: i64 = 32 * 1024 * 1024;

impl SqliteWriter {
    /// A writer on the pool's database; its connection is opened at the first group (a store
    /// that only reads never opens it) and again after a group fails.
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            conn: tokio::sync::Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn open(&self) -> Result<SqliteConnection> {
        let options = (*self.pool.connect_options())
            .clone()
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"));
        let mut conn = options.connect().await?;
        let page: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await?;
        let pages = WRITER_AUTOCHECKPOINT_BYTES / page.max(512);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA wal_autocheckpoint = {pages}"
        )))
        .execute(&mut conn)
        .await?;
        Ok(conn)
    }

    /// Closes the writer's connection; later groups fail. Called after closing the pool, the
    /// writer's is the last connection, and SQLite copies the whole WAL into the database file
    /// as it closes.
    pub(crate) async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(conn) = self.conn.lock().await.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the committer's connection failed");
        }
    }
}

impl Writer for Arc<SqliteWriter> {
    async fn commit_group(&self, works: &[&Work]) -> Result<Vec<Outcome>> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Internal("the store is closed".into()));
        }
        // Only the committer task (and `close`) lock it.
        let mut slot = self.conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.open().await?),
        };
        let outcome = commit_group(conn, works).await;
        if outcome.is_err() {
            // A connection a group failed on may be broken: the next group opens a new one.
            *slot = None;
        }
        outcome
    }
}

struct Pending {
    work: Work,
    reply: oneshot::Sender<Outcome>,
}

/// The sending side of the committer task; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the committer task on the current runtime. It ends when every sender is dropped.
    pub(super) fn start(writer: impl Writer) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, rx));
        Self { queue }
    }

    /// Does one write in the next group and waits for the outcome (a touch answers `Ok(Ok(0))`).
    pub(super) async fn commit(&self, work: Work) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Pending { work, reply })
            .await
            .map_err(|_| Error::Internal("the committer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| Error::Internal("the committer dropped a change".into()))?
    }
}

async fn run(writer: impl Writer, mut rx: mpsc::Receiver<Pending>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let works: Vec<&Work> = group.iter().map(|p| &p.work).collect();
        match writer.commit_group(&works).await {
            Ok(outcomes) => {
                for (pending, outcome) in group.drain(..).zip(outcomes) {
                    let _ = pending.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, changes = group.len(), "a commit group failed");
                let unavailable =
                    matches!(&e, Error::Database(db) if crate::error::database_unavailable(db));
                for pending in group.drain(..) {
                    // A client told 503 sends its changes again later; one whose commit did go
                    // through before the connection broke is then recognised by its hash.
                    let err = if unavailable {
                        Error::Unavailable {
                            retry_after_secs: crate::error::DATABASE_RETRY_AFTER_SECS,
                            message: crate::error::DATABASE_UNAVAILABLE.into(),
                        }
                    } else {
                        Error::Internal(format!("the commit failed: {e}"))
                    };
                    let _ = pending.reply.send(Err(err));
                }
            }
        }
    }
}

/// One transaction for the whole group. First without savepoints: a change that conflicts
/// writes nothing (see [`commit_in`]), so only a failing statement leaves a change half
/// written; then the transaction is rolled back and the group written again with a savepoint
/// per work, so that the failure is that work's alone. Two statements fewer per change on the
/// path every change takes.
pub(super) async fn commit_group(
    conn: &mut SqliteConnection,
    works: &[&Work],
) -> Result<Vec<Outcome>> {
    if let Some(outcomes) = commit_group_at_once(conn, works).await? {
        return Ok(outcomes);
    }
    commit_group_one_by_one(conn, works).await
}

/// The group in one transaction without savepoints; `None` when a work failed (rolled back).
pub(super) async fn commit_group_at_once(
    conn: &mut SqliteConnection,
    works: &[&Work],
) -> Result<Option<Vec<Outcome>>> {
    // BEGIN IMMEDIATE: take SQLite's write lock up front (see `SqliteStore::write_tx`).
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    match super::batch::write_group(&mut tx, works).await {
        Ok(Some(outcomes)) if outcomes.iter().all(Result::is_ok) => {
            tx.commit().await?;
            Ok(Some(outcomes))
        }
        Ok(_) => {
            tx.rollback().await?;
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, changes = works.len(), "a write failed in a commit group: \
                           writing the group again, one savepoint per change");
            tx.rollback().await?;
            Ok(None)
        }
    }
}

/// The group in one transaction, one savepoint per work.
pub(super) async fn commit_group_one_by_one(
    conn: &mut SqliteConnection,
    works: &[&Work],
) -> Result<Vec<Outcome>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let outcome = write(&mut savepoint, work).await;
        if matches!(outcome, Ok(Ok(_))) {
            savepoint.commit().await?;
        } else {
            savepoint.rollback().await?;
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn write(conn: &mut sqlx::SqliteConnection, work: &Work) -> Outcome {
    match work {
        Work::Commit(commit) => commit_in(conn, commit).await,
        Work::Touch { device, now } => touch_in(conn, device, *now).await,
    }
}

/// A device's `last_seen`, written when it is a minute old or more.
pub(super) async fn touch_in(conn: &mut sqlx::SqliteConnection, device: &str, now: i64) -> Outcome {
    sqlx::query(
        "UPDATE devices SET last_seen = ?
         WHERE id = ? AND (last_seen IS NULL OR last_seen < ?)",
    )
    .bind(now)
    .bind(device)
    .bind(now - 60_000)
    .execute(&mut *conn)
    .await
    .map(|_| Ok(0))
    .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use linli_sync_core::DeviceId;

    use super::*;
    use crate::store::conformance::{Fixture, new_case, sqlite_store};

    fn new_work(device: DeviceId) -> Work {
        Work::Commit(Box::new(new_case(device, "hz/a")))
    }

    /// The committer's connection carries its own cache and checkpoint settings.
    #[tokio::test]
    async fn the_writer_opens_its_connection_with_its_settings() {
        let store = sqlite_store().await;
        let mut conn = SqliteWriter::new(store.pool.clone()).open().await.unwrap();
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(cache, -WRITER_CACHE_KIB);
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let page: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(pages * page, WRITER_AUTOCHECKPOINT_BYTES);
        store.finish().await;
    }

    /// A new database is made with 8 KiB pages; one made before keeps its 4 KiB pages, and its
    /// writer checkpoints after the same WAL bytes (twice the pages).
    #[tokio::test]
    async fn an_existing_database_keeps_its_page_size() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&old)
            .create_if_missing(true)
            .page_size(4096)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE before (x)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        for (path, page) in [(old, 4096), (dir.path().join("new.db"), 8192)] {
            let store = crate::store::SqliteStore::open_sqlite(&path).await.unwrap();
            let mut conn = SqliteWriter::new(store.pool.clone()).open().await.unwrap();
            let size: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!((size, pages), (page, WRITER_AUTOCHECKPOINT_BYTES / page));
            store.seed(&[DeviceId::new()]).await;
            store.close().await;
        }
    }

    /// Changes in the database file alone (a copy of it, without the WAL); `None` when the copy
    /// does not open.
    async fn changes_in_file(path: &std::path::Path) -> Option<i64> {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(path, &copy).unwrap();
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&copy)
            .connect()
            .await
            .ok()?;
        sqlx::query_scalar("SELECT count(*) FROM changes")
            .fetch_one(&mut conn)
            .await
            .ok()
    }

    /// Closing the store closes the committer's connection too: the commits are all in the
    /// database file, no WAL is left behind, and the closed store commits nothing.
    #[tokio::test]
    async fn closing_the_store_leaves_every_commit_in_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linli.db");
        let store = crate::store::SqliteStore::open_sqlite(&path).await.unwrap();
        let device = DeviceId::new();
        store.seed(&[device]).await;
        // The schema and the seed into the file, so the copies below open.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&store.pool)
            .await
            .unwrap();
        for _ in 0..20 {
            let seq = store
                .commit_change(new_case(device, "hz/a"))
                .await
                .unwrap()
                .unwrap();
            assert!(seq > 0);
        }
        assert_eq!(
            changes_in_file(&path).await,
            Some(0),
            "the commits are in the WAL"
        );
        store.close().await;
        assert_eq!(changes_in_file(&path).await, Some(20));
        assert!(
            std::fs::metadata(path.with_extension("db-wal")).map_or(true, |m| m.len() == 0),
            "the WAL is gone or empty once the store closed"
        );
        assert!(
            store.commit_change(new_case(device, "hz/a")).await.is_err(),
            "a closed store commits nothing"
        );
    }

    /// The group written at once fails on its middle change (an unknown device), so it is
    /// written again one change at a time: the others commit, the middle one alone fails.
    #[tokio::test]
    async fn a_group_with_a_failing_write_is_written_again_one_by_one() {
        let store = sqlite_store().await;
        let device = DeviceId::new();
        store.seed(&[device]).await;
        let works = [
            new_work(device),
            new_work(DeviceId::new()),
            new_work(device),
            Work::Touch {
                device: device.to_string(),
                now: 1_000_000,
            },
        ];
        let refs: Vec<&Work> = works.iter().collect();
        assert!(
            commit_group_at_once(&mut store.pool.acquire().await.unwrap(), &refs)
                .await
                .unwrap()
                .is_none(),
            "written at once, the group fails"
        );
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM changes")
                .fetch_one(&store.pool)
                .await
                .unwrap()
        };
        assert_eq!(count().await, 0, "and is rolled back whole");

        let outcomes = commit_group(&mut store.pool.acquire().await.unwrap(), &refs)
            .await
            .unwrap();
        assert!(matches!(outcomes[0], Ok(Ok(_))), "{:?}", outcomes[0]);
        assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
        assert!(matches!(outcomes[2], Ok(Ok(_))), "{:?}", outcomes[2]);
        assert!(matches!(outcomes[3], Ok(Ok(0))), "{:?}", outcomes[3]);
        assert_eq!(count().await, 2);
        let records: i64 = sqlx::query_scalar("SELECT count(*) FROM records")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(records, 2);
        let seen: i64 = sqlx::query_scalar("SELECT last_seen FROM devices WHERE id = ?")
            .bind(device.to_string())
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(seen, 1_000_000);

        // Without the failing change, the group is written at once.
        let works = [new_work(device), new_work(device)];
        let refs: Vec<&Work> = works.iter().collect();
        let outcomes = commit_group_at_once(&mut store.pool.acquire().await.unwrap(), &refs)
            .await
            .unwrap();
        assert!(outcomes.is_some_and(|o| o.iter().all(|o| matches!(o, Ok(Ok(_))))));
        assert_eq!(count().await, 4);
        store.finish().await;
    }
}
