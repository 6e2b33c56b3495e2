//! The change log, actor bindings, the projection write and rejections: the sync path's SQL.

use linli_sync_core::{DeviceId, PlaceId, RecordId, RecordKind};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Store, push_within};
use crate::error::Result;

/// A change to append to the log.
#[derive(Debug)]
pub struct NewChange<'a> {
    /// Automerge change hash.
    pub hash: &'a [u8; 32],
    /// The record it belongs to.
    pub record: RecordId,
    /// The record's place (denormalised so pulls filter without a join).
    pub place: &'a PlaceId,
    /// The record's kind.
    pub kind: RecordKind,
    /// The raw change.
    pub bytes: &'a [u8],
    /// Its actor, hex.
    pub actor: &'a str,
    /// Pushing device.
    pub device: DeviceId,
    /// Pushing user's id.
    pub user_id: &'a str,
    /// The device's claimed time (ms), informative only.
    pub claimed_at: i64,
    /// The server's receive time (ms).
    pub received_at: i64,
    /// Fields the change touched.
    pub touched: &'a [String],
}

/// The record's projection row after a change.
#[derive(Debug)]
pub struct ProjectionUpdate<'a> {
    /// `status` column (cases).
    pub status: Option<&'a str>,
    /// `category` column (cases).
    pub category: Option<&'a str>,
    /// The typed record as JSON.
    pub value: &'a serde_json::Value,
    /// The full Automerge document.
    pub doc: &'a [u8],
}

/// Who an actor id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorBinding {
    /// Never seen: it will be bound to the pushing device.
    Unknown,
    /// Bound to this device id.
    Device(String),
}

/// A change delivered in a pull.
#[derive(Debug, Clone)]
pub struct PulledRow {
    /// Log position.
    pub seq: i64,
    /// Record id (UUID text).
    pub record_id: String,
    /// Raw change.
    pub bytes: Vec<u8>,
    /// Server receive time (ms).
    pub received_at: i64,
    /// Pushing user's login name.
    pub username: String,
    /// Pushing device id.
    pub device_id: String,
}

/// Attribution of one logged change, for the record detail.
#[derive(Debug, Clone)]
pub struct ChangeMeta {
    /// Log position.
    pub seq: i64,
    /// Change hash.
    pub hash: Vec<u8>,
    /// Actor hex.
    pub actor: String,
    /// Pushing user's login name.
    pub username: String,
    /// Pushing user's display name.
    pub display_name: String,
    /// Pushing device id.
    pub device_id: String,
    /// Claimed time (ms).
    pub claimed_at: i64,
    /// Receive time (ms).
    pub received_at: i64,
}

/// A refused push to remember.
#[derive(Debug)]
pub struct RejectionRow<'a> {
    /// Change hash (zeros if unparsable).
    pub hash: &'a [u8; 32],
    /// Record id.
    pub record: RecordId,
    /// Pushing user's id.
    pub user_id: &'a str,
    /// Pushing device.
    pub device: DeviceId,
    /// Machine-readable code.
    pub code: &'a str,
    /// Message (no personal data).
    pub message: &'a str,
    /// When (ms).
    pub at: i64,
    /// The record's place, or the pusher's first grant when the bytes named none.
    pub place: Option<&'a str>,
}

/// A stored rejection as the back-office lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectionView {
    /// Row id (also the paging key).
    pub id: i64,
    /// When (ms).
    pub at: i64,
    /// Pushing user's login name.
    pub user: String,
    /// Pushing device id.
    pub device: String,
    /// The device's name.
    pub device_name: String,
    /// Record id.
    pub record: String,
    /// Change hash, hex (zeros if the bytes were not a change).
    pub hash: String,
    /// Machine-readable code.
    pub code: String,
    /// Reason (no personal data).
    pub message: String,
    /// Place, when known.
    pub place: Option<String>,
}

