//! Places, users, grants and devices.

use linli_sync_core::{DeviceId, PlaceId};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{SqliteStore, place_from_db, push_within};
use crate::error::{Error, Result};
use crate::model::{Place, User};

fn place_from_row(row: &SqliteRow) -> Result<Place> {
    let id: String = row.try_get("id")?;
    let parent: Option<String> = row.try_get("parent")?;
    let level: String = row.try_get("level")?;
    Ok(Place {
        id: place_from_db(&id)?,
        parent: parent.as_deref().map(place_from_db).transpose()?,
        name: row.try_get("name")?,
        level: level.parse().map_err(Error::Internal)?,
    })
}

fn user_from_row(row: &SqliteRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    let disabled: i64 = row.try_get("disabled")?;
    let session_epoch: i64 = row.try_get("session_epoch")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role.parse().map_err(Error::Internal)?,
        display_name: row.try_get("display_name")?,
        disabled: disabled != 0,
        session_epoch,
    })
}

/// A device as listed to admins.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Its user's login name.
    pub username: String,
    /// The name the phone gave.
    pub name: String,
    /// First login (ms).
    pub created_at: i64,
    /// Last login or sync (ms).
    pub last_seen: i64,
    /// When it was revoked (ms), if it was.
    pub revoked_at: Option<i64>,
}

/// The user behind a token, and whether the token's device is still good.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// The device exists, belongs to the user and is not revoked.
    pub device_ok: bool,
    /// The device was revoked by an admin.
    pub device_revoked: bool,
    /// The places the user is granted, by path (read by the same statement).
    pub places: Vec<PlaceId>,
}

/// The places of a space-separated list (place paths hold no spaces), by path.
pub(crate) fn places_of_list<E>(
    list: Option<&str>,
    place: impl Fn(&str) -> std::result::Result<PlaceId, E>,
) -> std::result::Result<Vec<PlaceId>, E> {
    let mut places = list
        .unwrap_or_default()
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(place)
        .collect::<std::result::Result<Vec<_>, E>>()?;
    places.sort();
    Ok(places)
}

const USER_COLUMNS: &str =
    "id, username, password_hash, role, display_name, disabled, session_epoch";

