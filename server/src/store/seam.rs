//! The storage seam of the sync path: what accepting, pulling and bootstrapping need from a
//! database, shaped around the sync transaction rather than around tables. SQLite ([`SqliteStore`])
//! and PostgreSQL ([`PgStore`](super::pg::PgStore)) implement it; one conformance suite
//! (`conformance.rs`) runs against both.

use std::future::Future;

use linli_sync_core::{DeviceId, PlaceId, RecordId};

use super::SqliteStore;
use super::log::{ActorBinding, Commit, CommitConflict, PulledPage, RecordMeta};
use crate::error::Error;

/// A saved record as a bootstrap page sends it: its id, its shared document and (when asked for)
/// its personal part.
pub type Snapshot = (String, Vec<u8>, Option<Vec<u8>>);

/// What accepting a change first needs to know: the record's facts (`None` if it does not
/// exist), when the server first received this change (if it holds it), and whom its actor is
/// bound to.
pub type AcceptFacts = (Option<RecordMeta>, Option<i64>, ActorBinding);

/// Why a storage call failed. `Invalid` and `Conflict` are the caller's to fix (400, 409);
/// `Unavailable`, and a `Database` error that says the database cannot be reached, are answered
/// 503 with `Retry-After`; the others are logged and answered with a generic 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row does not parse (a corrupt or foreign database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store's own machinery failed (its committer stopped, say).
    #[error("store: {0}")]
    Internal(String),
    /// The caller's input does not fit (a cursor of another list, say): a 400.
    #[error("{0}")]
    Invalid(String),
    /// What is stored changed under the caller (run it again): a 409.
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached now; trying again later will work: a 503.
    #[error("{0}")]
    Unavailable(String),
}

/// A storage call's result.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Database(e) => Self::Database(e),
            Error::BadRequest(m) => Self::Invalid(m),
            Error::Conflict(m) => Self::Conflict(m),
            Error::Unavailable { message, .. } => Self::Unavailable(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => Error::Database(e),
            StoreError::Invalid(m) => Error::BadRequest(m),
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Unavailable(message) => Error::Unavailable {
                retry_after_secs: crate::error::DATABASE_RETRY_AFTER_SECS,
                message,
            },
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The sync log and the records' saved documents.
///
/// The promises every implementation keeps (the conformance suite checks them):
/// - `commit` returns `Ok(Ok(position))` only once the change, its actor binding and its
///   record's new state are durably committed together; a version or actor conflict writes
///   nothing.
/// - A record's version is compared and bumped in the commit, so two writers (tasks or server
///   processes) never both commit against one version.
/// - `pull` never lets a cursor skip a change: every change that commits after a pull read the
///   log's end gets a position above that end.
pub trait SyncStore: Send + Sync + 'static {
    /// The record's facts, whether this change is held, and its actor's binding, in one read.
    fn accept_facts(
        &self,
        record: RecordId,
        hash: &[u8; 32],
        actor: &str,
    ) -> impl Future<Output = StoreResult<AcceptFacts>> + Send;

    /// The stored facts about a record, `None` if it does not exist.
    fn record_meta(
        &self,
        record: RecordId,
    ) -> impl Future<Output = StoreResult<Option<RecordMeta>>> + Send;

    /// When the server first received this change of this record, if it holds it.
    fn change_received_at(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send;

    /// The record's shared document as saved (its last whole save and the changes after it).
    fn record_doc(
        &self,
        record: RecordId,
    ) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send;

    /// The record's personal document, `None` when it has none.
    fn personal_doc(
        &self,
        record: RecordId,
    ) -> impl Future<Output = StoreResult<Option<Vec<u8>>>> + Send;

    /// Commits one change with its actor binding and its record's new state, at the record
    /// version the commit expects (see the trait's promises).
    fn commit(
        &self,
        commit: Commit,
    ) -> impl Future<Output = StoreResult<std::result::Result<i64, CommitConflict>>> + Send;

    /// The log's end: every change at or below it is committed, every later one will be above.
    fn log_end(&self) -> impl Future<Output = StoreResult<i64>> + Send;

    /// One page of others' changes after `cursor` within `scopes` (see [`SqliteStore::pull`]).
    fn pull(
        &self,
        cursor: i64,
        me: DeviceId,
        scopes: &[PlaceId],
        personal: bool,
        limit: u32,
        max_bytes: usize,
    ) -> impl Future<Output = StoreResult<PulledPage>> + Send;

    /// One bootstrap page of saved documents (see [`SqliteStore::snapshots_within`]).
    fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
        personal: bool,
    ) -> impl Future<Output = StoreResult<Vec<Snapshot>>> + Send;
}

impl SyncStore for SqliteStore {
    async fn accept_facts(
        &self,
        record: RecordId,
        hash: &[u8; 32],
        actor: &str,
    ) -> StoreResult<AcceptFacts> {
        Ok(SqliteStore::accept_facts(self, record, hash, actor).await?)
    }

    async fn record_meta(&self, record: RecordId) -> StoreResult<Option<RecordMeta>> {
        Ok(SqliteStore::record_meta(self, record).await?)
    }

    async fn change_received_at(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> StoreResult<Option<i64>> {
        Ok(SqliteStore::change_received_at(self, record, hash).await?)
    }

    async fn record_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        Ok(SqliteStore::record_doc(self, record).await?)
    }

    async fn personal_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        Ok(SqliteStore::personal_doc(self, record).await?)
    }

    async fn commit(
        &self,
        commit: Commit,
    ) -> StoreResult<std::result::Result<i64, CommitConflict>> {
        Ok(SqliteStore::commit_change(self, commit).await?)
    }

    async fn log_end(&self) -> StoreResult<i64> {
        Ok(SqliteStore::log_end(self).await?)
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
        Ok(SqliteStore::pull(self, cursor, me, scopes, personal, limit, max_bytes).await?)
    }

    async fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
        personal: bool,
    ) -> StoreResult<Vec<Snapshot>> {
        Ok(SqliteStore::snapshots_within(self, scopes, after, limit, max_bytes, personal).await?)
    }
}
