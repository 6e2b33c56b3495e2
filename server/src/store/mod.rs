//! Persistence. All SQL of the server lives under this module, behind [`SqliteStore`]'s methods, so a
//! PostgreSQL backend can later implement the same surface.
//!
//! The SQLite file is opened in WAL mode with `synchronous = FULL`: when a method that writes
//! returns, the write is on disk, so an acknowledgement sent after it is a promise kept.

#[cfg(test)]
mod account_conformance;
mod account_seam;
mod accounts;
mod batch;
#[cfg(test)]
mod conformance;
mod facade;
mod group;
mod key_seam;
mod keys;
mod log;
pub mod office;
#[cfg(test)]
mod office_conformance;
mod office_seam;
pub mod pg;
mod pg_accounts;
mod pg_office;
mod projection;
mod seam;
mod tokens;
mod touched;
mod web_sessions;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use linli_sync_core::PlaceId;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, SqlSafeStr, Sqlite};

pub use account_seam::AccountStore;
pub use accounts::{DeviceRow, Principal};
pub use facade::Store;
pub use key_seam::KeyStore;
pub use keys::SigningKeyRow;
pub use log::{
    ActorBinding, ChangeMeta, Commit, CommitConflict, NewChange, ProjectionUpdate, PulledPage,
    PulledRow, RebuiltRecord, RecordMeta, RejectionRow, RejectionView,
};
pub use office::{
    BuildingCount, CodeCount, MonthCount, OfficeFilter, OfficeStats, SessionStat, Share, Sort,
    StatsFilter, VolunteerStat,
};
pub use office_seam::OfficeStore;
pub use pg::PgStore;
/// How PostgreSQL's search folds a text and splits it into indexed pairs (`migrate-store` derives
/// the copy's search columns with them).
pub(crate) use pg_office::{fold as search_fold, gram_lexemes as search_grams};
pub use projection::{RecordFilter, RecordRow};
pub use seam::{AcceptFacts, Snapshot, StoreError, StoreResult, SyncStore};
pub use tokens::{NewRefreshToken, RefreshAttempt, RefreshOutcome};
pub use web_sessions::{NewWebSession, WebSessionRow};

/// The seams, to call a [`Store`]'s methods: `use crate::store::prelude::*;`.
pub mod prelude {
    pub use super::{AccountStore, KeyStore, OfficeStore, SyncStore};
}

use crate::error::{Error, Result};

/// The numbered migrations of the SQLite backend, embedded in the binary.
///
/// Equivalent to `sqlx::migrate!("./migrations/sqlite")`, which needs sqlx's `macros` feature
/// (and with it a second, host-side build of SQLite); listing the files here keeps builds fast.
/// Add new files to the end of this list.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "access",
        include_str!("../../migrations/sqlite/0002_access.sql"),
    ),
    (
        3,
        "sessions",
        include_str!("../../migrations/sqlite/0003_sessions.sql"),
    ),
    (
        5,
        "personal_parts",
        include_str!("../../migrations/sqlite/0005_personal_parts.sql"),
    ),
    (
        6,
        "office",
        include_str!("../../migrations/sqlite/0006_office.sql"),
    ),
    (
        7,
        "web_sessions",
        include_str!("../../migrations/sqlite/0007_web_sessions.sql"),
    ),
    (
        8,
        "office_cover",
        include_str!("../../migrations/sqlite/0008_office_cover.sql"),
    ),
    (
        9,
        "office_orders",
        include_str!("../../migrations/sqlite/0009_office_orders.sql"),
    ),
    (
        10,
        "office_figures",
        include_str!("../../migrations/sqlite/0010_office_figures.sql"),
    ),
    (
        11,
        "office_text_key",
        include_str!("../../migrations/sqlite/0011_office_text_key.sql"),
    ),
    (
        12,
        "signing_keys",
        include_str!("../../migrations/sqlite/0012_signing_keys.sql"),
    ),
    (
        13,
        "incremental_docs",
        include_str!("../../migrations/sqlite/0013_incremental_docs.sql"),
    ),
    (
        14,
        "bootstrap_order",
        include_str!("../../migrations/sqlite/0014_bootstrap_order.sql"),
    ),
    (
        15,
        "unused_indexes",
        include_str!("../../migrations/sqlite/0015_unused_indexes.sql"),
    ),
];

