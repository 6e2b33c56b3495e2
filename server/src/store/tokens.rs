//! Refresh tokens: stored as SHA-256 hashes, spent on use, revocable by family, user or device.

use super::SqliteStore;
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
    /// It had been spent a moment ago by the same device, whose reply was lost: the same next
    /// token (which has not been used) is handed out again.
    Retried {
        /// The user.
        user_id: String,
        /// The device.
        device_id: String,
    },
    /// It had been spent already: a copy is in someone else's hands, so the whole family is now
    /// revoked.
    Reused,
}

/// A stored refresh token: family, spent at, revoked at, device, user.
type TokenRow = (String, Option<i64>, Option<i64>, String, String);

/// One presentation of a refresh token.
#[derive(Debug, Clone)]
pub struct RefreshAttempt<'a> {
    /// SHA-256 of the presented token.
    pub hash: &'a [u8],
    /// SHA-256 of its successor.
    pub next_hash: &'a [u8],
    /// Now (ms).
    pub now: i64,
    /// When the successor expires (ms).
    pub next_expires_at: i64,
    /// How long after spending a token the same device may present it again (ms).
    pub grace_ms: i64,
    /// The device the request says it comes from.
    pub device_id: Option<&'a str>,
}

impl SqliteStore {
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

    /// Spends the token and stores its successor (with the spent token's family, user and
    /// device) in one transaction. The spending UPDATE comes first, so two concurrent uses of one
    /// token cannot both succeed. A token spent within the grace window, presented again by the
    /// device it was issued to while its successor is still unused, is a retry: the successor is
    /// handed out again. Any other reuse revokes the family.
    pub async fn rotate_refresh_token(&self, a: &RefreshAttempt<'_>) -> Result<RefreshOutcome> {
        let mut tx = self.write_tx().await?;
        let spent: Option<(String, String, String)> = sqlx::query_as(
            "UPDATE refresh_tokens SET spent_at = ?
             WHERE hash = ? AND spent_at IS NULL AND revoked_at IS NULL AND expires_at > ?
             RETURNING family, user_id, device_id",
        )
        .bind(a.now)
        .bind(a.hash)
        .bind(a.now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((family, user_id, device_id)) = spent {
            sqlx::query(
                "INSERT INTO refresh_tokens (hash, family, user_id, device_id, issued_at,
                                             expires_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
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
             WHERE hash = ?",
        )
        .bind(a.hash)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => RefreshOutcome::Unknown,
            Some((family, Some(spent_at), None, device_id, user_id)) => {
                let successor_unused: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM refresh_tokens
                     WHERE hash = ? AND family = ? AND spent_at IS NULL AND revoked_at IS NULL
                       AND expires_at > ?",
                )
                .bind(a.next_hash)
                .bind(&family)
                .bind(a.now)
                .fetch_optional(&mut *tx)
                .await?;
                let retry = a.now - spent_at <= a.grace_ms
                    && a.device_id == Some(device_id.as_str())
                    && successor_unused.is_some();
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

async fn revoke_family(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    family: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(family)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
