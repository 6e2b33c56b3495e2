//! `POST /v1/sync`: one round trip that pushes a phone's changes and pulls others'.
//!
//! Push: cheap checks first and outside any lock — the body decodes, every change parses within
//! the push's inflation budget ([`InflateBudget`]). Each user pushes one request at a time
//! ([`crate::turns`]). A push's records are ingested side by side, each under its record's lock
//! ([`DocCache::lock`]), and their commits join whatever else waits to commit in one group
//! transaction: one fsync for the group. Each change is acknowledged only after it is committed
//! (actor binding, log row and projection row in its own savepoint, at the record version its
//! document was read at), or refused with a machine-readable reason; a bounded sample of a
//! push's refusals is stored for the back-office.
//!
//! Scope is decided before anything about a record is revealed: a record outside the pusher's
//! grants is treated exactly as one that does not exist, so pushing to a known id answers what a
//! random id would.
//!
//! Pull: a page of others' changes within the caller's grants after the phone's cursor, bounded
//! by count and bytes; personal parts only for roles that may read residents' personal data. The
//! work is proportional to the new changes, never to the history or to the number of documents.
//! Every reply carries the user's grants (records outside them leave the phone) and whether the
//! user receives personal parts.
//!
//! Grant growth: the cursor also carries the grant epoch the phone was bootstrapped for. When the
//! user holds grants newer than that, the reply first delivers the records already in the newly
//! granted places as saved documents (snapshots, paged by record id), then the cursor moves to the
//! new epoch.

use std::num::NonZeroUsize;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use linli_sync_core::automerge::Change;
use linli_sync_core::ingest::{
    InflateBudget, Ingested, Pusher, Refusal, ingest, ingest_personal, parse_change,
};
use linli_sync_core::protocol::{
    self, Accepted, Cursor, Part, PulledChange, PulledSnapshot, PushChange, RejectCode, Rejected,
    SyncRequest, SyncResponse,
};
use linli_sync_core::rules;
use linli_sync_core::{
    CodecError, DeviceId, PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind,
};
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use serde_json::Value;

use crate::auth::AuthUser;
use crate::error::{Error, Result};
use crate::model::now_ms;
use crate::state::AppState;
use crate::store::prelude::*;
use crate::store::{
    ActorBinding, Commit, CommitConflict, NewChange, ProjectionUpdate, RecordMeta, RejectionRow,
    SyncStore,
};
use crate::web::live::LiveHub;

/// Changes per reply when the phone asks for 0 (no preference).
pub const DEFAULT_PAGE: u32 = 500;
/// Most snapshot bytes one reply carries (at least one snapshot is always sent).
pub const SNAPSHOT_PAGE_BYTES: usize = protocol::MAX_PAGE_BYTES;
/// Refusals of one push stored one by one; the rest are counted on the last stored row.
pub const REJECTION_SAMPLE: usize = 10;
/// How long refused pushes are kept for the back-office.
pub const REJECTION_RETENTION_MS: i64 = 90 * 24 * 3600 * 1000;
/// Records of one push ingested side by side (their commits join the same groups).
const RECORDS_AT_ONCE: usize = 16;
/// A record's document is saved whole again once this many of its changes sit in the log after
/// its last whole save (each such change is applied again whenever the document is loaded).
const SAVE_WHOLE_AFTER: i64 = 16;
/// Commits retried after losing a race to another writer (another process on the same data).
const COMMIT_RETRIES: usize = 10;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", post(sync))
        .layer(DefaultBodyLimit::max(protocol::MAX_BODY_BYTES))
}

/// A record's documents as committed at `version`.
struct Cached {
    version: i64,
    doc: RecordDoc,
    /// Loaded on first use.
    personal: Option<PersonalDoc>,
}

/// Stripes of the per-record locks: records hashing to one stripe wait for each other.
const LOCK_STRIPES: usize = 512;