fn sqlite_migrator() -> Migrator {
    Migrator::with_migrations(
        SQLITE_MIGRATIONS
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

/// How many migrations this binary embeds.
pub fn embedded_migrations() -> usize {
    SQLITE_MIGRATIONS.len()
}

/// A migration embedded in the binary that the database does not show as applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnappliedMigration {
    /// Its version number.
    pub version: i64,
    /// Its name.
    pub description: String,
    /// `absent` (never applied), `failed` (recorded as unsuccessful) or `changed` (applied with
    /// other text than this binary's).
    pub problem: &'static str,
}

/// The server's database.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The sync log's committer (see [`group`]).
    group: group::GroupCommit,
    /// The committer's writer, closed with the store.
    writer: std::sync::Arc<group::SqliteWriter>,
    /// When old rejections were last forgotten (ms).
    last_retention: std::sync::Arc<std::sync::Mutex<i64>>,
}

/// The page size of a new database. A log row is about 870 bytes (a new case's change is 590):
/// four fill a 4 KiB page and a fifth does not fit, so a sixth of each page stayed empty; in
/// 8 KiB pages nine fit. An existing database keeps the page size it was made with.
const PAGE_SIZE: u32 = 8192;

impl SqliteStore {
    /// Opens (creating if missing) the SQLite database at `path` and runs pending migrations.
    pub async fn open_sqlite(path: &Path) -> Result<SqliteStore> {
        owner_only(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // A larger page cache per connection (8 MiB, bounded whatever the database's size;
            // a memory map would make the resident size grow with the file).
            .pragma("cache_size", "-8192");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let store = SqliteStore::over(pool);
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) fn over(pool: SqlitePool) -> SqliteStore {
        let writer = std::sync::Arc::new(group::SqliteWriter::new(pool.clone()));
        SqliteStore {
            group: group::GroupCommit::start(std::sync::Arc::clone(&writer)),
            writer,
            pool,
            last_retention: Default::default(),
        }
    }

    /// A write transaction, `BEGIN IMMEDIATE`: it takes SQLite's write lock up front (waiting on
    /// the busy timeout), where a deferred transaction that reads first and writes later fails
    /// at once with "database is locked" when another connection wrote in between.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<()> {
        sqlite_migrator().run(&self.pool).await?;
        self.backfill_conflicts().await?;
        self.backfill_grams().await
    }

    /// A cheap query proving the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The embedded migrations the database's `_sqlx_migrations` table does not record as
    /// applied with the same text, in version order; all of them when the table is missing.
    pub async fn unapplied_migrations(&self) -> Result<Vec<UnappliedMigration>> {
        let has_table: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&self.pool)
        .await?;
        let applied: Vec<(i64, bool, Vec<u8>)> = if has_table {
            sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(unapplied(&sqlite_migrator(), &applied))
    }

    /// Closes the pool (waits for connections to be returned), then the committer's connection.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The database file's path.
    pub async fn path(&self) -> Result<PathBuf> {
        let path: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&self.pool)
                .await?;
        Ok(PathBuf::from(path))
    }
}

/// The migrations of `migrator` that `applied` (version, success, checksum rows of
/// `_sqlx_migrations`) does not show applied with the same text, in version order.
fn unapplied(migrator: &Migrator, applied: &[(i64, bool, Vec<u8>)]) -> Vec<UnappliedMigration> {
    migrator
        .iter()
        .filter_map(|m| {
            let problem = match applied.iter().find(|(v, _, _)| *v == m.version) {
                None => "absent",
                Some((_, false, _)) => "failed",
                Some((_, true, sum)) if sum.as_slice() != &*m.checksum => "changed",
                Some(_) => return None,
            };
            Some(UnappliedMigration {
                version: m.version,
                description: m.description.to_string(),
                problem,
            })
        })
        .collect()
}

