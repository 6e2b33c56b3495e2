//! `POST /v1/sync`: one round trip that pushes a phone's changes and pulls others'.
//!
//! Push: each change, in order, is acknowledged only after it is committed (log row, actor
//! binding and projection row in one transaction), or rejected with a machine-readable reason
//! that is also stored for the back-office. Pull: a bounded page of others' changes within the
//! caller's grants after the phone's cursor; the work is proportional to the new changes, never
//! to the history or to the number of documents.
//!
//! Grant growth: the cursor also carries the grant epoch the phone was bootstrapped for. When the
//! user holds grants newer than that, the reply first delivers the records already in the newly
//! granted places as saved documents (snapshots, read from the projection table, paged by record
//! id), then the cursor moves to the new epoch. Revoked grants need nothing: pulls filter by the
//! grants held at each request, so their records simply stop arriving.

use std::num::NonZeroUsize;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use linli_sync_core::ingest::{Ingested, Refusal, ingest, parse_change};
use linli_sync_core::protocol::{
    self, Accepted, Cursor, PulledChange, PulledSnapshot, PushChange, RejectCode, Rejected,
    SyncRequest, SyncResponse,
};
use linli_sync_core::{CodecError, PlaceId, RecordDoc, RecordId, RecordKind};
use lru::LruCache;

use crate::auth::AuthUser;
use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::state::AppState;
use crate::store::{ActorBinding, NewChange, ProjectionUpdate, RejectionRow, Store};

/// Changes per reply when the phone asks for 0 (no preference).
pub const DEFAULT_PAGE: u32 = 500;
/// Most snapshot bytes one reply carries (at least one snapshot is always sent).
pub const SNAPSHOT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", post(sync))
        .layer(DefaultBodyLimit::max(protocol::MAX_BODY_BYTES))
}

/// A bounded LRU of hot record documents, keyed by record id. Documents not in it are loaded
/// from their saved form in the database, so memory does not grow with the number of records.
pub struct DocCache {
    docs: LruCache<RecordId, RecordDoc>,
}

impl std::fmt::Debug for DocCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocCache")
            .field("len", &self.docs.len())
            .field("cap", &self.docs.cap())
            .finish()
    }
}

impl DocCache {
    /// A cache of at most `capacity` documents (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            docs: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Takes a record's document out: from the cache, else from the store, else a new empty
    /// one. The caller puts it back only if it matches what is committed, so a failure (or a
    /// cancelled request) between ingest and commit can never leave an uncommitted state cached.
    async fn take(&mut self, store: &Store, id: RecordId) -> Result<RecordDoc> {
        if let Some(doc) = self.docs.pop(&id) {
            return Ok(doc);
        }
        match store.record_doc(id).await? {
            Some(bytes) => RecordDoc::load(id, &bytes)
                .map_err(|e| Error::Internal(format!("stored document {id} does not load: {e}"))),
            None => Ok(RecordDoc::empty(id)),
        }
    }

    fn put(&mut self, doc: RecordDoc) {
        self.docs.put(doc.id(), doc);
    }

    /// Documents currently cached.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document is cached.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn is_sync_body(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(protocol::CONTENT_TYPE))
}

async fn sync(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if !is_sync_body(&headers) {
        return Err(Error::UnsupportedMediaType(format!(
            "a sync body must be sent as Content-Type: {}",
            protocol::CONTENT_TYPE
        )));
    }
    // Refuse an announced oversized body before reading any of it, so the client hears the 413
    // instead of a connection closed under its upload.
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > protocol::MAX_BODY_BYTES as u64) {
        return Err(Error::PayloadTooLarge(format!(
            "a sync body may be at most {} bytes",
            protocol::MAX_BODY_BYTES
        )));
    }
    let body: Bytes = axum::body::to_bytes(body, protocol::MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                Error::PayloadTooLarge(format!(
                    "a sync body may be at most {} bytes",
                    protocol::MAX_BODY_BYTES
                ))
            } else {
                Error::BadRequest("the request body could not be read".into())
            }
        })?;
    let req = SyncRequest::decode(&body).map_err(|e| match e {
        CodecError::TooLarge(_) => Error::PayloadTooLarge(e.to_string()),
        other => Error::BadRequest(other.to_string()),
    })?;
    drop(body);

    let mut reply = SyncResponse::default();
    if !req.changes.is_empty() {
        let mut cache = state.writer.lock().await;
        for push in &req.changes {
            match push_one(&state.store, &mut cache, &user, push).await {
                Ok(accepted) => reply.accepted.push(accepted),
                Err(rejected) => reply.rejected.push(rejected),
            }
        }
    }

    let limit = match req.max_pull {
        0 => DEFAULT_PAGE,
        n => n.min(protocol::MAX_PAGE),
    };
    let cursor = req.cursor.seq().unwrap_or(0);
    let epoch = match bootstrap(&state, &user, &req.cursor, limit, &mut reply).await? {
        Bootstrap::Unfinished(next) => {
            reply.more = true;
            reply.cursor = next;
            return finish(&state, &user, &req, reply).await;
        }
        Bootstrap::Done(epoch) => epoch,
    };
    let (mut rows, end) = state
        .store
        .pull(cursor, user.device_id, &user.places, limit)
        .await?;
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        reply.more = true;
        reply.cursor = Cursor::with_epoch(rows.last().map_or(end, |r| r.seq), epoch, None);
    } else {
        reply.cursor = Cursor::with_epoch(end, epoch, None);
    }
    reply.changes = rows
        .into_iter()
        .map(|r| {
            let record: RecordId = r
                .record_id
                .parse()
                .map_err(|e| Error::Internal(format!("change {}: {e}", r.seq)))?;
            Ok(PulledChange {
                record: *record.as_bytes(),
                change: r.bytes,
                received_at: r.received_at,
                user: r.username,
                device: r.device_id,
            })
        })
        .collect::<Result<_>>()?;
    finish(&state, &user, &req, reply).await
}