impl SqliteStore {
    /// Creates or renames a place.
    pub async fn upsert_place(&self, place: &Place) -> Result<()> {
        sqlx::query(
            "INSERT INTO places (id, parent, name, level) VALUES (?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET parent = excluded.parent, name = excluded.name,
                                           level = excluded.level",
        )
        .bind(place.id.as_str())
        .bind(place.parent.as_ref().map(|p| p.as_str()))
        .bind(&place.name)
        .bind(place.level.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One place.
    pub async fn place(&self, id: &PlaceId) -> Result<Option<Place>> {
        sqlx::query("SELECT id, parent, name, level FROM places WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(place_from_row)
            .transpose()
    }

    /// The places within any of `scopes` (each scope and everything below it), by path.
    pub async fn places_within(&self, scopes: &[PlaceId]) -> Result<Vec<Place>> {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT id, parent, name, level FROM places WHERE ");
        push_within(&mut qb, "id", scopes);
        qb.push(" ORDER BY id");
        qb.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(place_from_row)
            .collect()
    }

    /// Every place, by path.
    pub async fn all_places(&self) -> Result<Vec<Place>> {
        sqlx::query("SELECT id, parent, name, level FROM places ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(place_from_row)
            .collect()
    }

    /// Inserts a user; a taken username is a unique violation (409).
    pub async fn insert_user(&self, user: &User, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, display_name, disabled, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(&user.display_name)
        .bind(user.disabled as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A user by login name.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = ?"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    /// Enables or disables a user. Disabling ends every session (the session epoch moves on);
    /// enabling again does not revive them.
    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        sqlx::query(
            "UPDATE users SET disabled = ?1,
                    session_epoch = session_epoch + CASE WHEN ?1 THEN 1 ELSE 0 END
             WHERE id = ?2",
        )
        .bind(disabled as i64)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Grants a user a place (and so everything below it). Idempotent: returns `false` when the
    /// grant already existed (it keeps its epoch). A new grant gets the next grant epoch, so
    /// phones of the user are bootstrapped with the place's existing records at their next sync.
    pub async fn grant(&self, user_id: &str, place: &PlaceId) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM grants WHERE user_id = ? AND place_id = ?")
                .bind(user_id)
                .bind(place.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            tx.commit().await?;
            return Ok(false);
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO grant_events (user_id, place_id, action, at) VALUES (?, ?, 'grant', ?)
             RETURNING id",
        )
        .bind(user_id)
        .bind(place.as_str())
        .bind(crate::model::now_ms())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO grants (user_id, place_id, epoch) VALUES (?, ?, ?)")
            .bind(user_id)
            .bind(place.as_str())
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a grant; returns `false` if there was none. Its records stop arriving at once.
    pub async fn revoke_grant(&self, user_id: &str, place: &PlaceId) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let gone = sqlx::query("DELETE FROM grants WHERE user_id = ? AND place_id = ?")
            .bind(user_id)
            .bind(place.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            sqlx::query(
                "INSERT INTO grant_events (user_id, place_id, action, at)
                 VALUES (?, ?, 'revoke', ?)",
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

    /// The latest grant epoch and a user's grants with the epoch each was made at, by path, read
    /// by one statement (so no grant can fall between the two).
    pub async fn grants_with_epoch(&self, user_id: &str) -> Result<(i64, Vec<(PlaceId, i64)>)> {
        let rows: Vec<(i64, Option<String>, Option<i64>)> = sqlx::query_as(GRANTS_WITH_EPOCH)
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        grants_from_rows(&rows, place_from_db)
    }

    /// The latest grant epoch (0 before any grant was made through [`SqliteStore::grant`]).
    pub async fn grant_epoch(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM grant_events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Every user, by login name.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        )))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user_from_row)
        .collect()
    }

    /// Replaces a user's password hash, ending every session (the session epoch moves on).
    pub async fn set_password_hash(&self, id: &str, hash: &str) -> Result<()> {
        sqlx::query(
            "UPDATE users SET password_hash = ?, session_epoch = session_epoch + 1 WHERE id = ?",
        )
        .bind(hash)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Devices, newest first, of one user or of everyone.
    pub async fn list_devices(&self, user_id: Option<&str>) -> Result<Vec<DeviceRow>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT d.id, u.username, d.name, d.created_at, d.last_seen, d.revoked_at
             FROM devices d JOIN users u ON u.id = d.user_id",
        );
        if let Some(u) = user_id {
            qb.push(" WHERE d.user_id = ").push_bind(u.to_string());
        }
        qb.push(" ORDER BY d.last_seen DESC, d.id");
        qb.build()
            .fetch_all(&self.pool)
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

    /// Revokes a device: its tokens stop working and its refresh tokens are revoked. Returns
    /// `false` if there is no such device.
    pub async fn revoke_device(&self, device: DeviceId, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n = sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(now)
            .bind(device.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(device.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Whether a device was revoked.
    pub async fn device_revoked(&self, device: DeviceId) -> Result<bool> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM devices WHERE id = ?")
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(matches!(at, Some(Some(_))))
    }

    /// The caller of an authenticated request in one query: the user, and whether the token's
    /// device is still theirs and not revoked.
    pub async fn principal(&self, user_id: &str, device: DeviceId) -> Result<Option<Principal>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.password_hash, u.role, u.display_name, u.disabled,
                    u.session_epoch,
                    (SELECT d.user_id = u.id AND d.revoked_at IS NULL
                       FROM devices d WHERE d.id = ?) AS device_ok,
                    (SELECT d.revoked_at IS NOT NULL FROM devices d WHERE d.id = ?)
                       AS device_revoked,
                    (SELECT group_concat(g.place_id, ' ') FROM grants g WHERE g.user_id = u.id)
                       AS places
             FROM users u WHERE u.id = ?",
        )
        .bind(device.to_string())
        .bind(device.to_string())
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let device_ok: Option<i64> = r.try_get("device_ok")?;
            let device_revoked: Option<i64> = r.try_get("device_revoked")?;
            let places: Option<String> = r.try_get("places")?;
            Ok(Principal {
                user: user_from_row(&r)?,
                device_ok: device_ok == Some(1),
                device_revoked: device_revoked == Some(1),
                places: places_of_list(places.as_deref(), place_from_db)?,
            })
        })
        .transpose()
    }

    /// The places a user is granted, by path.
    pub async fn grants_of(&self, user_id: &str) -> Result<Vec<PlaceId>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT place_id FROM grants WHERE user_id = ? ORDER BY place_id")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|s| place_from_db(s)).collect()
    }

    /// Binds a device to a user (first login) or refreshes it (later logins by the same user).
    /// Returns `false`, changing nothing, when the device is bound to another user.
    pub async fn register_device(
        &self,
        device: DeviceId,
        user_id: &str,
        name: &str,
        now: i64,
    ) -> Result<bool> {
        let row = sqlx::query(
            "INSERT INTO devices (id, user_id, name, created_at, last_seen) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET
                 last_seen = excluded.last_seen,
                 name = CASE WHEN excluded.name = '' THEN devices.name ELSE excluded.name END
             WHERE devices.user_id = excluded.user_id
             RETURNING user_id",
        )
        .bind(device.to_string())
        .bind(user_id)
        .bind(name)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The names devices gave (empty when they gave none), for these device ids only.
    pub async fn device_names(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, String>> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, name FROM devices WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in ids {
            list.push_bind(id.to_string());
        }
        qb.push(")");
        qb.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }

    /// The user a device is bound to.
    pub async fn device_owner(&self, device: DeviceId) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT user_id FROM devices WHERE id = ?")
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A server-wide secret (32 random bytes), made on first use and kept in the database so
    /// every node has the same one.
    pub async fn server_secret(&self, name: &str) -> Result<Vec<u8>> {
        let fresh: [u8; 32] = rand::random();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?)
             ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(&fresh[..])
        .bind(crate::model::now_ms())
        .execute(&mut *tx)
        .await?;
        let value: Vec<u8> = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Records that a device was just seen.
    pub async fn touch_device(&self, device: DeviceId, now: i64) -> Result<()> {
        // Only when stale by a minute: an idle sync should not cost a disk write (and an fsync);
        // and through the committer, so it shares a group with the changes being committed.
        let stale: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM devices
                            WHERE id = ? AND (last_seen IS NULL OR last_seen < ?))",
        )
        .bind(device.to_string())
        .bind(now - 60_000)
        .fetch_one(&self.pool)
        .await?;
        if stale {
            self.group
                .commit(super::group::Work::Touch {
                    device: device.to_string(),
                    now,
                })
                .await?
                .map_err(|_| Error::Internal("touching a device cannot conflict".into()))?;
        }
        Ok(())
    }
}