/// The hot-document cache and the per-record locks of the accept path.
///
/// A bounded LRU of record documents, keyed by record id: documents not in it are loaded from
/// their saved form in the database, so memory does not grow with the number of records. Every
/// entry remembers the record version it was committed at; one whose version is not the stored
/// one is reloaded.
///
/// A record is ingested by one task at a time ([`DocCache::lock`]): changes to different records
/// are ingested side by side and commit together; changes to one record queue up in order. The
/// lock only saves work: what keeps two writers (tasks or processes) from losing each other's
/// change is the version compared in the commit.
pub struct DocCache {
    docs: std::sync::Mutex<LruCache<RecordId, Cached>>,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    /// Takes served from the cache, and from the store (the metrics' counters, or private ones).
    hits: Counter,
    misses: Counter,
}

/// When this process last had a device's check-in stored (ms), so that a device syncing
/// often costs the store one question a minute, not one per request.
#[derive(Debug)]
pub struct SeenDevices {
    at: std::sync::Mutex<LruCache<DeviceId, i64>>,
}

/// How long a check-in stands before the store is asked again: the store itself writes
/// `last_seen` only when it is a minute old, so asking sooner could change nothing.
const SEEN_FOR_MS: i64 = 60_000;

impl SeenDevices {
    /// Remembers up to `capacity` devices (the least recently seen are forgotten first, and
    /// merely asked about again).
    pub fn new(capacity: usize) -> Self {
        Self {
            at: std::sync::Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("at least one"),
            )),
        }
    }

    fn at(&self) -> std::sync::MutexGuard<'_, LruCache<DeviceId, i64>> {
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the store should hear of this device being seen at `now`.
    fn due(&self, device: DeviceId, now: i64) -> bool {
        self.at()
            .peek(&device)
            .is_none_or(|&at| now - at >= SEEN_FOR_MS || now < at)
    }

    fn stored(&self, device: DeviceId, now: i64) {
        self.at().put(device, now);
    }

    /// Records that this device's check-in was stored at `now`, if the store had to hear of it.
    pub(crate) async fn touch<S: AccountStore>(
        &self,
        store: &S,
        device: DeviceId,
        now: i64,
    ) -> Result<()> {
        if self.due(device, now) {
            store.touch_device(device, now).await?;
            self.stored(device, now);
        }
        Ok(())
    }
}

/// Held while a task ingests and commits a change to a record.
pub(crate) type RecordGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

impl std::fmt::Debug for DocCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let docs = self.docs();
        f.debug_struct("DocCache")
            .field("len", &docs.len())
            .field("cap", &docs.cap())
            .finish()
    }
}

impl DocCache {
    /// A cache of at most `capacity` documents (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            docs: std::sync::Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// The same cache counting its hits and misses on these counters.
    pub(crate) fn counting(mut self, hits: Counter, misses: Counter) -> Self {
        self.hits = hits;
        self.misses = misses;
        self
    }