/// Where a bootstrap stands after this reply.
enum Bootstrap {
    /// Nothing (more) to send: the grant epoch the phone is now bootstrapped for.
    Done(i64),
    /// More snapshots wait: the cursor to resume from.
    Unfinished(Cursor),
}

/// Sends snapshots of the records in places granted to the user after the epoch in the phone's
/// cursor (a page of them). A new phone (empty cursor) pulls the whole log instead, so it starts
/// at the current epoch.
async fn bootstrap(
    state: &AppState,
    user: &AuthUser,
    cursor: &Cursor,
    limit: u32,
    reply: &mut SyncResponse,
) -> Result<Bootstrap> {
    // Read the epoch before the grants: a grant made in between is sent again next time rather
    // than never.
    let now_epoch = state.store.grant_epoch().await?;
    if cursor.is_start() {
        return Ok(Bootstrap::Done(now_epoch));
    }
    let known = cursor.grant_epoch().unwrap_or(0);
    let grants = state.store.grants_with_epoch(&user.user_id).await?;
    let (new, old): (Vec<_>, Vec<_>) = grants.into_iter().partition(|(_, e)| *e > known);
    let scopes: Vec<PlaceId> = new
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !old.iter().any(|(o, _)| p.is_within(o)))
        .collect();
    if scopes.is_empty() {
        return Ok(Bootstrap::Done(now_epoch.max(known)));
    }
    let after = cursor.resume().map(|r| RecordId::from_bytes(r).to_string());
    let docs = state
        .store
        .snapshots_within(&scopes, after.as_deref(), limit, SNAPSHOT_PAGE_BYTES)
        .await?;
    let full = docs.len() >= limit as usize
        || docs.iter().map(|(_, d)| d.len()).sum::<usize>() >= SNAPSHOT_PAGE_BYTES;
    let mut last = None;
    for (id, doc) in docs {
        let record: RecordId = id
            .parse()
            .map_err(|e| Error::Internal(format!("record {id}: {e}")))?;
        last = Some(*record.as_bytes());
        reply.snapshots.push(PulledSnapshot {
            record: *record.as_bytes(),
            doc,
        });
    }
    match last {
        Some(last) if full => Ok(Bootstrap::Unfinished(Cursor::with_epoch(
            cursor.seq().unwrap_or(0),
            known,
            Some(last),
        ))),
        _ => Ok(Bootstrap::Done(now_epoch.max(known))),
    }
}

/// Stamps, logs and encodes a reply (422 when a push had changes and every one was refused).
async fn finish(
    state: &AppState,
    user: &AuthUser,
    req: &SyncRequest,
    mut reply: SyncResponse,
) -> Result<Response> {
    reply.server_time = now_ms();
    state
        .store
        .touch_device(user.device_id, reply.server_time)
        .await?;

    tracing::info!(
        user = %user.username,
        pushed = req.changes.len(),
        accepted = reply.accepted.len(),
        rejected = reply.rejected.len(),
        pulled = reply.changes.len(),
        snapshots = reply.snapshots.len(),
        more = reply.more,
        "sync"
    );
    let status = if !req.changes.is_empty() && reply.accepted.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(protocol::CONTENT_TYPE),
        )],
        reply.encode(),
    )
        .into_response())
}

