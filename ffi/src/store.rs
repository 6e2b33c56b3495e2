//! The phone's durable store: one SQLite file, `<home>/linli-phone.db`.
//!
//! - `documents`: each record's saved Automerge document, plus the columns a list needs (kind,
//!   place, status, title), so listing never loads documents.
//! - `outbox`: own changes not yet accepted by the server, in creation order; refused ones stay
//!   (state `rejected`, with the server's reason) until the user discards them.
//! - `change_meta`: who pushed each change and when the server received it, as the server
//!   confirmed it (from accepts and pulls).
//! - `kv`: cursor, server URL, token, user, device id and actor id.
//!
//! WAL journal, `synchronous=FULL`, a busy timeout, and every write in one `BEGIN IMMEDIATE`
//! transaction: an edit (load, change, save, outbox row) commits as a whole or not at all, and
//! several connections on the same file (threads, processes) serialise their writes instead of
//! corrupting or deadlocking.

use std::path::Path;
use std::time::Duration;

use automerge::{ActorId, Change};
use linli_sync_core::protocol::{Cursor, Part};
use linli_sync_core::{PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::error::ApiError;

/// The database file name inside the SDK's home directory.
pub const DB_FILE: &str = "linli-phone.db";

/// How long a write waits for another connection's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA_VERSION: i64 = 2;

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS documents (
    record_id  TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    place      TEXT NOT NULL,
    bytes      BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    status     TEXT,
    title      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_updated ON documents (updated_at);
CREATE TABLE IF NOT EXISTS outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    hash           BLOB NOT NULL UNIQUE,
    change         BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'rejected')),
    reject_code    TEXT,
    reject_message TEXT
);
CREATE INDEX IF NOT EXISTS outbox_record ON outbox (record_id);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
CREATE TABLE IF NOT EXISTS change_meta (
    hash        BLOB PRIMARY KEY,
    user        TEXT NOT NULL,
    device      TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 2: records in two parts. `documents.personal` holds the record's personal part
/// (residents' names and phones) where this phone captured or may receive them; outbox rows say
/// which part their change belongs to.
const SCHEMA_V2: &str = "
ALTER TABLE documents ADD COLUMN personal BLOB;
ALTER TABLE outbox ADD COLUMN part TEXT NOT NULL DEFAULT 'record'
    CHECK (part IN ('record', 'personal'));
";

/// Keys of the `kv` table.
pub(crate) mod keys {
    pub const DEVICE_ID: &str = "device_id";
    pub const ACTOR_ID: &str = "actor_id";
    pub const SERVER_URL: &str = "server_url";
    /// Where versions before the `SecretStore` kept the tokens (moved out at open).
    pub const LEGACY_TOKENS: [&str; 2] = ["access_token", "refresh_token"];
    pub const TOKEN_EXPIRES_AT: &str = "token_expires_at";
    pub const USER: &str = "user";
    pub const CURSOR: &str = "cursor";
    pub const LAST_SYNC_AT: &str = "last_sync_at";
    /// The server's clock minus this phone's, ms, as of the last sync: edits are stamped with
    /// the corrected time, so a phone whose clock is wrong still records when things happened.
    pub const CLOCK_OFFSET: &str = "clock_offset_ms";
    /// The user's grants as of the last sync (newline-separated place ids).
    pub const GRANTS: &str = "grants";
    /// Set while records outside the grants stay for their unsent changes (checked again at
    /// every sync until they are gone).
    pub const KEPT_OUTSIDE: &str = "kept_outside";
    /// Whether the user received personal parts at the last sync (`1`/`0`).
    pub const PERSONAL_ACCESS: &str = "personal_access";
}

/// This install's identity, generated once and then read back.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub device_id: String,
    pub actor: ActorId,
}

/// An outbox row ready to push.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub id: i64,
    pub record: RecordId,
    pub kind: RecordKind,
    pub part: Part,
    pub change: Vec<u8>,
}