    fn docs(&self) -> std::sync::MutexGuard<'_, LruCache<RecordId, Cached>> {
        // Held for map operations only, never across an await: a panic cannot leave it torn.
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the record's turn (FIFO among waiters): ingest and commit under this guard.
    pub(crate) async fn lock(&self, id: RecordId) -> RecordGuard<'_> {
        let bytes = id.as_bytes();
        // Random (v4/v7-tail) bytes of the id spread records over the stripes.
        let n = u16::from_le_bytes([bytes[14], bytes[15]]) as usize % self.stripes.len();
        self.stripes[n].lock().await
    }

    /// Takes a record's documents out at `version` (0: the record does not exist yet): from the
    /// cache when it holds that version, else from the store. The caller holds the record's
    /// [`lock`](Self::lock), and puts them back only once they match what is committed, so a
    /// failure (or a cancelled request) between ingest and commit never leaves an uncommitted
    /// state cached.
    async fn take<S: SyncStore>(
        &self,
        store: &S,
        id: RecordId,
        version: i64,
        personal: bool,
    ) -> Result<Cached> {
        let popped = self.docs().pop(&id);
        let hit = popped.as_ref().is_some_and(|c| c.version == version);
        if hit { &self.hits } else { &self.misses }.inc();
        let mut cached = match popped {
            Some(c) if c.version == version => c,
            // Version 0 is a record that did not exist when its facts were read: nothing to
            // load (should it appear meanwhile, the commit's version check refuses this one).
            _ if version == 0 => Cached {
                version,
                doc: RecordDoc::empty(id),
                personal: None,
            },
            _ => Cached {
                version,
                doc: match store.record_doc(id).await? {
                    Some(bytes) => RecordDoc::load(id, &bytes).map_err(|e| {
                        Error::Internal(format!("stored document {id} does not load: {e}"))
                    })?,
                    None => RecordDoc::empty(id),
                },
                personal: None,
            },
        };
        if personal && version > 0 && cached.personal.is_none() {
            cached.personal = Some(match store.personal_doc(id).await? {
                Some(bytes) => PersonalDoc::load(id, &bytes).map_err(|e| {
                    Error::Internal(format!("stored personal part {id} does not load: {e}"))
                })?,
                None => PersonalDoc::empty(id),
            });
        }
        Ok(cached)
    }

    fn put(&self, cached: Cached) {
        self.docs().put(cached.doc.id(), cached);
    }

    /// Documents currently cached.
    pub fn len(&self) -> usize {
        self.docs().len()
    }

    /// Whether no document is cached.
    pub fn is_empty(&self) -> bool {
        self.docs().is_empty()
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
        let _turn = state.turns.enter(&user.user_id).await?;
        push_all(&state, &user, &req.changes, &mut reply).await;
    }

    let limit = match req.max_pull {
        0 => DEFAULT_PAGE,
        n => n.min(protocol::MAX_PAGE),
    };
    let personal = user.role.sees_personal_data();
    let (epoch, cursor) = match bootstrap(&state, &user, &req.cursor, limit, &mut reply).await? {
        Bootstrap::Unfinished(next) => {
            reply.more = true;
            reply.cursor = next;
            return finish(&state, &user, &req, reply).await;
        }
        Bootstrap::Done { epoch, from } => (epoch, from),
    };
    let page = state
        .store
        .pull(
            cursor,
            user.device_id,
            &user.places,
            personal,
            limit,
            protocol::MAX_PAGE_BYTES,
        )
        .await?;
    reply.more = page.full;
    let last = page.rows.last().map(|r| r.seq);
    reply.cursor = Cursor::with_epoch(
        if page.full {
            last.unwrap_or(page.end)
        } else {
            page.end
        },
        epoch,
        None,
    );
    for r in page.rows {
        let record: RecordId = r
            .record_id
            .parse()
            .map_err(|e| Error::Internal(format!("change {}: {e}", r.seq)))?;
        if r.replaces {
            reply.snapshots.push(PulledSnapshot {
                record: *record.as_bytes(),
                part: r.part,
                doc: r.bytes,
                replace: true,
            });
        } else {
            reply.changes.push(PulledChange {
                record: *record.as_bytes(),
                part: r.part,
                change: r.bytes,
                received_at: r.received_at,
                user: r.username,
                device: r.device_id,
            });
        }
    }
    finish(&state, &user, &req, reply).await
}

