//! The PostgreSQL backend of accounts ([`AccountStore`]), for several server processes on one
//! database.
//!
//! What differs from SQLite, and why:
//! - SQLite runs one writer at a time (`BEGIN IMMEDIATE`); here transactions overlap. Where the
//!   SQLite method relies on that (a grant's epoch, a refresh token spent once), the statements
//!   take the lock that gives the same result; see each method.
//! - A device's `last_seen` is written by one conditional `UPDATE` instead of through the
//!   committer: PostgreSQL has no single writer whose fsyncs a group would share.

use std::collections::HashMap;
use std::fmt::Display;

use linli_sync_core::{DeviceId, PlaceId};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::account_seam::AccountStore;
use super::accounts::{DeviceRow, Principal};
use super::log::{RejectionRow, RejectionView};
use super::seam::{StoreError, StoreResult};
use super::tokens::{NewRefreshToken, RefreshAttempt, RefreshOutcome};
use super::web_sessions::{NewWebSession, WebSessionRow};
use super::{PgStore, place_from_db, push_within};
use crate::model::{Place, User};

/// A stored value that does not parse: the row is corrupt.
fn corrupt(e: impl Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn place_id(s: &str) -> StoreResult<PlaceId> {
    place_from_db(s).map_err(corrupt)
}

fn place_from_row(row: &PgRow) -> StoreResult<Place> {
    let id: String = row.try_get("id")?;
    let parent: Option<String> = row.try_get("parent")?;
    let level: String = row.try_get("level")?;
    Ok(Place {
        id: place_id(&id)?,
        parent: parent.as_deref().map(place_id).transpose()?,
        name: row.try_get("name")?,
        level: level.parse().map_err(corrupt)?,
    })
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role.parse().map_err(corrupt)?,
        display_name: row.try_get("display_name")?,
        disabled: row.try_get("disabled")?,
        session_epoch: row.try_get("session_epoch")?,
    })
}

const USER_COLUMNS: &str =
    "id, username, password_hash, role, display_name, disabled, session_epoch";

/// A stored refresh token: family, spent at, revoked at, device, user.
type TokenRow = (String, Option<i64>, Option<i64>, String, String);

/// How many expired rejections one call forgets at most (see `record_rejections`).
const RETENTION_BATCH: i64 = 500;