/// [`SqliteStore::grants_with_epoch`]'s statement (PostgreSQL's with `$1`): one row per grant,
/// or one row of NULLs without any, each with the latest epoch.
pub(crate) const GRANTS_WITH_EPOCH: &str =
    "SELECT (SELECT COALESCE(MAX(id), 0) FROM grant_events), g.place_id, g.epoch
     FROM (SELECT 1) AS one LEFT JOIN grants g ON g.user_id = ?
     ORDER BY g.place_id";

/// The epoch and grants from [`GRANTS_WITH_EPOCH`]'s rows.
pub(crate) fn grants_from_rows<E>(
    rows: &[(i64, Option<String>, Option<i64>)],
    place: impl Fn(&str) -> std::result::Result<PlaceId, E>,
) -> std::result::Result<(i64, Vec<(PlaceId, i64)>), E> {
    let epoch = rows.first().map_or(0, |(e, _, _)| *e);
    let grants = rows
        .iter()
        .filter_map(|(_, p, e)| Some((p.as_deref()?, (*e)?)))
        .map(|(p, e)| Ok((place(p)?, e)))
        .collect::<std::result::Result<_, E>>()?;
    Ok((epoch, grants))
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_store;
    use crate::model::Role;

    use super::*;

    fn user(name: &str) -> User {
        User {
            id: uuid::Uuid::new_v4().to_string(),
            username: name.into(),
            password_hash: "x".into(),
            role: Role::Bus,
            display_name: "某某".into(),
            disabled: false,
            session_epoch: 0,
        }
    }

    #[tokio::test]
    async fn a_device_belongs_to_one_user() {
        let (_dir, store) = temp_store().await;
        let (a, b) = (user("a"), user("b"));
        store.insert_user(&a, 1).await.unwrap();
        store.insert_user(&b, 1).await.unwrap();
        let dev = DeviceId::new();
        assert!(store.register_device(dev, &a.id, "phone", 1).await.unwrap());
        assert!(store.register_device(dev, &a.id, "", 2).await.unwrap());
        assert!(!store.register_device(dev, &b.id, "x", 3).await.unwrap());
        assert_eq!(store.device_owner(dev).await.unwrap().unwrap(), a.id);
        let dup = store.insert_user(&user("a"), 1).await.unwrap_err();
        assert_eq!(dup.status(), axum::http::StatusCode::CONFLICT);
    }
}
