//! The change log, actor bindings, the projection write and rejections: the sync path's SQL.

use std::sync::LazyLock;

use futures_util::TryStreamExt;
use linli_sync_core::protocol::Part;
use linli_sync_core::{DeviceId, PlaceId, RecordId, RecordKind};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::office::{OFFICE_COLUMNS, OFFICE_VALUES, OfficeRow, write_office_columns};
use super::{SqliteStore, place_from_db, push_within};
use crate::error::{Error, Result};

/// A change to append to the log (owned: it crosses to the group committer's task).
#[derive(Debug)]
pub struct NewChange {
    /// Automerge change hash.
    pub hash: [u8; 32],
    /// The record it belongs to.
    pub record: RecordId,
    /// Which of the record's documents.
    pub part: Part,
    /// The record's place (denormalised so pulls filter without a join).
    pub place: PlaceId,
    /// The record's kind.
    pub kind: RecordKind,
    /// The raw change.
    pub bytes: Vec<u8>,
    /// Its actor, hex.
    pub actor: String,
    /// Pushing device.
    pub device: DeviceId,
    /// Pushing user's id.
    pub user_id: String,
    /// The device's claimed time (ms), informative only.
    pub claimed_at: i64,
    /// The server's receive time (ms).
    pub received_at: i64,
    /// Fields the change touched.
    pub touched: Vec<String>,
}

/// What a committed change leaves in the record's projection row.
#[derive(Debug)]
pub enum ProjectionUpdate {
    /// A change to the shared document: the typed value and the list columns.
    Record {
        /// `status` column (cases).
        status: Option<String>,
        /// `category` column (cases).
        category: Option<String>,
        /// The typed record as JSON (personal fields masked, as the document holds them).
        value: serde_json::Value,
        /// The full Automerge document, now and then; `None`: the change itself extends the
        /// saved document's tail in the log.
        doc: Option<Vec<u8>>,
        /// Some field of the merged document holds concurrent values.
        has_conflicts: bool,
    },
    /// A change to the personal part: its document and its full values as JSON.
    Personal {
        /// The personal document saved whole, now and then (as for `Record`).
        doc: Option<Vec<u8>>,
        /// Field → full value.
        values: serde_json::Value,
    },
}

/// One change to commit: the log row, the projection it leaves, and the record version its
/// documents were read at (0 for a record that does not exist yet).
#[derive(Debug)]
pub struct Commit {
    /// The log row.
    pub change: NewChange,
    /// The projection row's new state.
    pub projection: ProjectionUpdate,
    /// The version the commit expects to find (and bumps).
    pub expected_version: i64,
}

/// What the sync path needs to know about a stored record before it touches its documents.
#[derive(Debug, Clone)]
pub struct RecordMeta {
    /// The record's place.
    pub place: PlaceId,
    /// Its kind.
    pub kind: RecordKind,
    /// Bumped by every commit: a cached document of another version is stale.
    pub version: i64,
    /// Stored size of the shared document's changes.
    pub bytes: i64,
    /// Stored size of the personal part's changes.
    pub personal_bytes: i64,
    /// Changes of the shared document in the log after its last whole save.
    pub doc_tail: i64,
    /// Changes of the personal part in the log after its last whole save.
    pub personal_tail: i64,
}

/// Why a commit wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitConflict {
    /// It lost a race: the record's version was not the one its document was read at. Reload
    /// the document and ingest the change again.
    Version,
    /// The change's actor is bound to another device (checked in the same transaction that
    /// would bind it).
    ForeignActor,
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
    /// Which of the record's documents.
    pub part: Part,
    /// It starts a new version of that document (the phone replaces its copy).
    pub replaces: bool,
    /// Raw change.
    pub bytes: Vec<u8>,
    /// Server receive time (ms).
    pub received_at: i64,
    /// Pushing user's login name.
    pub username: String,
    /// Pushing device id.
    pub device_id: String,
}

/// One page of a pull.
#[derive(Debug, Clone)]
pub struct PulledPage {
    /// The changes, in log order.
    pub rows: Vec<PulledRow>,
    /// The log's end as read at the start of the pull.
    pub end: i64,
    /// The page stopped at its count or byte bound: more may wait after the last row.
    pub full: bool,
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
    /// Which of the record's documents.
    pub part: Part,
    /// Top-level fields it touched, as computed when it was accepted.
    pub touched: Vec<String>,
    /// The editing device's message.
    pub message: Option<String>,
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
    /// Refusals of the same push not stored one by one (on the last sampled row).
    pub more: i64,
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
    /// Further refusals of the same push that were not stored one by one.
    pub more: i64,
}

