//! `linli-server migrate-personal-data`: moves residents' names and phone numbers that records
//! stored before protocol v2 hold in their shared document into the records' personal parts.
//!
//! A change's hash is its identity, so a change that carried a phone number cannot be edited to
//! drop it; the only way to stop a value travelling with a record's history is a new history. For
//! each such record the command, in one transaction:
//!
//! 1. rebuilds the shared document from the record's current value with the personal fields in
//!    their masked form, as one change by the system user `linli-system`;
//! 2. writes the full values into the record's personal part, as one change by the same user;
//! 3. moves the record's old changes out of the log into `changes_archive` (kept for office and
//!    admin audit, never sent to a phone again) and logs the two new changes as *replacing*
//!    their documents, so every phone that syncs drops its copy and keeps the rebuilt one.
//!
//! What earlier pulls delivered: a phone that pulled such a record before the migration holds
//! the old changes, values included, until its next sync replaces them (phones overwrite deleted
//! rows and truncate their WAL). A phone that never syncs again keeps them: revoke it, which
//! erases it at its next contact, or treat it as lost. Unsent edits a phone made on the old
//! version are refused on the phone (`record_replaced`) and must be entered again.

use std::io::Write;

use linli_sync_core::automerge::ActorId;
use linli_sync_core::protocol::Part;
use linli_sync_core::{EditContext, PersonalDoc, RecordDoc, RecordId};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::store::prelude::*;
use crate::store::{RebuiltRecord, Store};

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Records looked at.
    pub scanned: u64,
    /// Records rebuilt.
    pub migrated: u64,
}

/// The system user's Automerge actor (stable, so repeated runs are attributed alike).
fn system_actor() -> ActorId {
    ActorId::from(b"linli-system-mig".as_slice())
}

/// Migrates every record whose shared document holds a full personal value, printing progress on
/// `out`; then checks that none is left.
pub async fn migrate_personal_data(store: &Store, out: &mut impl Write) -> Result<MigrationReport> {
    let io = |e: std::io::Error| Error::internal(e);
    let (user_id, device) = store.system_principal().await?;
    let candidates = store.records_with_unmasked_personal_values().await?;
    let mut report = MigrationReport {
        scanned: store.record_count().await? as u64,
        migrated: 0,
    };
    writeln!(
        out,
        "{} of {} records hold residents' details in their shared document",
        candidates.len(),
        report.scanned
    )
    .map_err(io)?;
    for (i, id) in candidates.iter().enumerate() {
        if rebuild_one(store, *id, &user_id, &device).await? {
            report.migrated += 1;
        }
        if (i + 1) % 100 == 0 || i + 1 == candidates.len() {
            writeln!(out, "migrated {} of {}", i + 1, candidates.len()).map_err(io)?;
        }
    }
    let left = store.records_with_unmasked_personal_values().await?;
    if !left.is_empty() {
        return Err(Error::Internal(format!(
            "{} records still hold residents' details after the migration",
            left.len()
        )));
    }
    writeln!(
        out,
        "done: {} records rebuilt; no record's shared document holds residents' details",
        report.migrated
    )
    .map_err(io)?;
    Ok(report)
}

async fn rebuild_one(store: &Store, id: RecordId, user_id: &str, device: &str) -> Result<bool> {
    let Some(meta) = store.record_meta(id).await? else {
        return Ok(false);
    };
    let Some(bytes) = store.record_doc(id).await? else {
        return Ok(false);
    };
    let broken = |e: linli_sync_core::RecordError| {
        Error::Internal(format!("stored document {id} does not load: {e}"))
    };
    let old = RecordDoc::load(id, &bytes).map_err(broken)?;
    let record = old.record().map_err(broken)?;
    let (masked, values) = record.split_personal();
    if values.is_empty() {
        return Ok(false);
    }
    let ctx = EditContext {
        actor: system_actor(),
        user: "linli-system".into(),
        now_ms: now_ms(),
    };
    let (mut shared, shared_change) =
        RecordDoc::rebuild(id, &masked, &ctx, "rebuild: personal data moved out".into())
            .map_err(broken)?;
    let mut personal = PersonalDoc::empty(id);
    let personal_change = personal
        .set(&ctx, record.kind(), &values)
        .map_err(broken)?
        .ok_or_else(|| Error::Internal(format!("record {id}: no personal change")))?;
    let value = shared.record().map_err(broken)?;
    let personal_values = Value::Object(
        values
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    );
    let rebuilt = RebuiltRecord {
        record: id,
        expected_version: meta.version,
        place: &meta.place,
        kind: meta.kind,
        actor: &system_actor().to_hex_string(),
        user_id,
        device,
        at: ctx.now_ms,
        changes: [
            (
                Part::Record,
                shared_change.raw_bytes(),
                shared_change.hash().0,
            ),
            (
                Part::Personal,
                personal_change.raw_bytes(),
                personal_change.hash().0,
            ),
        ],
        value: &value.to_json(),
        status: value.status(),
        category: value.category(),
        doc: &shared.save(),
        personal_doc: &personal.save(),
        personal_values: &personal_values,
    };
    store.replace_history(&rebuilt).await?;
    Ok(true)
}
