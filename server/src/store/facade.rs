//! The server's database, whichever it is: SQLite (embedded, the default: one process) or
//! PostgreSQL (any number of server processes on one database). Everything outside this module
//! talks to [`Store`], through the seams ([`SyncStore`], [`AccountStore`], [`KeyStore`],
//! [`OfficeStore`]) and the few operator methods below; each call goes to the backend's own
//! implementation.

use std::collections::HashMap;
use std::path::Path;

use futures_util::{Stream, StreamExt};
use linli_sync_core::{DeviceId, PlaceId, RecordId};

use super::accounts::{DeviceRow, Principal};
use super::keys::SigningKeyRow;
use super::log::{ChangeMeta, Commit, CommitConflict, PulledPage, RebuiltRecord, RecordMeta};
use super::log::{RejectionRow, RejectionView};
use super::office::{
    BuildingCount, CodeCount, MonthCount, OfficeFilter, OfficeStats, SessionStat, Share,
    StatsFilter, VolunteerStat,
};
use super::projection::{RecordFilter, RecordRow};
use super::tokens::{NewRefreshToken, RefreshAttempt, RefreshOutcome};
use super::web_sessions::{NewWebSession, WebSessionRow};
use super::{
    AcceptFacts, AccountStore, KeyStore, OfficeStore, PgStore, Snapshot, SqliteStore, StoreResult,
    SyncStore, UnappliedMigration,
};
use crate::error::{Error, Result};
use crate::model::{Place, User};

/// The server's database.
#[derive(Clone, Debug)]
pub enum Store {
    /// One SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database, possibly shared with other server processes.
    Postgres(PgStore),
}

/// Runs `$e` with `$s` bound to the backend.
macro_rules! on {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

/// The SQLite-only tools' answer on PostgreSQL.
fn sqlite_only(what: &str) -> Error {
    Error::BadRequest(format!(
        "{what} works on a SQLite database only: run it before moving the district to PostgreSQL"
    ))
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and runs pending migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Store> {
        SqliteStore::open_sqlite(path).await.map(Store::Sqlite)
    }

    /// Connects to PostgreSQL at `url` and runs pending migrations.
    pub async fn open_postgres(url: &str) -> Result<Store> {
        PgStore::open(url).await.map(Store::Postgres)
    }

    /// The SQLite store (tests that read its tables).
    ///
    /// # Panics
    /// On PostgreSQL.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &SqliteStore {
        match self {
            Store::Sqlite(s) => s,
            Store::Postgres(_) => panic!("a SQLite store was expected"),
        }
    }

    /// Which backend, for logs and `/readyz`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations not yet applied.
    pub async fn migrate(&self) -> Result<()> {
        on!(self, s => s.migrate().await)
    }

    /// A cheap query proving the database answers.
    pub async fn ping(&self) -> Result<()> {
        on!(self, s => s.ping().await)
    }

    /// The embedded migrations the database does not record as applied with the same text.
    pub async fn unapplied_migrations(&self) -> Result<Vec<UnappliedMigration>> {
        on!(self, s => s.unapplied_migrations().await)
    }

    /// How many migrations this binary embeds for this backend.
    pub fn embedded_migrations(&self) -> usize {
        match self {
            Store::Sqlite(_) => super::embedded_migrations(),
            Store::Postgres(_) => super::pg::embedded_migrations(),
        }
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        on!(self, s => s.close().await)
    }

    /// Number of records.
    pub async fn record_count(&self) -> Result<i64> {
        on!(self, s => s.record_count().await)
    }

    /// Number of changes in the log.
    pub async fn change_count(&self) -> Result<i64> {
        on!(self, s => s.change_count().await)
    }

    /// Every logged change of a record, in log order, with its attribution.
    pub async fn change_meta(&self, record: RecordId) -> Result<Vec<ChangeMeta>> {
        on!(self, s => s.change_meta(record).await)
    }

    /// The user and device the personal-data migration writes as (SQLite only).
    pub async fn system_principal(&self) -> Result<(String, String)> {
        match self {
            Store::Sqlite(s) => s.system_principal().await,
            Store::Postgres(_) => Err(sqlite_only("migrate-personal-data")),
        }
    }

    /// Cases whose stored value shows a personal field unmasked (SQLite only).
    pub async fn records_with_unmasked_personal_values(&self) -> Result<Vec<RecordId>> {
        match self {
            Store::Sqlite(s) => s.records_with_unmasked_personal_values().await,
            Store::Postgres(_) => Err(sqlite_only("migrate-personal-data")),
        }
    }

    /// Replaces a record's history with a rebuilt one (SQLite only).
    pub async fn replace_history(&self, r: &RebuiltRecord<'_>) -> Result<()> {
        match self {
            Store::Sqlite(s) => s.replace_history(r).await,
            Store::Postgres(_) => Err(sqlite_only("migrate-personal-data")),
        }
    }
}

