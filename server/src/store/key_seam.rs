//! The token signing keys behind a seam ([`KeyStore`]): in the database, so every server process
//! on it signs and verifies with one ring and sees the others' rotations. SQLite serializes
//! changes to the ring with `BEGIN IMMEDIATE`; PostgreSQL with an exclusive lock on the table
//! for the length of the change.

use std::future::Future;

use sqlx::Row;

use super::keys::SigningKeyRow;
use super::seam::StoreResult;
use super::{PgStore, SqliteStore};

/// The signing keys.
pub trait KeyStore: Send + Sync + 'static {
    /// The keys not retired, the signing key first, then the others newest first.
    fn signing_keys(&self) -> impl Future<Output = StoreResult<Vec<SigningKeyRow>>> + Send;

    /// Stores `keys` (the first signs) if the table holds no key at all; says whether it did.
    fn import_signing_keys(
        &self,
        keys: &[SigningKeyRow],
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores `fresh` as the signing key if no key signs; says whether it did.
    fn ensure_signing_key(
        &self,
        fresh: &SigningKeyRow,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores a key as it is.
    fn insert_signing_key(
        &self,
        key: &SigningKeyRow,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// In one transaction: caps every key in use at `now + overlap_ms`, retires the keys whose
    /// overlap ended, and makes `fresh` the signing key.
    fn rotate_signing_keys(
        &self,
        fresh: &SigningKeyRow,
        overlap_ms: i64,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Retires the keys whose overlap ended by `now` (erasing their secrets); how many.
    fn retire_signing_keys(&self, now: i64) -> impl Future<Output = StoreResult<u64>> + Send;
}

impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        Ok(SqliteStore::signing_keys(self).await?)
    }
    async fn import_signing_keys(&self, keys: &[SigningKeyRow]) -> StoreResult<bool> {
        Ok(SqliteStore::import_signing_keys(self, keys).await?)
    }
    async fn ensure_signing_key(&self, fresh: &SigningKeyRow) -> StoreResult<bool> {
        Ok(SqliteStore::ensure_signing_key(self, fresh).await?)
    }
    async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        Ok(SqliteStore::insert_signing_key(self, key).await?)
    }
    async fn rotate_signing_keys(
        &self,
        fresh: &SigningKeyRow,
        overlap_ms: i64,
        now: i64,
    ) -> StoreResult<()> {
        Ok(SqliteStore::rotate_signing_keys(self, fresh, overlap_ms, now).await?)
    }
    async fn retire_signing_keys(&self, now: i64) -> StoreResult<u64> {
        Ok(SqliteStore::retire_signing_keys(self, now).await?)
    }
}

/// A transaction holding the ring for itself: two processes changing it at once take turns.
async fn pg_ring_tx(store: &PgStore) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

async fn pg_insert(conn: &mut sqlx::PgConnection, k: &SigningKeyRow) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, retire_at)
         VALUES ($1, $2, $3, $4, $5)",
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

async fn pg_retire(conn: &mut sqlx::PgConnection, now: i64) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE signing_keys SET retired = TRUE, secret = ''
         WHERE NOT retired AND retire_at IS NOT NULL AND retire_at <= $1",
    )
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}