/// A transaction that writes `grant_events`, holding the table against other such writers until
/// it commits. The event's id is the grant epoch, and a sequence hands ids out in call order, not
/// commit order: without the lock a grant could take epoch 7, stay uncommitted while another
/// commits 8, and a phone that read epoch 8 in between would never be sent the place of 7. Under
/// the lock the epochs commit in order, as under SQLite's single writer. `SHARE ROW EXCLUSIVE`
/// conflicts with itself and with inserts, not with reads.
async fn grant_events_tx(store: &PgStore) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("LOCK TABLE grant_events IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

async fn revoke_family(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    family: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(family)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AccountStore for PgStore {
    async fn upsert_place(&self, place: &Place) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO places (id, parent, name, level) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET parent = EXCLUDED.parent, name = EXCLUDED.name,
                                            level = EXCLUDED.level",
        )
        .bind(place.id.as_str())
        .bind(place.parent.as_ref().map(|p| p.as_str()))
        .bind(&place.name)
        .bind(place.level.as_str())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn place(&self, id: &PlaceId) -> StoreResult<Option<Place>> {
        sqlx::query("SELECT id, parent, name, level FROM places WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(place_from_row)
            .transpose()
    }

    async fn places_within(&self, scopes: &[PlaceId]) -> StoreResult<Vec<Place>> {
        let mut qb =
            QueryBuilder::<Postgres>::new("SELECT id, parent, name, level FROM places WHERE ");
        push_within(&mut qb, "id", scopes);
        qb.push(" ORDER BY id");
        qb.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(place_from_row)
            .collect()
    }

    async fn all_places(&self) -> StoreResult<Vec<Place>> {
        sqlx::query("SELECT id, parent, name, level FROM places ORDER BY id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(place_from_row)
            .collect()
    }

    async fn insert_user(&self, user: &User, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, display_name, disabled,
                                created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(&user.display_name)
        .bind(user.disabled)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn set_user_disabled(&self, id: &str, disabled: bool) -> StoreResult<()> {
        sqlx::query(
            "UPDATE users SET disabled = $1,
                    session_epoch = session_epoch + CASE WHEN $1 THEN 1 ELSE 0 END
             WHERE id = $2",
        )
        .bind(disabled)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        )))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(user_from_row)
        .collect()
    }

    async fn set_password_hash(&self, id: &str, hash: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1
             WHERE id = $2",
        )
        .bind(hash)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        // Under the lock, two grants of one place take turns: the second finds the first's row.
        let mut tx = grant_events_tx(self).await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM grants WHERE user_id = $1 AND place_id = $2")
                .bind(user_id)
                .bind(place.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            tx.commit().await?;
            return Ok(false);
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO grant_events (user_id, place_id, action, at)
             VALUES ($1, $2, 'grant', $3) RETURNING id",
        )
        .bind(user_id)
        .bind(place.as_str())
        .bind(crate::model::now_ms())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO grants (user_id, place_id, epoch) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(place.as_str())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn revoke_grant(&self, user_id: &str, place: &PlaceId) -> StoreResult<bool> {
        let mut tx = grant_events_tx(self).await?;
        let gone = sqlx::query("DELETE FROM grants WHERE user_id = $1 AND place_id = $2")
            .bind(user_id)
            .bind(place.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            sqlx::query(
                "INSERT INTO grant_events (user_id, place_id, action, at)
                 VALUES ($1, $2, 'revoke', $3)",
            )
            .bind(user_id)
            .bind(place.as_str())
            .bind(crate::model::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(gone > 0)
    }

    async fn grants_with_epoch(&self, user_id: &str) -> StoreResult<(i64, Vec<(PlaceId, i64)>)> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            crate::store::accounts::GRANTS_WITH_EPOCH.replace('?', "$1")
        });
        let rows: Vec<(i64, Option<String>, Option<i64>)> =
            sqlx::query_as(sqlx::AssertSqlSafe(SQL.as_str()))
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        crate::store::accounts::grants_from_rows(&rows, place_id)
    }

    async fn grant_epoch(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM grant_events")
                .fetch_one(self.pool())
                .await?,
        )
    }

    async fn grants_of(&self, user_id: &str) -> StoreResult<Vec<PlaceId>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT place_id FROM grants WHERE user_id = $1 ORDER BY place_id")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(|s| place_id(s)).collect()
    }

    async fn register_device(
        &self,
        device: DeviceId,
        user_id: &str,
        name: &str,
        now: i64,
    ) -> StoreResult<bool> {
        // A row bound to another user fails the DO UPDATE's WHERE: nothing changes and nothing
        // is returned. A concurrent first login of the same id waits for the other's insert.
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO devices (id, user_id, name, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET
                 last_seen = EXCLUDED.last_seen,
                 name = CASE WHEN EXCLUDED.name = '' THEN devices.name ELSE EXCLUDED.name END
             WHERE devices.user_id = EXCLUDED.user_id
             RETURNING user_id",
        )
        .bind(device.to_string())
        .bind(user_id)
        .bind(name)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    async fn list_devices(&self, user_id: Option<&str>) -> StoreResult<Vec<DeviceRow>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT d.id, u.username, d.name, d.created_at, d.last_seen, d.revoked_at
             FROM devices d JOIN users u ON u.id = d.user_id",
        );
        if let Some(u) = user_id {
            qb.push(" WHERE d.user_id = ").push_bind(u.to_string());
        }
        qb.push(" ORDER BY d.last_seen DESC, d.id");
        qb.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(DeviceRow {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    last_seen: r.try_get("last_seen")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    async fn revoke_device(&self, device: DeviceId, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool().begin().await?;
        let n =
            sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(now)
                .bind(device.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1
             WHERE device_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(device.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn device_revoked(&self, device: DeviceId) -> StoreResult<bool> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM devices WHERE id = $1")
                .bind(device.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(matches!(at, Some(Some(_))))
    }

    async fn principal(&self, user_id: &str, device: DeviceId) -> StoreResult<Option<Principal>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.password_hash, u.role, u.display_name, u.disabled,
                    u.session_epoch,
                    (SELECT d.user_id = u.id AND d.revoked_at IS NULL
                       FROM devices d WHERE d.id = $1) AS device_ok,
                    (SELECT d.revoked_at IS NOT NULL FROM devices d WHERE d.id = $1)
                       AS device_revoked,
                    (SELECT string_agg(g.place_id, ' ') FROM grants g WHERE g.user_id = u.id)
                       AS places
             FROM users u WHERE u.id = $2",
        )
        .bind(device.to_string())
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let device_ok: Option<bool> = r.try_get("device_ok")?;
            let device_revoked: Option<bool> = r.try_get("device_revoked")?;
            let places: Option<String> = r.try_get("places")?;
            Ok(Principal {
                user: user_from_row(&r)?,
                device_ok: device_ok == Some(true),
                device_revoked: device_revoked == Some(true),
                places: crate::store::accounts::places_of_list(places.as_deref(), place_id)?,
            })
        })
        .transpose()
    }

    async fn device_names(&self, ids: &[&str]) -> StoreResult<HashMap<String, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, name FROM devices WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().collect())
    }

    async fn device_owner(&self, device: DeviceId) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT user_id FROM devices WHERE id = $1")
                .bind(device.to_string())
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn touch_device(&self, device: DeviceId, now: i64) -> StoreResult<()> {
        // Only when stale by a minute, so an idle sync writes nothing; the condition in the
        // UPDATE itself, so a check and a write cannot interleave with another process's touch.
        sqlx::query("UPDATE devices SET last_seen = $1 WHERE id = $2 AND last_seen < $3")
            .bind(now)
            .bind(device.to_string())
            .bind(now - 60_000)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn server_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        let fresh: [u8; 32] = rand::random();
        let mut tx = self.pool().begin().await?;
        // A concurrent first use by another process waits here for the other's insert, and the
        // SELECT (a new snapshot under READ COMMITTED) then reads the value that won.
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh[..])
        .bind(crate::model::now_ms())
        .execute(&mut *tx)
        .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn insert_refresh_token(&self, t: &NewRefreshToken<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.hash)
        .bind(t.family)
        .bind(t.user_id)
        .bind(t.device_id)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn rotate_refresh_token(&self, a: &RefreshAttempt<'_>) -> StoreResult<RefreshOutcome> {
        let mut tx = self.pool().begin().await?;
        // The spending UPDATE comes first. A concurrent presentation of the same token waits
        // for this row's lock, re-checks `spent_at IS NULL` once this commits, spends nothing,
        // and goes on below as a retry or a reuse, as it would after this one under SQLite.
        let spent: Option<(String, String, String)> = sqlx::query_as(
            "UPDATE refresh_tokens SET spent_at = $1
             WHERE hash = $2 AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > $1
             RETURNING family, user_id, device_id",
        )
        .bind(a.now)
        .bind(a.hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((family, user_id, device_id)) = spent {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at,
                                             expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(a.next_hash)
            .bind(&family)
            .bind(&user_id)
            .bind(&device_id)
            .bind(a.now)
            .bind(a.next_expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Rotated { user_id, device_id });
        }
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT family, spent_at, revoked_at, device_id, user_id FROM refresh_tokens
             WHERE hash = $1",
        )
        .bind(a.hash)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => RefreshOutcome::Unknown,
            Some((family, Some(spent_at), None, device_id, user_id)) => {
                let successor_unused: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM refresh_tokens
                                    WHERE hash = $1 AND family = $2 AND spent_at IS NULL
                                      AND revoked_at IS NULL AND expires_at > $3)",
                )
                .bind(a.next_hash)
                .bind(&family)
                .bind(a.now)
                .fetch_one(&mut *tx)
                .await?;
                let retry = a.now - spent_at <= a.grace_ms
                    && a.device_id == Some(device_id.as_str())
                    && successor_unused;
                if retry {
                    RefreshOutcome::Retried { user_id, device_id }
                } else {
                    revoke_family(&mut tx, &family, a.now).await?;
                    RefreshOutcome::Reused
                }
            }
            Some((family, Some(_), Some(_), _, _)) => {
                // Spent and since revoked: still a copy in someone's hands.
                revoke_family(&mut tx, &family, a.now).await?;
                RefreshOutcome::Reused
            }
            Some((_, None, _, device_id, _)) => RefreshOutcome::Dead { device_id },
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn revoke_refresh_tokens_of_user(&self, user_id: &str, now: i64) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    async fn record_rejections(
        &self,
        rows: &[RejectionRow<'_>],
        retain_ms: i64,
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO rejections (hash, record_id, user_id, device_id, code, message, at,
                                         place, more)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&r.hash[..])
            .bind(r.record.to_string())
            .bind(r.user_id)
            .bind(r.device.to_string())
            .bind(r.code)
            .bind(r.message)
            .bind(r.at)
            .bind(r.place)
            .bind(r.more)
            .execute(&mut *tx)
            .await?;
        }
        // Retention without state: SQLite's store remembers in a field when it last forgot old
        // rows and does so hourly, but PgStore has no such field, and a per-process timer would
        // be one of several anyway with several processes on this table. Instead every call
        // forgets a bounded batch of expired rows: an index probe on `at` when none is due, at
        // most RETENTION_BATCH deletions otherwise (more than one push's sample, so a backlog
        // shrinks), and SKIP LOCKED keeps two processes from waiting on each other's batch.
        let now = rows[0].at;
        sqlx::query(
            "DELETE FROM rejections WHERE id IN (
                 SELECT id FROM rejections WHERE at < $1 ORDER BY at LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now - retain_ms)
        .bind(RETENTION_BATCH)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_rejections(
        &self,
        scopes: &[PlaceId],
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<RejectionView>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT r.id, r.at, u.username, r.device_id, COALESCE(d.name, '') AS device_name,
                    r.record_id, r.hash, r.code, r.message, r.place, r.more
             FROM rejections r JOIN users u ON u.id = r.user_id
             LEFT JOIN devices d ON d.id = r.device_id
             WHERE ",
        );
        push_within(&mut qb, "r.place", scopes);
        if let Some(b) = before {
            qb.push(" AND r.id < ").push_bind(b);
        }
        qb.push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(i64::from(limit));
        qb.build()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                let hash: Vec<u8> = row.try_get("hash")?;
                Ok(RejectionView {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    user: row.try_get("username")?,
                    device: row.try_get("device_id")?,
                    device_name: row.try_get("device_name")?,
                    record: row.try_get("record_id")?,
                    hash: crate::model::hex(&hash),
                    code: row.try_get("code")?,
                    message: row.try_get("message")?,
                    place: row.try_get("place")?,
                    more: row.try_get("more")?,
                })
            })
            .collect()
    }

    async fn rejection_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM rejections")
            .fetch_one(self.pool())
            .await?)
    }

    async fn insert_web_session(&self, s: &NewWebSession<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO web_sessions
                 (hash, user_id, device_id, actor, csrf, session_epoch, created_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&s.hash[..])
        .bind(s.user_id)
        .bind(s.device_id)
        .bind(s.actor)
        .bind(s.csrf)
        .bind(s.session_epoch)
        .bind(s.now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn web_session(
        &self,
        hash: &[u8; 32],
        idle_since: i64,
    ) -> StoreResult<Option<WebSessionRow>> {
        let row = sqlx::query(
            "SELECT user_id, device_id, actor, csrf, session_epoch, last_seen FROM web_sessions
             WHERE hash = $1 AND ended_at IS NULL AND last_seen >= $2",
        )
        .bind(&hash[..])
        .bind(idle_since)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(WebSessionRow {
                user_id: r.try_get("user_id")?,
                device_id: r.try_get("device_id")?,
                actor: r.try_get("actor")?,
                csrf: r.try_get("csrf")?,
                session_epoch: r.try_get("session_epoch")?,
                last_seen: r.try_get("last_seen")?,
            })
        })
        .transpose()
    }

    async fn touch_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE web_sessions SET last_seen = $1 WHERE hash = $2 AND ended_at IS NULL")
            .bind(now)
            .bind(&hash[..])
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn end_web_session(&self, hash: &[u8; 32], now: i64) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "UPDATE web_sessions SET ended_at = $1 WHERE hash = $2 AND ended_at IS NULL
             RETURNING device_id",
        )
        .bind(now)
        .bind(&hash[..])
        .fetch_optional(self.pool())
        .await?)
    }
}
