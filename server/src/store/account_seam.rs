//! The storage seam of accounts ([`AccountStore`]): the place tree, users, grants, devices,
//! refresh tokens, browser sessions, refused pushes and server-wide secrets. SQLite ([`SqliteStore`])
//! and PostgreSQL ([`PgStore`](super::pg::PgStore), in `pg_accounts.rs`) implement it; one
//! conformance suite (`account_conformance.rs`) runs against both.

use std::collections::HashMap;
use std::future::Future;

use linli_sync_core::{DeviceId, PlaceId};

use super::SqliteStore;
use super::accounts::{DeviceRow, Principal};
use super::log::{RejectionRow, RejectionView};
use super::seam::StoreResult;
use super::tokens::{NewRefreshToken, RefreshAttempt, RefreshOutcome};
use super::web_sessions::{NewWebSession, WebSessionRow};
use crate::model::{Place, User};

/// What the server needs from accounts, whatever the database.
///
/// The promises every implementation keeps (the conformance suite checks them):
/// - "Within a place" is by whole path segments: `hz/bai_yang` holds `hz/bai_yang/a`, not
///   `hz/bai_yang0`.
/// - A new grant gets a grant epoch above every epoch a reader could already have seen, and
///   granting twice is not an error (the second says `false`).
/// - A refresh token is spent at most once: of two concurrent presentations one rotates; a
///   spent token presented again revokes its family, unless it is the same device's retry
///   within the grace window while the successor is unused.
/// - Disabling a user or replacing the password moves the session epoch on.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates or renames a place.
    fn upsert_place(&self, place: &Place) -> impl Future<Output = StoreResult<()>> + Send;

    /// One place.
    fn place(&self, id: &PlaceId) -> impl Future<Output = StoreResult<Option<Place>>> + Send;

    /// The places within any of `scopes` (each scope and everything below it), by path.
    fn places_within(
        &self,
        scopes: &[PlaceId],
    ) -> impl Future<Output = StoreResult<Vec<Place>>> + Send;

    /// Every place, by path.
    fn all_places(&self) -> impl Future<Output = StoreResult<Vec<Place>>> + Send;

    /// Inserts a user; a taken username is a unique violation (409).
    fn insert_user(&self, user: &User, now: i64) -> impl Future<Output = StoreResult<()>> + Send;

    /// A user by login name.
    fn user_by_username(
        &self,
        username: &str,
    ) -> impl Future<Output = StoreResult<Option<User>>> + Send;

    /// A user by id.
    fn user_by_id(&self, id: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;

    /// Enables or disables a user; disabling moves the session epoch on.
    fn set_user_disabled(
        &self,
        id: &str,
        disabled: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every user, by login name.
    fn list_users(&self) -> impl Future<Output = StoreResult<Vec<User>>> + Send;

    /// Replaces a user's password hash, moving the session epoch on.
    fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Grants a user a place; `false` when the grant already existed (it keeps its epoch).
    fn grant(
        &self,
        user_id: &str,
        place: &PlaceId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Revokes a grant; `false` if there was none.
    fn revoke_grant(
        &self,
        user_id: &str,
        place: &PlaceId,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The latest grant epoch and a user's grants with the epoch each was made at, by path, read
    /// together (no grant can fall between the two).
    fn grants_with_epoch(
        &self,
        user_id: &str,
    ) -> impl Future<Output = StoreResult<(i64, Vec<(PlaceId, i64)>)>> + Send;

    /// The latest grant epoch (0 before any grant).
    fn grant_epoch(&self) -> impl Future<Output = StoreResult<i64>> + Send;

    /// The places a user is granted, by path.
    fn grants_of(&self, user_id: &str) -> impl Future<Output = StoreResult<Vec<PlaceId>>> + Send;

    /// Binds a device to a user or refreshes it; `false`, changing nothing, when the device is
    /// bound to another user.
    fn register_device(
        &self,
        device: DeviceId,
        user_id: &str,
        name: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Devices, newest first, of one user or of everyone.
    fn list_devices(
        &self,
        user_id: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<DeviceRow>>> + Send;

    /// Revokes a device and its refresh tokens; `false` if there is no such device.
    fn revoke_device(
        &self,
        device: DeviceId,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Whether a device was revoked.
    fn device_revoked(&self, device: DeviceId) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The user of an authenticated request and whether the token's device is still good.
    fn principal(
        &self,
        user_id: &str,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<Principal>>> + Send;

    /// The names devices gave, for these device ids only.
    fn device_names(
        &self,
        ids: &[&str],
    ) -> impl Future<Output = StoreResult<HashMap<String, String>>> + Send;

    /// The user a device is bound to.
    fn device_owner(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Records that a device was just seen (written only when stale by a minute).
    fn touch_device(
        &self,
        device: DeviceId,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// A server-wide secret (32 random bytes), made on first use, the same for every handle.
    fn server_secret(&self, name: &str) -> impl Future<Output = StoreResult<Vec<u8>>> + Send;

    /// Stores a new refresh token.
    fn insert_refresh_token(
        &self,
        t: &NewRefreshToken<'_>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Spends a refresh token and stores its successor (see [`SqliteStore::rotate_refresh_token`]).
    fn rotate_refresh_token(
        &self,
        a: &RefreshAttempt<'_>,
    ) -> impl Future<Output = StoreResult<RefreshOutcome>> + Send;

    /// Revokes every live refresh token of a user; how many.
    fn revoke_refresh_tokens_of_user(
        &self,
        user_id: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Remembers refused pushes in one transaction, forgetting those older than `retain_ms`
    /// now and then.
    fn record_rejections(
        &self,
        rows: &[RejectionRow<'_>],
        retain_ms: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Rejections within `scopes`, newest first, before row id `before` (when given).
    fn list_rejections(
        &self,
        scopes: &[PlaceId],
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<RejectionView>>> + Send;

    /// Number of refused pushes stored.
    fn rejection_count(&self) -> impl Future<Output = StoreResult<i64>> + Send;

    /// Stores a new browser session.
    fn insert_web_session(
        &self,
        s: &NewWebSession<'_>,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The session with this token hash, unless it ended or was idle since before `idle_since`.
    fn web_session(
        &self,
        hash: &[u8; 32],
        idle_since: i64,
    ) -> impl Future<Output = StoreResult<Option<WebSessionRow>>> + Send;

    /// Records a request of the session (keeps it from going idle).
    fn touch_web_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Ends a session; its device, if it was live.
    fn end_web_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;
}

impl AccountStore for SqliteStore {
    async fn upsert_place(&self, place: &Place) -> StoreResult<()> {
        Ok(SqliteStore::upsert_place(self, place).await?)
    }
    async fn place(&self, id: &PlaceId) -> StoreResult<Option<Place>> {
        Ok(SqliteStore::place(self, id).await?)
    }
    async fn places_within(&self, scopes: &[PlaceId]) -> StoreResult<Vec<Place>> {
        Ok(SqliteStore::places_within(self, scopes).await?)
    }
    async fn all_places(&self) -> StoreResult<Vec<Place>> {
        Ok(SqliteStore::all_places(self).await?)
    }
    async fn insert_user(&self, user: &User, now: i64) -> StoreResult<()> {
        Ok(SqliteStore::insert_user(self, user, now).await?)
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(SqliteStore::user_by_username(self, username).await?)
    }
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(SqliteStore::user_by_id(self, id).await?)
    }
    async fn set_user_disabled(&self, id: &str, disabled: bool) -> StoreResult<()> {
        Ok(SqliteStore::set_user_disabled(self, id, disabled).await?)
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        Ok(SqliteStore::list_users(self).await?)
    }
    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<()> {
        Ok(SqliteStore::set_password_hash(self, id, hash).await?)
    }
    async fn grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        Ok(SqliteStore::grant(self, user_id, place).await?)
    }
    async fn revoke_grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        Ok(SqliteStore::revoke_grant(self, user_id, place).await?)
    }
    async fn grants_with_epoch(&self, user_id: &str) -> StoreResult<(i64, Vec<(PlaceId, i64)>)> {
        Ok(SqliteStore::grants_with_epoch(self, user_id).await?)
    }
    async fn grant_epoch(&self) -> StoreResult<i64> {
        Ok(SqliteStore::grant_epoch(self).await?)
    }
    async fn grants_of(&self, user_id: &str) -> StoreResult<Vec<PlaceId>> {
        Ok(SqliteStore::grants_of(self, user_id).await?)
    }
    async fn register_device(
        &self,
        device: DeviceId,
        user_id: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<bool> {
        Ok(SqliteStore::register_device(self, device, user_id, name, now).await?)
    }
    async fn list_devices(&self, user_id: Option<&str>) -> StoreResult<Vec<DeviceRow>> {
        Ok(SqliteStore::list_devices(self, user_id).await?)
    }
    async fn revoke_device(&self, device: DeviceId, now: i64) -> StoreResult<bool> {
        Ok(SqliteStore::revoke_device(self, device, now).await?)
    }
    async fn device_revoked(&self, device: DeviceId) -> StoreResult<bool> {
        Ok(SqliteStore::device_revoked(self, device).await?)
    }
    async fn principal(&self, user_id: &str, device: DeviceId) -> StoreResult<Option<Principal>> {
        Ok(SqliteStore::principal(self, user_id, device).await?)
    }
    async fn device_names(&self, ids: &[&str]) -> StoreResult<HashMap<String, String>> {
        Ok(SqliteStore::device_names(self, ids).await?)
    }
    async fn device_owner(&self, device: DeviceId) -> StoreResult<Option<String>> {
        Ok(SqliteStore::device_owner(self, device).await?)
    }
    async fn touch_device(&self, device: DeviceId, now: i64) -> StoreResult<()> {
        Ok(SqliteStore::touch_device(self, device, now).await?)
    }
    async fn server_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        Ok(SqliteStore::server_secret(self, name).await?)
    }
    async fn insert_refresh_token(&self, t: &NewRefreshToken<'_>) -> StoreResult<()> {
        Ok(SqliteStore::insert_refresh_token(self, t).await?)
    }
    async fn rotate_refresh_token(&self, a: &RefreshAttempt<'_>) -> StoreResult<RefreshOutcome> {
        Ok(SqliteStore::rotate_refresh_token(self, a).await?)
    }
    async fn revoke_refresh_tokens_of_user(&self, user_id: &str, now: i64) -> StoreResult<u64> {
        Ok(SqliteStore::revoke_refresh_tokens_of_user(self, user_id, now).await?)
    }
    async fn record_rejections(
        &self,
        rows: &[RejectionRow<'_>],
        retain_ms: i64,
    ) -> StoreResult<()> {
        Ok(SqliteStore::record_rejections(self, rows, retain_ms).await?)
    }
    async fn list_rejections(
        &self,
        scopes: &[PlaceId],
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RejectionView>> {
        Ok(SqliteStore::list_rejections(self, scopes, before, limit).await?)
    }
    async fn rejection_count(&self) -> StoreResult<i64> {
        Ok(SqliteStore::rejection_count(self).await?)
    }
    async fn insert_web_session(&self, s: &NewWebSession<'_>) -> StoreResult<()> {
        Ok(SqliteStore::insert_web_session(self, s).await?)
    }
    async fn web_session(
        &self,
        hash: &[u8; 32],
        idle_since: i64,
    ) -> StoreResult<Option<WebSessionRow>> {
        Ok(SqliteStore::web_session(self, hash, idle_since).await?)
    }
    async fn touch_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<()> {
        Ok(SqliteStore::touch_web_session(self, hash, now).await?)
    }
    async fn end_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<Option<String>> {
        Ok(SqliteStore::end_web_session(self, hash, now).await?)
    }
}