/// Pushes every change of a request, in order, and stores a sample of the refusals.
async fn push_all(
    state: &AppState,
    user: &AuthUser,
    changes: &[PushChange],
    reply: &mut SyncResponse,
) {
    let received_at = now_ms();
    // Parsing is CPU only and bounded: done for the whole push before any lock or query.
    let mut budget = InflateBudget::per_push();
    let parsed: Vec<std::result::Result<Change, Refusal>> = changes
        .iter()
        .map(|p| parse_change(&p.change, &mut budget))
        .collect();
    // Changes to one record in push order; records side by side, so that their commits share
    // groups. The replies keep the push's order.
    let mut order: Vec<Vec<usize>> = Vec::new();
    let mut run_of: std::collections::HashMap<[u8; 16], usize> = Default::default();
    for (i, push) in changes.iter().enumerate() {
        let run = *run_of.entry(push.record).or_insert_with(|| {
            order.push(Vec::new());
            order.len() - 1
        });
        order[run].push(i);
    }
    let mut parsed: Vec<Option<std::result::Result<Change, Refusal>>> =
        parsed.into_iter().map(Some).collect();
    let runs = order.into_iter().map(|indexes| {
        let run: Vec<_> = indexes
            .into_iter()
            .filter_map(|i| parsed[i].take().map(|p| (i, p)))
            .collect();
        async move {
            let mut outcomes = Vec::with_capacity(run.len());
            for (i, parsed) in run {
                let outcome = match parsed {
                    Ok(change) => {
                        state
                            .sync()
                            .accept(user, &changes[i], change, received_at)
                            .await
                    }
                    Err(refusal) => Err(refusal),
                };
                outcomes.push((i, outcome));
            }
            outcomes
        }
    });
    let mut outcomes: Vec<(usize, std::result::Result<Accepted, Refusal>)> =
        futures_util::stream::iter(runs)
            .buffer_unordered(RECORDS_AT_ONCE)
            .flat_map(futures_util::stream::iter)
            .collect()
            .await;
    outcomes.sort_by_key(|(i, _)| *i);
    let mut refused: Vec<(RecordId, Refusal)> = Vec::new();
    for (i, outcome) in outcomes {
        let push = &changes[i];
        let record = RecordId::from_bytes(push.record);
        match outcome {
            Ok(accepted) => {
                state.metrics.change_accepted();
                reply.accepted.push(accepted);
            }
            Err(refusal) => {
                state.metrics.change_refused(refusal.code);
                reply.rejected.push(Rejected {
                    hash: refusal.hash,
                    record: push.record,
                    code: refusal.code,
                    message: refusal.message.clone(),
                });
                refused.push((record, refusal));
            }
        }
    }
    if refused.is_empty() {
        return;
    }
    let codes: std::collections::BTreeSet<&str> =
        refused.iter().map(|(_, r)| r.code.as_str()).collect();
    tracing::info!(
        user = %user.username,
        refused = refused.len(),
        codes = ?codes,
        "changes rejected"
    );
    let fallback = user.places.first().map(|p| p.as_str());
    let sample = refused.len().min(REJECTION_SAMPLE);
    let rows: Vec<RejectionRow<'_>> = refused[..sample]
        .iter()
        .enumerate()
        .map(|(i, (record, r))| RejectionRow {
            hash: &r.hash,
            record: *record,
            user_id: &user.user_id,
            device: user.device_id,
            code: r.code.as_str(),
            message: &r.message,
            at: received_at,
            place: r.place.as_ref().map(|p| p.as_str()).or(fallback),
            more: if i + 1 == sample {
                (refused.len() - sample) as i64
            } else {
                0
            },
        })
        .collect();
    if let Err(e) = state
        .store
        .record_rejections(&rows, REJECTION_RETENTION_MS)
        .await
    {
        tracing::error!(error = %e, "could not store rejections");
    }
}

/// One change a server-side editor (the back-office) made, accepted through exactly the checks
/// and commit of a phone's push.
pub async fn submit(
    state: &AppState,
    user: &AuthUser,
    push: &PushChange,
) -> std::result::Result<Accepted, Rejected> {
    let refuse = |r: Refusal| Rejected {
        hash: r.hash,
        record: push.record,
        code: r.code,
        message: r.message,
    };
    let outcome = match parse_change(&push.change, &mut InflateBudget::per_push()) {
        Ok(change) => state.sync().accept(user, push, change, now_ms()).await,
        Err(refusal) => Err(refusal),
    };
    match &outcome {
        Ok(_) => state.metrics.change_accepted(),
        Err(refusal) => state.metrics.change_refused(refusal.code),
    }
    outcome.map_err(refuse)
}