impl SqliteStore {
    /// The stored facts about a record the sync path decides on, `None` if it does not exist.
    pub async fn record_meta(&self, record: RecordId) -> Result<Option<RecordMeta>> {
        type Row = (String, String, i64, i64, i64, i64, i64);
        let row: Option<Row> = sqlx::query_as(
            "SELECT place, kind, version, bytes, personal_bytes, doc_tail, personal_tail
             FROM records WHERE id = ?",
        )
        .bind(record.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(
            |(place, kind, version, bytes, personal_bytes, doc_tail, personal_tail)| {
                Ok(RecordMeta {
                    place: place_from_db(&place)?,
                    kind: kind.parse().map_err(Error::internal)?,
                    version,
                    bytes,
                    personal_bytes,
                    doc_tail,
                    personal_tail,
                })
            },
        )
        .transpose()
    }

    /// In one query, what accepting a change first needs to know: the record's facts (`None`
    /// if it does not exist), when the server first received this change (if it holds it), and
    /// which device the change's actor is bound to.
    pub async fn accept_facts(
        &self,
        record: RecordId,
        hash: &[u8; 32],
        actor: &str,
    ) -> Result<(Option<RecordMeta>, Option<i64>, ActorBinding)> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let id = record.to_string();
        let row: Row = sqlx::query_as(
            "SELECT r.place, r.kind, r.version, r.bytes, r.personal_bytes, r.doc_tail,
                    r.personal_tail,
                    (SELECT received_at FROM changes WHERE record_id = ?1 AND hash = ?2),
                    (SELECT device_id FROM actors WHERE actor = ?3)
             FROM (SELECT 1) LEFT JOIN records r ON r.id = ?1",
        )
        .bind(&id)
        .bind(&hash[..])
        .bind(actor)
        .fetch_one(&self.pool)
        .await?;
        let (place, kind, version, bytes, personal_bytes, doc_tail, personal_tail, held, bound) =
            row;
        let meta = match (place, kind) {
            (Some(place), Some(kind)) => Some(RecordMeta {
                place: place_from_db(&place)?,
                kind: kind.parse().map_err(Error::internal)?,
                version: version.unwrap_or(0),
                bytes: bytes.unwrap_or(0),
                personal_bytes: personal_bytes.unwrap_or(0),
                doc_tail: doc_tail.unwrap_or(0),
                personal_tail: personal_tail.unwrap_or(0),
            }),
            _ => None,
        };
        let binding = bound.map_or(ActorBinding::Unknown, ActorBinding::Device);
        Ok((meta, held, binding))
    }

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

