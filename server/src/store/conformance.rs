//! One conformance suite for every [`SyncStore`]: the same tests, through one macro, against
//! SQLite and against a real PostgreSQL (a fresh database per test, on the server named by
//! `LINLI_TEST_POSTGRES`, by default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use linli_sync_core::automerge::transaction::Transactable;
use linli_sync_core::automerge::{ActorId, AutoCommit, ROOT, ReadDoc};
use linli_sync_core::protocol::Part;
use linli_sync_core::{DeviceId, PlaceId, RecordId, RecordKind};
use serde_json::json;

use super::log::{Commit, CommitConflict, NewChange, ProjectionUpdate};
use super::{PgStore, SqliteStore, SyncStore};

/// Creates what the log's rows refer to (places, a user, devices), in the backend's own SQL:
/// account storage is not behind the seam yet.
pub(crate) trait Fixture: SyncStore + Clone {
    /// A place `hz`, `hz/a`, `hz/b`, user `u1` and the given devices of that user.
    async fn seed(&self, devices: &[DeviceId]);
    /// Drops what the test created (the PostgreSQL database).
    async fn finish(self);
}

impl Fixture for SqliteStore {
    async fn seed(&self, devices: &[DeviceId]) {
        for (id, parent, level) in [
            ("hz", None, "district"),
            ("hz/a", Some("hz"), "street"),
            ("hz/b", Some("hz"), "street"),
        ] {
            sqlx::query("INSERT INTO places (id, parent, name, level) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(parent)
                .bind(id)
                .bind(level)
                .execute(&self.pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, display_name, created_at)
             VALUES ('u1', 'steward1', 'x', 'steward', '王', 0)",
        )
        .execute(&self.pool)
        .await
        .unwrap();
        for d in devices {
            sqlx::query(
                "INSERT INTO devices (id, user_id, created_at, last_seen) VALUES (?, 'u1', 0, 0)",
            )
            .bind(d.to_string())
            .execute(&self.pool)
            .await
            .unwrap();
        }
    }

    async fn finish(self) {
        let path: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&self.pool)
                .await
                .unwrap();
        self.close().await;
        if let Some(dir) = std::path::Path::new(&path).parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Fresh PostgreSQL databases for tests: each test's store has a database of its own, which
/// [`Fixture::finish`] drops.
pub(crate) struct PgTest;

impl PgTest {
    fn admin_url() -> String {
        std::env::var("LINLI_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// The URL of database `name` on the test server.
    fn url_of(name: &str) -> String {
        let admin = Self::admin_url();
        let (base, _) = admin.rsplit_once('/').expect("a postgres url has a path");
        format!("{base}/{name}")
    }

    /// Creates a fresh database and opens it.
    pub(crate) async fn create() -> PgStore {
        let name = format!("linli_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&Self::admin_url())
            .await
            .expect("PostgreSQL must run for these tests (scripts/test starts it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        PgStore::open(&Self::url_of(&name)).await.unwrap()
    }

    /// A fresh database whose store walks its order's index on every pull and bootstrap page.
    pub(crate) async fn create_walking() -> PgStore {
        Self::create().await.walking_always()
    }

    /// [`Self::another_node`], walking as [`Self::create_walking`].
    pub(crate) async fn another_node_walking(store: &PgStore) -> PgStore {
        Self::another_node(store).await.walking_always()
    }

    /// Another process's view of the same database (its own pool and committer).
    pub(crate) async fn another_node(store: &PgStore) -> PgStore {
        PgStore::open(&Self::url_of(&database_of(store).await))
            .await
            .unwrap()
    }
}

async fn database_of(store: &PgStore) -> String {
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

impl Fixture for PgStore {
    async fn seed(&self, devices: &[DeviceId]) {
        let pool = self.pool();
        for (id, parent, level) in [
            ("hz", None, "district"),
            ("hz/a", Some("hz"), "street"),
            ("hz/b", Some("hz"), "street"),
        ] {
            sqlx::query("INSERT INTO places (id, parent, name, level) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(parent)
                .bind(id)
                .bind(level)
                .execute(pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, display_name, created_at)
             VALUES ('u1', 'steward1', 'x', 'steward', '王', 0)",
        )
        .execute(pool)
        .await
        .unwrap();
        for d in devices {
            sqlx::query(
                "INSERT INTO devices (id, user_id, created_at, last_seen) VALUES ($1, 'u1', 0, 0)",
            )
            .bind(d.to_string())
            .execute(pool)
            .await
            .unwrap();
        }
    }

    async fn finish(self) {
        // A second handle on the database finds it dropped already (its connections closed).
        let Ok(name) = sqlx::query_scalar::<_, String>("SELECT current_database()")
            .fetch_one(self.pool())
            .await
        else {
            self.close().await;
            return;
        };
        self.close().await;
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&PgTest::admin_url())
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

fn p(s: &str) -> PlaceId {
    s.parse().unwrap()
}

/// A phone's copy of one record: a real Automerge document whose changes the tests commit.
pub(crate) struct Phone {
    doc: AutoCommit,
    device: DeviceId,
}

impl Phone {
    pub(crate) fn new(device: DeviceId) -> Phone {
        Phone {
            doc: AutoCommit::new().with_actor(ActorId::random()),
            device,
        }
    }

    /// Edits `key` and returns the change as a commit at `expected_version` (saved whole when
    /// `whole`).
    pub(crate) fn edit(
        &mut self,
        record: RecordId,
        place: &str,
        key: &str,
        value: &str,
        expected_version: i64,
        whole: bool,
    ) -> Commit {
        self.doc.put(ROOT, key, value).unwrap();
        let change = self.doc.get_last_local_change().unwrap().clone();
        Commit {
            change: NewChange {
                hash: change.hash().0,
                record,
                part: Part::Record,
                place: p(place),
                kind: RecordKind::Case,
                bytes: change.raw_bytes().to_vec(),
                actor: self.doc.get_actor().to_hex_string(),
                device: self.device,
                user_id: "u1".into(),
                claimed_at: 1,
                received_at: 2,
                touched: vec![key.into()],
            },
            projection: ProjectionUpdate::Record {
                status: Some("open".into()),
                category: None,
                value: json!({ key: value }),
                doc: whole.then(|| self.doc.save()),
                has_conflicts: false,
            },
            expected_version,
        }
    }
}

/// A new case of one change, saved whole, by `device` in `place`.
pub(crate) fn new_case(device: DeviceId, place: &str) -> Commit {
    let mut doc = AutoCommit::new().with_actor(ActorId::random());
    doc.put(ROOT, "summary", "漏水").unwrap();
    let change = doc.get_last_local_change().unwrap().clone();
    Commit {
        change: NewChange {
            hash: change.hash().0,
            record: RecordId::new(),
            part: Part::Record,
            place: p(place),
            kind: RecordKind::Case,
            bytes: change.raw_bytes().to_vec(),
            actor: doc.get_actor().to_hex_string(),
            device,
            user_id: "u1".into(),
            claimed_at: 1,
            received_at: 2,
            touched: vec!["summary".into()],
        },
        projection: ProjectionUpdate::Record {
            status: None,
            category: None,
            value: json!({}),
            doc: Some(doc.save()),
            has_conflicts: false,
        },
        expected_version: 0,
    }
}

/// The same change committed again at another version (after reloading the record).
pub(crate) fn at_version(c: &Commit, expected_version: i64) -> Commit {
    let n = &c.change;
    Commit {
        change: NewChange {
            hash: n.hash,
            record: n.record,
            part: n.part,
            place: n.place.clone(),
            kind: n.kind,
            bytes: n.bytes.clone(),
            actor: n.actor.clone(),
            device: n.device,
            user_id: n.user_id.clone(),
            claimed_at: n.claimed_at,
            received_at: n.received_at,
            touched: n.touched.clone(),
        },
        projection: match &c.projection {
            ProjectionUpdate::Record {
                status,
                category,
                value,
                doc,
                has_conflicts,
            } => ProjectionUpdate::Record {
                status: status.clone(),
                category: category.clone(),
                value: value.clone(),
                doc: doc.clone(),
                has_conflicts: *has_conflicts,
            },
            ProjectionUpdate::Personal { doc, values } => ProjectionUpdate::Personal {
                doc: doc.clone(),
                values: values.clone(),
            },
        },
        expected_version,
    }
}

fn load(bytes: &[u8]) -> AutoCommit {
    AutoCommit::load(bytes).unwrap()
}

fn text(doc: &AutoCommit, key: &str) -> Option<String> {
    doc.get(ROOT, key)
        .unwrap()
        .map(|(v, _)| v.as_str().unwrap_or_default().to_string())
}

async fn committed<S: SyncStore>(store: &S, commit: Commit) -> i64 {
    store.commit(commit).await.unwrap().unwrap()
}

/// A new record commits, its document reads back, others pull it and its own device does not.
pub(crate) async fn a_change_commits_and_is_pulled_by_others<S: Fixture>(store: S) {
    let (mine, other) = (DeviceId::new(), DeviceId::new());
    store.seed(&[mine, other]).await;
    let record = RecordId::new();
    let mut phone = Phone::new(mine);
    let commit = phone.edit(record, "hz/a", "title", "漏水", 0, true);
    let hash = commit.change.hash;
    let actor = commit.change.actor.clone();
    let (meta, held, _) = store.accept_facts(record, &hash, &actor).await.unwrap();
    assert!(meta.is_none() && held.is_none());
    let seq = committed(&store, commit).await;
    assert!(seq > 0);
    assert_eq!(store.log_end().await.unwrap(), seq);

    let (meta, held, binding) = store.accept_facts(record, &hash, &actor).await.unwrap();
    let meta = meta.unwrap();
    assert_eq!(
        (meta.place, meta.kind, meta.version),
        (p("hz/a"), RecordKind::Case, 1)
    );
    assert_eq!(held, Some(2));
    assert_eq!(binding, super::ActorBinding::Device(mine.to_string()));
    assert_eq!(
        store.change_received_at(record, &hash).await.unwrap(),
        Some(2)
    );

    let doc = load(&store.record_doc(record).await.unwrap().unwrap());
    assert_eq!(text(&doc, "title").as_deref(), Some("漏水"));
    assert!(store.personal_doc(record).await.unwrap().is_none());
    assert!(store.record_doc(RecordId::new()).await.unwrap().is_none());

    let page = store
        .pull(0, other, &[p("hz")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(page.end, seq);
    assert_eq!(page.rows.len(), 1);
    let row = &page.rows[0];
    assert_eq!(
        (row.seq, row.record_id.as_str()),
        (seq, record.to_string().as_str())
    );
    assert_eq!(
        (row.username.as_str(), row.part),
        ("steward1", Part::Record)
    );
    let own = store
        .pull(0, mine, &[p("hz")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert!(
        own.rows.is_empty(),
        "a device does not pull its own changes"
    );
    let elsewhere = store
        .pull(0, other, &[p("hz/b")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert!(elsewhere.rows.is_empty());
    // `hz/a0` sorts after every place below `hz/a` and is not within it.
    let sibling = store
        .pull(0, other, &[p("hz/a0")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert!(sibling.rows.is_empty());
    store.finish().await;
}

/// A commit against a version that is no longer current writes nothing, nor does a change whose
/// actor belongs to another device.
pub(crate) async fn conflicts_write_nothing<S: Fixture>(store: S) {
    let (mine, other) = (DeviceId::new(), DeviceId::new());
    store.seed(&[mine, other]).await;
    let record = RecordId::new();
    let mut phone = Phone::new(mine);
    committed(&store, phone.edit(record, "hz/a", "title", "a", 0, true)).await;
    let end = store.log_end().await.unwrap();

    // Stale: the record is at version 1, not 0 (a second "new record"), nor at 5.
    let mut rival = Phone::new(other);
    let stale = rival.edit(record, "hz/a", "title", "b", 0, true);
    assert_eq!(
        store.commit(stale).await.unwrap(),
        Err(CommitConflict::Version)
    );
    let stale = phone.edit(record, "hz/a", "title", "c", 5, false);
    assert_eq!(
        store.commit(stale).await.unwrap(),
        Err(CommitConflict::Version)
    );
    assert_eq!(store.log_end().await.unwrap(), end);
    assert_eq!(store.record_meta(record).await.unwrap().unwrap().version, 1);

    // The same actor pushed from another device.
    let mut forged = phone.edit(record, "hz/a", "title", "d", 1, false);
    forged.change.device = other;
    assert_eq!(
        store.commit(forged).await.unwrap(),
        Err(CommitConflict::ForeignActor)
    );
    assert_eq!(store.log_end().await.unwrap(), end);
    let doc = load(&store.record_doc(record).await.unwrap().unwrap());
    assert_eq!(text(&doc, "title").as_deref(), Some("a"));
    store.finish().await;
}

/// A change whose write fails (its device is unknown, so binding its actor breaks a foreign key)
/// among others committing at the same moment (so, likely, in the same commit group) fails
/// alone: the others commit, and nothing of it is written.
pub(crate) async fn a_failing_write_fails_alone<S: Fixture>(store: S) {
    let (mine, other) = (DeviceId::new(), DeviceId::new());
    store.seed(&[mine, other]).await;
    let bad_record = RecordId::new();
    let mut commits = Vec::new();
    for i in 0..16 {
        let device = if i == 7 { DeviceId::new() } else { mine };
        let record = if i == 7 { bad_record } else { RecordId::new() };
        commits.push(Phone::new(device).edit(record, "hz/a", "title", "漏水", 0, true));
    }
    let outcomes =
        futures_util::future::join_all(commits.into_iter().map(|c| store.commit(c))).await;
    let mut positions = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (7, outcome) => assert!(outcome.is_err(), "the unknown device's change: {outcome:?}"),
            (_, Ok(Ok(seq))) => positions.push(seq),
            (i, outcome) => panic!("change {i} did not commit: {outcome:?}"),
        }
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 15, "one position per committed change");
    assert!(store.record_meta(bad_record).await.unwrap().is_none());
    assert!(store.record_doc(bad_record).await.unwrap().is_none());
    let page = store
        .pull(0, other, &[p("hz")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 15);
    assert!(
        page.rows
            .iter()
            .all(|r| r.record_id != bad_record.to_string())
    );
    store.finish().await;
}

/// Changes between whole saves extend the saved document's tail; documents and bootstrap
/// snapshots read the whole and the tail as one document. A new record need not be saved at
/// all: its document is then its changes in the log.
pub(crate) async fn incremental_saves_read_back_whole<S: Fixture>(store: S) {
    let device = DeviceId::new();
    store.seed(&[device]).await;
    let mut records = Vec::new();
    for n in 0..6 {
        let record = RecordId::new();
        let mut phone = Phone::new(device);
        // Even records are saved at their first change, odd ones are not.
        let saved_new = n % 2 == 0;
        committed(
            &store,
            phone.edit(record, "hz/a", "title", "0", 0, saved_new),
        )
        .await;
        let meta = store.record_meta(record).await.unwrap().unwrap();
        assert_eq!(meta.doc_tail, i64::from(!saved_new));
        let doc = load(&store.record_doc(record).await.unwrap().unwrap());
        assert_eq!(text(&doc, "title").as_deref(), Some("0"));
        // The third change saves whole (except in the last record, never saved whole); the
        // ones around it go to the tail.
        let never = n == 5;
        for (v, whole) in [(1, false), (2, !never), (3, false), (4, false)] {
            let value = format!("{n}-{v}");
            committed(
                &store,
                phone.edit(record, "hz/a", "title", &value, v, whole),
            )
            .await;
        }
        let meta = store.record_meta(record).await.unwrap().unwrap();
        assert_eq!(
            (meta.version, meta.doc_tail),
            (5, if never { 5 } else { 2 })
        );
        records.push((record, format!("{n}-4")));
    }
    for (record, want) in &records {
        let doc = load(&store.record_doc(*record).await.unwrap().unwrap());
        assert_eq!(text(&doc, "title").as_deref(), Some(want.as_str()));
    }
    // Bootstrap pages of two, by record id.
    let mut seen = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .snapshots_within(&[p("hz")], after.as_deref(), 2, 1 << 20, false)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        for (id, doc, personal) in page {
            assert!(personal.is_none());
            assert!(
                after.as_deref().is_none_or(|a| id.as_str() > a),
                "in id order"
            );
            after = Some(id.clone());
            seen.insert(id, text(&load(&doc), "title"));
        }
    }
    let want: BTreeMap<String, Option<String>> = records
        .iter()
        .map(|(r, v)| (r.to_string(), Some(v.clone())))
        .collect();
    assert_eq!(seen, want);
    // A byte bound stops a page after the record that reaches it (never before the first).
    let one = store
        .snapshots_within(&[p("hz")], None, 10, 1, false)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    // Counted whole, tails included: one byte past the first record's document takes two.
    let two = store
        .snapshots_within(&[p("hz")], None, 10, one[0].1.len() + 1, false)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert!(
        store
            .snapshots_within(&[p("hz/b")], None, 10, 1 << 20, false)
            .await
            .unwrap()
            .is_empty()
    );
    store.finish().await;
}

/// A pull is paged by count and by bytes, resumes from its last row, and never repeats one.
pub(crate) async fn pulls_page_by_count_and_bytes<S: Fixture>(store: S) {
    let (mine, other) = (DeviceId::new(), DeviceId::new());
    store.seed(&[mine, other]).await;
    let mut want = Vec::new();
    for n in 0..12 {
        let mut phone = Phone::new(mine);
        let place = if n % 3 == 0 { "hz/b" } else { "hz/a" };
        let seq = committed(
            &store,
            phone.edit(RecordId::new(), place, "t", "x", 0, true),
        )
        .await;
        if place == "hz/a" {
            want.push(seq);
        }
    }
    let mut got = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store
            .pull(cursor, other, &[p("hz/a")], false, 3, 1 << 20)
            .await
            .unwrap();
        assert!(page.rows.len() <= 3);
        got.extend(page.rows.iter().map(|r| r.seq));
        cursor = match (page.full, page.rows.last()) {
            (true, Some(last)) => last.seq,
            _ => page.end,
        };
        if !page.full {
            break;
        }
    }
    assert_eq!(got, want);
    // A byte bound of 1: one change per page, never none.
    let page = store
        .pull(0, other, &[p("hz")], false, 100, 1)
        .await
        .unwrap();
    assert_eq!((page.rows.len(), page.full), (1, true));
    store.finish().await;
}

/// The no-skip promise under concurrent committers: `writers` tasks spread over two store
/// handles (two server processes on one database) commit new records while readers pull
/// continuously, jumping to the page's end as phones do. At the end every reader holds every
/// acknowledged change exactly once.
pub(crate) async fn readers_never_skip_concurrent_commits<S: Fixture>(a: S, b: S) {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    let reader = DeviceId::new();
    let writers: Vec<DeviceId> = (0..WRITERS).map(|_| DeviceId::new()).collect();
    let mut all = writers.clone();
    all.push(reader);
    a.seed(&all).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut readers = Vec::new();
    for r in 0..2 {
        let store = if r == 0 { a.clone() } else { b.clone() };
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen: Vec<i64> = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store
                    .pull(cursor, reader, &[p("hz")], false, 7, 1 << 20)
                    .await
                    .unwrap();
                seen.extend(page.rows.iter().map(|r| r.seq));
                cursor = match (page.full, page.rows.last()) {
                    (true, Some(last)) => last.seq,
                    _ => page.end,
                };
                // Only after the writers finished does a pull that is not full mean "caught up".
                if finished && !page.full {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut tasks = Vec::new();
    for (w, device) in writers.into_iter().enumerate() {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for _ in 0..EACH {
                let mut phone = Phone::new(device);
                let record = RecordId::new();
                let seq = committed(&store, phone.edit(record, "hz/a", "t", "x", 0, true)).await;
                let seq2 = committed(&store, phone.edit(record, "hz/a", "t", "y", 1, false)).await;
                assert!(seq2 > seq, "a record's changes keep their order in the log");
                acked.extend([seq, seq2]);
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(acked.insert(seq), "position {seq} handed out twice");
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(acked.len(), WRITERS * EACH * 2);
    for r in readers {
        let seen = r.await.unwrap();
        let unique: BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "a reader got a change twice");
        assert_eq!(unique, acked, "a reader skipped or invented a change");
    }
    b.finish().await;
    a.finish().await;
}

/// Two writers (as on two nodes) race on one record: exactly one wins each round, the loser
/// sees a version conflict, and after reloading both edits are in the record.
pub(crate) async fn two_writers_on_one_record_lose_nothing<S: Fixture>(a: S, b: S) {
    let (da, db) = (DeviceId::new(), DeviceId::new());
    a.seed(&[da, db]).await;
    let record = RecordId::new();
    let mut pa = Phone::new(da);
    committed(&a, pa.edit(record, "hz/a", "title", "0", 0, true)).await;
    let mut pb = Phone::new(db);
    pb.doc
        .load_incremental(&b.record_doc(record).await.unwrap().unwrap())
        .unwrap();
    // Both read version 1 and commit against it at once.
    let ca = pa.edit(record, "hz/a", "a", "from a", 1, false);
    let cb = pb.edit(record, "hz/a", "b", "from b", 1, false);
    let (again_a, again_b) = (at_version(&ca, 2), at_version(&cb, 2));
    let (ra, rb) = tokio::join!(a.commit(ca), b.commit(cb));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one of two commits at one version wins: {ra:?} {rb:?}"
    );
    assert!(matches!(ra, Ok(_) | Err(CommitConflict::Version)));
    assert!(matches!(rb, Ok(_) | Err(CommitConflict::Version)));
    // The loser reloads the record and ingests its change again, at the new version.
    let (loser, retry) = if ra.is_ok() {
        (&b, again_b)
    } else {
        (&a, again_a)
    };
    assert_eq!(loser.record_meta(record).await.unwrap().unwrap().version, 2);
    loser.commit(retry).await.unwrap().unwrap();
    let doc = load(&a.record_doc(record).await.unwrap().unwrap());
    assert_eq!(text(&doc, "a").as_deref(), Some("from a"));
    assert_eq!(text(&doc, "b").as_deref(), Some("from b"));
    assert_eq!(a.record_meta(record).await.unwrap().unwrap().version, 3);
    b.finish().await;
    a.finish().await;
}

/// Runs every conformance test against one backend: `$open` makes a fresh store, `$again`
/// opens a second handle (another process) on the same database.
macro_rules! sync_store_conformance {
    ($backend:ident, $open:expr, $again:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn a_change_commits_and_is_pulled_by_others() {
                super::a_change_commits_and_is_pulled_by_others($open.await).await;
            }

            #[tokio::test]
            async fn conflicts_write_nothing() {
                super::conflicts_write_nothing($open.await).await;
            }

            #[tokio::test]
            async fn a_failing_write_fails_alone() {
                super::a_failing_write_fails_alone($open.await).await;
            }

            #[tokio::test]
            async fn incremental_saves_read_back_whole() {
                super::incremental_saves_read_back_whole($open.await).await;
            }

            #[tokio::test]
            async fn pulls_page_by_count_and_bytes() {
                super::pulls_page_by_count_and_bytes($open.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn readers_never_skip_concurrent_commits() {
                let a = $open.await;
                let b = $again(&a).await;
                super::readers_never_skip_concurrent_commits(a, b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn two_processes_merge_offline_edits_of_one_case() {
                let a = $open.await;
                let b = $again(&a).await;
                super::two_processes_merge_offline_edits_of_one_case(a, b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn two_writers_on_one_record_lose_nothing() {
                let a = $open.await;
                let b = $again(&a).await;
                super::two_writers_on_one_record_lose_nothing(a, b).await;
            }
        }
    };
}

/// A SQLite store in a temporary directory that lives as long as the store.
pub(crate) async fn sqlite_store() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open_sqlite(&dir.join("linli.db"))
        .await
        .unwrap()
}

/// A second SQLite handle on the same file: its own pool and committer, as a second process.
pub(crate) async fn sqlite_again(store: &SqliteStore) -> SqliteStore {
    let path: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    SqliteStore::open_sqlite(std::path::Path::new(&path))
        .await
        .unwrap()
}

sync_store_conformance!(sqlite, sqlite_store(), sqlite_again);
sync_store_conformance!(postgres, PgTest::create(), PgTest::another_node);
// Pulls and bootstrap pages on a large set of places walk their order's index; on the few
// records of these tests they would collect and sort, so this runs the suite again walking.
sync_store_conformance!(
    postgres_walking,
    PgTest::create_walking(),
    PgTest::another_node_walking
);

/// The accept path itself ([`SyncService`](crate::sync::SyncService)) on two processes sharing
/// one database: two phones edit one case offline, each pushes to its own process at the same
/// moment, and after pulling from their own process both phones and the server hold one merged
/// case with both edits.
pub(crate) async fn two_processes_merge_offline_edits_of_one_case<S: Fixture>(a: S, b: S) {
    use linli_sync_core::automerge::Change;
    use linli_sync_core::protocol::PushChange;
    use linli_sync_core::rules::Role;
    use linli_sync_core::{EditContext, RecordDoc};

    use crate::auth::AuthUser;
    use crate::sync::{DocCache, SyncService};
    use crate::web::live::LiveHub;

    let (d1, d2) = (DeviceId::new(), DeviceId::new());
    a.seed(&[d1, d2]).await;
    let user = |device| AuthUser {
        user_id: "u1".into(),
        username: "steward1".into(),
        role: Role::Steward,
        device_id: device,
        places: vec![p("hz/a")],
    };
    let (docs_a, docs_b) = (DocCache::new(16), DocCache::new(16));
    let (live_a, live_b) = (LiveHub::default(), LiveHub::default());
    let node_a = SyncService {
        store: &a,
        docs: &docs_a,
        live: &live_a,
    };
    let node_b = SyncService {
        store: &b,
        docs: &docs_b,
        live: &live_b,
    };
    let ctx = |n: i64| EditContext {
        actor: ActorId::random(),
        user: "steward1".into(),
        now_ms: crate::model::now_ms() + n,
    };
    let push = |record: RecordId, change: &Change| PushChange {
        record: *record.as_bytes(),
        kind: RecordKind::Case,
        part: Part::Record,
        change: change.raw_bytes().to_vec(),
    };
    let now = crate::model::now_ms();
    let (ctx1, ctx2) = (ctx(0), ctx(1));
    let (mut phone1, created) = RecordDoc::create(
        RecordId::new(),
        RecordKind::Case,
        &p("hz/a"),
        &ctx1,
        &[("summary".into(), "楼道堆放杂物".into())],
    )
    .unwrap();
    let record = phone1.id();
    node_a
        .accept(&user(d1), &push(record, &created), created.clone(), now)
        .await
        .unwrap();
    // Phone 2 pulls the new case through process B.
    let mut phone2 = RecordDoc::empty(record);
    let page = b
        .pull(0, d2, &[p("hz/a")], false, 100, 1 << 20)
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    phone2.apply_change(&page.rows[0].bytes).unwrap();

    // Offline, both edit; then both push at once, each to its own process.
    let c1 = phone1
        .set_fields(&ctx1, &[("building".into(), "3幢".into())])
        .unwrap();
    let c2 = phone2
        .set_fields(&ctx2, &[("room".into(), "502".into())])
        .unwrap();
    let (u1, u2) = (user(d1), user(d2));
    let (p1, p2) = (push(record, &c1), push(record, &c2));
    let (r1, r2) = tokio::join!(
        node_a.accept(&u1, &p1, c1.clone(), now),
        node_b.accept(&u2, &p2, c2.clone(), now),
    );
    r1.unwrap();
    r2.unwrap();
    assert_eq!(a.record_meta(record).await.unwrap().unwrap().version, 3);

    // Each phone pulls what the other pushed, from its own process.
    for (phone, device, store) in [(&mut phone1, d1, &a), (&mut phone2, d2, &b)] {
        let page = store
            .pull(0, device, &[p("hz/a")], false, 100, 1 << 20)
            .await
            .unwrap();
        for row in page.rows {
            phone.apply_change(&row.bytes).unwrap();
        }
    }
    let server = RecordDoc::load(record, &b.record_doc(record).await.unwrap().unwrap()).unwrap();
    let values = [&phone1, &phone2, &server].map(|d| d.record().unwrap().to_json());
    assert_eq!(values[0], values[1]);
    assert_eq!(values[1], values[2]);
    assert_eq!(values[0]["building"], "3幢");
    assert_eq!(values[0]["room"], "502");
    b.finish().await;
    a.finish().await;
}