impl Store {
    /// When the server first received this change of this record, if it holds it.
    pub async fn change_received_at(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT received_at FROM changes WHERE record_id = ? AND hash = ?")
                .bind(record.to_string())
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The saved Automerge document of a record.
    pub async fn record_doc(&self, record: RecordId) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT doc FROM records WHERE id = ?")
            .bind(record.to_string())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Which device an actor belongs to.
    pub async fn actor_binding(&self, actor: &str) -> Result<ActorBinding> {
        let device: Option<String> =
            sqlx::query_scalar("SELECT device_id FROM actors WHERE actor = ?")
                .bind(actor)
                .fetch_optional(&self.pool)
                .await?;
        Ok(device.map_or(ActorBinding::Unknown, ActorBinding::Device))
    }

    /// In one transaction: binds the actor to the device if it is new, appends the change to the
    /// log and writes the record's projection row. Returns the change's log position. When this
    /// returns `Ok`, the transaction is committed (and, with `synchronous = FULL`, on disk).
    pub async fn commit_change(
        &self,
        change: &NewChange<'_>,
        projection: &ProjectionUpdate<'_>,
    ) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let device = change.device.to_string();
        let record = change.record.to_string();
        sqlx::query(
            "INSERT INTO actors (actor, device_id, first_seen) VALUES (?, ?, ?)
             ON CONFLICT(actor) DO NOTHING",
        )
        .bind(change.actor)
        .bind(&device)
        .bind(change.received_at)
        .execute(&mut *tx)
        .await?;
        let touched = serde_json::to_string(change.touched).unwrap_or_else(|_| "[]".into());
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO changes (hash, record_id, place, kind, bytes, actor, device_id, user_id,
                                  claimed_at, received_at, touched)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        )
        .bind(&change.hash[..])
        .bind(&record)
        .bind(change.place.as_str())
        .bind(change.kind.as_str())
        .bind(change.bytes)
        .bind(change.actor)
        .bind(&device)
        .bind(change.user_id)
        .bind(change.claimed_at)
        .bind(change.received_at)
        .bind(touched)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO records (id, kind, place, status, category, created_at, updated_at,
                                  last_seq, value, doc)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(id) DO UPDATE SET
                 kind = excluded.kind, place = excluded.place, status = excluded.status,
                 category = excluded.category, updated_at = excluded.updated_at,
                 last_seq = excluded.last_seq, value = excluded.value, doc = excluded.doc",
        )
        .bind(&record)
        .bind(change.kind.as_str())
        .bind(change.place.as_str())
        .bind(projection.status)
        .bind(projection.category)
        .bind(change.received_at)
        .bind(change.received_at)
        .bind(seq)
        .bind(projection.value.to_string())
        .bind(projection.doc)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Remembers a refused push.
    pub async fn record_rejection(&self, r: &RejectionRow<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO rejections (hash, record_id, user_id, device_id, code, message, at,
                                     place)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.hash[..])
        .bind(r.record.to_string())
        .bind(r.user_id)
        .bind(r.device.to_string())
        .bind(r.code)
        .bind(r.message)
        .bind(r.at)
        .bind(r.place)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Rejections within `scopes`, newest first, before row id `before` (when given).
    pub async fn list_rejections(
        &self,
        scopes: &[PlaceId],
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<RejectionView>> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT r.id, r.at, u.username, r.device_id, COALESCE(d.name, '') AS device_name,
                    r.record_id, r.hash, r.code, r.message, r.place
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
            .fetch_all(&self.pool)
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
                })
            })
            .collect()
    }

    /// A change the server already holds: when it was first received and the record's place.
    pub async fn held_change(
        &self,
        record: RecordId,
        hash: &[u8; 32],
    ) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT received_at, place FROM changes WHERE record_id = ? AND hash = ?",
        )
        .bind(record.to_string())
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Saved documents of the records within `scopes`, by record id after `after`, at most
    /// `limit` of them and stopping once `max_bytes` are reached (always at least one): a page of
    /// a bootstrap. Only reads the projection table.
    pub async fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, doc FROM records WHERE ");
        push_within(&mut qb, "place", scopes);
        if let Some(a) = after {
            qb.push(" AND id > ").push_bind(a.to_string());
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for row in qb.build().fetch_all(&self.pool).await? {
            let doc: Vec<u8> = row.try_get("doc")?;
            bytes += doc.len();
            out.push((row.try_get("id")?, doc));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Number of refused pushes stored (for tests and the back-office).
    pub async fn rejection_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM rejections")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Number of changes in the log.
    pub async fn change_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM changes")
            .fetch_one(&self.pool)
            .await?)
    }

    /// One page of others' changes after `cursor` in `scopes`.
    ///
    /// Reads the log's end first, then at most `limit + 1` rows in `(cursor, end]`, all in one
    /// read transaction (one snapshot). Returns the rows (at most `limit + 1`: the caller
    /// knows there is more when it gets more than `limit`) and the end.
    pub async fn pull(
        &self,
        cursor: i64,
        me: DeviceId,
        scopes: &[PlaceId],
        limit: u32,
    ) -> Result<(Vec<PulledRow>, i64)> {
        let mut tx = self.pool.begin().await?;
        let end: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .fetch_one(&mut *tx)
            .await?;
        let mut rows = Vec::new();
        if end > cursor && !scopes.is_empty() {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT c.seq, c.record_id, c.bytes, c.received_at, c.device_id, u.username
                 FROM changes c JOIN users u ON u.id = c.user_id
                 WHERE c.seq > ",
            );
            qb.push_bind(cursor);
            qb.push(" AND c.seq <= ");
            qb.push_bind(end);
            qb.push(" AND c.device_id != ");
            qb.push_bind(me.to_string());
            qb.push(" AND ");
            push_within(&mut qb, "c.place", scopes);
            qb.push(" ORDER BY c.seq LIMIT ");
            qb.push_bind(i64::from(limit) + 1);
            for row in qb.build().fetch_all(&mut *tx).await? {
                rows.push(PulledRow {
                    seq: row.try_get("seq")?,
                    record_id: row.try_get("record_id")?,
                    bytes: row.try_get("bytes")?,
                    received_at: row.try_get("received_at")?,
                    username: row.try_get("username")?,
                    device_id: row.try_get("device_id")?,
                });
            }
        }
        tx.commit().await?;
        Ok((rows, end))
    }

    /// Attribution of every logged change of a record, in log order.
    pub async fn change_meta(&self, record: RecordId) -> Result<Vec<ChangeMeta>> {
        let rows = sqlx::query(
            "SELECT c.seq, c.hash, c.actor, c.device_id, c.claimed_at, c.received_at,
                    u.username, u.display_name
             FROM changes c JOIN users u ON u.id = c.user_id
             WHERE c.record_id = ? ORDER BY c.seq",
        )
        .bind(record.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ChangeMeta {
                    seq: row.try_get("seq")?,
                    hash: row.try_get("hash")?,
                    actor: row.try_get("actor")?,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    device_id: row.try_get("device_id")?,
                    claimed_at: row.try_get("claimed_at")?,
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect()
    }
}