    /// The saved Automerge document of a record's shared part: its last whole save and the
    /// changes logged after it.
    pub async fn record_doc(&self, record: RecordId) -> Result<Option<Vec<u8>>> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<(Vec<u8>, i64, i64)> =
            sqlx::query_as("SELECT doc, doc_seq, doc_tail FROM records WHERE id = ?")
                .bind(record.to_string())
                .fetch_optional(&mut *conn)
                .await?;
        let Some((mut doc, after, tail)) = row else {
            return Ok(None);
        };
        if tail > 0 {
            append_tail(
                &mut conn,
                &record.to_string(),
                Part::Record,
                after,
                &mut doc,
            )
            .await?;
        }
        Ok(Some(doc))
    }

    /// The saved personal document of a record (`None` when the record or its personal part
    /// does not exist), with the changes logged after its last whole save.
    pub async fn personal_doc(&self, record: RecordId) -> Result<Option<Vec<u8>>> {
        let mut conn = self.pool.acquire().await?;
        let row: Option<(Option<Vec<u8>>, i64, i64)> = sqlx::query_as(
            "SELECT personal_doc, personal_seq, personal_tail FROM records WHERE id = ?",
        )
        .bind(record.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        let Some((Some(mut doc), after, tail)) = row else {
            return Ok(None);
        };
        if tail > 0 {
            append_tail(
                &mut conn,
                &record.to_string(),
                Part::Personal,
                after,
                &mut doc,
            )
            .await?;
        }
        Ok(Some(doc))
    }

    /// Commits one change (see [`commit_in`]) together with whatever other changes are waiting
    /// to commit: one transaction and one fsync for the group. Returns the change's log position,
    /// or a [`CommitConflict`] (nothing of this change is written then). When this returns
    /// `Ok(Ok(_))` the transaction is committed (and, with `synchronous = FULL`, on disk).
    pub async fn commit_change(
        &self,
        commit: Commit,
    ) -> Result<std::result::Result<i64, CommitConflict>> {
        self.group
            .commit(super::group::Work::Commit(Box::new(commit)))
            .await
    }

    /// Remembers refused pushes (a bounded sample of one push, in one transaction), and now and
    /// then forgets those older than `retain_ms`.
    pub async fn record_rejections(&self, rows: &[RejectionRow<'_>], retain_ms: i64) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO rejections (hash, record_id, user_id, device_id, code, message, at,
                                         place, more)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let now = rows[0].at;
        let due = {
            let mut last = self
                .last_retention
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = now - *last > 3_600_000;
            if due {
                *last = now;
            }
            due
        };
        if due {
            sqlx::query("DELETE FROM rejections WHERE at < ?")
                .bind(now - retain_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
                    more: row.try_get("more")?,
                })
            })
            .collect()
    }

    /// Saved documents of the records within `scopes`, by record id after `after`, at most
    /// `limit` records and stopping once `max_bytes` are reached (always at least one): a page
    /// of a bootstrap. With `personal`, each record's personal part comes along. Only reads the
    /// projection table.
    pub async fn snapshots_within(
        &self,
        scopes: &[PlaceId],
        after: Option<&str>,
        limit: u32,
        max_bytes: usize,
        personal: bool,
    ) -> Result<Vec<(String, Vec<u8>, Option<Vec<u8>>)>> {
        // A record never saved whole with one change of its own (a new record's usual state) has
        // that change at `last_seq`, unless a personal change came after it: read by log
        // position, the table's own key, in the page's query.
        let mut qb = QueryBuilder::<Sqlite>::new(if personal {
            "SELECT id, doc, doc_seq, doc_tail, bytes, personal_doc, personal_seq,
                    personal_tail, personal_bytes, "
        } else {
            "SELECT id, doc, doc_seq, doc_tail, bytes, NULL AS personal_doc, 0 AS personal_seq,
                    0 AS personal_tail, 0 AS personal_bytes, "
        });
        qb.push(
            "CASE WHEN doc_seq = 0 AND doc_tail = 1 THEN (
                 SELECT c.bytes FROM changes c
                 WHERE c.seq = records.last_seq AND c.record_id = records.id
                   AND c.part = 'record') END AS only_change
             FROM records INDEXED BY records_bootstrap WHERE ",
        );
        push_within(&mut qb, "place", scopes);
        if let Some(a) = after {
            qb.push(" AND id > ").push_bind(a.to_string());
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        // One read transaction: the tails are read from the log as of the rows' snapshot.
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::new();
        // Rows whose saved documents have a tail in the log: all their tails come in one query.
        let mut with_tail: std::collections::HashMap<String, usize> = Default::default();
        let mut bytes = 0usize;
        {
            let query = qb.build();
            let mut rows = query.fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let id: String = row.try_get("id")?;
                let mut doc: Vec<u8> = row.try_get("doc")?;
                let personal_doc: Option<Vec<u8>> = row.try_get("personal_doc")?;
                let (mut doc_tail, personal_tail): (i64, i64) =
                    (row.try_get("doc_tail")?, row.try_get("personal_tail")?);
                let personal_pending = personal_tail > 0 && personal_doc.is_some();
                // With a personal tail to read as well, the tails' query reads both parts.
                if let (Some(change), false) = (
                    row.try_get::<Option<Vec<u8>>, _>("only_change")?,
                    personal_pending,
                ) {
                    doc.extend_from_slice(&change);
                    doc_tail = 0;
                }
                // The tails are not read yet. A part never saved whole (an empty save with a
                // tail) is all in its tail: its logged changes (`bytes`) are its size; otherwise
                // its save alone is a lower bound. Never stopping early, the page is cut exactly
                // below once the tails are in.
                let estimate = |saved: usize, tail: i64, logged: i64| {
                    if tail > 0 && saved == 0 {
                        usize::try_from(logged).unwrap_or(usize::MAX)
                    } else {
                        saved
                    }
                };
                let (logged, personal_logged): (i64, i64) =
                    (row.try_get("bytes")?, row.try_get("personal_bytes")?);
                bytes += estimate(doc.len(), doc_tail, logged)
                    + personal_doc
                        .as_ref()
                        .map_or(0, |p| estimate(p.len(), personal_tail, personal_logged));
                if doc_tail > 0 || personal_pending {
                    with_tail.insert(id.clone(), out.len());
                }
                out.push((id, doc, personal_doc));
                if bytes >= max_bytes {
                    break;
                }
            }
        }
        if !with_tail.is_empty() {
            // In log order, so every change follows its dependencies.
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT c.record_id, c.part, c.bytes
                 FROM changes c JOIN records r ON r.id = c.record_id
                 WHERE c.record_id IN (",
            );
            let mut ids = qb.separated(", ");
            for id in with_tail.keys() {
                ids.push_bind(id.clone());
            }
            qb.push(") AND ((c.part = 'record' AND c.seq > r.doc_seq)");
            if personal {
                qb.push(" OR (c.part = 'personal' AND c.seq > r.personal_seq)");
            }
            qb.push(") ORDER BY c.seq");
            let query = qb.build();
            let mut rows = query.fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let id: String = row.try_get("record_id")?;
                let part: String = row.try_get("part")?;
                let change: Vec<u8> = row.try_get("bytes")?;
                let Some(&i) = with_tail.get(&id) else {
                    continue;
                };
                let (_, doc, personal_doc) = &mut out[i];
                match part.parse().map_err(Error::Internal)? {
                    Part::Record => doc.extend_from_slice(&change),
                    Part::Personal => {
                        if let Some(p) = personal_doc.as_mut() {
                            p.extend_from_slice(&change);
                        }
                    }
                }
            }
        }
        tx.commit().await?;
        // Cut after the record whose whole documents reach the bound (never before the first).
        let mut bytes = 0usize;
        if let Some(last) = out.iter().position(|(_, doc, personal)| {
            bytes += doc.len() + personal.as_ref().map_or(0, Vec::len);
            bytes >= max_bytes
        }) {
            out.truncate(last + 1);
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

    /// The log's end: the position of the last committed change (0 for an empty log). Every
    /// change committed later gets a larger position (SQLite has one writer, and a commit group
    /// takes its positions inside its transaction).
    pub async fn log_end(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// One page of others' changes after `cursor` in `scopes`: at most `limit` changes and, past
    /// the first, at most `max_bytes` of them. With `personal` false, changes to records'
    /// personal parts are left out.
    ///
    /// Reads the log's end first, then streams rows in `(cursor, end]`, all in one read
    /// transaction (one snapshot), so no more than one page is ever held in memory.
    pub async fn pull(
        &self,
        cursor: i64,
        me: DeviceId,
        scopes: &[PlaceId],
        personal: bool,
        limit: u32,
        max_bytes: usize,
    ) -> Result<PulledPage> {
        let mut tx = self.pool.begin().await?;
        let end: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .fetch_one(&mut *tx)
            .await?;
        let mut page = PulledPage {
            rows: Vec::new(),
            end,
            full: false,
        };
        if end > cursor && !scopes.is_empty() {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT c.seq, c.record_id, c.part, c.replaces, c.bytes, c.received_at,
                        c.device_id, u.username
                 FROM changes c JOIN users u ON u.id = c.user_id
                 WHERE c.seq > ",
            );
            qb.push_bind(cursor);
            qb.push(" AND c.seq <= ");
            qb.push_bind(end);
            qb.push(" AND c.device_id != ");
            qb.push_bind(me.to_string());
            if !personal {
                qb.push(" AND c.part = 'record'");
            }
            qb.push(" AND ");
            push_within(&mut qb, "c.place", scopes);
            qb.push(" ORDER BY c.seq LIMIT ");
            qb.push_bind(i64::from(limit) + 1);
            let query = qb.build();
            let mut rows = query.fetch(&mut *tx);
            let mut bytes = 0usize;
            while let Some(row) = rows.try_next().await? {
                let data: Vec<u8> = row.try_get("bytes")?;
                let over_bytes = !page.rows.is_empty() && bytes + data.len() > max_bytes;
                if page.rows.len() == limit as usize || over_bytes {
                    page.full = true;
                    break;
                }
                bytes += data.len();
                let part: String = row.try_get("part")?;
                let replaces: i64 = row.try_get("replaces")?;
                page.rows.push(PulledRow {
                    seq: row.try_get("seq")?,
                    record_id: row.try_get("record_id")?,
                    part: part.parse().map_err(Error::Internal)?,
                    replaces: replaces != 0,
                    bytes: data,
                    received_at: row.try_get("received_at")?,
                    username: row.try_get("username")?,
                    device_id: row.try_get("device_id")?,
                });
            }
        }
        tx.commit().await?;
        Ok(page)
    }

    /// Every logged change of a record (both parts), in log order, with who pushed it, when,
    /// what it touched and its message: a record's history, read from the log without loading
    /// or diffing its document.
    pub async fn change_meta(&self, record: RecordId) -> Result<Vec<ChangeMeta>> {
        let rows = sqlx::query(
            "SELECT c.seq, c.hash, c.actor, c.device_id, c.claimed_at, c.received_at, c.part,
                    c.touched, c.message,
                    CASE WHEN c.message IS NULL OR c.actor = '' THEN c.bytes END AS bytes,
                    u.username, u.display_name
             FROM changes c JOIN users u ON u.id = c.user_id
             WHERE c.record_id = ? ORDER BY c.seq",
        )
        .bind(record.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let part: String = row.try_get("part")?;
                let touched: String = row.try_get("touched")?;
                let (message, actor) = read_from_change(
                    row.try_get("message")?,
                    row.try_get("actor")?,
                    row.try_get("bytes")?,
                );
                Ok(ChangeMeta {
                    seq: row.try_get("seq")?,
                    hash: row.try_get("hash")?,
                    actor,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    device_id: row.try_get("device_id")?,
                    claimed_at: row.try_get("claimed_at")?,
                    received_at: row.try_get("received_at")?,
                    part: part.parse().map_err(Error::Internal)?,
                    touched: super::touched::decode(&touched),
                    message,
                })
            })
            .collect()
    }
}