/// A record's committed documents, for a server-side editor to make a change on: the shared
/// document and its personal part. `None` when the record does not exist or lies outside the
/// user's grants.
pub async fn load_docs(
    state: &AppState,
    user: &AuthUser,
    record: RecordId,
) -> Result<Option<(RecordDoc, PersonalDoc)>> {
    let cache = &state.docs;
    let _turn = cache.lock(record).await;
    let Some(meta) = state.store.record_meta(record).await? else {
        return Ok(None);
    };
    if !user.can_access(&meta.place) {
        return Ok(None);
    }
    let mut cached = cache.take(&state.store, record, meta.version, true).await?;
    let docs = (
        cached.doc.clone(),
        cached
            .personal
            .clone()
            .unwrap_or_else(|| PersonalDoc::empty(record)),
    );
    cached
        .personal
        .get_or_insert_with(|| PersonalDoc::empty(record));
    cache.put(cached);
    Ok(Some(docs))
}

/// Where a bootstrap stands after this reply.
enum Bootstrap {
    /// Nothing (more) to send: the grant epoch the phone is now bootstrapped for, and the log
    /// position its pull goes on from.
    Done { epoch: i64, from: i64 },
    /// More snapshots wait: the cursor to resume from.
    Unfinished(Cursor),
}

/// Sends snapshots (a page of them) of the records in places granted to the user after the
/// epoch in the phone's cursor. A new phone (empty cursor) gets every record within its grants
/// this way, not by replaying the log change by change: its cursor keeps the log's end as read
/// before the first snapshot, and its pull goes on from there. A change committed after that
/// read may arrive twice (in a later snapshot and in the pull); applying a change a document
/// already holds does nothing. A change committed before it is in every snapshot read later.
async fn bootstrap(
    state: &AppState,
    user: &AuthUser,
    cursor: &Cursor,
    limit: u32,
    reply: &mut SyncResponse,
) -> Result<Bootstrap> {
    let (from, known) = if cursor.is_start() {
        // The log's end before any snapshot is read (see above).
        (state.store.log_end().await?, -1)
    } else if cursor.is_first_bootstrap() {
        (cursor.seq().unwrap_or(0), -1)
    } else {
        (cursor.seq().unwrap_or(0), cursor.grant_epoch().unwrap_or(0))
    };
    // The epoch is read with the grants, by one statement: a grant made after it would be
    // missed for good, one made before it is sent (again) next time.
    let (now_epoch, grants) = state.store.grants_with_epoch(&user.user_id).await?;
    let (new, old): (Vec<_>, Vec<_>) = grants.into_iter().partition(|(_, e)| *e > known);
    let scopes: Vec<PlaceId> = new
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !old.iter().any(|(o, _)| p.is_within(o)))
        .collect();
    if scopes.is_empty() {
        return Ok(Bootstrap::Done {
            epoch: now_epoch.max(known),
            from,
        });
    }
    let after = cursor.resume().map(|r| RecordId::from_bytes(r).to_string());
    let docs = state
        .store
        .snapshots_within(
            &scopes,
            after.as_deref(),
            limit,
            SNAPSHOT_PAGE_BYTES,
            user.role.sees_personal_data(),
        )
        .await?;
    let bytes: usize = docs
        .iter()
        .map(|(_, d, p)| d.len() + p.as_ref().map_or(0, Vec::len))
        .sum();
    let full = docs.len() >= limit as usize || bytes >= SNAPSHOT_PAGE_BYTES;
    let mut last = None;
    for (id, doc, personal) in docs {
        let record: RecordId = id
            .parse()
            .map_err(|e| Error::Internal(format!("record {id}: {e}")))?;
        last = Some(*record.as_bytes());
        reply.snapshots.push(PulledSnapshot {
            record: *record.as_bytes(),
            part: Part::Record,
            doc,
            replace: false,
        });
        if let Some(doc) = personal {
            reply.snapshots.push(PulledSnapshot {
                record: *record.as_bytes(),
                part: Part::Personal,
                doc,
                replace: false,
            });
        }
    }
    match last {
        Some(last) if full && known < 0 => {
            Ok(Bootstrap::Unfinished(Cursor::first_bootstrap(from, last)))
        }
        Some(last) if full => Ok(Bootstrap::Unfinished(Cursor::with_epoch(
            from,
            known,
            Some(last),
        ))),
        _ => Ok(Bootstrap::Done {
            epoch: now_epoch.max(known),
            from,
        }),
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
    reply.grants = user.places.iter().map(|p| p.to_string()).collect();
    reply.personal = user.role.sees_personal_data();
    state
        .seen
        .touch(&state.store, user.device_id, reply.server_time)
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

/// The one answer for a record outside the pusher's grants and for a creation at a place outside
/// them: it names no place, so it tells nothing about records the pusher may not see.
fn out_of_scope(hash: [u8; 32]) -> Refusal {
    Refusal::new(
        RejectCode::OutOfScope,
        "this record is outside the places granted to you",
        hash,
    )
}

fn server_error(e: impl std::fmt::Display, hash: [u8; 32]) -> Refusal {
    tracing::error!(error = %e, "accepting a change failed");
    Refusal::new(
        RejectCode::ServerError,
        "the server could not store this change; it will be sent again",
        hash,
    )
}

/// What a push to a record that does not exist for this user gets: the same whether the record
/// does not exist at all or lies outside the user's grants. A change to the shared document is
/// judged against an empty document (so a creation at a place outside the grants is refused as
/// out of scope, and any other change waits for its dependencies); a change to a personal part
/// waits for its record.
fn as_if_absent(
    user: &AuthUser,
    push: &PushChange,
    change: &Change,
    pusher: &Pusher<'_>,
    hidden: bool,
) -> Refusal {
    let hash = change.hash().0;
    match push.part {
        Part::Personal => Refusal::new(
            RejectCode::MissingDependencies,
            "the record this change belongs to is not on the server yet",
            hash,
        ),
        Part::Record => {
            let record = RecordId::from_bytes(push.record);
            let authorize = |place: &PlaceId, _: RecordKind| {
                if user.can_access(place) {
                    Ok(())
                } else {
                    Err(out_of_scope(hash))
                }
            };
            let mut empty = RecordDoc::empty(record);
            match ingest(&mut empty, change, push.kind, pusher, 0, authorize) {
                // A creation in the user's places whose id another record outside them already
                // has: refused like any other write outside them.
                Ok(_) if hidden => out_of_scope(hash),
                Ok(_) => unreachable!("only hidden records are judged as absent when valid"),
                Err(mut r) => {
                    if r.code == RejectCode::OutOfScope {
                        r.message = out_of_scope(hash).message;
                    }
                    r
                }
            }
        }
    }
}

/// The accept decision over any [`SyncStore`]: what the push handler runs for each change, and
/// what tests step directly against SQLite, PostgreSQL or two processes on one database.
pub(crate) struct SyncService<'a, S> {
    /// The sync log.
    pub store: &'a S,
    /// Hot documents and the records' turns.
    pub docs: &'a DocCache,
    /// Where accepted changes are announced.
    pub live: &'a LiveHub,
}

