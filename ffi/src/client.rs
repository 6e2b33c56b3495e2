//! [`FieldClient`]: the object apps hold. Blocking `&self` methods (apps call them off the main
//! thread), `Send + Sync`, owned arguments and results, one error type.
//!
//! Every command except [`FieldClient::login`] and [`FieldClient::sync`] works without a server.
//!
//! Two `impl` blocks: the first holds private helpers; the second is the API, exported over UniFFI
//! and used as is by Rust callers (the field CLI and the whole-system tests), so its doc comments
//! are what Kotlin and Swift developers read.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::Change;
use linli_sync_core::capture::{self, Captured};
use linli_sync_core::ingest::{self, ingest};
use linli_sync_core::protocol::{MAX_CHANGES_PER_PUSH, Part, RejectCode};
use linli_sync_core::rules::{self, Role};
use linli_sync_core::{EditContext, PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::ApiError;
use crate::listener::{LiveListener, SyncListener};
use crate::schema::kind_label;
use crate::secrets::{self, SecretStore, SqliteSecrets};
use crate::store::{self, Attribution, Identity, keys};
use crate::sync::{self, Pusher};
use crate::transport::{self, LoginPlace, LoginUser, Transport, TransportOptions};
use crate::types::{
    ChangeState, ConflictValue, ConnectionOptions, FieldConflict, FieldValue, HistoryEntry,
    OutboxItem, OutboxState, PlaceInfo, RecordSummary, RecordView, SyncProgress, SyncReport,
    UserInfo, WhoAmI,
};

/// Most round trips one [`FieldClient::sync`] makes before it reports `more_pending`.
pub const MAX_SYNC_ROUNDS: u32 = 200;
/// A live stream silent for this long is taken as broken (the server sends a keep-alive every
/// 15 s).
const LIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(45);

/// Who a change is attributed to when it is this phone's own and not yet accepted.
pub const ME_UNSYNCED: &str = "me (unsynced)";
/// Who a change is attributed to when it is this phone's own and was refused.
pub const ME_REJECTED: &str = "me (rejected)";

/// A phone's Linli store and its connection to the server: the one object an app holds.
///
/// Create one when the app starts, on a private directory of the app (Android `filesDir`, iOS
/// Application Support), and keep it for the app's lifetime. Every method blocks (SQLite and
/// HTTP): call them from a background thread (Kotlin `Dispatchers.IO`, a Swift `Task` or
/// detached queue), never the main thread. Methods are safe to call from several threads at once;
/// opening several clients on the same directory (threads or processes) is safe too, as every
/// write is one SQLite transaction.
///
/// Everything except `login` and `sync` works offline. Times are milliseconds since the Unix
/// epoch. Errors arrive as `ApiError` (Kotlin `ApiException`).
#[derive(uniffi::Object)]
pub struct FieldClient {
    home: PathBuf,
    /// The server given at construction, used by `login` when it is given none.
    server_url: Option<String>,
    conn: Mutex<Connection>,
    identity: Identity,
    agent: ureq::Agent,
    transport_options: TransportOptions,
    /// Where the tokens live: the app's Keystore/Keychain, or the default SQLite table.
    secrets: Arc<dyn SecretStore>,
    sync_lock: Mutex<()>,
    listener: Mutex<Option<Arc<dyn SyncListener>>>,
    /// Set by `stop_listening`: the open `listen` returns at its next frame.
    live_stop: std::sync::atomic::AtomicBool,
    /// Test hooks (clock skew, crash points): inert unless the `chaos` feature arms them.
    chaos: crate::chaos::Hooks,
}

impl std::fmt::Debug for FieldClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldClient")
            .field("home", &self.home)
            .field("device_id", &self.identity.device_id)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn parse_id(id: &str) -> Result<RecordId, ApiError> {
    Ok(RecordId::from_str(id)?)
}

fn user_of(conn: &Connection) -> Result<Option<LoginUser>, ApiError> {
    Ok(store::kv_get(conn, keys::USER)?.and_then(|j| serde_json::from_str(&j).ok()))
}

/// Runs the server's own accept logic on a new edit before it is kept, so an edit the signed-in
/// user's role may not make (a steward marking a case evaluated, say) is refused at once with the
/// server's reason instead of being refused at the next sync. Signed out, the phone cannot know
/// whose role applies (a shared phone between shifts): the server decides at sync, and a refusal
/// is kept with its reason.
fn precheck_role(
    conn: &Connection,
    logged_in: bool,
    before: &RecordDoc,
    kind: RecordKind,
    captured: &Captured,
    now: i64,
) -> Result<(), ApiError> {
    if !logged_in {
        return Ok(());
    }
    let Some(user) = user_of(conn)? else {
        return Ok(());
    };
    let Ok(role) = user.role.parse::<Role>() else {
        return Ok(());
    };
    let pusher = ingest::Pusher {
        role,
        user: &user.username,
        received_at: now,
    };
    if let Some(change) = &captured.record {
        let bytes = store::stored_bytes(conn, before.id(), Part::Record)?;
        match ingest(&mut before.clone(), change, kind, &pusher, bytes, |_, _| {
            Ok(())
        }) {
            Err(refusal) if refusal.code == RejectCode::Forbidden => {
                return Err(ApiError::Forbidden {
                    reason: refusal.message,
                });
            }
            // Anything else is the server's to judge (validity was checked when the edit was
            // made).
            _ => {}
        }
    }
    if captured.personal.is_some() {
        rules::may_write_kind(role, kind).map_err(|v| ApiError::Forbidden {
            reason: v.to_string(),
        })?;
    }
    Ok(())
}

/// Keeps a capture: saves the shared document and the personal part and queues their changes,
/// record first (the server needs the record before its personal part).
fn keep(
    tx: &rusqlite::Transaction<'_>,
    doc: &mut RecordDoc,
    personal: &mut PersonalDoc,
    kind: RecordKind,
    captured: &Captured,
    now: i64,
    chaos: &crate::chaos::Hooks,
) -> Result<(), ApiError> {
    store::save_doc(tx, doc, now)?;
    chaos.crash_at(crate::chaos::CrashPoint::EditBeforeOutbox)?;
    if let Some(change) = &captured.record {
        store::push_outbox(tx, doc.id(), kind, Part::Record, change, now)?;
    }
    if let Some(change) = &captured.personal {
        store::save_personal(tx, personal)?;
        store::push_outbox(tx, doc.id(), kind, Part::Personal, change, now)?;
    }
    Ok(())
}

impl FieldClient {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back; the connection is sound.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device clock, ms since the epoch (plus the chaos skew, zero outside the harness).
    fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.chaos.skew_ms())
    }

    /// Runs `f` on the store's connection.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        f(&mut self.lock())
    }

    /// The edit context: this install's actor, the last signed-in user, the device clock.
    fn context(&self, conn: &Connection) -> Result<EditContext, ApiError> {
        let user = match user_of(conn)? {
            Some(u) => u.username,
            None => format!("device-{}", &self.identity.device_id[..8]),
        };
        let offset: i64 = store::kv_get(conn, keys::CLOCK_OFFSET)?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(EditContext {
            actor: self.identity.actor.clone(),
            user,
            now_ms: self.now_ms().saturating_add(offset),
        })
    }

    /// Whether a login (an access token) is stored.
    fn logged_in(&self) -> Result<bool, ApiError> {
        Ok(self
            .secrets
            .get(secrets::keys::ACCESS_TOKEN.into())?
            .is_some())
    }

    /// Stores the tokens, user and clock of a login or refresh reply: the tokens through the
    /// secret store, the rest in the phone's database.
    fn keep_login(
        &self,
        reply: &transport::LoginResponse,
        base: Option<&str>,
    ) -> Result<(), ApiError> {
        self.secrets.set(
            secrets::keys::ACCESS_TOKEN.into(),
            reply.access_token.clone(),
        )?;
        match &reply.refresh_token {
            Some(r) => self
                .secrets
                .set(secrets::keys::REFRESH_TOKEN.into(), r.clone())?,
            None => self.secrets.delete(secrets::keys::REFRESH_TOKEN.into())?,
        }
        let mut conn = self.lock();
        let tx = store::immediate(&mut conn)?;
        if let Some(base) = base {
            let prev_user = user_of(&tx)?.map(|u| u.username);
            let prev_url = store::kv_get(&tx, keys::SERVER_URL)?;
            if prev_user.as_deref() != Some(reply.user.username.as_str())
                || prev_url.as_deref() != Some(base)
            {
                // Other scopes or another server: the old cursor means nothing there.
                store::kv_delete(&tx, keys::CURSOR)?;
            }
            store::kv_set(&tx, keys::SERVER_URL, base)?;
        }
        let expires = match &reply.expires_at {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        store::kv_set(&tx, keys::TOKEN_EXPIRES_AT, &expires)?;
        let user_json = serde_json::to_string(&reply.user)
            .map_err(|_| ApiError::storage("the user could not be stored"))?;
        store::kv_set(&tx, keys::USER, &user_json)?;
        if let Some(server) = reply.server_time {
            store::kv_set(
                &tx,
                keys::CLOCK_OFFSET,
                &server.saturating_sub(self.now_ms()).to_string(),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the stored login (tokens), keeping records, changes and the user's name.
    fn forget_login(&self) -> Result<(), ApiError> {
        self.secrets.delete(secrets::keys::ACCESS_TOKEN.into())?;
        self.secrets.delete(secrets::keys::REFRESH_TOKEN.into())?;
        self.with_conn(|c| store::kv_delete(c, keys::TOKEN_EXPIRES_AT))
    }

    /// An admin revoked this device: tells the app, then erases every record, change, token
    /// and identity of this phone, and returns the error to report.
    fn erase_revoked(&self) -> ApiError {
        let unsent = self
            .with_conn(|c| {
                Ok(store::count_outbox(c, "pending")? + store::count_outbox(c, "rejected")?)
            })
            .unwrap_or(0);
        log::warn!(
            "this device was revoked by an admin: erasing its store ({unsent} unsent changes)"
        );
        self.notify(|l| l.on_device_revoked(unsent));
        let erased = self
            .secrets
            .delete(secrets::keys::ACCESS_TOKEN.into())
            .and_then(|()| self.secrets.delete(secrets::keys::REFRESH_TOKEN.into()))
            .map_err(ApiError::from)
            .and_then(|()| self.with_conn(store::erase_everything));
        if let Err(e) = erased {
            log::error!("erasing the revoked device's store failed: {e}");
            return e;
        }
        ApiError::DeviceRevoked {
            unsent_changes: unsent,
        }
    }

    /// Passes an error through, erasing the store first when it says this device was revoked.
    fn checked<T>(&self, result: Result<T, ApiError>) -> Result<T, ApiError> {
        match result {
            Err(ApiError::DeviceRevoked { .. }) => Err(self.erase_revoked()),
            other => other,
        }
    }

    /// Trades the stored refresh token for new tokens (the access token expired while the phone
    /// was offline, or was refused). When the server refuses the refresh, the stored tokens are
    /// forgotten and the user must log in again; records and unsent changes stay either way.
    fn refresh_login(&self, transport: &Transport<'_>) -> Result<String, ApiError> {
        let refresh = self.secrets.get(secrets::keys::REFRESH_TOKEN.into())?;
        let Some(refresh) = refresh else {
            return Err(ApiError::Unauthorized {
                reason: "the login has expired: log in again (your changes stay on this phone)"
                    .into(),
            });
        };
        match self.checked(transport.refresh(&refresh, &self.identity.device_id)) {
            Ok(reply) => {
                log::info!("the access token was refreshed");
                self.keep_login(&reply, None)?;
                Ok(reply.access_token)
            }
            Err(ApiError::Unauthorized { .. }) => {
                log::warn!("the server refused the refresh token: the user must log in again");
                self.forget_login()?;
                let waiting = self.with_conn(|c| store::count_outbox(c, "pending"))?;
                Err(ApiError::Unauthorized {
                    reason: format!(
                        "the login has expired or was revoked: log in again; the {waiting} \
                         changes waiting stay on this phone and are sent after the login"
                    ),
                })
            }
            Err(other) => Err(other),
        }
    }

    /// One edit = one immediate transaction: load both parts, change, save, outbox rows.
    fn edit(
        &self,
        id: &str,
        f: impl FnOnce(
            &mut RecordDoc,
            &mut PersonalDoc,
            &EditContext,
        ) -> Result<Captured, linli_sync_core::RecordError>,
    ) -> Result<(), ApiError> {
        let id = parse_id(id)?;
        let logged_in = self.logged_in()?;
        let mut conn = self.lock();
        let tx = store::immediate(&mut conn)?;
        let mut doc = store::load_doc(&tx, id)?.ok_or_else(|| not_found(id))?;
        let mut personal = store::load_personal(&tx, id)?;
        let kind = doc.kind()?;
        let ctx = self.context(&tx)?;
        let before = doc.clone();
        let captured = f(&mut doc, &mut personal, &ctx)?;
        precheck_role(&tx, logged_in, &before, kind, &captured, ctx.now_ms)?;
        let now = self.now_ms();
        keep(
            &tx,
            &mut doc,
            &mut personal,
            kind,
            &captured,
            now,
            &self.chaos,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Hands `f` the registered listener, if any. A listener that fails (a foreign exception
    /// arrives here as a panic) does not abort the sync: what it reports is already stored.
    fn notify(&self, f: impl FnOnce(&dyn SyncListener)) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(listener) = listener {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(listener.as_ref())));
        }
    }
}

#[uniffi::export]
impl FieldClient {
    /// Opens the phone's store in `home_dir` (created if missing; the app's private files
    /// directory). `server_url` (e.g. `https://linli.example.gov.cn`) is the server `login` uses
    /// when it is given none; `connection` adds CA certificates of an intranet's own CA (or, for
    /// development only, allows plain HTTP to other hosts); `secrets` is where the login is kept
    /// (pass one backed by the Android Keystore or iOS Keychain; by default a table of the
    /// phone's database). Works offline: nothing is sent until `login`.
    ///
    /// Throws `InvalidInput` (field `server_url` or `extra_ca_certs_pem`) for a malformed URL or
    /// certificate, and `Storage` when the store cannot be opened.
    #[uniffi::constructor(default(server_url = None, connection = None, secrets = None))]
    pub fn new(
        home_dir: String,
        server_url: Option<String>,
        connection: Option<ConnectionOptions>,
        secrets: Option<Arc<dyn SecretStore>>,
    ) -> Result<Self, ApiError> {
        let connection = connection.unwrap_or_default();
        let transport_options = TransportOptions {
            extra_ca_certs_pem: connection.extra_ca_certs_pem,
            allow_insecure_http: connection.allow_insecure_http,
        };
        let server_url = server_url
            .filter(|u| !u.trim().is_empty())
            .map(|u| transport::normalize_url(&u, transport_options.allow_insecure_http))
            .transpose()?;
        let home = PathBuf::from(home_dir);
        let (conn, identity) = store::open(&home)?;
        let secrets: Arc<dyn SecretStore> = match secrets {
            Some(s) => s,
            None => Arc::new(SqliteSecrets::open(&home.join(store::DB_FILE))?),
        };
        // Tokens that earlier versions kept in the database move to the secret store.
        let mut moved = false;
        for key in keys::LEGACY_TOKENS {
            if let Some(value) = store::kv_get(&conn, key)? {
                secrets.set(key.to_string(), value)?;
                store::kv_delete(&conn, key)?;
                moved = true;
            }
        }
        if moved {
            store::checkpoint(&conn)?;
        }
        let agent = transport::agent(&transport_options)?;
        Ok(Self {
            home,
            server_url,
            conn: Mutex::new(conn),
            identity,
            agent,
            transport_options,
            secrets,
            sync_lock: Mutex::new(()),
            live_stop: Default::default(),
            listener: Mutex::new(None),
            chaos: crate::chaos::Hooks::default(),
        })
    }

    /// Logs in and keeps the login for later syncs; returns the user with their role and granted
    /// places. Needs the server: `server_url` when given, else the one given at construction,
    /// else the one last logged in to.
    ///
    /// Throws `Unauthorized` for a wrong user name or password, `Offline` when the server cannot
    /// be reached, `Tls` when its certificate is refused, `DeviceRevoked` (after erasing this
    /// phone) when an admin revoked this device, and `Conflict` when another user's changes are
    /// still unsent on this phone (that user must sync them, or discard refused ones, first). A
    /// new user or server starts pulling from the beginning.
    #[uniffi::method(default(server_url = None))]
    pub fn login(
        &self,
        username: String,
        password: String,
        server_url: Option<String>,
    ) -> Result<UserInfo, ApiError> {
        let url = match server_url.filter(|u| !u.trim().is_empty()) {
            Some(url) => url,
            None => match &self.server_url {
                Some(url) => url.clone(),
                None => self
                    .with_conn(|c| store::kv_get(c, keys::SERVER_URL))?
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "server_url",
                            "no server given: pass one to the constructor or to login",
                        )
                    })?,
            },
        };
        let base = transport::normalize_url(&url, self.transport_options.allow_insecure_http)?;
        let username = username.trim().to_string();
        if username.is_empty() {
            return Err(ApiError::invalid("username", "is required"));
        }
        {
            let conn = self.lock();
            if let Some(prev) = user_of(&conn)? {
                let unsent = store::count_outbox(&conn, "pending")?
                    + store::count_outbox(&conn, "rejected")?;
                if prev.username != username && unsent > 0 {
                    return Err(ApiError::Conflict {
                        reason: format!(
                            "{unsent} changes made under another user are still on this phone: \
                             that user must sync them (or discard refused ones) first"
                        ),
                    });
                }
            }
        }
        let reply = self.checked(Transport::new(&self.agent, &base).login(
            &username,
            &password,
            &self.identity.device_id,
        ));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                log::warn!("login failed: {}", e.code());
                return Err(e);
            }
        };
        UserInfo::try_from(reply.user.clone())?;
        self.keep_login(&reply, Some(&base))?;
        log::info!("logged in");
        UserInfo::try_from(reply.user)
    }

    /// Forgets the login. Records, unsent changes and the device identity stay on the phone; the
    /// same user can log in again and sync them. Works offline.
    pub fn logout(&self) -> Result<(), ApiError> {
        self.forget_login()
    }

    /// Who this phone is and who is signed in: the device id, the user with their role and
    /// granted places (kept after `logout` until another user logs in), whether a login is stored,
    /// and how many changes are waiting or refused. Works offline.
    pub fn whoami(&self) -> Result<WhoAmI, ApiError> {
        let logged_in = self.logged_in()?;
        let conn = self.lock();
        Ok(WhoAmI {
            device_id: self.identity.device_id.clone(),
            actor_id: self.identity.actor.to_hex_string(),
            server_url: store::kv_get(&conn, keys::SERVER_URL)?,
            logged_in,
            user: user_of(&conn)?.map(UserInfo::try_from).transpose()?,
            token_expires_at: store::kv_get(&conn, keys::TOKEN_EXPIRES_AT)?
                .filter(|s| !s.is_empty() && logged_in),
            pending_changes: store::count_outbox(&conn, "pending")?,
            rejected_changes: store::count_outbox(&conn, "rejected")?,
            last_sync_at: store::kv_get(&conn, keys::LAST_SYNC_AT)?.and_then(|s| s.parse().ok()),
        })
    }

    /// Creates a record of `kind` (`case`, `bus`, `contact` or `volunteer`; see `record_kinds`)
    /// at `place` (a place id such as `hz/baiyang/haitian/haitiancheng`) with its first fields,
    /// as one change, and returns the new record's id. Works offline; the record is sent at the
    /// next `sync`.
    ///
    /// Throws `InvalidInput` (with the field at fault) for an unknown kind or field or a value
    /// that breaks its rule, and `Forbidden` when a user is signed in and `place` lies outside
    /// their granted places.
    pub fn create(
        &self,
        kind: crate::types::RecordKind,
        place: String,
        fields: Vec<FieldValue>,
    ) -> Result<String, ApiError> {
        let kind: RecordKind = kind.into();
        let place: PlaceId = place.trim().parse()?;
        let fields = pairs(fields);
        let logged_in = self.logged_in()?;
        let mut conn = self.lock();
        if let Some(user) = user_of(&conn)? {
            let granted: Vec<PlaceId> = user
                .places
                .iter()
                .filter_map(|p| p.id.parse().ok())
                .collect();
            if !granted.is_empty() && !granted.iter().any(|g| place.is_within(g)) {
                return Err(ApiError::Forbidden {
                    reason: format!("{place} is outside the places granted to you"),
                });
            }
        }
        let tx = store::immediate(&mut conn)?;
        let ctx = self.context(&tx)?;
        let id = RecordId::new();
        let (mut doc, mut personal, captured) = capture::create(id, kind, &place, &ctx, &fields)?;
        precheck_role(
            &tx,
            logged_in,
            &RecordDoc::empty(id),
            kind,
            &captured,
            ctx.now_ms,
        )?;
        let now = self.now_ms();
        keep(
            &tx,
            &mut doc,
            &mut personal,
            kind,
            &captured,
            now,
            &self.chaos,
        )?;
        tx.commit()?;
        Ok(id.to_string())
    }

    /// Sets fields of a record, as one change (an empty value clears an optional field; lists
    /// are comma-separated). Where someone else set the same field while apart, both values are
    /// kept and shown as a conflict by `get`. Works offline.
    ///
    /// Throws `NotFound` for an unknown record and `InvalidInput` (with the field) for a bad
    /// value or a field that cannot be set (tallies are changed with `tally`).
    pub fn set(&self, id: String, fields: Vec<FieldValue>) -> Result<(), ApiError> {
        if fields.is_empty() {
            return Err(ApiError::invalid("fields", "give at least one field=value"));
        }
        let fields = pairs(fields);
        self.edit(&id, |doc, personal, ctx| {
            capture::set_fields(doc, personal, ctx, &fields)
        })
    }

    /// Adds `n` (may be negative, to correct a miscount) to a tally field such as a bus
    /// session's `leaflets`. Tallies made on several phones add up. Works offline.
    pub fn tally(&self, id: String, field: String, n: i64) -> Result<(), ApiError> {
        self.edit(&id, |doc, _, ctx| {
            Ok(Captured {
                record: Some(doc.tally(ctx, field.trim(), n)?),
                personal: None,
            })
        })
    }

    /// Appends a dated note to the record's notes. Notes from several phones are all kept.
    /// Works offline.
    pub fn note(&self, id: String, text: String) -> Result<(), ApiError> {
        self.edit(&id, |doc, _, ctx| {
            Ok(Captured {
                record: Some(doc.add_note(ctx, &text)?),
                personal: None,
            })
        })
    }

    /// Every record on this phone, most recently changed first: one summary line each (cheap:
    /// no document is loaded). Works offline.
    pub fn list(&self) -> Result<Vec<RecordSummary>, ApiError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.record_id, d.kind, d.place, d.status, d.title, d.updated_at,
                    (SELECT COUNT(*) FROM outbox o WHERE o.record_id = d.record_id),
                    (SELECT COUNT(*) FROM outbox o
                      WHERE o.record_id = d.record_id AND o.state = 'rejected')
             FROM documents d ORDER BY d.updated_at DESC, d.record_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            Ok(RecordSummary {
                id: r.get(0)?,
                kind: kind.parse::<crate::types::RecordKind>().ok(),
                place: r.get(2)?,
                status: r.get(3)?,
                title: r.get(4)?,
                updated_at: r.get(5)?,
                pending_changes: r.get(6)?,
                rejected_changes: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One record in full: its merged value (`value_json`), the fields people set differently
    /// while apart (`conflicts`, every value with who set it), and its history of changes.
    /// Works offline. Throws `NotFound` for a record not on this phone.
    pub fn get(&self, id: String) -> Result<RecordView, ApiError> {
        let id = parse_id(&id)?;
        let conn = self.lock();
        let mut doc = store::load_doc(&conn, id)?.ok_or_else(|| not_found(id))?;
        let mut personal = store::load_personal(&conn, id)?;
        let record = doc.record()?;
        let kind = record.kind();
        let me = &self.identity.device_id;
        let who = |hash_hex: &str| -> Result<(String, String, Option<i64>, ChangeState), ApiError> {
            let attribution = match store::from_hex(hash_hex) {
                Some(h) if h.len() == 32 => store::attribution(&conn, &h)?,
                _ => Attribution::Unknown,
            };
            Ok(match attribution {
                Attribution::Confirmed {
                    user,
                    device,
                    received_at,
                } => (user, device, Some(received_at), ChangeState::Synced),
                Attribution::Own { rejected: false } => {
                    (ME_UNSYNCED.into(), me.clone(), None, ChangeState::Pending)
                }
                Attribution::Own { rejected: true } => {
                    (ME_REJECTED.into(), me.clone(), None, ChangeState::Rejected)
                }
                Attribution::Unknown => {
                    ("unknown".into(), String::new(), None, ChangeState::Unknown)
                }
            })
        };
        // Where this phone holds residents' full details (captured here, or received by a role
        // that may read them), they replace the masked form and its conflicts.
        let personal_conflicts = personal.conflicts(kind);
        let mut all_conflicts = doc.conflicts();
        all_conflicts.retain(|c| !personal_conflicts.iter().any(|p| p.field == c.field));
        all_conflicts.extend(personal_conflicts);
        let mut conflicts = Vec::new();
        for c in all_conflicts {
            let mut values = Vec::with_capacity(c.values.len());
            for v in c.values {
                let (user, device, received_at, _) = who(&v.change)?;
                values.push(ConflictValue {
                    value_json: v.value.to_string(),
                    user,
                    device,
                    change: v.change,
                    claimed_at: v.claimed_at,
                    received_at,
                });
            }
            conflicts.push(FieldConflict {
                field: c.field,
                label: c.label,
                winner_json: c.winner.to_string(),
                values,
            });
        }
        let mut history = Vec::new();
        let mut changes = doc.history();
        changes.extend(personal.history());
        changes.sort_by_key(|h| h.claimed_at);
        for h in changes {
            let (user, device, received_at, state) = who(&h.hash)?;
            history.push(HistoryEntry {
                hash: h.hash,
                user,
                device,
                claimed_at: h.claimed_at,
                received_at,
                message: h.message,
                touched: h.touched,
                state,
            });
        }
        let pending_changes: u32 = conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE record_id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )?;
        Ok(RecordView {
            id: id.to_string(),
            kind: record.kind().into(),
            kind_label: kind_label(record.kind().as_str()),
            place: record.place().to_string(),
            status: record.status().map(String::from),
            title: record.title(),
            value_json: {
                let mut value = record.to_json();
                if let serde_json::Value::Object(map) = &mut value {
                    for (field, v) in personal.values() {
                        map.insert(field, serde_json::Value::String(v));
                    }
                }
                value.to_string()
            },
            conflicts,
            history,
            pending_changes,
        })
    }

    /// The outbox: this phone's own changes waiting to be sent (`state` `pending`) and those the
    /// server refused (`rejected`, with the server's reason), oldest first. Works offline.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>, ApiError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, record_id, kind, hash, change, created_at, state, reject_code,
                    reject_message
             FROM outbox ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(3)?;
            let change: Vec<u8> = r.get(4)?;
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                hash,
                change,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        let damaged = || ApiError::storage("an outbox entry is damaged");
        let mut out = Vec::new();
        for row in rows {
            let (id, record_id, kind, hash, change, created_at, state, code, message) = row?;
            out.push(OutboxItem {
                id,
                record_id,
                kind: kind.parse().map_err(|_| damaged())?,
                hash: store::to_hex(&hash),
                description: Change::from_bytes(change)
                    .ok()
                    .and_then(|c| c.message().map(String::from)),
                created_at,
                state: state.parse::<OutboxState>().map_err(|_| damaged())?,
                reject_code: code.and_then(|c| c.parse().ok()),
                reject_message: message,
            });
        }
        Ok(out)
    }

    /// Discards a change the server refused. The change, and every unsent change on the same
    /// record that builds on it, is removed from the outbox and from the record on this phone
    /// (the record is rebuilt without them; a refused creation removes the record). Returns how
    /// many outbox entries were removed. Works offline.
    ///
    /// Throws `NotFound` for an unknown entry and `Conflict` for a change that is still pending
    /// (only refused changes can be discarded).
    pub fn discard(&self, outbox_id: i64) -> Result<u32, ApiError> {
        let mut conn = self.lock();
        let tx = store::immediate(&mut conn)?;
        let row: Option<(String, Vec<u8>, String, String)> = tx
            .query_row(
                "SELECT record_id, hash, state, part FROM outbox WHERE id = ?1",
                [outbox_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (record, hash, state, part) = row.ok_or_else(|| ApiError::NotFound {
            what: format!("outbox entry {outbox_id}"),
        })?;
        if state != "rejected" {
            return Err(ApiError::Conflict {
                reason: format!(
                    "outbox entry {outbox_id} is waiting to be sent, not refused: only refused changes can be discarded"
                ),
            });
        }
        let id = parse_id(&record)?;
        let part: Part = part
            .parse()
            .map_err(|_| ApiError::storage("an outbox entry is damaged"))?;
        let changes = match part {
            Part::Record => store::load_doc(&tx, id)?.map(|mut d| d.changes()),
            Part::Personal => Some(store::load_personal(&tx, id)?.changes()),
        };
        let mut removed_hashes: Vec<[u8; 32]> = Vec::new();
        if let Some(changes) = changes {
            let mut dropped = std::collections::HashSet::new();
            dropped.insert(hash.clone());
            let mut keep = Vec::new();
            for c in changes {
                let h = c.hash();
                if dropped.contains(&h.0[..]) || c.deps().iter().any(|d| dropped.contains(&d.0[..]))
                {
                    dropped.insert(h.0.to_vec());
                    removed_hashes.push(h.0);
                } else {
                    keep.push(c);
                }
            }
            match part {
                Part::Record if keep.is_empty() => {
                    tx.execute(
                        "DELETE FROM documents WHERE record_id = ?1",
                        [id.to_string()],
                    )?;
                    // The personal part of a record that never was goes with it.
                    tx.execute(
                        "DELETE FROM outbox WHERE record_id = ?1 AND part = 'personal'",
                        [id.to_string()],
                    )?;
                }
                Part::Record => {
                    let mut rebuilt = RecordDoc::empty(id);
                    rebuilt.apply_changes(keep)?;
                    store::save_doc(&tx, &mut rebuilt, self.now_ms())?;
                }
                Part::Personal => {
                    let mut rebuilt = PersonalDoc::empty(id);
                    rebuilt.apply_changes(keep)?;
                    store::save_personal(&tx, &mut rebuilt)?;
                }
            }
        }
        let mut removed = tx.execute("DELETE FROM outbox WHERE id = ?1", [outbox_id])? as u32;
        for h in &removed_hashes {
            if h[..] != hash[..] {
                removed += tx.execute(
                    "DELETE FROM outbox WHERE hash = ?1 AND record_id = ?2",
                    params![&h[..], record],
                )? as u32;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Syncs with the server: sends this phone's pending changes and receives everyone else's
    /// that the user may see, in round trips of at most `MAX_CHANGES_PER_PUSH` changes, each
    /// reply applied in one transaction, until nothing is left (at most [`MAX_SYNC_ROUNDS`]
    /// rounds: then the report says `more_pending`; sync again). Changes the server refused are
    /// kept in the outbox and listed in the report with their reasons. Only one sync runs at a
    /// time per client; a registered `SyncListener` hears each round. Needs the server.
    ///
    /// Throws `Unauthorized` when no login is stored or the server no longer accepts it (log in
    /// again), `Offline` when the server cannot be reached (everything stays on the phone; try
    /// later) and `Server` for an error reply.
    pub fn sync(&self) -> Result<SyncReport, ApiError> {
        let _one_sync_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let token = self.secrets.get(secrets::keys::ACCESS_TOKEN.into())?;
        let (base, mut token, me) = {
            let conn = self.lock();
            let base = store::kv_get(&conn, keys::SERVER_URL)?;
            let user = user_of(&conn)?;
            match (base, token, user) {
                (Some(b), Some(t), Some(u)) => (
                    b,
                    t,
                    Pusher {
                        user: u.username,
                        device: self.identity.device_id.clone(),
                    },
                ),
                _ => return Err(ApiError::not_logged_in()),
            }
        };
        let transport = Transport::new(&self.agent, &base);
        let mut report = SyncReport::default();
        let mut after = 0i64;
        let mut refreshed = false;
        loop {
            let (cursor, batch) = self.with_conn(|c| {
                Ok((
                    store::cursor(c)?,
                    store::pending_batch(c, after, MAX_CHANGES_PER_PUSH)?,
                ))
            })?;
            let request = sync::request(cursor.clone(), &batch);
            // An access token that expired (the phone was offline past its life) is refreshed
            // once and the same round sent again; the outbox is untouched until a reply is
            // applied, so nothing is lost if the refresh fails too.
            let reply = match self.checked(transport.sync(&token, request.encode())) {
                Err(ApiError::Unauthorized { .. }) if !refreshed => {
                    refreshed = true;
                    token = self.refresh_login(&transport)?;
                    self.checked(transport.sync(&token, request.encode()))
                }
                other => other,
            };
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("sync failed after {} rounds: {e}", report.rounds);
                    return Err(e);
                }
            };
            self.chaos
                .crash_at(crate::chaos::CrashPoint::SyncBeforeApply)?;
            report.rounds += 1;
            report.pushed += batch.len() as u32;
            if let Some(last) = batch.last() {
                after = last.id;
            }
            let applied = self.with_conn(|c| {
                let applied = sync::apply_response(
                    c,
                    &cursor,
                    &reply,
                    &me,
                    &self.identity.actor,
                    self.now_ms(),
                )?;
                store::checkpoint(c)?;
                Ok(applied)
            })?;
            report.kept_outside_grants = applied.kept_outside_grants.clone();
            report.accepted += applied.accepted;
            report.pulled += applied.pulled;
            report.skipped += applied.skipped;
            for r in &applied.rejected {
                log::info!("the server refused a change: {}", r.code);
            }
            report.rejected.extend(applied.rejected);
            let waiting = self.with_conn(|c| store::has_pending_after(c, after))?;
            report.more_pending = reply.more || waiting;
            let done = !report.more_pending || report.rounds >= MAX_SYNC_ROUNDS;
            if !applied.records.is_empty() {
                self.notify(|l| l.on_new_data(applied.records));
            }
            self.notify(|l| l.on_progress(SyncProgress::from(&report).done(done)));
            if done {
                break;
            }
        }
        Ok(report)
    }

    /// The home directory this client was opened on.
    pub fn home_dir(&self) -> String {
        self.home.to_string_lossy().into_owned()
    }

    /// Registers the listener that hears sync progress and the arrival of records changed by
    /// others (or removes it, with `null`/`nil`). It is called on the thread that runs `sync`,
    /// so post to the main thread before touching the UI.
    pub fn set_sync_listener(&self, listener: Option<Arc<dyn SyncListener>>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
    }

    /// Listens for the server's word that records in this user's places changed on another
    /// device, so the app syncs when told rather than polling. Blocks: call it on a background
    /// thread, and call `sync` (on another thread) whenever `listener.on_changes` is called.
    /// The first call comes as soon as the stream is open (changes made before it were not
    /// heard: sync once then).
    ///
    /// Returns normally when the server ends the stream (the access token expired: call again,
    /// the login is refreshed) or after `stop_listening`. Throws `Offline` when the connection
    /// cannot be made or breaks (wait, then call again), `Unauthorized` when the login no longer
    /// holds, and `DeviceRevoked` (after erasing this phone's data) when an admin revoked it.
    pub fn listen(&self, listener: Arc<dyn LiveListener>) -> Result<(), ApiError> {
        use std::sync::atomic::Ordering;
        self.live_stop.store(false, Ordering::SeqCst);
        let token = self.secrets.get(secrets::keys::ACCESS_TOKEN.into())?;
        let (base, mut token) = {
            let conn = self.lock();
            match (store::kv_get(&conn, keys::SERVER_URL)?, token) {
                (Some(b), Some(t)) => (b, t),
                _ => return Err(ApiError::not_logged_in()),
            }
        };
        let transport = Transport::new(&self.agent, &base);
        let mut refreshed = false;
        loop {
            let mut ended = None;
            let outcome = transport.live(&token, LIVE_IDLE, |frame| {
                if self.live_stop.load(Ordering::SeqCst) {
                    return false;
                }
                match frame {
                    transport::LiveFrame::Alive => {}
                    transport::LiveFrame::Event { name, data } => match name.as_str() {
                        "hello" => listener.on_changes(Vec::new()),
                        "changes" => {
                            let ids = serde_json::from_str::<serde_json::Value>(&data)
                                .ok()
                                .and_then(|v| {
                                    v["records"].as_array().map(|a| {
                                        a.iter()
                                            .filter_map(|id| id.as_str().map(str::to_owned))
                                            .collect()
                                    })
                                })
                                .unwrap_or_default();
                            listener.on_changes(ids);
                        }
                        "ended" => {
                            ended = serde_json::from_str::<serde_json::Value>(&data)
                                .ok()
                                .and_then(|v| v["reason"].as_str().map(str::to_owned));
                            return false;
                        }
                        _ => {}
                    },
                }
                true
            });
            match self.checked(outcome) {
                Err(ApiError::Unauthorized { .. }) if !refreshed => {
                    refreshed = true;
                    token = self.refresh_login(&transport)?;
                    continue;
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            return match ended.as_deref() {
                // The next call finds out what happened through the server's answer.
                Some("device_revoked") | Some("unauthorized") => {
                    match self.checked(transport.live(&token, LIVE_IDLE, |_| false)) {
                        Err(e) => Err(e),
                        Ok(()) => Ok(()),
                    }
                }
                _ => Ok(()),
            };
        }
    }

    /// Makes an open `listen` return (within the server's keep-alive interval, 15 s).
    pub fn stop_listening(&self) {
        self.live_stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Test hooks for the chaos harness (the `chaos` feature; never in apps).
#[cfg(feature = "chaos")]
impl FieldClient {
    /// Sets the device clock `ms` away from the true time (a phone whose clock is wrong, or was
    /// just changed).
    pub fn chaos_set_clock_skew(&self, ms: i64) {
        self.chaos.set_skew_ms(ms);
    }

    /// Arms a one-shot crash point (or disarms, with `None`): the next call that reaches it fails
    /// there, and the caller then drops this client and opens the store again.
    pub fn chaos_arm_crash(&self, point: Option<crate::chaos::CrashPoint>) {
        self.chaos.arm(point);
    }
}

fn pairs(fields: Vec<FieldValue>) -> Vec<(String, String)> {
    fields.into_iter().map(|f| (f.name, f.value)).collect()
}

fn not_found(id: RecordId) -> ApiError {
    ApiError::NotFound {
        what: format!("record {id}"),
    }
}

impl From<LoginPlace> for PlaceInfo {
    fn from(p: LoginPlace) -> Self {
        Self {
            id: p.id,
            name: p.name,
        }
    }
}

impl TryFrom<LoginUser> for UserInfo {
    type Error = ApiError;
    fn try_from(u: LoginUser) -> Result<Self, ApiError> {
        let role = u.role.parse().map_err(|_| ApiError::Server {
            status: 0,
            reason: format!(
                "the server names a role this app does not know ('{}'): update the app",
                u.role
            ),
        })?;
        Ok(Self {
            username: u.username,
            display_name: u.display_name,
            role,
            places: u.places.into_iter().map(PlaceInfo::from).collect(),
        })
    }
}

// The object crosses threads in apps and in UniFFI: keep it Send + Sync.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<FieldClient>();
};