/// A record rebuilt with a new history (see `crate::personal_migration`).
#[derive(Debug)]
pub struct RebuiltRecord<'a> {
    /// The record.
    pub record: RecordId,
    /// The version the rebuild was made from (the commit fails if another got there first).
    pub expected_version: i64,
    /// Its place.
    pub place: &'a PlaceId,
    /// Its kind.
    pub kind: RecordKind,
    /// The system actor (hex).
    pub actor: &'a str,
    /// The system user.
    pub user_id: &'a str,
    /// The system device.
    pub device: &'a str,
    /// When (ms).
    pub at: i64,
    /// The new history: the shared document's change, then the personal part's (part, bytes,
    /// hash).
    pub changes: [(Part, &'a [u8], [u8; 32]); 2],
    /// The rebuilt record's value (masked).
    pub value: &'a serde_json::Value,
    /// Its status column.
    pub status: Option<&'a str>,
    /// Its category column.
    pub category: Option<&'a str>,
    /// The rebuilt shared document.
    pub doc: &'a [u8],
    /// The new personal part.
    pub personal_doc: &'a [u8],
    /// The full personal values.
    pub personal_values: &'a serde_json::Value,
}

impl SqliteStore {
    /// Ids of records whose shared document holds a full (unmasked) personal value.
    pub async fn records_with_unmasked_personal_values(&self) -> Result<Vec<RecordId>> {
        let mut out = Vec::new();
        let mut rows = sqlx::query_as::<_, (String, String, String)>(
            "SELECT id, kind, value FROM records WHERE kind = 'case'",
        )
        .fetch(&self.pool);
        while let Some((id, kind, value)) = rows.try_next().await? {
            let kind: RecordKind = kind.parse().map_err(Error::internal)?;
            let value: serde_json::Value = serde_json::from_str(&value).map_err(Error::internal)?;
            let unmasked = kind.fields().iter().filter(|f| f.personal).any(|f| {
                value
                    .get(f.name)
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| !linli_sync_core::schema::is_masked(f, v))
            });
            if unmasked {
                out.push(id.parse().map_err(Error::internal)?);
            }
        }
        Ok(out)
    }

    /// Number of records.
    pub async fn record_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM records")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The system user and device that server-side rebuilds are attributed to (created, disabled
    /// and without grants or a usable password, on first use).
    pub async fn system_principal(&self) -> Result<(String, String)> {
        const DEVICE: &str = "00000000-0000-4000-8000-000000000001";
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, display_name, disabled,
                                created_at)
             VALUES ('linli-system', 'linli-system', '!', 'admin', '系统（数据迁移）', 1, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(crate::model::now_ms())
        .execute(&mut *tx)
        .await?;
        let user_id: String =
            sqlx::query_scalar("SELECT id FROM users WHERE username = 'linli-system'")
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, created_at, last_seen, revoked_at)
             VALUES (?, ?, 'linli-server', ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(DEVICE)
        .bind(&user_id)
        .bind(crate::model::now_ms())
        .bind(crate::model::now_ms())
        .bind(crate::model::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((user_id, DEVICE.to_string()))
    }

    /// Replaces a record's history (see `crate::personal_migration`), in one transaction: its
    /// logged changes move to `changes_archive`, the two new changes are logged as replacing
    /// their documents, and the projection row takes the rebuilt documents.
    pub async fn replace_history(&self, r: &RebuiltRecord<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let record = r.record.to_string();
        sqlx::query(
            "INSERT INTO changes_archive (seq, hash, record_id, part, bytes, actor, device_id,
                                          user_id, claimed_at, received_at, archived_at)
             SELECT seq, hash, record_id, part, bytes, actor, device_id, user_id, claimed_at,
                    received_at, ?
             FROM changes WHERE record_id = ?",
        )
        .bind(r.at)
        .bind(&record)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM changes WHERE record_id = ?")
            .bind(&record)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO actors (actor, device_id, first_seen) VALUES (?, ?, ?)
             ON CONFLICT(actor) DO NOTHING",
        )
        .bind(r.actor)
        .bind(r.device)
        .bind(r.at)
        .execute(&mut *tx)
        .await?;
        let mut last_seq = 0;
        for (part, bytes, hash) in &r.changes {
            last_seq = sqlx::query_scalar(
                "INSERT INTO changes (hash, record_id, place, kind, bytes, actor, device_id,
                                      user_id, claimed_at, received_at, touched, part, replaces,
                                      message)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, 1,
                         'rebuild: personal data moved out') RETURNING seq",
            )
            .bind(&hash[..])
            .bind(&record)
            .bind(r.place.as_str())
            .bind(r.kind.as_str())
            .bind(*bytes)
            .bind(r.actor)
            .bind(r.device)
            .bind(r.user_id)
            .bind(r.at)
            .bind(r.at)
            .bind(part.as_str())
            .fetch_one(&mut *tx)
            .await?;
        }
        let updated = sqlx::query(
            "UPDATE records SET value = ?, status = ?, category = ?, doc = ?, personal_doc = ?,
                    personal = ?, bytes = ?, personal_bytes = ?, version = version + 1,
                    last_seq = ?, updated_at = ?, doc_seq = ?, doc_tail = 0,
                    personal_seq = ?, personal_tail = 0
             WHERE id = ? AND version = ?",
        )
        .bind(r.value.to_string())
        .bind(r.status)
        .bind(r.category)
        .bind(r.doc)
        .bind(r.personal_doc)
        .bind(r.personal_values.to_string())
        .bind(r.changes[0].1.len() as i64)
        .bind(r.changes[1].1.len() as i64)
        .bind(last_seq)
        .bind(r.at)
        .bind(last_seq)
        .bind(last_seq)
        .bind(&record)
        .bind(r.expected_version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Err(Error::Conflict(format!(
                "record {record} changed during the migration: run it again"
            )));
        }
        // A rebuilt document is one change: nothing in it is concurrent.
        write_office_columns(&mut tx, &record, r.place, r.value, false).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A new record's row: its value, document and back-office columns in one write (office