impl SyncStore for Store {
    async fn accept_facts(
        &self,
        record: RecordId,
        hash: &[u8; 32],
        actor: &str,
    ) -> StoreResult<AcceptFacts> {
        on!(self, s => SyncStore::accept_facts(s, record, hash, actor).await)
    }

    async fn record_meta(&self, record: RecordId) -> StoreResult<Option<RecordMeta>> {
        on!(self, s => SyncStore::record_meta(s, record).await)
    }

    async fn change_received_at(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> StoreResult<Option<i64>> {
        on!(self, s => SyncStore::change_received_at(s, record, hash).await)
    }

    async fn record_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        on!(self, s => SyncStore::record_doc(s, record).await)
    }

    async fn personal_doc(&self, record: RecordId) -> StoreResult<Option<Vec<u8>>> {
        on!(self, s => SyncStore::personal_doc(s, record).await)
    }

    async fn commit(
        &self,
        commit: Commit,
    ) -> StoreResult<std::result::Result<i64, CommitConflict>> {
        on!(self, s => SyncStore::commit(s, commit).await)
    }

    async fn log_end(&self) -> StoreResult<i64> {
        on!(self, s => SyncStore::log_end(s).await)
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
        on!(self, s => SyncStore::pull(s, cursor, me, scopes, personal, limit, max_bytes).await)
    }

    async fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
        personal: bool,
    ) -> StoreResult<Vec<Snapshot>> {
        on!(self, s => SyncStore::snapshots_within(s, scopes, after, limit, max_bytes, personal).await)
    }
}

impl AccountStore for Store {
    async fn upsert_place(&self, place: &Place) -> StoreResult<()> {
        on!(self, s => AccountStore::upsert_place(s, place).await)
    }

    async fn place(&self, id: &PlaceId) -> StoreResult<Option<Place>> {
        on!(self, s => AccountStore::place(s, id).await)
    }

    async fn places_within(&self, scopes: &[PlaceId]) -> StoreResult<Vec<Place>> {
        on!(self, s => AccountStore::places_within(s, scopes).await)
    }

    async fn all_places(&self) -> StoreResult<Vec<Place>> {
        on!(self, s => AccountStore::all_places(s).await)
    }

    async fn insert_user(&self, user: &User, now: i64) -> StoreResult<()> {
        on!(self, s => AccountStore::insert_user(s, user, now).await)
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        on!(self, s => AccountStore::user_by_username(s, username).await)
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        on!(self, s => AccountStore::user_by_id(s, id).await)
    }

    async fn set_user_disabled(&self, id: &str, disabled: bool) -> StoreResult<()> {
        on!(self, s => AccountStore::set_user_disabled(s, id, disabled).await)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        on!(self, s => AccountStore::list_users(s).await)
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<()> {
        on!(self, s => AccountStore::set_password_hash(s, id, hash).await)
    }

    async fn grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        on!(self, s => AccountStore::grant(s, user_id, place).await)
    }