/// Opens (creating if needed) the store in `home` and returns its identity.
pub(crate) fn open(home: &Path) -> Result<(Connection, Identity), ApiError> {
    std::fs::create_dir_all(home)
        .map_err(|_| ApiError::storage("the home directory cannot be created"))?;
    let mut conn = Connection::open(home.join(DB_FILE))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Switching a fresh file to WAL needs an exclusive lock and SQLite does not always wait on
    // the busy timeout for it, so first opens racing from several threads retry briefly.
    let mut tries = 0;
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if tries < 100
                    && matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ApiError::storage(
            "the database cannot use write-ahead logging",
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Deleted records (a revoked grant, a rebuilt document) are overwritten on disk, not just
    // unlinked: a lost phone must not carry them in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;

    let tx = immediate(&mut conn)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(ApiError::storage(
            "the database was written by a newer version of the app",
        ));
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    // Generated once per install; INSERT OR IGNORE so two first opens agree.
    tx.execute(
        "INSERT OR IGNORE INTO kv (key, value) VALUES (?1, ?2)",
        params![
            keys::DEVICE_ID,
            uuid::Uuid::new_v4().hyphenated().to_string()
        ],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO kv (key, value) VALUES (?1, ?2)",
        params![keys::ACTOR_ID, ActorId::random().to_hex_string()],
    )?;
    let device_id = kv_get(&tx, keys::DEVICE_ID)?.unwrap_or_default();
    let actor_hex = kv_get(&tx, keys::ACTOR_ID)?.unwrap_or_default();
    tx.commit()?;
    let actor = ActorId::try_from(actor_hex.as_str())
        .map_err(|_| ApiError::storage("the stored actor id is damaged"))?;
    Ok((conn, Identity { device_id, actor }))
}

/// Starts a `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so two writers
/// queue on the busy timeout instead of failing halfway.
pub(crate) fn immediate(conn: &mut Connection) -> Result<Transaction<'_>, ApiError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// Reads a `kv` value.
pub(crate) fn kv_get(conn: &Connection, key: &str) -> Result<Option<String>, ApiError> {
    Ok(conn
        .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

/// Writes a `kv` value.
pub(crate) fn kv_set(conn: &Connection, key: &str, value: &str) -> Result<(), ApiError> {
    conn.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Deletes a `kv` value.
pub(crate) fn kv_delete(conn: &Connection, key: &str) -> Result<(), ApiError> {
    conn.execute("DELETE FROM kv WHERE key = ?1", [key])?;
    Ok(())
}

/// The stored cursor (the start when none).
pub(crate) fn cursor(conn: &Connection) -> Result<Cursor, ApiError> {
    match kv_get(conn, keys::CURSOR)? {
        None => Ok(Cursor::start()),
        Some(hex) => from_hex(&hex)
            .map(Cursor)
            .ok_or_else(|| ApiError::storage("the stored sync cursor is damaged")),
    }
}

/// Stores the cursor.
pub(crate) fn set_cursor(conn: &Connection, cursor: &Cursor) -> Result<(), ApiError> {
    kv_set(conn, keys::CURSOR, &to_hex(&cursor.0))
}

/// Loads a record's document, `None` if this phone does not hold it.
pub(crate) fn load_doc(conn: &Connection, id: RecordId) -> Result<Option<RecordDoc>, ApiError> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT bytes FROM documents WHERE record_id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    bytes
        .map(|b| {
            RecordDoc::load(id, &b).map_err(|_| ApiError::storage("a stored document is damaged"))
        })
        .transpose()
}

/// Loads a record's personal part (empty when this phone holds none).
pub(crate) fn load_personal(conn: &Connection, id: RecordId) -> Result<PersonalDoc, ApiError> {
    let bytes: Option<Option<Vec<u8>>> = conn
        .query_row(
            "SELECT personal FROM documents WHERE record_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    match bytes.flatten() {
        Some(b) => {
            PersonalDoc::load(id, &b).map_err(|_| ApiError::storage("a stored document is damaged"))
        }
        None => Ok(PersonalDoc::empty(id)),
    }
}

/// Saves a record's personal part (the record's row must exist: it is saved first). An empty one
/// clears it.
pub(crate) fn save_personal(conn: &Connection, doc: &mut PersonalDoc) -> Result<(), ApiError> {
    let bytes = if doc.is_empty() {
        None
    } else {
        Some(doc.save_plain())
    };
    conn.prepare_cached("UPDATE documents SET personal = ?2 WHERE record_id = ?1")?
        .execute(params![doc.id().to_string(), bytes])?;
    Ok(())
}

/// The stored size of one part of a record (its saved document), for the record size bound.
pub(crate) fn stored_bytes(conn: &Connection, id: RecordId, part: Part) -> Result<usize, ApiError> {
    let column = match part {
        Part::Record => "length(bytes)",
        Part::Personal => "COALESCE(length(personal), 0)",
    };
    let n: Option<i64> = conn
        .query_row(
            &format!("SELECT {column} FROM documents WHERE record_id = ?1"),
            [id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.unwrap_or(0).max(0) as usize)
}

/// Saves a document with its list columns.
pub(crate) fn save_doc(conn: &Connection, doc: &mut RecordDoc, now: i64) -> Result<(), ApiError> {
    // Only the listed fields are read: hydrating the whole record here was a third of a
    // bootstrap's time on the phone.
    let (kind, place, status, title) = match doc.listing() {
        Ok(l) => (l.kind.as_str().to_string(), l.place, l.status, l.title),
        // Part of a record pulled before its creation change: keep it, show it as incomplete.
        Err(_) => (
            doc.kind()
                .map(|k| k.as_str().to_string())
                .unwrap_or_default(),
            String::new(),
            None,
            String::new(),
        ),
    };
    let bytes = doc.save_plain();
    // Cached: a bootstrap saves a thousand documents a page, and parsing the statement each
    // time took about a fourteenth of the phone's time.
    conn.prepare_cached(
        "INSERT INTO documents (record_id, kind, place, bytes, updated_at, status, title)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (record_id) DO UPDATE SET kind = excluded.kind, place = excluded.place,
             bytes = excluded.bytes, updated_at = excluded.updated_at,
             status = excluded.status, title = excluded.title",
    )?
    .execute(params![
        doc.id().to_string(),
        kind,
        place,
        bytes,
        now,
        status,
        title
    ])?;
    Ok(())
}

/// Adds an own change to the outbox.
pub(crate) fn push_outbox(
    conn: &Connection,
    record: RecordId,
    kind: RecordKind,
    part: Part,
    change: &Change,
    now: i64,
) -> Result<i64, ApiError> {
    conn.execute(
        "INSERT INTO outbox (record_id, kind, hash, change, created_at, state, part)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
        params![
            record.to_string(),
            kind.as_str(),
            &change.hash().0[..],
            change.raw_bytes(),
            now,
            part.as_str(),
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The next pending changes to push: creation order, after outbox id `after`, at most `limit`.
pub(crate) fn pending_batch(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, ApiError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, record_id, kind, change, part FROM outbox
         WHERE state = 'pending' AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, record, kind, change, part) = row?;
        let part = part
            .parse()
            .map_err(|_| ApiError::storage("an outbox entry is damaged"))?;
        let record = record
            .parse()
            .map_err(|_| ApiError::storage("an outbox entry is damaged"))?;
        let kind = kind
            .parse()
            .map_err(|_| ApiError::storage("an outbox entry is damaged"))?;
        out.push(OutboxRow {
            id,
            record,
            kind,
            part,
            change,
        });
    }
    Ok(out)
}

/// Whether pending changes exist after outbox id `after`.
pub(crate) fn has_pending_after(conn: &Connection, after: i64) -> Result<bool, ApiError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending' AND id > ?1)",
        [after],
        |r| r.get(0),
    )?)
}

/// Counts outbox rows in a state.
pub(crate) fn count_outbox(conn: &Connection, state: &str) -> Result<u32, ApiError> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE state = ?1",
        [state],
        |r| r.get(0),
    )?)
}