/// parameters first, as they come first in the text).
/// A new record's columns, its office columns first ([`OfficeRow::bind`], then
/// [`bind_new_record`]); `INSERT_RECORD_VALUES` holds one row's values.
pub(super) static INSERT_RECORD_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{OFFICE_COLUMNS}, id, kind, place, status, category, created_at, updated_at, last_seq,
         value, doc, bytes, version, doc_seq, doc_tail"
    )
});
pub(super) static INSERT_RECORD_VALUES: LazyLock<String> =
    LazyLock::new(|| format!("{OFFICE_VALUES}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?"));

static INSERT_RECORD: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO records ({}) VALUES ({})",
        *INSERT_RECORD_COLUMNS, *INSERT_RECORD_VALUES
    )
});

/// A record's new state at an expected version, with its back-office columns, in one write of
/// its row; `doc` sets the document's columns (saved whole, or one more in the tail).
fn update_record(doc: &str) -> String {
    format!(
        "UPDATE records SET ({OFFICE_COLUMNS}) = ({OFFICE_VALUES}),
                status = ?, category = ?, updated_at = ?, last_seq = ?, value = ?,
                bytes = bytes + ?, version = version + 1, {doc}
         WHERE id = ? AND version = ?"
    )
}

static UPDATE_RECORD_WHOLE: LazyLock<String> =
    LazyLock::new(|| update_record("doc = ?, doc_seq = ?, doc_tail = 0"));