    async fn revoke_grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        on!(self, s => AccountStore::revoke_grant(s, user_id, place).await)
    }

    async fn grants_with_epoch(&self, user_id: &str) -> StoreResult<(i64, Vec<(PlaceId, i64)>)> {
        on!(self, s => AccountStore::grants_with_epoch(s, user_id).await)
    }

    async fn grant_epoch(&self) -> StoreResult<i64> {
        on!(self, s => AccountStore::grant_epoch(s).await)
    }

    async fn grants_of(&self, user_id: &str) -> StoreResult<Vec<PlaceId>> {
        on!(self, s => AccountStore::grants_of(s, user_id).await)
    }

    async fn register_device(
        &self,
        device: DeviceId,
        user_id: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<bool> {
        on!(self, s => AccountStore::register_device(s, device, user_id, name, now).await)
    }

    async fn list_devices(&self, user_id: Option<&str>) -> StoreResult<Vec<DeviceRow>> {
        on!(self, s => AccountStore::list_devices(s, user_id).await)
    }

    async fn revoke_device(&self, device: DeviceId, now: i64) -> StoreResult<bool> {
        on!(self, s => AccountStore::revoke_device(s, device, now).await)
    }

    async fn device_revoked(&self, device: DeviceId) -> StoreResult<bool> {
        on!(self, s => AccountStore::device_revoked(s, device).await)
    }

    async fn principal(&self, user_id: &str, device: DeviceId) -> StoreResult<Option<Principal>> {
        on!(self, s => AccountStore::principal(s, user_id, device).await)
    }

    async fn device_names(&self, ids: &[&str]) -> StoreResult<HashMap<String, String>> {
        on!(self, s => AccountStore::device_names(s, ids).await)
    }

    async fn device_owner(&self, device: DeviceId) -> StoreResult<Option<String>> {
        on!(self, s => AccountStore::device_owner(s, device).await)
    }

    async fn touch_device(&self, device: DeviceId, now: i64) -> StoreResult<()> {
        on!(self, s => AccountStore::touch_device(s, device, now).await)
    }

    async fn server_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        on!(self, s => AccountStore::server_secret(s, name).await)
    }

    async fn insert_refresh_token(&self, t: &NewRefreshToken<'_>) -> StoreResult<()> {
        on!(self, s => AccountStore::insert_refresh_token(s, t).await)
    }

    async fn rotate_refresh_token(&self, a: &RefreshAttempt<'_>) -> StoreResult<RefreshOutcome> {
        on!(self, s => AccountStore::rotate_refresh_token(s, a).await)
    }

    async fn revoke_refresh_tokens_of_user(&self, user_id: &str, now: i64) -> StoreResult<u64> {
        on!(self, s => AccountStore::revoke_refresh_tokens_of_user(s, user_id, now).await)
    }

    async fn record_rejections(
        &self,
        rows: &[RejectionRow<'_>],
        retain_ms: i64,
    ) -> StoreResult<()> {
        on!(self, s => AccountStore::record_rejections(s, rows, retain_ms).await)
    }

    async fn list_rejections(
        &self,
        scopes: &[PlaceId],
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RejectionView>> {
        on!(self, s => AccountStore::list_rejections(s, scopes, before, limit).await)
    }

    async fn rejection_count(&self) -> StoreResult<i64> {
        on!(self, s => AccountStore::rejection_count(s).await)
    }

    async fn insert_web_session(&self, session: &NewWebSession<'_>) -> StoreResult<()> {
        on!(self, s => AccountStore::insert_web_session(s, session).await)
    }

    async fn web_session(
        &self,
        hash: &[u8; 32],
        idle_since: i64,
    ) -> StoreResult<Option<WebSessionRow>> {
        on!(self, s => AccountStore::web_session(s, hash, idle_since).await)
    }

    async fn touch_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<()> {
        on!(self, s => AccountStore::touch_web_session(s, hash, now).await)
    }

    async fn end_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<Option<String>> {
        on!(self, s => AccountStore::end_web_session(s, hash, now).await)
    }
}

impl KeyStore for Store {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        on!(self, s => KeyStore::signing_keys(s).await)
    }

    async fn import_signing_keys(&self, keys: &[SigningKeyRow]) -> StoreResult<bool> {
        on!(self, s => KeyStore::import_signing_keys(s, keys).await)
    }

    async fn ensure_signing_key(&self, fresh: &SigningKeyRow) -> StoreResult<bool> {
        on!(self, s => KeyStore::ensure_signing_key(s, fresh).await)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        on!(self, s => KeyStore::insert_signing_key(s, key).await)
    }

    async fn rotate_signing_keys(
        &self,
        fresh: &SigningKeyRow,
        overlap_ms: i64,
        now: i64,
    ) -> StoreResult<()> {
        on!(self, s => KeyStore::rotate_signing_keys(s, fresh, overlap_ms, now).await)
    }

    async fn retire_signing_keys(&self, now: i64) -> StoreResult<u64> {
        on!(self, s => KeyStore::retire_signing_keys(s, now).await)
    }
}

