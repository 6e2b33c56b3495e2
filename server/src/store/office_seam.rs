//! The back-office's reads behind a seam ([`OfficeStore`]): the record lists, the case queue
//! (filters, Chinese search, keyset pages in three orders, counts, the export stream) and the
//! statistics. SQLite ([`SqliteStore`]) and PostgreSQL ([`PgStore`](super::PgStore), in `pg_office.rs`)
//! implement it; one conformance suite (`office_conformance.rs`) checks both against the same
//! hand-computed answers.

use std::future::Future;

use futures_util::{Stream, TryStreamExt};
use linli_sync_core::RecordId;

use super::SqliteStore;
use super::office::{
    BuildingCount, CodeCount, MonthCount, OfficeFilter, OfficeStats, SessionStat, Share,
    StatsFilter, VolunteerStat,
};
use super::projection::{RecordFilter, RecordRow};
use super::seam::{StoreError, StoreResult};

/// The back-office's reads of the records' projection.
///
/// The promises every implementation keeps (the conformance suite checks them):
/// - A place scope is a whole-segment subtree: `hz/a` holds `hz/a` and `hz/a/...`, never
///   `hz/a0` or `hz/ab`; no scopes match nothing.
/// - A search matches the records whose searchable text contains every whitespace-separated
///   term as a substring, ignoring the case of ASCII letters (other letters' case as each
///   backend folds it: PostgreSQL folds every letter, SQLite not for one-character terms).
/// - Following the cursors of [`office_page`](OfficeStore::office_page) lists every matching
///   record once, in the filter's order, with ties broken by record id.
/// - The statistics are computed from the records at the time of the call.
pub trait OfficeStore: Send + Sync + 'static {
    /// A page of the projection, newest-updated first (see [`SqliteStore::list_records`]).
    fn list_records(
        &self,
        filter: &RecordFilter,
    ) -> impl Future<Output = StoreResult<Vec<RecordRow>>> + Send;

    /// One projection row, `None` if the record does not exist.
    fn record_row(
        &self,
        id: RecordId,
    ) -> impl Future<Output = StoreResult<Option<RecordRow>>> + Send;

    /// One page of the queue and the cursor of the next one (see [`SqliteStore::office_page`]). A
    /// cursor of another order, or one that does not parse, is an error.
    fn office_page(
        &self,
        filter: &OfficeFilter,
    ) -> impl Future<Output = StoreResult<(Vec<RecordRow>, Option<String>)>> + Send;

    /// How many records the filter matches.
    fn office_count(&self, filter: &OfficeFilter) -> impl Future<Output = StoreResult<i64>> + Send;

    /// How many records the filter matches, `None` when more than `cap`.
    fn office_count_upto(
        &self,
        filter: &OfficeFilter,
        cap: u32,
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send;

    /// Every record the filter matches, in its order from its `after` on, read in batches so
    /// memory stays flat (see [`SqliteStore::office_stream`]).
    fn office_stream(
        &self,
        filter: &OfficeFilter,
    ) -> impl Stream<Item = StoreResult<RecordRow>> + Send + 'static;

    /// Bus runs and joint receptions, latest first, with their tallies and linked cases.
    fn office_sessions(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Vec<SessionStat>>> + Send;

    /// Cases (withdrawn ones left out) and how many are resolved or evaluated.
    fn office_resolved_share(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Share>> + Send;

    /// Cases (withdrawn ones left out) and how many got a reply.
    fn office_reply_rate(&self, f: &StatsFilter)
    -> impl Future<Output = StoreResult<Share>> + Send;

    /// Cases per month, oldest first, months without cases in between included.
    fn office_cases_per_month(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Vec<MonthCount>>> + Send;

    /// Cases per satisfaction code, most first.
    fn office_satisfaction(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Vec<CodeCount>>> + Send;

    /// Steward contacts per building, most first.
    fn office_contacts_per_building(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Vec<BuildingCount>>> + Send;

    /// Volunteer activities per type.
    fn office_volunteering(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<Vec<VolunteerStat>>> + Send;

    /// Every statistic over one filter.
    fn office_stats(
        &self,
        f: &StatsFilter,
    ) -> impl Future<Output = StoreResult<OfficeStats>> + Send;
}

impl OfficeStore for SqliteStore {
    async fn list_records(&self, filter: &RecordFilter) -> StoreResult<Vec<RecordRow>> {
        Ok(SqliteStore::list_records(self, filter).await?)
    }

    async fn record_row(&self, id: RecordId) -> StoreResult<Option<RecordRow>> {
        Ok(SqliteStore::record_row(self, id).await?)
    }

    async fn office_page(
        &self,
        filter: &OfficeFilter,
    ) -> StoreResult<(Vec<RecordRow>, Option<String>)> {
        Ok(SqliteStore::office_page(self, filter).await?)
    }

    async fn office_count(&self, filter: &OfficeFilter) -> StoreResult<i64> {
        Ok(SqliteStore::office_count(self, filter).await?)
    }

    async fn office_count_upto(&self, filter: &OfficeFilter, cap: u32) -> StoreResult<Option<i64>> {
        Ok(SqliteStore::office_count_upto(self, filter, cap).await?)
    }

    fn office_stream(
        &self,
        filter: &OfficeFilter,
    ) -> impl Stream<Item = StoreResult<RecordRow>> + Send + 'static {
        SqliteStore::office_stream(self, filter).map_err(StoreError::from)
    }

    async fn office_sessions(&self, f: &StatsFilter) -> StoreResult<Vec<SessionStat>> {
        Ok(SqliteStore::office_sessions(self, f).await?)
    }

    async fn office_resolved_share(&self, f: &StatsFilter) -> StoreResult<Share> {
        Ok(SqliteStore::office_resolved_share(self, f).await?)
    }

    async fn office_reply_rate(&self, f: &StatsFilter) -> StoreResult<Share> {
        Ok(SqliteStore::office_reply_rate(self, f).await?)
    }

    async fn office_cases_per_month(&self, f: &StatsFilter) -> StoreResult<Vec<MonthCount>> {
        Ok(SqliteStore::office_cases_per_month(self, f).await?)
    }

    async fn office_satisfaction(&self, f: &StatsFilter) -> StoreResult<Vec<CodeCount>> {
        Ok(SqliteStore::office_satisfaction(self, f).await?)
    }

    async fn office_contacts_per_building(
        &self,
        f: &StatsFilter,
    ) -> StoreResult<Vec<BuildingCount>> {
        Ok(SqliteStore::office_contacts_per_building(self, f).await?)
    }

    async fn office_volunteering(&self, f: &StatsFilter) -> StoreResult<Vec<VolunteerStat>> {
        Ok(SqliteStore::office_volunteering(self, f).await?)
    }

    async fn office_stats(&self, f: &StatsFilter) -> StoreResult<OfficeStats> {
        Ok(SqliteStore::office_stats(self, f).await?)
    }
}