static UPDATE_RECORD_TAIL: LazyLock<String> =
    LazyLock::new(|| update_record("doc_tail = doc_tail + 1"));

/// Within the caller's transaction: binds the actor to the device if it is new, appends the
/// change to the log and writes the record's projection row, but only if the record is still at
/// the commit's expected version.
///
/// Returns `Ok(Err(_))` only before it has written anything: both conditions are read first,
/// in one query, and nothing else writes between that read and the writes (the caller holds
/// SQLite's one write lock). So the group committer needs no savepoint per change: an `Err`
/// (a statement failed, something may be written) is the only outcome after which it must roll
/// back.
pub(super) async fn commit_in(
    conn: &mut SqliteConnection,
    commit: &Commit,
) -> Result<std::result::Result<i64, CommitConflict>> {
    let Commit {
        change,
        expected_version,
        ..
    } = commit;
    let expected_version = *expected_version;
    let device = change.device.to_string();
    let record = change.record.to_string();
    let (bound, version): (Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT device_id FROM actors WHERE actor = ?),
                (SELECT version FROM records WHERE id = ?)",
    )
    .bind(&change.actor)
    .bind(&record)
    .fetch_one(&mut *conn)
    .await?;
    if bound.as_ref().is_some_and(|d| *d != device) {
        return Ok(Err(CommitConflict::ForeignActor));
    }
    if version.unwrap_or(0) != expected_version {
        return Ok(Err(CommitConflict::Version));
    }
    // From here on every write is expected to succeed; a failure is an `Err`.
    if bound.is_none() {
        sqlx::query("INSERT INTO actors (actor, device_id, first_seen) VALUES (?, ?, ?)")
            .bind(&change.actor)
            .bind(&device)
            .bind(change.received_at)
            .execute(&mut *conn)
            .await?;
    }
    let sql =
        format!("INSERT INTO changes ({CHANGE_COLUMNS}) VALUES ({CHANGE_VALUES}) RETURNING seq");
    let seq: i64 = bind_change(sqlx::query(sqlx::AssertSqlSafe(sql)), change)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let office = office_row(commit, &record);
    if let Some(office) = &office {
        office.write_text(&mut *conn).await?;
    }
    write_row(conn, commit, &record, office.as_ref(), seq).await?;
    Ok(Ok(seq))
}