impl OfficeStore for Store {
    async fn list_records(&self, filter: &RecordFilter) -> StoreResult<Vec<RecordRow>> {
        on!(self, s => OfficeStore::list_records(s, filter).await)
    }

    async fn record_row(&self, id: RecordId) -> StoreResult<Option<RecordRow>> {
        on!(self, s => OfficeStore::record_row(s, id).await)
    }

    async fn office_page(
        &self,
        filter: &OfficeFilter,
    ) -> StoreResult<(Vec<RecordRow>, Option<String>)> {
        on!(self, s => OfficeStore::office_page(s, filter).await)
    }

    async fn office_count(&self, filter: &OfficeFilter) -> StoreResult<i64> {
        on!(self, s => OfficeStore::office_count(s, filter).await)
    }

    async fn office_count_upto(&self, filter: &OfficeFilter, cap: u32) -> StoreResult<Option<i64>> {
        on!(self, s => OfficeStore::office_count_upto(s, filter, cap).await)
    }

    fn office_stream(
        &self,
        filter: &OfficeFilter,
    ) -> impl Stream<Item = StoreResult<RecordRow>> + Send + 'static {
        on!(self, s => OfficeStore::office_stream(s, filter).boxed())
    }

    async fn office_sessions(&self, f: &StatsFilter) -> StoreResult<Vec<SessionStat>> {
        on!(self, s => OfficeStore::office_sessions(s, f).await)
    }

    async fn office_resolved_share(&self, f: &StatsFilter) -> StoreResult<Share> {
        on!(self, s => OfficeStore::office_resolved_share(s, f).await)
    }

    async fn office_reply_rate(&self, f: &StatsFilter) -> StoreResult<Share> {
        on!(self, s => OfficeStore::office_reply_rate(s, f).await)
    }

    async fn office_cases_per_month(&self, f: &StatsFilter) -> StoreResult<Vec<MonthCount>> {
        on!(self, s => OfficeStore::office_cases_per_month(s, f).await)
    }

    async fn office_satisfaction(&self, f: &StatsFilter) -> StoreResult<Vec<CodeCount>> {
        on!(self, s => OfficeStore::office_satisfaction(s, f).await)
    }

    async fn office_contacts_per_building(
        &self,
        f: &StatsFilter,
    ) -> StoreResult<Vec<BuildingCount>> {
        on!(self, s => OfficeStore::office_contacts_per_building(s, f).await)
    }

    async fn office_volunteering(&self, f: &StatsFilter) -> StoreResult<Vec<VolunteerStat>> {
        on!(self, s => OfficeStore::office_volunteering(s, f).await)
    }

    async fn office_stats(&self, f: &StatsFilter) -> StoreResult<OfficeStats> {
        on!(self, s => OfficeStore::office_stats(s, f).await)
    }
}