/// Accepts or rejects one pushed change. Runs under the writer lock.
async fn push_one(
    store: &Store,
    cache: &mut DocCache,
    user: &AuthUser,
    push: &PushChange,
) -> std::result::Result<Accepted, Rejected> {
    let record = RecordId::from_bytes(push.record);
    let received_at = now_ms();
    let outcome = accept(store, cache, user, push, record, received_at).await;
    let refusal = match outcome {
        Ok(accepted) => return Ok(accepted),
        Err(refusal) => refusal,
    };
    tracing::info!(
        user = %user.username,
        record = %record,
        code = refusal.code.as_str(),
        reason = %refusal.message,
        "change rejected"
    );
    let place = refusal
        .place
        .as_ref()
        .or_else(|| user.places.first())
        .map(|p| p.as_str());
    let row = RejectionRow {
        hash: &refusal.hash,
        record,
        user_id: &user.user_id,
        device: user.device_id,
        code: refusal.code.as_str(),
        message: &refusal.message,
        at: received_at,
        place,
    };
    if let Err(e) = store.record_rejection(&row).await {
        tracing::error!(error = %e, "could not store a rejection");
    }
    Err(Rejected {
        hash: refusal.hash,
        record: push.record,
        code: refusal.code,
        message: refusal.message,
    })
}

fn out_of_scope(user: &AuthUser, place: &PlaceId, hash: [u8; 32]) -> Refusal {
    Refusal::new(
        RejectCode::OutOfScope,
        format!("{place} is outside the places granted to {}", user.username),
        hash,
    )
}

fn server_error(e: Error, hash: [u8; 32]) -> Refusal {
    tracing::error!(error = %e, "accepting a change failed");
    Refusal::new(
        RejectCode::ServerError,
        "the server could not store this change; it will be sent again",
        hash,
    )
}

async fn accept(
    store: &Store,
    cache: &mut DocCache,
    user: &AuthUser,
    push: &PushChange,
    record: RecordId,
    received_at: i64,
) -> std::result::Result<Accepted, Refusal> {
    // A retried push, or a relay of a change the server holds, is answered from the log without
    // touching the document, if the pusher may see the record.
    let hash = parse_change(&push.change)?.hash().0;
    match store.held_change(record, &hash).await {
        Ok(Some((at, place))) => {
            let place: PlaceId = place
                .parse()
                .map_err(|e| server_error(Error::internal(e), hash))?;
            if !user.can_access(&place) {
                let mut r = out_of_scope(user, &place, hash);
                r.place = Some(place);
                return Err(r);
            }
            return Ok(Accepted {
                hash,
                received_at: at,
            });
        }
        Ok(None) => {}
        Err(e) => return Err(server_error(e, hash)),
    }

    let mut doc = cache
        .take(store, record)
        .await
        .map_err(|e| server_error(e, hash))?;
    let authorize = |place: &PlaceId, _kind: RecordKind| {
        if user.can_access(place) {
            Ok(())
        } else {
            Err(out_of_scope(user, place, hash))
        }
    };
    let applied = match ingest(&mut doc, push, user.role, authorize) {
        Ok(Ingested::Duplicate { hash }) => {
            // The document is unchanged: keep it hot.
            cache.put(doc);
            let at = store
                .change_received_at(record, &hash)
                .await
                .map_err(|e| server_error(e, hash))?;
            return Ok(Accepted {
                hash,
                received_at: at.unwrap_or(received_at),
            });
        }
        Ok(applied) => applied,
        Err(refusal) => {
            // A refusal leaves the document as it was.
            cache.put(doc);
            return Err(refusal);
        }
    };
    let Ingested::Applied {
        hash,
        actor,
        claimed_at,
        touched,
        place,
        kind,
    } = applied
    else {
        unreachable!("duplicates returned above")
    };

    // From here on `doc` holds an uncommitted change: on any failure it is dropped (the next
    // push reloads the committed document from the store).
    match store.actor_binding(&actor).await {
        Ok(ActorBinding::Device(d)) if d != user.device_id.to_string() => {
            let mut r = Refusal::new(
                RejectCode::ForeignActor,
                "this change was made under another device's actor",
                hash,
            );
            r.place = Some(place);
            return Err(r);
        }
        Ok(_) => {}
        Err(e) => return Err(server_error(e, hash)),
    }
    let value = match doc.record() {
        Ok(r) => r,
        Err(e) => return Err(Refusal::new(RejectCode::InvalidRecord, e.to_string(), hash)),
    };
    let json = value.to_json();
    let saved = doc.save();
    let change = NewChange {
        hash: &hash,
        record,
        place: &place,
        kind,
        bytes: &push.change,
        actor: &actor,
        device: user.device_id,
        user_id: &user.user_id,
        claimed_at,
        received_at,
        touched: &touched,
    };
    let projection = ProjectionUpdate {
        status: value.status(),
        category: value.category(),
        value: &json,
        doc: &saved,
    };
    store
        .commit_change(&change, &projection)
        .await
        .map_err(|e| server_error(e, hash))?;
    cache.put(doc);
    Ok(Accepted { hash, received_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = DocCache::new(2);
        for _ in 0..5 {
            cache.put(RecordDoc::empty(RecordId::new()));
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(DocCache::new(0).docs.cap().get(), 1);
    }
}