/// The log row's columns [`bind_change`] binds, `CHANGE_VALUES` holding one row's parameters.
pub(super) const CHANGE_COLUMNS: &str = "hash, record_id, place, kind, bytes, actor, device_id,
     user_id, claimed_at, received_at, touched, part";
pub(super) const CHANGE_VALUES: &str = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?";

/// Binds one log row's values, in the order of [`CHANGE_COLUMNS`].
pub(super) fn bind_change<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    change: &'q NewChange,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(&change.hash[..])
        .bind(change.record.to_string())
        .bind(change.place.as_str())
        .bind(change.kind.as_str())
        .bind(&change.bytes)
        .bind(LOGGED_ACTOR)
        .bind(change.device.to_string())
        .bind(&change.user_id)
        .bind(change.claimed_at)
        .bind(change.received_at)
        .bind(super::touched::encode(&change.touched))
        .bind(change.part.as_str())
}

/// What a new log row keeps in its `actor` column: nothing, since the change names its actor
/// (33 bytes a row); the history reads it from the change ([`read_from_change`]).
pub(super) const LOGGED_ACTOR: &str = "";

/// A logged change's message and actor (hex): its row's where the row kept them (rows logged
/// before, and rebuilt ones), else read from the change itself, which new rows leave them to.
pub(super) fn read_from_change(
    message: Option<String>,
    actor: String,
    bytes: Option<Vec<u8>>,
) -> (Option<String>, String) {
    if message.is_some() && !actor.is_empty() {
        return (message, actor);
    }
    let change = bytes.and_then(|b| linli_sync_core::automerge::Change::from_bytes(b).ok());
    let message = message.or_else(|| change.as_ref()?.message().map(String::from));
    let actor = match change {
        Some(c) if actor.is_empty() => c.actor_id().to_hex_string(),
        _ => actor,
    };
    (message, actor)
}

/// The back-office row of a change to a record's shared document (`None` for a personal change).
pub(super) fn office_row<'a>(commit: &'a Commit, record: &'a str) -> Option<OfficeRow<'a>> {
    match &commit.projection {
        ProjectionUpdate::Record {
            value,
            has_conflicts,
            ..
        } => Some(OfficeRow::derive(
            record,
            &commit.change.place,
            value,
            *has_conflicts,
        )),
        ProjectionUpdate::Personal { .. } => None,
    }
}

