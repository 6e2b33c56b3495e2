//! Places, users, grants and devices.

use linli_sync_core::{DeviceId, PlaceId};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Store, place_from_db, push_within};
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
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: role.parse().map_err(Error::Internal)?,
        display_name: row.try_get("display_name")?,
        disabled: disabled != 0,
    })
}

const USER_COLUMNS: &str = "id, username, password_hash, role, display_name, disabled";

impl Store {
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

    /// Enables or disables a user.
    pub async fn set_user_disabled(&self, id: &str, disabled: bool) -> Result<()> {
        sqlx::query("UPDATE users SET disabled = ? WHERE id = ?")
            .bind(disabled as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Grants a user a place (and so everything below it). Idempotent.
    pub async fn grant(&self, user_id: &str, place: &PlaceId) -> Result<()> {
        sqlx::query("INSERT OR IGNORE INTO grants (user_id, place_id) VALUES (?, ?)")
            .bind(user_id)
            .bind(place.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
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

    /// The user a device is bound to.
    pub async fn device_owner(&self, device: DeviceId) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT user_id FROM devices WHERE id = ?")
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that a device was just seen.
    pub async fn touch_device(&self, device: DeviceId, now: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen = ? WHERE id = ?")
            .bind(now)
            .bind(device.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
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