/// Who is attributed a change, as far as this phone knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attribution {
    /// Confirmed by the server.
    Confirmed {
        user: String,
        device: String,
        received_at: i64,
    },
    /// Own change, still in the outbox.
    Own { rejected: bool },
    /// Not known (e.g. received inside a snapshot).
    Unknown,
}

/// Looks up who made a change (by its 32-byte hash).
pub(crate) fn attribution(conn: &Connection, hash: &[u8]) -> Result<Attribution, ApiError> {
    let meta = conn
        .prepare_cached("SELECT user, device, received_at FROM change_meta WHERE hash = ?1")?
        .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if let Some((user, device, received_at)) = meta {
        return Ok(Attribution::Confirmed {
            user,
            device,
            received_at,
        });
    }
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM outbox WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?;
    Ok(match state {
        Some(s) => Attribution::Own {
            rejected: s == "rejected",
        },
        None => Attribution::Unknown,
    })
}

/// Records who pushed a change and when the server received it.
pub(crate) fn put_change_meta(
    conn: &Connection,
    hash: &[u8],
    user: &str,
    device: &str,
    received_at: i64,
) -> Result<(), ApiError> {
    conn.prepare_cached(
        "INSERT INTO change_meta (hash, user, device, received_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (hash) DO UPDATE SET user = excluded.user, device = excluded.device,
             received_at = excluded.received_at",
    )?
    .execute(params![hash, user, device, received_at])?;
    Ok(())
}