/// Writes the record's projection row for a change logged at `seq`: inserts it (a new record) or
/// updates it at the commit's expected version, with `office`'s columns (whose text row is
/// written already). A row not written is an `Err`: the version was read under the same write
/// lock, so this is a bug, not a race.
pub(super) async fn write_row(
    conn: &mut SqliteConnection,
    commit: &Commit,
    record: &str,
    office: Option<&OfficeRow<'_>>,
    seq: i64,
) -> Result<()> {
    let Commit {
        change,
        projection,
        expected_version,
    } = commit;
    let expected_version = *expected_version;
    let size = i64::try_from(change.bytes.len()).unwrap_or(i64::MAX);
    // The documents are saved whole now and then; in between, this change extends their tail
    // in the log (see migration 0013).
    let updated = match (projection, office) {
        (ProjectionUpdate::Record { .. }, None) => {
            return Err(Error::Internal(format!(
                "record {record}: a shared change without its office row"
            )));
        }
        (
            ProjectionUpdate::Record {
                status,
                category,
                value,
                doc,
                ..
            },
            Some(office),
        ) => {
            let value = value.to_string();
            if expected_version == 0 {
                bind_new_record(
                    office.bind(sqlx::query(sqlx::AssertSqlSafe(INSERT_RECORD.as_str()))),
                    commit,
                    seq,
                )?
                .execute(&mut *conn)
                .await?
            } else {
                let sql = if doc.is_some() {
                    UPDATE_RECORD_WHOLE.as_str()
                } else {
                    UPDATE_RECORD_TAIL.as_str()
                };
                let mut q = office
                    .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
                    .bind(status.as_deref())
                    .bind(category.as_deref())
                    .bind(change.received_at)
                    .bind(seq)
                    .bind(value)
                    .bind(size);
                if let Some(doc) = doc {
                    q = q.bind(doc.as_slice()).bind(seq);
                }
                q.bind(record)
                    .bind(expected_version)
                    .execute(&mut *conn)
                    .await?
            }
        }
        (ProjectionUpdate::Personal { values, doc }, _) => {
            let doc_sql = if doc.is_some() {
                "personal_doc = ?, personal_seq = ?, personal_tail = 0"
            } else {
                "personal_tail = personal_tail + 1"
            };
            let sql = format!(
                "UPDATE records SET personal = ?, updated_at = ?, last_seq = ?,
                        personal_bytes = personal_bytes + ?, version = version + 1, {doc_sql}
                 WHERE id = ? AND version = ?"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(values.to_string())
                .bind(change.received_at)
                .bind(seq)
                .bind(size);
            if let Some(doc) = doc {
                q = q.bind(doc.as_slice()).bind(seq);
            }
            q.bind(record)
                .bind(expected_version)
                .execute(&mut *conn)
                .await?
        }
    }
    .rows_affected();
    if updated != 1 {
        return Err(Error::Internal(format!(
            "record {record} was not at version {expected_version} when written"
        )));
    }
    Ok(())
}

/// Binds a new record's values after its office columns, in the order of one row of
/// [`INSERT_RECORD`] (and of each row of the group writer's multi-row insert).
pub(super) fn bind_new_record<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    commit: &'q Commit,
    seq: i64,
) -> Result<sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>> {
    let change = &commit.change;
    let ProjectionUpdate::Record {
        status,
        category,
        value,
        doc,
        ..
    } = &commit.projection
    else {
        return Err(Error::Internal(
            "a new record from a personal change".into(),
        ));
    };
    // Without a saved document the record's document is its first change, in the log at `seq`
    // (see migration 0013): an empty save with a tail of one.
    let (doc, doc_seq, doc_tail): (&[u8], i64, i64) = match doc.as_deref() {
        Some(doc) => (doc, seq, 0),
        None => (&[], 0, 1),
    };
    Ok(query
        .bind(change.record.to_string())
        .bind(change.kind.as_str())
        .bind(change.place.as_str())
        .bind(status.as_deref())
        .bind(category.as_deref())
        .bind(change.received_at)
        .bind(change.received_at)
        .bind(seq)
        .bind(value.to_string())
        .bind(doc)
        .bind(i64::try_from(change.bytes.len()).unwrap_or(i64::MAX))
        .bind(doc_seq)
        .bind(doc_tail))
}

/// Appends to a saved document the record's changes of that part logged after `after`, in log
/// order (so every change follows its dependencies).
async fn append_tail(
    conn: &mut SqliteConnection,
    record: &str,
    part: Part,
    after: i64,
    doc: &mut Vec<u8>,
) -> Result<()> {
    let mut rows = sqlx::query_scalar::<_, Vec<u8>>(
        "SELECT bytes FROM changes WHERE record_id = ? AND part = ? AND seq > ? ORDER BY seq",
    )
    .bind(record)
    .bind(part.as_str())
    .bind(after)
    .fetch(&mut *conn);
    while let Some(bytes) = rows.try_next().await? {
        doc.extend_from_slice(&bytes);
    }
    Ok(())
}