impl<S: SyncStore> SyncService<'_, S> {
    /// Accepts or refuses one parsed change.
    pub(crate) async fn accept(
        &self,
        user: &AuthUser,
        push: &PushChange,
        change: Change,
        received_at: i64,
    ) -> std::result::Result<Accepted, Refusal> {
        let store = self.store;
        let record = RecordId::from_bytes(push.record);
        let hash = change.hash().0;
        let pusher = Pusher {
            role: user.role,
            user: &user.username,
            received_at,
        };
        // The record's turn first: a second change to it (from this push or another) then reads the
        // version the first one committed.
        let _turn = self.docs.lock(record).await;
        let actor = change.actor_id().to_hex_string();
        let (meta, held, binding) = store
            .accept_facts(record, &hash, &actor)
            .await
            .map_err(|e| server_error(e, hash))?;
        let visible = meta.as_ref().is_some_and(|m| user.can_access(&m.place));
        // A retried push, or a relay of a change the server holds, is answered from the log without
        // touching the document — only for a record within the pusher's grants.
        if visible && let Some(at) = held {
            return Ok(Accepted {
                hash,
                received_at: at,
            });
        }
        // A new change under an actor bound to another device is refused before any document work
        // (the commit checks the binding again, atomically with making it). Asked for every record,
        // visible or not, so the answer says nothing about whether the record exists.
        if let ActorBinding::Device(d) = binding
            && d != user.device_id.to_string()
        {
            let mut r = Refusal::new(
                RejectCode::ForeignActor,
                "this change was made under another device's actor",
                hash,
            );
            r.place = meta.as_ref().map(|m| m.place.clone());
            return Err(r);
        }
        let meta = match meta {
            Some(m) if visible => Some(m),
            Some(m) => {
                let mut r = as_if_absent(user, push, &change, &pusher, true);
                // Stored for the back-office of the record's own place.
                r.place = Some(m.place);
                return Err(r);
            }
            None if push.part == Part::Personal => {
                return Err(as_if_absent(user, push, &change, &pusher, false));
            }
            None => None,
        };

        let mut meta = meta;
        for attempt in 0..COMMIT_RETRIES {
            if attempt > 0 {
                // Another process keeps committing to this record: step aside for a random while
                // (up to 2^attempt ms), so that the racers spread out instead of colliding again.
                let ms = rand::random::<u64>() % (1 << attempt.min(7)) + 1;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            match self
                .accept_at(user, push, &change, &pusher, meta.as_ref())
                .await?
            {
                Some(accepted) => return Ok(accepted),
                // Another process committed to this record meanwhile: read its new version, retry.
                None => {
                    meta = store
                        .record_meta(record)
                        .await
                        .map_err(|e| server_error(e, hash))?;
                }
            }
        }
        Err(server_error(
            Error::Internal(format!("record {record}: the commit kept losing races")),
            hash,
        ))
    }

    /// Ingests and commits one change at the record's version in `meta`; `Ok(None)` when the commit
    /// lost a race and must be retried with a fresh version.
    async fn accept_at(
        &self,
        user: &AuthUser,
        push: &PushChange,
        change: &Change,
        pusher: &Pusher<'_>,
        meta: Option<&RecordMeta>,
    ) -> std::result::Result<Option<Accepted>, Refusal> {
        let (store, cache) = (self.store, self.docs);
        let record = RecordId::from_bytes(push.record);
        let hash = change.hash().0;
        let version = meta.map_or(0, |m| m.version);
        let mut cached = cache
            .take(store, record, version, push.part == Part::Personal)
            .await
            .map_err(|e| server_error(e, hash))?;
        let authorize = |place: &PlaceId, _: RecordKind| {
            if user.can_access(place) {
                Ok(())
            } else {
                Err(out_of_scope(hash))
            }
        };
        let outcome = match (push.part, meta) {
            (Part::Record, _) => ingest(
                &mut cached.doc,
                change,
                push.kind,
                pusher,
                meta.map_or(0, |m| m.bytes as usize),
                authorize,
            ),
            (Part::Personal, Some(m)) => rules::may_write_kind(user.role, m.kind)
                .map_err(|v| {
                    let mut r = Refusal::new(RejectCode::Forbidden, v.to_string(), hash);
                    r.place = Some(m.place.clone());
                    r
                })
                .and_then(|()| {
                    let personal = cached
                        .personal
                        .get_or_insert_with(|| PersonalDoc::empty(record));
                    ingest_personal(personal, change, m.kind, pusher, m.personal_bytes as usize)
                }),
            (Part::Personal, None) => unreachable!("a personal change to an absent record waits"),
        };
        let applied = match outcome {
            Ok(Ingested::Duplicate { hash }) => {
                // The document is unchanged: keep it hot.
                cache.put(cached);
                let at = store
                    .change_received_at(record, &hash)
                    .await
                    .map_err(|e| server_error(e, hash))?;
                return Ok(Some(Accepted {
                    hash,
                    received_at: at.unwrap_or(pusher.received_at),
                }));
            }
            Ok(Ingested::Applied(applied)) => applied,
            Err(refusal) => {
                // A refusal leaves the documents as they were.
                cache.put(cached);
                return Err(refusal);
            }
        };

        // From here on the cached documents hold an uncommitted change: on any failure they are
        // dropped (the next push reloads what is committed).
        let (value, has_conflicts) = match applied.record {
            Some(record) => (*record, applied.has_conflicts),
            // A personal change: the shared document (unchanged) gives the record's place.
            None => (
                cached
                    .doc
                    .record()
                    .map_err(|e| Refusal::new(RejectCode::InvalidRecord, e.to_string(), hash))?,
                false,
            ),
        };
        let place: PlaceId = value
            .place()
            .parse()
            .map_err(|e: linli_sync_core::IdError| {
                Refusal::new(RejectCode::InvalidRecord, e.to_string(), hash)
            })?;
        let kind = value.kind();
        // Saved whole once a tail has grown; otherwise the change extends the tail. A new record
        // is not saved: its document is its first change, which the log holds already, so a
        // save would store the same content twice (BENCHMARKS.md, issue 10).
        let whole = |tail: i64| tail + 1 >= SAVE_WHOLE_AFTER;
        let projection = match push.part {
            Part::Record => ProjectionUpdate::Record {
                status: value.status().map(str::to_owned),
                category: value.category().map(str::to_owned),
                value: value.to_json(),
                doc: meta
                    .is_some_and(|m| whole(m.doc_tail))
                    .then(|| cached.doc.save()),
                has_conflicts,
            },
            Part::Personal => {
                let personal = cached
                    .personal
                    .as_mut()
                    .expect("the personal part was loaded for a personal change");
                ProjectionUpdate::Personal {
                    values: Value::Object(
                        personal
                            .values()
                            .into_iter()
                            .map(|(k, v)| (k, Value::String(v)))
                            .collect(),
                    ),
                    doc: meta
                        .is_none_or(|m| m.personal_bytes == 0 || whole(m.personal_tail))
                        .then(|| personal.save()),
                }
            }
        };
        let change = NewChange {
            hash,
            record,
            part: push.part,
            place: place.clone(),
            kind,
            bytes: change.raw_bytes().to_vec(),
            actor: applied.actor,
            device: user.device_id,
            user_id: user.user_id.clone(),
            claimed_at: applied.claimed_at,
            received_at: pusher.received_at,
            touched: applied.touched,
        };
        let commit = Commit {
            change,
            projection,
            expected_version: version,
        };
        match store.commit(commit).await {
            Ok(Ok(_seq)) => {
                cached.version = version + 1;
                cache.put(cached);
                self.live.record_changed(
                    record.to_string(),
                    place.clone(),
                    kind.as_str(),
                    user.device_id.to_string(),
                );
                Ok(Some(Accepted {
                    hash,
                    received_at: pusher.received_at,
                }))
            }
            Ok(Err(CommitConflict::Version)) => Ok(None),
            Ok(Err(CommitConflict::ForeignActor)) => {
                let mut r = Refusal::new(
                    RejectCode::ForeignActor,
                    "this change was made under another device's actor",
                    hash,
                );
                r.place = Some(place);
                Err(r)
            }
            Err(e) => Err(server_error(e, hash)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_reported_once_a_minute() {
        let seen = SeenDevices::new(2);
        let (a, b, c) = (DeviceId::new(), DeviceId::new(), DeviceId::new());
        assert!(seen.due(a, 1_000));
        seen.stored(a, 1_000);
        assert!(!seen.due(a, 1_000 + SEEN_FOR_MS - 1));
        assert!(seen.due(a, 1_000 + SEEN_FOR_MS));
        // A clock set back is asked about again rather than trusted.
        assert!(seen.due(a, 999));
        // The least recently seen is forgotten first, and merely asked about again.
        seen.stored(b, 2_000);
        seen.stored(c, 3_000);
        assert!(seen.due(a, 4_000));
        assert!(!seen.due(c, 4_000));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DocCache::new(2);
        for _ in 0..5 {
            cache.put(Cached {
                version: 1,
                doc: RecordDoc::empty(RecordId::new()),
                personal: None,
            });
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(DocCache::new(0).docs().cap().get(), 1);
    }
}