/// Removes the records whose place lies outside `grants` (as the server last described them),
/// unless this phone has unsent changes to them; returns the ids kept for that reason. Runs only
/// when the grants differ from those of the last sync, so an unchanged sync scans nothing.
pub(crate) fn drop_outside_grants(
    conn: &Connection,
    grants: &[String],
) -> Result<Vec<String>, ApiError> {
    let joined = grants.join("\n");
    let unchanged = kv_get(conn, keys::GRANTS)?.as_deref() == Some(joined.as_str());
    let kept_before = kv_get(conn, keys::KEPT_OUTSIDE)?.is_some();
    if unchanged && !kept_before {
        return Ok(Vec::new());
    }
    let places: Vec<PlaceId> = grants.iter().filter_map(|g| g.parse().ok()).collect();
    let mut outside = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT record_id, place FROM documents WHERE place != ''")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, place) = row?;
            let inside = place
                .parse::<PlaceId>()
                .is_ok_and(|p| places.iter().any(|g| p.is_within(g)));
            if !inside {
                outside.push(id);
            }
        }
    }
    for id in &outside {
        conn.execute(
            "DELETE FROM documents WHERE record_id = ?1
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.record_id = ?1)",
            [id],
        )?;
    }
    kv_set(conn, keys::GRANTS, &joined)?;
    let kept = kept_outside(conn, grants)?;
    if kept.is_empty() {
        kv_delete(conn, keys::KEPT_OUTSIDE)?;
    } else {
        kv_set(conn, keys::KEPT_OUTSIDE, "1")?;
    }
    Ok(kept)
}

