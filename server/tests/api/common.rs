//! Shared helpers: an in-process app on a copy of a demo database, logged-in phones, and
//! request shortcuts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use linli_server::{AppState, Config};
use linli_sync_core::automerge::{ActorId, Change};
use linli_sync_core::protocol::{self, Cursor, PushChange, SyncRequest, SyncResponse};
use linli_sync_core::{
    EditContext, PersonalDoc, PlaceId, RecordDoc, RecordId, RecordKind, capture,
};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Seeding hashes six argon2 passwords: do it once per test binary and copy the file.
fn template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| make_template(false))
}

/// The demo with its records too (seeded once per test binary).
fn records_template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| make_template(true))
}

fn make_template(records: bool) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("linli-demo-template")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let config = if records {
        Config::new(&dir).with_demo_records()
    } else {
        Config::new(&dir).with_demo()
    };
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let state = linli_server::open(config).await.unwrap();
            state.store.close().await;
        });
    })
    .join()
    .unwrap();
    dir
}

/// One in-process server on its own temporary data directory.
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// A fresh app with the demo district and users.
    pub async fn demo() -> TestApp {
        Self::demo_with(|_| {}).await
    }

    /// A fresh demo app with a tweaked configuration.
    pub async fn demo_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::from_template(template(), tweak).await
    }

    /// A fresh app with the demo district, users and records (`serve --demo`).
    pub async fn demo_records() -> TestApp {
        Self::from_template(records_template(), |_| {}).await
    }

    async fn from_template(template: &Path, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        for name in ["linli.db", "linli.db-wal"] {
            let from = template.join(name);
            if from.exists() {
                std::fs::copy(&from, dir.path().join(name)).unwrap();
            }
        }
        let mut config = Config::new(dir.path());
        tweak(&mut config);
        let state = linli_server::open(config).await.unwrap();
        TestApp {
            router: linli_server::app(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// Sends a request and returns status, headers' content type and body bytes.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap();
        (status, ct, body.to_vec())
    }

    /// Sends a JSON request and parses the JSON reply.
    pub async fn json(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let (status, ct, body) = self.send(req).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            assert_eq!(ct.as_deref(), Some("application/json"), "status {status}");
            serde_json::from_slice(&body).unwrap()
        };
        (status, value)
    }

    /// Logs a demo user in on a new device.
    pub async fn login(&self, username: &str) -> Phone {
        let device = uuid::Uuid::new_v4().to_string();
        let (status, body) = self
            .json(
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({
                    "username": username,
                    "password": "linli-demo",
                    "device_id": device,
                    "device_name": "test phone",
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Phone {
            username: username.to_string(),
            token: body["access_token"].as_str().unwrap().to_string(),
            actor: ActorId::random(),
            cursor: Cursor::start(),
        }
    }

    /// Posts raw bytes to `/v1/sync`.
    pub async fn sync_raw(
        &self,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Option<String>, Vec<u8>) {
        let req = Request::post("/v1/sync")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// One sync round trip of a phone: pushes `changes`, pulls, advances the phone's cursor.
    pub async fn sync(
        &self,
        phone: &mut Phone,
        changes: Vec<PushChange>,
        max_pull: u32,
    ) -> (StatusCode, SyncResponse) {
        let req = SyncRequest {
            cursor: phone.cursor.clone(),
            changes,
            max_pull,
        };
        let (status, ct, body) = self
            .sync_raw(&phone.token, protocol::CONTENT_TYPE, req.encode())
            .await;
        assert_eq!(
            ct.as_deref(),
            Some(protocol::CONTENT_TYPE),
            "status {status}"
        );
        let resp = SyncResponse::decode(&body).unwrap();
        phone.cursor = resp.cursor.clone();
        (status, resp)
    }
}

/// A logged-in simulated phone.
pub struct Phone {
    pub username: String,
    pub token: String,
    pub actor: ActorId,
    pub cursor: Cursor,
}

impl Phone {
    pub fn ctx(&self) -> EditContext {
        EditContext {
            actor: self.actor.clone(),
            user: self.username.clone(),
            now_ms: 1_700_000_000_000,
        }
    }

    /// Creates a record locally: its document and the creating change.
    pub fn create(
        &self,
        kind: RecordKind,
        place: &str,
        fields: &[(&str, &str)],
    ) -> (RecordDoc, Change) {
        let place: PlaceId = place.parse().unwrap();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (doc, _, captured) =
            capture::create(RecordId::new(), kind, &place, &self.ctx(), &fields).unwrap();
        (doc, captured.record.unwrap())
    }

    /// Creates a record locally with its personal part: the documents and both changes (the
    /// personal one when personal fields were given).
    pub fn create_full(
        &self,
        kind: RecordKind,
        place: &str,
        fields: &[(&str, &str)],
    ) -> (RecordDoc, PersonalDoc, Change, Option<Change>) {
        let place: PlaceId = place.parse().unwrap();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (doc, personal, captured) =
            capture::create(RecordId::new(), kind, &place, &self.ctx(), &fields).unwrap();
        (doc, personal, captured.record.unwrap(), captured.personal)
    }

    /// Sets fields locally.
    pub fn set(&self, doc: &mut RecordDoc, fields: &[(&str, &str)]) -> Change {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        doc.set_fields(&self.ctx(), &fields).unwrap()
    }
}

/// The push of one change of a document.
pub fn push(doc: &RecordDoc, kind: RecordKind, change: &Change) -> PushChange {
    PushChange {
        record: *doc.id().as_bytes(),
        kind,
        part: linli_sync_core::protocol::Part::Record,
        change: change.raw_bytes().to_vec(),
    }
}

/// The push of one change of a record's personal part.
pub fn push_personal(doc: &RecordDoc, kind: RecordKind, change: &Change) -> PushChange {
    PushChange {
        record: *doc.id().as_bytes(),
        kind,
        part: linli_sync_core::protocol::Part::Personal,
        change: change.raw_bytes().to_vec(),
    }
}

/// A new case at `place`, as the phone would create it (its personal part is left on the phone;
/// see [`Phone::create_full`]).
pub fn new_case(phone: &Phone, place: &str, category: &str) -> (RecordDoc, Change) {
    phone.create(
        RecordKind::Case,
        place,
        &[
            ("summary", "楼道堆放杂物"),
            ("category", category),
            ("source", "bus_session"),
            ("resident_phone", "13812345678"),
        ],
    )
}
