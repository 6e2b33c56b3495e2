//! The access-token signing keys (`signing_keys`), shared by every server process on this
//! database. The newest key without a retirement time signs; every key not retired verifies until
//! its `retire_at`. Changes to the ring are single `BEGIN IMMEDIATE` transactions, so two
//! processes rotating at once are serialized and both leave one consistent ring.

use sqlx::Row;

use super::SqliteStore;
use crate::error::Result;

/// A signing key as stored. Its `Debug` output leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    /// Key id (the JWT `kid`).
    pub kid: String,
    /// Its pinned algorithm (`HS256`).
    pub algorithm: String,
    /// The secret, hex ('' once retired).
    pub secret: String,
    /// When it was made (ms).
    pub created_at: i64,
    /// After this time (ms) it verifies nothing; `None` while it signs.
    pub retire_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

async fn insert(conn: &mut sqlx::SqliteConnection, k: &SigningKeyRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, retire_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&k.kid)
    .bind(&k.algorithm)
    .bind(&k.secret)
    .bind(k.created_at)
    .bind(k.retire_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the keys whose overlap ended by `now` retired and erases their secrets.
async fn retire(conn: &mut sqlx::SqliteConnection, now: i64) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE signing_keys SET retired = 1, secret = ''
         WHERE retired = 0 AND retire_at IS NOT NULL AND retire_at <= ?",
    )
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}

impl SqliteStore {
    /// The keys not retired, the signing key first (the newest without `retire_at`), then the
    /// others newest first. Keys past `retire_at` but not yet marked retired are included: the
    /// caller compares with its clock.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, secret, created_at, retire_at FROM signing_keys
             WHERE retired = 0 ORDER BY retire_at IS NULL DESC, seq DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get("kid")?,
                    algorithm: r.try_get("algorithm")?,
                    secret: r.try_get("secret")?,
                    created_at: r.try_get("created_at")?,
                    retire_at: r.try_get("retire_at")?,
                })
            })
            .collect()
    }

    /// Stores `keys` if the table holds no key at all (the upgrade from `jwt-keys.json`), the
    /// first of them as the signing key; says whether it did. One transaction, so of two
    /// processes starting at once only one imports.
    pub async fn import_signing_keys(&self, keys: &[SigningKeyRow]) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        // Oldest first, so the first key gets the highest `seq` and signs.
        for k in keys.iter().rev() {
            insert(&mut tx, k).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Stores `fresh` as the signing key if no key signs (a new database); says whether it did.
    pub async fn ensure_signing_key(&self, fresh: &SigningKeyRow) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let signing: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired = 0 AND retire_at IS NULL)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if signing {
            return Ok(false);
        }
        insert(&mut tx, fresh).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a key as it is (it signs if it has no `retire_at` and is the newest such).
    pub async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rotates in one transaction: every key in use stops verifying at `now + overlap_ms` at the
    /// latest, the keys whose overlap has ended are retired, and `fresh` becomes the signing key.
    pub async fn rotate_signing_keys(
        &self,
        fresh: &SigningKeyRow,
        overlap_ms: i64,
        now: i64,
    ) -> Result<()> {
        let until = now.saturating_add(overlap_ms.max(0));
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_at = ?
             WHERE retired = 0 AND (retire_at IS NULL OR retire_at > ?)",
        )
        .bind(until)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        retire(&mut tx, now).await?;
        insert(&mut tx, fresh).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retires the keys whose overlap ended by `now` (their secrets are erased); returns how many.
    pub async fn retire_signing_keys(&self, now: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let n = retire(&mut tx, now).await?;
        tx.commit().await?;
        Ok(n)
    }
}
