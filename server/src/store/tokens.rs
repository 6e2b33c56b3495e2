//! Refresh tokens: stored as SHA-256 hashes, spent on use, revocable by family, user or device.

use super::Store;
use crate::error::Result;

/// A refresh token to store.
#[derive(Debug, Clone)]
pub struct NewRefreshToken<'a> {
    /// SHA-256 of the token.
    pub hash: &'a [u8],
    /// The family (one per login); every rotation stays in it.
    pub family: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The device it was issued to.
    pub device_id: &'a str,
    /// Issue time (ms).
    pub issued_at: i64,
    /// Expiry (ms).
    pub expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was good: it is now spent and `next` is stored in its family.
    Rotated {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
    },
    /// No such token.
    Unknown,
    /// Expired or revoked.
    Dead {
        /// The device it was issued to.
        device_id: String,
    },
    /// It had been spent already: a copy is in someone else's hands, so the whole family is now
    /// revoked.
    Reused,
}

impl Store {
    /// Stores a new refresh token.
    pub async fn insert_refresh_token(&self, t: &NewRefreshToken<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(t.hash)
        .bind(t.family)
        .bind(t.user_id)
        .bind(t.device_id)
        .bind(t.issued_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends the token with hash `hash` and stores `next` (with the spent token's family, user
    /// and device) in one transaction. The spending UPDATE comes first, so two concurrent uses of
    /// one token cannot both succeed: the loser sees a spent token and revokes the family.
    pub async fn rotate_refresh_token(
        &self,
        hash: &[u8],
        next_hash: &[u8],
        now: i64,
        next_expires_at: i64,
    ) -> Result<RefreshOutcome> {
        let mut tx = self.write_tx().await?;
        let spent: Option<(String, String, String)> = sqlx::query_as(
            "UPDATE refresh_tokens SET spent_at = ?
             WHERE hash = ? AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > ?
             RETURNING family, user_id, device_id",
        )
        .bind(now)
        .bind(hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((family, user_id, device_id)) = spent {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at,
                                             expires_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(next_hash)
            .bind(&family)
            .bind(&user_id)
            .bind(&device_id)
            .bind(now)
            .bind(next_expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Rotated { user_id, device_id });
        }
        let row: Option<(String, Option<i64>, Option<i64>, String)> = sqlx::query_as(
            "SELECT family, spent_at, revoked_at, device_id FROM refresh_tokens WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => RefreshOutcome::Unknown,
            Some((family, Some(_), _, _)) => {
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = ?
                     WHERE family = ? AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(family)
                .execute(&mut *tx)
                .await?;
                RefreshOutcome::Reused
            }
            Some((_, None, _, device_id)) => RefreshOutcome::Dead { device_id },
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Revokes every live refresh token of a user (password change, disabling).
    pub async fn revoke_refresh_tokens_of_user(&self, user_id: &str, now: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