/// Makes the database file readable by its owner only, creating it so when missing (SQLite then
/// gives its `-wal` and `-shm` files the same mode): it holds the token signing keys, password
/// hashes and refresh-token secrets.
fn owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(Error::internal)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(Error::internal)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Appends `(column within any of scopes)` to a query. "Within" means the place itself or any
/// place below it; the subtree test is a range on the path (`p/` ≤ x < `p0`, since `0` follows
/// `/` in byte order), exact and able to use the column's index (unlike `LIKE`, where `_` in a
/// path would be a wildcard). No scopes means nothing matches. PostgreSQL columns compared this
/// way are `COLLATE "C"`, so the order is bytes there too.
fn push_within<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, column: &str, scopes: &[PlaceId])
where
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if scopes.is_empty() {
        qb.push("(1 = 0)");
        return;
    }
    qb.push("(");
    for (i, scope) in scopes.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push(format!("{column} = "));
        qb.push_bind(scope.as_str().to_string());
        qb.push(format!(" OR ({column} >= "));
        qb.push_bind(format!("{}/", scope.as_str()));
        qb.push(format!(" AND {column} < "));
        qb.push_bind(format!("{}0", scope.as_str()));
        qb.push(")");
    }
    qb.push(")");
}

/// Parses a stored place id; a bad one is a corrupt row, hence internal.
fn place_from_db(s: &str) -> Result<PlaceId> {
    PlaceId::from_str(s).map_err(Error::internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Place, PlaceLevel};

    pub(crate) async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_sqlite(&dir.path().join("linli.db"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_unmigrated_database_lacks_every_migration_and_a_migrated_one_none() {
        let (_dir, store) = temp_store().await;
        assert_eq!(store.unapplied_migrations().await.unwrap(), Vec::new());

        let dir = tempfile::tempdir().unwrap();
        let pool = SqlitePoolOptions::new()
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("bare.db"))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let bare = SqliteStore::over(pool);
        let unapplied = bare.unapplied_migrations().await.unwrap();
        assert_eq!(unapplied.len(), embedded_migrations());
        assert!(unapplied.iter().all(|m| m.problem == "absent"));
        assert_eq!(unapplied[0].version, 1);

        // A migration recorded as failed, or applied with other text, is not applied either.
        bare.migrate().await.unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET success = 0 WHERE version = 1")
            .execute(&bare.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 2")
            .execute(&bare.pool)
            .await
            .unwrap();
        let problems: Vec<_> = bare
            .unapplied_migrations()
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.version, m.problem))
            .collect();
        assert_eq!(problems, vec![(1, "failed"), (2, "changed")]);
    }

    fn p(s: &str) -> PlaceId {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn migrations_are_idempotent_and_pragmas_hold() {
        let (dir, store) = temp_store().await;
        store.migrate().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        store.close().await;
        // Re-opening an existing database migrates nothing and works.
        let again = SqliteStore::open_sqlite(&dir.path().join("linli.db"))
            .await
            .unwrap();
        again.ping().await.unwrap();
    }

    #[tokio::test]
    async fn within_is_by_whole_segments() {
        let (_dir, store) = temp_store().await;
        for (id, level) in [
            ("hz", PlaceLevel::District),
            ("hz/bai_yang", PlaceLevel::Street),
            ("hz/bai_yang/a", PlaceLevel::Community),
            ("hz/baixyang", PlaceLevel::Street),
            ("hz/bai_yang0", PlaceLevel::Street),
        ] {
            let id = p(id);
            store
                .upsert_place(&Place {
                    parent: id.parent(),
                    id,
                    name: "x".into(),
                    level,
                })
                .await
                .unwrap();
        }
        let got: Vec<String> = store
            .places_within(&[p("hz/bai_yang")])
            .await
            .unwrap()
            .into_iter()
            .map(|pl| pl.id.to_string())
            .collect();
        assert_eq!(got, vec!["hz/bai_yang", "hz/bai_yang/a"]);
        assert!(store.places_within(&[]).await.unwrap().is_empty());
    }
}