impl KeyStore for PgStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, secret, created_at, retire_at FROM signing_keys
             WHERE NOT retired ORDER BY retire_at IS NULL DESC, seq DESC",
        )
        .fetch_all(self.pool())
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

    async fn import_signing_keys(&self, keys: &[SigningKeyRow]) -> StoreResult<bool> {
        let mut tx = pg_ring_tx(self).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
            .fetch_one(&mut *tx)
            .await?;
        if n > 0 {
            return Ok(false);
        }
        // Oldest first, so the first key gets the highest `seq` and signs.
        for k in keys.iter().rev() {
            pg_insert(&mut tx, k).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn ensure_signing_key(&self, fresh: &SigningKeyRow) -> StoreResult<bool> {
        let mut tx = pg_ring_tx(self).await?;
        let signing: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE NOT retired AND retire_at IS NULL)",
        )
        .fetch_one(&mut *tx)
        .await?;
        if signing {
            return Ok(false);
        }
        pg_insert(&mut tx, fresh).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRow) -> StoreResult<()> {
        let mut tx = pg_ring_tx(self).await?;
        pg_insert(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_signing_keys(
        &self,
        fresh: &SigningKeyRow,
        overlap_ms: i64,
        now: i64,
    ) -> StoreResult<()> {
        let until = now.saturating_add(overlap_ms.max(0));
        let mut tx = pg_ring_tx(self).await?;
        sqlx::query(
            "UPDATE signing_keys SET retire_at = $1
             WHERE NOT retired AND (retire_at IS NULL OR retire_at > $1)",
        )
        .bind(until)
        .execute(&mut *tx)
        .await?;
        pg_retire(&mut tx, now).await?;
        pg_insert(&mut tx, fresh).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn retire_signing_keys(&self, now: i64) -> StoreResult<u64> {
        let mut tx = pg_ring_tx(self).await?;
        let n = pg_retire(&mut tx, now).await?;
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod conformance {
    use super::*;
    use crate::store::conformance::{Fixture, PgTest};

    fn key(kid: &str, created_at: i64) -> SigningKeyRow {
        SigningKeyRow {
            kid: kid.into(),
            algorithm: "HS256".into(),
            secret: "ab".repeat(32),
            created_at,
            retire_at: None,
        }
    }

    /// The secrets left in retired rows, read in the backend's own SQL.
    trait RetiredSecrets: KeyStore + Fixture {
        async fn retired_secrets(&self) -> Vec<String>;
    }

    impl RetiredSecrets for SqliteStore {
        async fn retired_secrets(&self) -> Vec<String> {
            sqlx::query_scalar("SELECT secret FROM signing_keys WHERE retired = 1")
                .fetch_all(&self.pool)
                .await
                .unwrap()
        }
    }

    impl RetiredSecrets for PgStore {
        async fn retired_secrets(&self) -> Vec<String> {
            sqlx::query_scalar("SELECT secret FROM signing_keys WHERE retired")
                .fetch_all(self.pool())
                .await
                .unwrap()
        }
    }

    async fn import_only_into_an_empty_ring_and_rotation_retires<S: RetiredSecrets>(s: S) {
        assert!(s.signing_keys().await.unwrap().is_empty());
        let mut old = key("old", 1);
        old.retire_at = Some(5_000);
        let mut gone = key("gone", 0);
        gone.retire_at = Some(10);
        // The file's order: the signing key first.
        assert!(
            s.import_signing_keys(&[key("cur", 2), old.clone(), gone])
                .await
                .unwrap()
        );
        assert!(!s.import_signing_keys(&[key("again", 3)]).await.unwrap());
        assert!(!s.ensure_signing_key(&key("fresh", 3)).await.unwrap());
        let ring = s.signing_keys().await.unwrap();
        let kids: Vec<&str> = ring.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["cur", "old", "gone"]);

        assert_eq!(s.retire_signing_keys(100).await.unwrap(), 1);
        s.rotate_signing_keys(&key("new", 200), 1_000, 200)
            .await
            .unwrap();
        let ring = s.signing_keys().await.unwrap();
        let got: Vec<(&str, Option<i64>)> =
            ring.iter().map(|k| (k.kid.as_str(), k.retire_at)).collect();
        // The overlap caps every key in use, `old` too (its own end was later).
        assert_eq!(
            got,
            [("new", None), ("cur", Some(1_200)), ("old", Some(1_200))]
        );
        // Without overlap the previous keys retire at once and lose their secrets.
        s.rotate_signing_keys(&key("newer", 300), 0, 300)
            .await
            .unwrap();
        let ring = s.signing_keys().await.unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring[0].kid, "newer");
        let secrets = s.retired_secrets().await;
        assert_eq!(secrets.len(), 4);
        assert!(secrets.iter().all(String::is_empty));
        assert!(!format!("{:?}", ring[0]).contains(&ring[0].secret));
        // A key id is unique: a second insert under it fails and changes nothing.
        assert!(s.insert_signing_key(&key("newer", 400)).await.is_err());
        assert_eq!(s.signing_keys().await.unwrap(), ring);
        s.finish().await;
    }

    async fn concurrent_rotations_leave_one_signing_key<S: RetiredSecrets>(a: S, b: S) {
        assert!(a.ensure_signing_key(&key("k0", 0)).await.unwrap());
        assert!(!b.ensure_signing_key(&key("k0b", 0)).await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                s.rotate_signing_keys(&key(&format!("k{}", i + 1), i), 60_000, 1_000)
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for s in [&a, &b] {
            let ring = s.signing_keys().await.unwrap();
            assert_eq!(ring.len(), 9, "every key verifies during the overlap");
            assert_eq!(ring.iter().filter(|k| k.retire_at.is_none()).count(), 1);
            assert!(ring[1..].iter().all(|k| k.retire_at == Some(61_000)));
        }
        assert_eq!(
            a.signing_keys().await.unwrap(),
            b.signing_keys().await.unwrap()
        );
        b.finish().await;
        a.finish().await;
    }

    macro_rules! key_store_conformance {
        ($backend:ident, $open:expr, $again:expr) => {
            mod $backend {
                #[tokio::test]
                async fn import_only_into_an_empty_ring_and_rotation_retires() {
                    super::import_only_into_an_empty_ring_and_rotation_retires($open.await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn concurrent_rotations_leave_one_signing_key() {
                    let a = $open.await;
                    let b = $again(&a).await;
                    super::concurrent_rotations_leave_one_signing_key(a, b).await;
                }
            }
        };
    }

    key_store_conformance!(
        sqlite,
        crate::store::conformance::sqlite_store(),
        crate::store::conformance::sqlite_again
    );
    key_store_conformance!(
        postgres,
        super::PgTest::create(),
        super::PgTest::another_node
    );
}
