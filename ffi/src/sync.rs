//! The phone side of one sync round: build the request from the outbox, and apply the server's
//! reply in one transaction. [`apply_response`] takes an already decoded [`SyncResponse`], so the
//! outbox state machine is tested without a server.
//!
//! Outbox states: `pending` → (accepted) deleted, its who/when kept in `change_meta`;
//! `pending` → (refused, not retryable) `rejected` with code and message, kept and shown, never
//! resent; `pending` → (refused, retryable: `server_error`, `missing_dependencies`) stays
//! `pending` with the last reason noted; `rejected` → (discarded by the user) deleted.

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;
use linli_sync_core::protocol::{
    Cursor, MAX_PAGE, Part, PushChange, RejectCode, SyncRequest, SyncResponse,
};
use linli_sync_core::{PersonalDoc, RecordDoc, RecordId};
use rusqlite::{Connection, params};

use crate::error::ApiError;
use crate::store::{self, OutboxRow, keys};
use crate::types::RejectedChange;

/// Who pushes: the signed-in user and this device, recorded against accepted changes.
#[derive(Debug, Clone)]
pub(crate) struct Pusher {
    pub user: String,
    pub device: String,
}

/// What applying one reply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub accepted: u32,
    pub pulled: u32,
    pub skipped: u32,
    pub rejected: Vec<RejectedChange>,
    /// Records that pulled changes were merged into (ids), for "new data arrived".
    pub records: Vec<String>,
    /// Records outside the user's grants kept only because this phone has unsent changes to
    /// them.
    pub kept_outside_grants: Vec<String>,
}

/// A snapshot as loaded, by part.
enum Loaded {
    Record(RecordDoc),
    Personal(PersonalDoc),
}

/// The record's shared document in this reply's working set (loaded on first use).
fn record_doc<'a>(
    tx: &rusqlite::Transaction<'_>,
    docs: &'a mut BTreeMap<RecordId, RecordDoc>,
    id: RecordId,
) -> Result<&'a mut RecordDoc, ApiError> {
    Ok(match docs.entry(id) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(store::load_doc(tx, id)?.unwrap_or_else(|| RecordDoc::empty(id)))
        }
    })
}

/// The record's personal part in this reply's working set (loaded on first use).
fn personal_doc<'a>(
    tx: &rusqlite::Transaction<'_>,
    docs: &'a mut BTreeMap<RecordId, PersonalDoc>,
    id: RecordId,
) -> Result<&'a mut PersonalDoc, ApiError> {
    Ok(match docs.entry(id) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => e.insert(store::load_personal(tx, id)?),
    })
}

/// The request for a batch of outbox rows.
pub(crate) fn request(cursor: Cursor, batch: &[OutboxRow]) -> SyncRequest {
    SyncRequest {
        cursor,
        changes: batch
            .iter()
            .map(|row| PushChange {
                record: *row.record.as_bytes(),
                kind: row.kind,
                part: row.part,
                change: row.change.clone(),
            })
            .collect(),
        max_pull: MAX_PAGE,
    }
}