/// Records outside `grants` still on the phone (because of unsent changes to them). Their pending
/// changes are marked refused (`out_of_scope`): the server answers a record outside the user's
/// grants exactly as one that does not exist, so sending them again could never succeed, and
/// the user decides to give them up.
fn kept_outside(conn: &Connection, grants: &[String]) -> Result<Vec<String>, ApiError> {
    let places: Vec<PlaceId> = grants.iter().filter_map(|g| g.parse().ok()).collect();
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT d.record_id, d.place FROM documents d JOIN outbox o
           ON o.record_id = d.record_id WHERE d.place != ''",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, place) = row?;
        let inside = place
            .parse::<PlaceId>()
            .is_ok_and(|p| places.iter().any(|g| p.is_within(g)));
        if !inside {
            out.push(id);
        }
    }
    for id in &out {
        conn.execute(
            "UPDATE outbox SET state = 'rejected', reject_code = 'out_of_scope',
                    reject_message = 'this record is no longer within the places granted to you: discard the change'
             WHERE record_id = ?1 AND state = 'pending'",
            [id],
        )?;
    }
    Ok(out)
}

/// For a user who does not receive residents' personal data: rebuilds every personal part this
/// phone holds from this phone's own changes only (what it captured itself), dropping what it
/// received while its user could read them. Runs when that access ends (or on the first sync
/// after an upgrade), not on every sync.
pub(crate) fn keep_only_own_personal(conn: &Connection, me: &ActorId) -> Result<(), ApiError> {
    if kv_get(conn, keys::PERSONAL_ACCESS)?.as_deref() == Some("0") {
        return Ok(());
    }
    let ids: Vec<String> = conn
        .prepare("SELECT record_id FROM documents WHERE personal IS NOT NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in ids {
        let Ok(id) = id.parse::<RecordId>() else {
            continue;
        };
        let mut doc = load_personal(conn, id)?;
        let changes = doc.changes();
        if changes.iter().all(|c| c.actor_id() == me) {
            continue;
        }
        let own: Vec<Change> = changes.into_iter().filter(|c| c.actor_id() == me).collect();
        let mut rebuilt = PersonalDoc::empty(id);
        // Own changes depend only on own changes: the phone never held others' when it made them
        // unless its user could read them, and then they are dropped together.
        if rebuilt.apply_changes(own).is_err() {
            rebuilt = PersonalDoc::empty(id);
        }
        save_personal(conn, &mut rebuilt)?;
    }
    kv_set(conn, keys::PERSONAL_ACCESS, "0")
}

/// Notes that the signed-in user receives residents' personal data.
pub(crate) fn note_personal_access(conn: &Connection) -> Result<(), ApiError> {
    kv_set(conn, keys::PERSONAL_ACCESS, "1")
}

/// Erases everything this phone holds for its users — records, personal parts, the outbox, who
/// made which change, the cursor, the signed-in user and the device identity (a new one is made
/// when the store is next opened) — overwriting the rows in place (`secure_delete`) and emptying
/// the WAL. What a lost phone carried is then gone from its files.
pub(crate) fn erase_everything(conn: &mut Connection) -> Result<(), ApiError> {
    let tx = immediate(conn)?;
    tx.execute_batch(
        "DELETE FROM documents; DELETE FROM outbox; DELETE FROM change_meta; DELETE FROM kv;",
    )?;
    tx.commit()?;
    checkpoint(conn)?;
    // Vacuuming rewrites the file without the freed pages, so not even their size remains.
    conn.execute_batch("VACUUM")?;
    checkpoint(conn)
}

/// Writes the WAL back into the database file and empties it, so deleted rows (overwritten in
/// place with `secure_delete`) leave no copy behind in the WAL either.
pub(crate) fn checkpoint(conn: &Connection) -> Result<(), ApiError> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

pub(crate) use linli_sync_core::hex::{decode as from_hex, encode as to_hex};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_twice_keeps_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (_c1, a) = open(dir.path()).unwrap();
        let (_c2, b) = open(dir.path()).unwrap();
        assert_eq!(a.device_id, b.device_id);
        assert_eq!(a.actor, b.actor);
        let mode: String = _c2
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn first_opens_racing_on_a_fresh_directory_agree() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..4)
            .map(|_| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || open(&path).unwrap().1.device_id)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }
}