/// Applies a sync reply in ONE transaction: accepted changes leave the outbox (their who/when is
/// kept), refused ones are marked, pulled changes and snapshots are merged into (or replace)
/// their record's shared document or personal part, records outside the user's grants leave the
/// phone (unless it has unsent changes to them), personal parts received while the user could
/// read them go when that ends, the server's clock offset is noted, and the new cursor is stored
/// — but only if the stored cursor is still the one `sent` (another sync on the same store may
/// have moved it further; pulled changes are idempotent either way).
pub(crate) fn apply_response(
    conn: &mut Connection,
    sent: &Cursor,
    resp: &SyncResponse,
    me: &Pusher,
    me_actor: &ActorId,
    now: i64,
) -> Result<Applied, ApiError> {
    let tx = store::immediate(conn)?;
    let mut out = Applied::default();

    for a in &resp.accepted {
        tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
            .execute([&a.hash[..]])?;
        store::put_change_meta(&tx, &a.hash, &me.user, &me.device, a.received_at)?;
        out.accepted += 1;
    }

    for r in &resp.rejected {
        let retryable = r.code.is_retryable();
        let sql = if retryable {
            "UPDATE outbox SET reject_code = ?2, reject_message = ?3
             WHERE hash = ?1 AND state = 'pending'"
        } else {
            "UPDATE outbox SET state = 'rejected', reject_code = ?2, reject_message = ?3
             WHERE hash = ?1"
        };
        tx.prepare_cached(sql)?
            .execute(params![&r.hash[..], r.code.as_str(), r.message])?;
        out.rejected.push(RejectedChange::from(r));
    }

    let mut docs: BTreeMap<RecordId, RecordDoc> = BTreeMap::new();
    let mut personal_docs: BTreeMap<RecordId, PersonalDoc> = BTreeMap::new();
    let mut merged: BTreeSet<RecordId> = BTreeSet::new();
    // Whole documents first (records of newly granted places, or documents the server rebuilt):
    // every change of the server's copy is merged into this phone's copy, or replaces it.
    for s in &resp.snapshots {
        let id = RecordId::from_bytes(s.record);
        let loaded = match s.part {
            Part::Record => RecordDoc::load(id, &s.doc).map(Loaded::Record),
            Part::Personal => PersonalDoc::load(id, &s.doc).map(Loaded::Personal),
        };
        let Ok(mut theirs) = loaded else {
            out.skipped += 1;
            continue;
        };
        if s.replace {
            // The server rebuilt this document (a personal-data migration rewrote its history):
            // this phone's copy goes, and its own unsent changes to it can never apply.
            tx.prepare_cached(
                "UPDATE outbox SET state = 'rejected', reject_code = ?3, reject_message = ?4
                 WHERE record_id = ?1 AND part = ?2",
            )?
            .execute(params![
                id.to_string(),
                s.part.as_str(),
                RejectCode::RecordReplaced.as_str(),
                "the server rebuilt this record after this edit was made: enter the edit again"
            ])?;
            match theirs {
                Loaded::Record(doc) => {
                    docs.insert(id, doc);
                }
                Loaded::Personal(doc) => {
                    personal_docs.insert(id, doc);
                }
            }
            merged.insert(id);
            out.pulled += 1;
            continue;
        }
        let applied = match &mut theirs {
            Loaded::Record(theirs) => match docs.entry(id) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    e.into_mut().apply_changes(theirs.changes())
                }
                std::collections::btree_map::Entry::Vacant(e) => match store::load_doc(&tx, id)? {
                    Some(mut mine) => {
                        let applied = mine.apply_changes(theirs.changes());
                        e.insert(mine);
                        applied
                    }
                    // The phone has no copy yet (a new phone's bootstrap): the server's is it.
                    None => {
                        e.insert(std::mem::replace(theirs, RecordDoc::empty(id)));
                        Ok(())
                    }
                },
            },
            Loaded::Personal(theirs) => {
                personal_doc(&tx, &mut personal_docs, id)?.apply_changes(theirs.changes())
            }
        };
        match applied {
            Ok(()) => {
                merged.insert(id);
                out.pulled += 1;
            }
            Err(_) => out.skipped += 1,
        }
    }
    for p in &resp.changes {
        let id = RecordId::from_bytes(p.record);
        let applied = match p.part {
            Part::Record => record_doc(&tx, &mut docs, id)?.apply_change(&p.change),
            Part::Personal => personal_doc(&tx, &mut personal_docs, id)?.apply_change(&p.change),
        };
        match applied {
            Ok(hash) => {
                merged.insert(id);
                store::put_change_meta(&tx, &hash.0, &p.user, &p.device, p.received_at)?;
                out.pulled += 1;
            }
            // The server validated it, so this is damage on the way: skip it rather than block
            // every later sync on it.
            Err(_) => out.skipped += 1,
        }
    }
    // A personal part needs its record's row: one pulled before its record (it cannot be, in log
    // order, but a damaged record change could have been skipped) gets an empty record.
    for id in personal_docs.keys() {
        if !docs.contains_key(id) && store::load_doc(&tx, *id)?.is_none() {
            docs.insert(*id, RecordDoc::empty(*id));
        }
    }
    for doc in docs.values_mut() {
        store::save_doc(&tx, doc, now)?;
    }
    for doc in personal_docs.values_mut() {
        store::save_personal(&tx, doc)?;
    }
    out.records = merged.iter().map(RecordId::to_string).collect();

    // What the user may no longer see leaves the phone (unless this phone still has unsent
    // changes to it, which stay for the user to send or give up).
    out.kept_outside_grants = store::drop_outside_grants(&tx, &resp.grants)?;
    if resp.personal {
        store::note_personal_access(&tx)?;
    } else {
        store::keep_only_own_personal(&tx, me_actor)?;
    }
    store::kv_set(
        &tx,
        keys::CLOCK_OFFSET,
        &resp.server_time.saturating_sub(now).to_string(),
    )?;

    if store::cursor(&tx)? == *sent {
        store::set_cursor(&tx, &resp.cursor)?;
    }
    store::kv_set(&tx, keys::LAST_SYNC_AT, &now.to_string())?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use automerge::ActorId;
    use linli_sync_core::protocol::{Accepted, PulledChange, RejectCode, Rejected};
    use linli_sync_core::{EditContext, RecordKind};

    use super::*;
    use crate::{FieldClient, FieldValue};

    fn me() -> Pusher {
        Pusher {
            user: "steward1".into(),
            device: "dev-1".into(),
        }
    }

    fn hash_of(bytes: &[u8]) -> [u8; 32] {
        automerge::Change::from_bytes(bytes.to_vec())
            .unwrap()
            .hash()
            .0
    }

    fn three_edits(client: &FieldClient) -> (String, Vec<OutboxRow>) {
        let id = client
            .create(
                crate::types::RecordKind::Bus,
                "hz/baiyang/haitian".into(),
                vec![FieldValue::new("run_number", "1801")],
            )
            .unwrap();
        client.tally(id.clone(), "leaflets".into(), 10).unwrap();
        client.note(id.clone(), "到站".into()).unwrap();
        let rows = client
            .with_conn(|c| store::pending_batch(c, 0, 100))
            .unwrap();
        assert_eq!(rows.len(), 3);
        (id, rows)
    }

    #[test]
    fn accepted_changes_leave_the_outbox_and_keep_who_and_when() {
        let dir = tempfile::tempdir().unwrap();
        let client =
            FieldClient::new(dir.path().to_string_lossy().into(), None, None, None).unwrap();
        let (id, rows) = three_edits(&client);
        let resp = SyncResponse {
            accepted: rows
                .iter()
                .map(|r| Accepted {
                    hash: hash_of(&r.change),
                    received_at: 1_000 + r.id,
                })
                .collect(),
            cursor: Cursor::from_seq(3),
            grants: vec!["hz".into()],
            ..Default::default()
        };
        let applied = client
            .with_conn(|c| apply_response(c, &Cursor::start(), &resp, &me(), &ActorId::random(), 5))
            .unwrap();
        assert_eq!(applied.accepted, 3);
        assert!(client.outbox().unwrap().is_empty());
        assert_eq!(
            client.with_conn(|c| store::cursor(c)).unwrap(),
            Cursor::from_seq(3)
        );
        let view = client.get(id).unwrap();
        assert_eq!(view.pending_changes, 0);
        assert!(view.history.iter().all(|h| h.user == "steward1"
            && h.device == "dev-1"
            && h.state == "synced"
            && h.received_at.is_some()));
    }

    #[test]
    fn refused_changes_are_kept_until_discarded_and_retryable_ones_stay_pending() {
        let dir = tempfile::tempdir().unwrap();
        let client =
            FieldClient::new(dir.path().to_string_lossy().into(), None, None, None).unwrap();
        let (id, rows) = three_edits(&client);
        let record = *rows[0].record.as_bytes();
        let resp = SyncResponse {
            accepted: vec![Accepted {
                hash: hash_of(&rows[0].change),
                received_at: 7,
            }],
            rejected: vec![
                Rejected {
                    hash: hash_of(&rows[1].change),
                    record,
                    code: RejectCode::Forbidden,
                    message: "a steward cannot tally leaflets".into(),
                },
                Rejected {
                    hash: hash_of(&rows[2].change),
                    record,
                    code: RejectCode::MissingDependencies,
                    message: "depends on a change the server does not have".into(),
                },
            ],
            cursor: Cursor::from_seq(1),
            grants: vec!["hz".into()],
            ..Default::default()
        };
        let applied = client
            .with_conn(|c| apply_response(c, &Cursor::start(), &resp, &me(), &ActorId::random(), 5))
            .unwrap();
        assert_eq!(applied.accepted, 1);
        assert_eq!(applied.rejected.len(), 2);
        assert!(!applied.rejected[0].retryable);
        assert!(applied.rejected[1].retryable);

        let outbox = client.outbox().unwrap();
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox[0].state, "rejected");
        assert_eq!(outbox[0].reject_code.map(|c| c.as_str()), Some("forbidden"));
        assert_eq!(outbox[1].state, "pending");
        assert_eq!(
            outbox[1].reject_code.map(|c| c.as_str()),
            Some("missing_dependencies")
        );
        // Only the pending one is sent again.
        let again = client
            .with_conn(|c| store::pending_batch(c, 0, 100))
            .unwrap();
        assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), [rows[2].id]);

        // Pending changes cannot be discarded; the rejected one can, and takes the note that
        // builds on it along (it could never be accepted without it).
        let err = client.discard(outbox[1].id).unwrap_err();
        assert_eq!(err.code(), "conflict");
        assert_eq!(client.discard(outbox[0].id).unwrap(), 2);
        assert!(client.outbox().unwrap().is_empty());
        let view = client.get(id.clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&view.value_json).unwrap();
        assert_eq!(value["leaflets"], 0);
        assert_eq!(value["notes"].as_array().unwrap().len(), 0);
        assert_eq!(view.history.len(), 1);

        // The phone goes on editing, and the new change is a clean successor.
        client.tally(id, "leaflets".into(), 5).unwrap();
        assert_eq!(client.outbox().unwrap().len(), 1);
    }

    #[test]
    fn pulled_changes_create_and_merge_documents_with_their_authors() {
        let dir = tempfile::tempdir().unwrap();
        let client =
            FieldClient::new(dir.path().to_string_lossy().into(), None, None, None).unwrap();
        // Another phone creates a bus session and tallies leaflets.
        let other = EditContext {
            actor: ActorId::random(),
            user: "bus2".into(),
            now_ms: 1_700_000_000_000,
        };
        let place = "hz/baiyang/haitian".parse().unwrap();
        let id = RecordId::new();
        let (mut doc, c0) = RecordDoc::create(
            id,
            RecordKind::Bus,
            &place,
            &other,
            &[("run_number".into(), "1801".into())],
        )
        .unwrap();
        let c1 = doc.tally(&other, "leaflets", 300).unwrap();
        let pulled = |c: &automerge::Change, at: i64| PulledChange {
            record: *id.as_bytes(),
            part: Part::Record,
            change: c.raw_bytes().to_vec(),
            received_at: at,
            user: "bus2".into(),
            device: "dev-2".into(),
        };
        let resp = SyncResponse {
            changes: vec![
                pulled(&c0, 10),
                pulled(&c1, 11),
                PulledChange {
                    change: vec![1, 2, 3],
                    ..pulled(&c1, 12)
                },
            ],
            cursor: Cursor::from_seq(3),
            more: true,
            grants: vec!["hz".into()],
            ..Default::default()
        };
        let applied = client
            .with_conn(|c| apply_response(c, &Cursor::start(), &resp, &me(), &ActorId::random(), 5))
            .unwrap();
        assert_eq!((applied.pulled, applied.skipped), (2, 1));

        // This phone adds its own leaflets; the tallies add up.
        client.tally(id.to_string(), "leaflets".into(), 30).unwrap();
        let list = client.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].kind, Some(crate::types::RecordKind::Bus));
        assert_eq!(list[0].pending_changes, 1);
        let view = client.get(id.to_string()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&view.value_json).unwrap();
        assert_eq!(value["leaflets"], 330);
        assert_eq!(view.history[0].user, "bus2");
        assert_eq!(view.history[0].received_at, Some(10));
        assert_eq!(view.history[2].user, "me (unsynced)");

        // Both phones set the same field while apart: both values are shown, with who set each.
        let c2 = doc
            .set_fields(&other, &[("leader".into(), "王车长".into())])
            .unwrap();
        client
            .set(id.to_string(), vec![FieldValue::new("leader", "李车长")])
            .unwrap();
        let resp2 = SyncResponse {
            changes: vec![pulled(&c2, 20)],
            cursor: Cursor::from_seq(4),
            grants: vec!["hz".into()],
            ..Default::default()
        };
        client
            .with_conn(|c| {
                apply_response(
                    c,
                    &Cursor::from_seq(3),
                    &resp2,
                    &me(),
                    &ActorId::random(),
                    7,
                )
            })
            .unwrap();
        let view = client.get(id.to_string()).unwrap();
        assert_eq!(view.conflicts.len(), 1, "{:?}", view.conflicts);
        let leader = &view.conflicts[0];
        assert_eq!(
            (leader.field.as_str(), leader.label.as_str()),
            ("leader", "车长")
        );
        let mut who: Vec<(String, String)> = leader
            .values
            .iter()
            .map(|v| (v.value_json.clone(), v.user.clone()))
            .collect();
        who.sort();
        assert_eq!(
            who,
            [
                ("\"李车长\"".to_string(), crate::ME_UNSYNCED.to_string()),
                ("\"王车长\"".to_string(), "bus2".to_string()),
            ]
        );

        // A reply based on an outdated cursor does not move the cursor back.
        let stale = SyncResponse {
            cursor: Cursor::from_seq(1),
            grants: vec!["hz".into()],
            ..Default::default()
        };
        client
            .with_conn(|c| {
                apply_response(c, &Cursor::start(), &stale, &me(), &ActorId::random(), 6)
            })
            .unwrap();
        assert_eq!(
            client.with_conn(|c| store::cursor(c)).unwrap(),
            Cursor::from_seq(4)
        );
    }

    #[test]
    fn a_replacing_snapshot_drops_the_copy_and_refuses_unsent_edits_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let client =
            FieldClient::new(dir.path().to_string_lossy().into(), None, None, None).unwrap();
        let (id, rows) = three_edits(&client);
        // The server rebuilt the record: one change by another actor holding its value.
        let record = client
            .with_conn(|c| store::load_doc(c, rows[0].record))
            .unwrap()
            .unwrap();
        let rebuilt_ctx = EditContext {
            actor: ActorId::random(),
            user: "linli-system".into(),
            now_ms: 1_700_000_000_000,
        };
        let (mut rebuilt, _) = RecordDoc::rebuild(
            record.id(),
            &record.record().unwrap(),
            &rebuilt_ctx,
            "rebuild".into(),
        )
        .unwrap();
        let resp = SyncResponse {
            snapshots: vec![linli_sync_core::protocol::PulledSnapshot {
                record: *record.id().as_bytes(),
                part: Part::Record,
                doc: rebuilt.save(),
                replace: true,
            }],
            cursor: Cursor::from_seq(9),
            grants: vec!["hz".into()],
            ..Default::default()
        };
        client
            .with_conn(|c| apply_response(c, &Cursor::start(), &resp, &me(), &ActorId::random(), 5))
            .unwrap();
        let outbox = client.outbox().unwrap();
        assert_eq!(outbox.len(), 3);
        assert!(outbox.iter().all(|o| o.state == "rejected"
            && o.reject_code.map(|c| c.as_str()) == Some("record_replaced")));
        let view = client.get(id).unwrap();
        assert_eq!(view.history.len(), 1, "only the rebuilt history remains");
    }
}
