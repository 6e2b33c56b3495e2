//! One conformance suite for every [`OfficeStore`]: the same records, committed through
//! [`SyncStore::commit`](super::SyncStore::commit) as the sync path commits them, and the same
//! hand-computed answers for every read, through one macro against SQLite and against a real
//! PostgreSQL (a fresh database per test, see [`PgTest`]).
//!
//! The records (`NN` is the record id's last digits; times are the server's receive times):
//!
//! | NN | kind      | place          | status / type    | created | updated | deadline / date |
//! |----|-----------|----------------|------------------|---------|---------|-----------------|
//! | 01 | case      | hz/a/x/b1      | in_progress      | 100     | 900     | 01-05 / 01-05   |
//! | 02 | case      | hz/a/x         | resolved         | 200     | 200     | 01-08 / 01-06   |
//! | 03 | case      | hz/a           | evaluated        | 300     | 300     | -     / 2025-11-20 |
//! | 04 | case      | hz/a/x/b2      | withdrawn        | 400     | 400     | 01-08 / 02-03   |
//! | 05 | case      | hz/a0          | in_progress      | 500     | 500     | 01-01 / 01-09   |
//! | 06 | case      | hz/ab          | assigned         | 600     | 600     | -     / 01-10   |
//! | 07 | case      | hz/b           | answered_on_site | 300     | 300     | -     / 01-12   |
//! | 08 | case      | hz/a-b         | assigned         | 700     | 700     | 01-20 / 01-15   |
//! | 09 | case      | hz/a/x/b1      | assigned         | 300     | 300     | 01-08 / 01-07   |
//! | 10 | bus       | hz/a/x         | service_bus 1801 | 150     | 150     | 01-15           |
//! | 11 | bus       | hz/b           | joint 1802       | 160     | 160     | 02-01           |
//! | 12 | contact   | hz/a/x/b1      |                  | 250     | 250     | 01-20           |
//! | 13 | contact   | hz/a/x/b1      | (personal part)  | 250     | 800     | 01-21           |
//! | 14 | contact   | hz/a/x/b2/u1   |                  | 260     | 260     | 01-22           |
//! | 15 | contact   | hz/a/x         | building "7幢"   | 270     | 270     | 01-23           |
//! | 16 | volunteer | hz/a/x         | health 2.5 h 40  | 350     | 350     | 01-18           |
//! | 17 | volunteer | hz/a           | (none) 3 h 10    | 360     | 360     | 01-19           |
//! | 18 | volunteer | hz/a/x/b1      | health 1.5 h 5   | 370     | 370     | 02-02           |
//!
//! Days are 2026's unless written whole. `hz/a0`, `hz/ab` and `hz/a-b` sort around `hz/a/` but
//! are not within `hz/a`; `b1` and `b2` are building-level places.

use futures_util::{StreamExt, TryStreamExt};
use linli_sync_core::automerge::transaction::Transactable;
use linli_sync_core::automerge::{ActorId, AutoCommit, ROOT};
use linli_sync_core::protocol::Part;
use linli_sync_core::{DeviceId, PlaceId, RecordId, RecordKind};
use serde_json::{Value, json};

use super::conformance::{Fixture, PgTest, sqlite_store};
use super::log::{Commit, NewChange, ProjectionUpdate};
use super::office::{
    BuildingCount, CodeCount, MonthCount, OfficeFilter, OfficeStats, SessionStat, Share, Sort,
    StatsFilter, VolunteerStat,
};
use super::projection::{RecordFilter, RecordRow};
use super::{OfficeStore, PgStore, SqliteStore, StoreError, StoreResult};

/// Adds places beyond [`Fixture::seed`]'s, in the backend's own SQL (places are not behind a
/// seam).
trait Places: OfficeStore + Fixture {
    async fn add_place(&self, id: &str, name: &str, level: &str);
}

impl Places for SqliteStore {
    async fn add_place(&self, id: &str, name: &str, level: &str) {
        sqlx::query("INSERT INTO places (id, parent, name, level) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(id.rsplit_once('/').map(|(parent, _)| parent))
            .bind(name)
            .bind(level)
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

impl Places for PgStore {
    async fn add_place(&self, id: &str, name: &str, level: &str) {
        sqlx::query("INSERT INTO places (id, parent, name, level) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(id.rsplit_once('/').map(|(parent, _)| parent))
            .bind(name)
            .bind(level)
            .execute(self.pool())
            .await
            .unwrap();
    }
}

fn p(s: &str) -> PlaceId {
    s.parse().unwrap()
}

/// Record `NN`'s id; ids sort as their numbers.
fn rid(n: u8) -> RecordId {
    format!("00000000-0000-4000-8000-{n:012}").parse().unwrap()
}

/// The number of a row's record.
fn num(row: &RecordRow) -> u8 {
    row.id[24..].parse().unwrap()
}

fn nums(rows: &[RecordRow]) -> Vec<u8> {
    rows.iter().map(num).collect()
}

/// 10:00 on `day` in UTC+8, in ms: a phone's `created_at` for that day.
fn ms(day: &str) -> i64 {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    d.and_hms_opt(2, 0, 0).unwrap().and_utc().timestamp_millis()
}

/// `base` with `fields` set over it.
fn with(mut base: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// A case as the sync path projects it (unset fields empty, as the typed record has them).
fn case(place: &str, status: &str, category: &str, day: &str, fields: Value) -> Value {
    with(
        json!({
            "kind": "case", "schema": 1, "place": place, "category": category, "status": status,
            "summary": "", "details": "", "building": "", "unit": "", "room": "",
            "resident_name": "", "resident_phone": "", "source": "", "session_id": "",
            "departments": [], "deadline": "", "resolution": "", "satisfaction": "",
            "photos": [], "notes": [], "created_at": ms(day), "created_by": "u1",
        }),
        fields,
    )
}

fn bus(place: &str, fields: Value) -> Value {
    with(
        json!({
            "kind": "bus", "schema": 1, "place": place, "session_type": "", "run_number": "",
            "date": "", "estate": "", "leader": "", "departments": [], "consultations": 0,
            "answered_on_site": 0, "leaflets": 0, "summary": "", "notes": [],
            "created_at": 0, "created_by": "u1",
        }),
        fields,
    )
}

fn contact(place: &str, day: &str, household: &str, needs: &str) -> Value {
    json!({
        "kind": "contact", "schema": 1, "place": place, "steward": "王", "household": household,
        "date": day, "channel": "visit", "topics": [], "needs": needs, "case_id": "",
        "follow_up_due": "", "notes": [], "created_at": ms(day), "created_by": "u1",
    })
}

fn volunteer(place: &str, day: &str, activity: &str, kind: &str, hours: f64, served: i64) -> Value {
    json!({
        "kind": "volunteer", "schema": 1, "place": place, "activity": activity,
        "activity_type": kind, "date": day, "venue": "", "volunteers": ["王"], "hours": hours,
        "residents_served": served, "summary": "", "notes": [], "created_at": ms(day),
        "created_by": "u1",
    })
}

/// One record's documents on a phone, committing each edit as the sync path does.
struct Rec {
    id: RecordId,
    kind: RecordKind,
    place: PlaceId,
    doc: AutoCommit,
    version: i64,
}

impl Rec {
    fn new(n: u8, kind: RecordKind, place: &str) -> Rec {
        Rec {
            id: rid(n),
            kind,
            place: p(place),
            doc: AutoCommit::new().with_actor(ActorId::random()),
            version: 0,
        }
    }

    fn change(
        &self,
        doc: &mut AutoCommit,
        part: Part,
        device: DeviceId,
        at: i64,
        projection: ProjectionUpdate,
    ) -> Commit {
        let change = doc.get_last_local_change().unwrap().clone();
        Commit {
            change: NewChange {
                hash: change.hash().0,
                record: self.id,
                part,
                place: self.place.clone(),
                kind: self.kind,
                bytes: change.raw_bytes().to_vec(),
                actor: doc.get_actor().to_hex_string(),
                device,
                user_id: "u1".into(),
                claimed_at: at,
                received_at: at,
                touched: vec!["summary".into()],
            },
            projection,
            expected_version: self.version,
        }
    }

    /// Commits an edit of the shared document whose merged record is `value`, received at `at`.
    async fn edit<S: Places>(
        &mut self,
        s: &S,
        device: DeviceId,
        value: &Value,
        at: i64,
        has_conflicts: bool,
    ) {
        let text = |k: &str| {
            value[k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(String::from)
        };
        let mut doc = std::mem::take(&mut self.doc);
        doc.put(ROOT, "summary", text("summary").unwrap_or_default())
            .unwrap();
        doc.put(ROOT, "edited_at", at).unwrap();
        let projection = ProjectionUpdate::Record {
            status: text("status"),
            category: text("category"),
            value: value.clone(),
            doc: (self.version == 0).then(|| doc.save()),
            has_conflicts,
        };
        let commit = self.change(&mut doc, Part::Record, device, at, projection);
        self.doc = doc;
        s.commit(commit).await.unwrap().unwrap();
        self.version += 1;
    }

    /// Commits the record's personal part with `values`, received at `at`.
    async fn personal<S: Places>(&mut self, s: &S, device: DeviceId, values: &Value, at: i64) {
        let mut doc = AutoCommit::new().with_actor(ActorId::random());
        for (k, v) in values.as_object().unwrap() {
            doc.put(ROOT, k.as_str(), v.as_str().unwrap()).unwrap();
        }
        let projection = ProjectionUpdate::Personal {
            doc: Some(doc.save()),
            values: values.clone(),
        };
        let commit = self.change(&mut doc, Part::Personal, device, at, projection);
        s.commit(commit).await.unwrap().unwrap();
        self.version += 1;
    }
}

/// The records of the table above, as last committed: (number, merged value).
struct Seeded {
    values: Vec<(u8, Value)>,
    personal: Value,
}

impl Seeded {
    fn value(&self, n: u8) -> &Value {
        &self.values.iter().find(|(m, _)| *m == n).unwrap().1
    }
}

/// Seeds places and the table's records into `s`.
async fn seed<S: Places>(s: &S) -> Seeded {
    let device = DeviceId::new();
    s.seed(&[device]).await;
    for (id, name, level) in [
        ("hz/a0", "A0街道", "street"),
        ("hz/ab", "AB街道", "street"),
        ("hz/a-b", "A-B街道", "street"),
        ("hz/a/x", "海天城", "community"),
        ("hz/a/x/b1", "1幢", "building"),
        ("hz/a/x/b2", "2幢", "building"),
        ("hz/a/x/b2/u1", "1单元", "unit"),
    ] {
        s.add_place(id, name, level).await;
    }
    let bus_10 = rid(10).to_string();
    use RecordKind::{Bus, Case, Contact, Volunteer};
    let first: Vec<(u8, RecordKind, &str, i64, bool, Value)> = vec![
        (
            1,
            Case,
            "hz/a/x/b1",
            100,
            false,
            case(
                "hz/a/x/b1",
                "assigned",
                "fire_safety",
                "2026-01-05",
                json!({
            "summary": "楼道漏水", "details": "厨房水管漏水", "source": "hotline",
            "departments": ["property"], "deadline": "2026-01-05"}),
            ),
        ),
        (
            2,
            Case,
            "hz/a/x",
            200,
            false,
            case(
                "hz/a/x",
                "resolved",
                "fire_safety",
                "2026-01-06",
                json!({
            "summary": "消防通道堵塞", "details": "地下室漏水管道破裂", "resolution": "已清理",
            "satisfaction": "satisfied", "source": "bus", "session_id": bus_10,
            "departments": ["fire_brigade", "enforcement"], "deadline": "2026-01-08"}),
            ),
        ),
        (
            3,
            Case,
            "hz/a",
            300,
            false,
            case(
                "hz/a",
                "evaluated",
                "noise",
                "2025-11-20",
                json!({
            "summary": "夜间噪音", "satisfaction": "very_satisfied", "source": "bus",
            "session_id": "1801"}),
            ),
        ),
        (
            4,
            Case,
            "hz/a/x/b2",
            400,
            false,
            case(
                "hz/a/x/b2",
                "withdrawn",
                "other",
                "2026-02-03",
                json!({
            "summary": "Water 漏了水 leak", "source": "hotline", "deadline": "2026-01-08"}),
            ),
        ),
        (
            5,
            Case,
            "hz/a0",
            500,
            false,
            case(
                "hz/a0",
                "in_progress",
                "fire_safety",
                "2026-01-09",
                json!({
            "summary": "漏水", "deadline": "2026-01-01"}),
            ),
        ),
        (
            6,
            Case,
            "hz/ab",
            600,
            false,
            case(
                "hz/ab",
                "assigned",
                "noise",
                "2026-01-10",
                json!({
            "summary": "漏水，问题严重"}),
            ),
        ),
        (
            7,
            Case,
            "hz/b",
            300,
            false,
            case(
                "hz/b",
                "answered_on_site",
                "noise",
                "2026-01-12",
                json!({
            "summary": "停车难", "satisfaction": "satisfied", "session_id": "1801"}),
            ),
        ),
        (
            8,
            Case,
            "hz/a-b",
            700,
            false,
            case(
                "hz/a-b",
                "assigned",
                "other",
                "2026-01-15",
                json!({
            "summary": "水 已停", "session_id": "1802", "deadline": "2026-01-20"}),
            ),
        ),
        (
            9,
            Case,
            "hz/a/x/b1",
            300,
            true,
            case(
                "hz/a/x/b1",
                "assigned",
                "fire_safety",
                "2026-01-07",
                json!({
            "summary": "电梯故障", "resolution": "已派单", "departments": ["property"],
            "deadline": "2026-01-08"}),
            ),
        ),
        (
            10,
            Bus,
            "hz/a/x",
            150,
            false,
            bus(
                "hz/a/x",
                json!({
            "session_type": "service_bus", "run_number": "1801", "date": "2026-01-15",
            "estate": "海天城", "consultations": 82, "answered_on_site": 79, "leaflets": 630,
            "summary": "直通车进小区", "departments": ["police"]}),
            ),
        ),
        (
            11,
            Bus,
            "hz/b",
            160,
            false,
            bus(
                "hz/b",
                json!({
            "session_type": "joint_reception", "run_number": "1802", "date": "2026-02-01",
            "consultations": 5, "answered_on_site": 4, "summary": "联合接访"}),
            ),
        ),
        (
            12,
            Contact,
            "hz/a/x/b1",
            250,
            false,
            contact("hz/a/x/b1", "2026-01-20", "1-101", "需要代购药品"),
        ),
        (
            13,
            Contact,
            "hz/a/x/b1",
            250,
            false,
            contact("hz/a/x/b1", "2026-01-21", "1-102", "停水了"),
        ),
        (
            14,
            Contact,
            "hz/a/x/b2/u1",
            260,
            false,
            contact("hz/a/x/b2/u1", "2026-01-22", "2-1-301", ""),
        ),
        (
            15,
            Contact,
            "hz/a/x",
            270,
            false,
            with(
                contact("hz/a/x", "2026-01-23", "", "咨询"),
                json!({"building": "7幢"}),
            ),
        ),
        (
            16,
            Volunteer,
            "hz/a/x",
            350,
            false,
            with(
                volunteer("hz/a/x", "2026-01-18", "义诊", "health", 2.5, 40),
                json!({"venue": "社区广场", "summary": "为老人量血压"}),
            ),
        ),
        (
            17,
            Volunteer,
            "hz/a",
            360,
            false,
            volunteer("hz/a", "2026-01-19", "清扫楼道", "", 3.0, 10),
        ),
        (
            18,
            Volunteer,
            "hz/a/x/b1",
            370,
            false,
            volunteer("hz/a/x/b1", "2026-02-02", "送水上门", "health", 1.5, 5),
        ),
    ];
    let mut recs = Vec::new();
    let mut values = Vec::new();
    for (n, kind, place, at, conflicted, value) in first {
        let mut rec = Rec::new(n, kind, place);
        rec.edit(s, device, &value, at, conflicted).await;
        recs.push(rec);
        values.push((n, value));
    }
    // Record 01 is taken in hand and noted: its columns and text follow its new value.
    let noted = with(
        values[0].1.clone(),
        json!({"status": "in_progress", "notes": [
            {"id": "n1", "author": "office1", "at": 900, "text": "已联系物业"}]}),
    );
    recs[0].edit(s, device, &noted, 900, false).await;
    values[0].1 = noted;
    // Record 13 gets a personal part: it moves in the order by last change, nothing else.
    let personal = json!({"resident_phone": "13800000000"});
    recs[12].personal(s, device, &personal, 800).await;
    Seeded { values, personal }
}

fn queue(scopes: &[&str]) -> OfficeFilter {
    OfficeFilter {
        scopes: scopes.iter().map(|s| p(s)).collect(),
        limit: 100,
        ..Default::default()
    }
}

fn stats(scopes: &[&str]) -> StatsFilter {
    StatsFilter {
        scopes: scopes.iter().map(|s| p(s)).collect(),
        ..Default::default()
    }
}

/// Every page of `f`, following the cursors: the records in order. Each page is full but the
/// last, and together they hold as many records as the count, each once.
async fn walk<S: OfficeStore>(s: &S, f: &OfficeFilter) -> Vec<u8> {
    let total = s.office_count(f).await.unwrap() as usize;
    let per_page = f.limit.max(1) as usize;
    let mut f = f.clone();
    let mut out = Vec::new();
    loop {
        let (rows, next) = s.office_page(&f).await.unwrap();
        assert_eq!(rows.len(), (total - out.len()).min(per_page), "{f:?}");
        out.extend(nums(&rows));
        match next {
            Some(after) => f.after = Some(after),
            None => break,
        }
    }
    assert_eq!(out.len(), total, "{f:?}");
    let mut unique = out.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), out.len(), "no record twice: {f:?}");
    out
}

/// Everything within `hz`, by last change.
const UPDATED: [u8; 18] = [
    1, 13, 8, 6, 5, 4, 18, 17, 16, 9, 7, 3, 15, 14, 12, 2, 11, 10,
];
/// ... by first receive time.
const CREATED: [u8; 18] = [
    8, 6, 5, 4, 18, 17, 16, 9, 7, 3, 15, 14, 13, 12, 2, 11, 10, 1,
];
/// ... by deadline, then the undated by id.
const DEADLINE: [u8; 18] = [
    5, 1, 2, 4, 9, 8, 3, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18,
];

async fn filters_select_the_records_by_hand<S: Places>(s: S) {
    seed(&s).await;
    let all = queue(&["hz"]);
    let cases: &[(OfficeFilter, &[u8])] = &[
        (all.clone(), &UPDATED),
        (
            OfficeFilter {
                status: Some("assigned".into()),
                ..all.clone()
            },
            &[8, 6, 9],
        ),
        (
            OfficeFilter {
                category: Some("fire_safety".into()),
                status: Some("in_progress".into()),
                ..all.clone()
            },
            &[1, 5],
        ),
        // Whole segments: hz/a0, hz/ab and hz/a-b are not within hz/a.
        (
            queue(&["hz/a"]),
            &[1, 13, 4, 18, 17, 16, 9, 3, 15, 14, 12, 2, 10],
        ),
        (
            OfficeFilter {
                place: Some(p("hz/a/x")),
                ..all.clone()
            },
            &[1, 13, 4, 18, 16, 9, 15, 14, 12, 2, 10],
        ),
        (queue(&["hz/a/x/b1"]), &[1, 13, 18, 9, 12]),
        (queue(&["hz/a0", "hz/a-b"]), &[8, 5]),
        // A place outside the scopes shows nothing; inside one of them, its own records.
        (
            OfficeFilter {
                place: Some(p("hz/b")),
                ..queue(&["hz/a"])
            },
            &[],
        ),
        (
            OfficeFilter {
                place: Some(p("hz/b")),
                ..queue(&["hz/a", "hz/b"])
            },
            &[7, 11],
        ),
        (queue(&[]), &[]),
        (
            OfficeFilter {
                kind: Some(RecordKind::Contact),
                ..all.clone()
            },
            &[13, 15, 14, 12],
        ),
        (
            OfficeFilter {
                kind: Some(RecordKind::Bus),
                ..all.clone()
            },
            &[11, 10],
        ),
        (
            OfficeFilter {
                kind: Some(RecordKind::Volunteer),
                ..queue(&["hz/a"])
            },
            &[18, 17, 16],
        ),
        // Open cases due before the day: not 02 (resolved), 04 (withdrawn), 08 (due later).
        (
            OfficeFilter {
                overdue_on: Some("2026-01-09".into()),
                ..all.clone()
            },
            &[1, 5, 9],
        ),
        (
            OfficeFilter {
                overdue_on: Some("2026-01-09".into()),
                ..queue(&["hz/a"])
            },
            &[1, 9],
        ),
        (
            OfficeFilter {
                overdue_on: Some("2026-01-05".into()),
                ..all.clone()
            },
            &[5],
        ),
        (
            OfficeFilter {
                has_conflicts: true,
                ..all.clone()
            },
            &[9],
        ),
        (
            OfficeFilter {
                department: Some("property".into()),
                ..all.clone()
            },
            &[1, 9],
        ),
        // A whole code, not a part of one.
        (
            OfficeFilter {
                department: Some("fire".into()),
                ..all.clone()
            },
            &[],
        ),
        (
            OfficeFilter {
                department: Some("enforcement".into()),
                ..all.clone()
            },
            &[2],
        ),
        (
            OfficeFilter {
                source: Some("bus".into()),
                ..all.clone()
            },
            &[3, 2],
        ),
        // A bus run's cases, named by its record id or its run number, either way.
        (
            OfficeFilter {
                session_id: Some(rid(10).to_string()),
                ..all.clone()
            },
            &[7, 3, 2],
        ),
        (
            OfficeFilter {
                session_id: Some("1801".into()),
                ..all.clone()
            },
            &[7, 3, 2],
        ),
        (
            OfficeFilter {
                session_id: Some("1802".into()),
                ..all.clone()
            },
            &[8],
        ),
        (
            OfficeFilter {
                session_id: Some("1803".into()),
                ..all.clone()
            },
            &[],
        ),
        (
            OfficeFilter {
                date_from: Some("2026-01-10".into()),
                date_to: Some("2026-01-20".into()),
                ..all.clone()
            },
            &[8, 6, 17, 16, 7, 12, 10],
        ),
        (
            OfficeFilter {
                date_to: Some("2025-12-31".into()),
                ..all.clone()
            },
            &[3],
        ),
    ];
    for (filter, want) in cases {
        assert_eq!(walk(&s, filter).await, *want, "{filter:?}");
        assert_eq!(
            s.office_count(filter).await.unwrap(),
            want.len() as i64,
            "{filter:?}"
        );
    }
    s.finish().await;
}

async fn search_finds_chinese_words_characters_and_mixed_terms<S: Places>(s: S) {
    seed(&s).await;
    let search = |text: &str, scopes: &[&str]| OfficeFilter {
        text: Some(text.into()),
        ..queue(scopes)
    };
    let cases: &[(OfficeFilter, &[u8])] = &[
        // A two-character word; not 04, whose 漏 and 水 are apart ("漏了水").
        (search("漏水", &["hz"]), &[1, 6, 5, 2]),
        (search("漏水", &["hz/a"]), &[1, 2]),
        // One character: at the end of a run (漏水), inside one (水管, 送水上门), alone (水 已停).
        (search("水", &["hz"]), &[1, 13, 8, 6, 5, 4, 18, 2]),
        (
            OfficeFilter {
                kind: Some(RecordKind::Contact),
                ..search("水", &["hz"])
            },
            &[13],
        ),
        // Three characters: 01 holds both of its pairs ("水管漏水") but not the word.
        (search("漏水管", &["hz"]), &[2]),
        // Every term must match.
        (search("楼道 漏水", &["hz"]), &[1]),
        (search("楼道", &["hz"]), &[1, 17]),
        // Mixed: Latin letters in any case with a Chinese character.
        (search("WATER 漏", &["hz"]), &[4]),
        (search("leak", &["hz"]), &[4]),
        (search("Water 漏水", &["hz"]), &[]),
        // Punctuation inside a term and alone; digits with a hyphen.
        (search("漏水，", &["hz"]), &[6]),
        (search("，", &["hz"]), &[6]),
        (search("1-10", &["hz"]), &[13, 12]),
        // A note written by the later edit.
        (search("物业", &["hz"]), &[1]),
        (search("火灾", &["hz"]), &[]),
        // Blank text searches nothing.
        (search("  ", &["hz"]), &UPDATED),
    ];
    for (filter, want) in cases {
        assert_eq!(walk(&s, filter).await, *want, "{filter:?}");
        assert_eq!(
            s.office_count(filter).await.unwrap(),
            want.len() as i64,
            "{filter:?}"
        );
    }
    // A search in the other orders.
    for (sort, want) in [
        (Sort::Created, [6, 5, 2, 1]),
        (Sort::Deadline, [5, 1, 2, 6]),
    ] {
        let f = OfficeFilter {
            sort,
            ..search("漏水", &["hz"])
        };
        assert_eq!(walk(&s, &f).await, want);
    }
    s.finish().await;
}

async fn pages_walk_every_order_without_skips_or_repeats<S: Places>(s: S) {
    seed(&s).await;
    let water = OfficeFilter {
        text: Some("水".into()),
        ..queue(&["hz"])
    };
    let orders: [(Sort, &[u8], &[u8]); 3] = [
        (Sort::Updated, &UPDATED, &[1, 13, 8, 6, 5, 4, 18, 2]),
        (Sort::Created, &CREATED, &[8, 6, 5, 4, 18, 13, 2, 1]),
        (Sort::Deadline, &DEADLINE, &[5, 1, 2, 4, 8, 6, 13, 18]),
    ];
    for (sort, every, searched) in orders {
        // Page sizes that end pages inside ties of the order's key (three records at 300, three
        // due 01-08), at the end of the dated records (6), exactly at the end (18), and after.
        for limit in [1, 2, 3, 4, 5, 6, 7, 18, 100] {
            let f = OfficeFilter {
                sort,
                limit,
                ..queue(&["hz"])
            };
            assert_eq!(walk(&s, &f).await, every, "{sort:?} by {limit}");
            let f = OfficeFilter {
                sort,
                limit,
                ..water.clone()
            };
            assert_eq!(walk(&s, &f).await, searched, "{sort:?} by {limit}");
        }
    }
    // A limit of 0 is one row a page.
    let (rows, next) = s
        .office_page(&OfficeFilter {
            limit: 0,
            ..queue(&["hz"])
        })
        .await
        .unwrap();
    assert_eq!((nums(&rows), next.is_some()), (vec![1], true));
    // A cursor of another order, or none at all, is refused.
    let (_, next) = s
        .office_page(&OfficeFilter {
            limit: 2,
            sort: Sort::Created,
            ..queue(&["hz"])
        })
        .await
        .unwrap();
    for after in [next.unwrap(), "garbage".to_string()] {
        let f = OfficeFilter {
            after: Some(after),
            ..queue(&["hz"])
        };
        assert!(matches!(
            s.office_page(&f).await,
            Err(StoreError::Invalid(_))
        ));
    }
    s.finish().await;
}

async fn counts_cap_and_the_stream_lists_every_match<S: Places>(s: S) {
    seed(&s).await;
    let all = queue(&["hz"]);
    let water = OfficeFilter {
        text: Some("水".into()),
        ..all.clone()
    };
    for (f, n) in [(&all, 18), (&water, 8), (&queue(&["hz/a"]), 13)] {
        assert_eq!(s.office_count(f).await.unwrap(), n);
        let n = n as u32;
        assert_eq!(s.office_count_upto(f, n).await.unwrap(), Some(i64::from(n)));
        assert_eq!(s.office_count_upto(f, n - 1).await.unwrap(), None);
        assert_eq!(
            s.office_count_upto(f, 1000).await.unwrap(),
            Some(i64::from(n))
        );
        assert_eq!(s.office_count_upto(f, 0).await.unwrap(), None);
    }
    assert_eq!(s.office_count_upto(&queue(&[]), 0).await.unwrap(), Some(0));

    // The stream lists every match in the order, whatever the filter's limit.
    for (sort, every) in [
        (Sort::Updated, UPDATED),
        (Sort::Created, CREATED),
        (Sort::Deadline, DEADLINE),
    ] {
        let f = OfficeFilter {
            sort,
            limit: 3,
            ..all.clone()
        };
        let rows: Vec<RecordRow> = s.office_stream(&f).try_collect().await.unwrap();
        assert_eq!(nums(&rows), every);
        // From a page's cursor on: the rest.
        let (_, next) = s.office_page(&f).await.unwrap();
        let rest = OfficeFilter { after: next, ..f };
        let rows: Vec<RecordRow> = s.office_stream(&rest).try_collect().await.unwrap();
        assert_eq!(nums(&rows), every[3..]);
    }
    let rows: Vec<RecordRow> = s.office_stream(&water).try_collect().await.unwrap();
    assert_eq!(nums(&rows), [1, 13, 8, 6, 5, 4, 18, 2]);
    let bad = OfficeFilter {
        after: Some("x".into()),
        ..all.clone()
    };
    let got: Vec<StoreResult<RecordRow>> = s.office_stream(&bad).collect().await;
    assert!(got.len() == 1 && matches!(got[0], Err(StoreError::Invalid(_))));
    s.finish().await;
}

async fn rows_and_lists_read_the_projection<S: Places>(s: S) {
    let seeded = seed(&s).await;
    let row = s.record_row(rid(1)).await.unwrap().unwrap();
    assert_eq!(
        (row.kind.as_str(), row.place.as_str(), row.status.as_deref()),
        ("case", "hz/a/x/b1", Some("in_progress"))
    );
    assert_eq!(row.category.as_deref(), Some("fire_safety"));
    assert_eq!((row.created_at, row.updated_at), (100, 900));
    // Eighteen first commits, then 01's edit and 13's personal part.
    assert_eq!(row.last_seq, 19);
    // The value reads back as it was committed, to the byte.
    assert_eq!(row.value, seeded.value(1).to_string());
    assert_eq!(row.personal, None);
    assert_eq!(row.source.as_deref(), Some("hotline"));
    assert_eq!(row.session_id, None);
    assert_eq!(row.departments, ["property"]);
    assert_eq!(row.deadline.as_deref(), Some("2026-01-05"));
    assert_eq!(row.satisfaction, None);
    assert_eq!(row.summary.as_deref(), Some("楼道漏水"));
    assert_eq!(row.building.as_deref(), Some("hz/a/x/b1"));
    assert_eq!(row.date.as_deref(), Some("2026-01-05"));
    assert!(!row.has_conflicts);

    let row = s.record_row(rid(2)).await.unwrap().unwrap();
    assert_eq!(row.departments, ["fire_brigade", "enforcement"]);
    assert_eq!(row.session_id, Some(rid(10).to_string()));
    assert_eq!(row.satisfaction.as_deref(), Some("satisfied"));
    assert_eq!(row.building, None, "hz/a/x is no building");
    let row = s.record_row(rid(9)).await.unwrap().unwrap();
    assert!(row.has_conflicts);
    let row = s.record_row(rid(10)).await.unwrap().unwrap();
    assert_eq!(
        (row.kind.as_str(), row.status, row.date.as_deref()),
        ("bus", None, Some("2026-01-15"))
    );
    assert_eq!(row.summary.as_deref(), Some("直通车进小区"));
    let row = s.record_row(rid(13)).await.unwrap().unwrap();
    assert_eq!(row.personal, Some(seeded.personal.to_string()));
    assert_eq!((row.updated_at, row.last_seq), (800, 20));
    assert_eq!(row.value, seeded.value(13).to_string());
    assert_eq!(row.summary.as_deref(), Some("停水了"));
    let row = s.record_row(rid(14)).await.unwrap().unwrap();
    assert_eq!(
        row.building.as_deref(),
        Some("hz/a/x/b2"),
        "from a unit's building"
    );
    let row = s.record_row(rid(15)).await.unwrap().unwrap();
    assert_eq!(row.building.as_deref(), Some("7幢"), "its own text");
    let row = s.record_row(rid(16)).await.unwrap().unwrap();
    assert_eq!(row.value, seeded.value(16).to_string(), "2.5 hours");
    assert_eq!(row.summary.as_deref(), Some("义诊"));
    assert!(s.record_row(RecordId::new()).await.unwrap().is_none());

    let list = |f: RecordFilter| {
        let s = s.clone();
        async move { nums(&s.list_records(&f).await.unwrap()) }
    };
    let base = RecordFilter {
        scopes: vec![p("hz")],
        limit: 100,
        ..Default::default()
    };
    assert_eq!(list(base.clone()).await, UPDATED);
    let a_cases = RecordFilter {
        scopes: vec![p("hz/a")],
        kind: Some(RecordKind::Case),
        limit: 2,
        ..Default::default()
    };
    assert_eq!(list(a_cases.clone()).await, [1, 4]);
    for (after, want) in [
        ((400, 4), vec![9, 3]),
        ((300, 3), vec![2]),
        ((200, 2), vec![]),
    ] {
        let f = RecordFilter {
            after: Some((after.0, rid(after.1).to_string())),
            ..a_cases.clone()
        };
        assert_eq!(list(f).await, want);
    }
    for (f, want) in [
        (
            RecordFilter {
                status: Some("assigned".into()),
                ..base.clone()
            },
            vec![8, 6, 9],
        ),
        (
            RecordFilter {
                category: Some("noise".into()),
                ..base.clone()
            },
            vec![6, 7, 3],
        ),
        (
            RecordFilter {
                updated_since: Some(600),
                ..base.clone()
            },
            vec![1, 13, 8, 6],
        ),
        (
            RecordFilter {
                scopes: vec![p("hz/a/x/b1")],
                ..base.clone()
            },
            vec![1, 13, 18, 9, 12],
        ),
        (
            RecordFilter {
                scopes: vec![],
                ..base.clone()
            },
            vec![],
        ),
        (
            RecordFilter {
                limit: 0,
                ..base.clone()
            },
            vec![],
        ),
    ] {
        assert_eq!(list(f.clone()).await, want, "{f:?}");
    }
    s.finish().await;
}

fn month(month: &str, count: i64, change: Option<i64>) -> MonthCount {
    MonthCount {
        month: month.into(),
        count,
        change,
    }
}

fn code(code: &str, count: i64) -> CodeCount {
    CodeCount {
        code: code.into(),
        count,
    }
}

async fn statistics_are_the_hand_counted_figures<S: Places>(s: S) {
    seed(&s).await;
    let run_1801 = |cases| SessionStat {
        id: rid(10).to_string(),
        run_number: Some("1801".into()),
        session_type: Some("service_bus".into()),
        date: Some("2026-01-15".into()),
        place: "hz/a/x".into(),
        consultations: 82,
        answered: 79,
        leaflets: 630,
        cases,
    };
    let run_1802 = SessionStat {
        id: rid(11).to_string(),
        run_number: Some("1802".into()),
        session_type: Some("joint_reception".into()),
        date: Some("2026-02-01".into()),
        place: "hz/b".into(),
        consultations: 5,
        answered: 4,
        leaflets: 0,
        cases: 1,
    };
    let a = stats(&["hz/a"]);
    let hz = stats(&["hz"]);

    // Linked cases within the scopes: 02 (by id) and 03 (by run number); 07 lies in hz/b.
    assert_eq!(s.office_sessions(&a).await.unwrap(), [run_1801(2)]);
    assert_eq!(
        s.office_sessions(&hz).await.unwrap(),
        [run_1802.clone(), run_1801(3)]
    );
    // A place narrows the runs, not the cases counted (those follow the scopes).
    let hz_a = StatsFilter {
        place: Some(p("hz/a")),
        ..hz.clone()
    };
    assert_eq!(s.office_sessions(&hz_a).await.unwrap(), [run_1801(3)]);

    // Withdrawn 04 left out: 01, 02, 03, 09, of which 02 and 03 are closed, and 09 (with a
    // resolution written) got a reply too.
    assert_eq!(
        s.office_resolved_share(&a).await.unwrap(),
        Share { part: 2, total: 4 }
    );
    assert_eq!(
        s.office_reply_rate(&a).await.unwrap(),
        Share { part: 3, total: 4 }
    );
    assert_eq!(
        s.office_resolved_share(&hz).await.unwrap(),
        Share { part: 2, total: 8 }
    );
    // 07 was answered on site.
    assert_eq!(
        s.office_reply_rate(&hz).await.unwrap(),
        Share { part: 4, total: 8 }
    );

    // Every case, withdrawn too, by its day; December had none.
    let a_months = vec![
        month("2025-11", 1, None),
        month("2025-12", 0, Some(-1)),
        month("2026-01", 3, Some(3)),
        month("2026-02", 1, Some(-2)),
    ];
    assert_eq!(s.office_cases_per_month(&a).await.unwrap(), a_months);
    assert_eq!(
        s.office_cases_per_month(&hz).await.unwrap(),
        [
            month("2025-11", 1, None),
            month("2025-12", 0, Some(-1)),
            month("2026-01", 7, Some(7)),
            month("2026-02", 1, Some(-6)),
        ]
    );
    let a_2026 = StatsFilter {
        date_from: Some("2026-01-01".into()),
        ..a.clone()
    };
    assert_eq!(
        s.office_cases_per_month(&a_2026).await.unwrap(),
        [month("2026-01", 3, None), month("2026-02", 1, Some(-2))]
    );

    assert_eq!(
        s.office_satisfaction(&a).await.unwrap(),
        [code("satisfied", 1), code("very_satisfied", 1)]
    );
    assert_eq!(
        s.office_satisfaction(&hz).await.unwrap(),
        [code("satisfied", 2), code("very_satisfied", 1)]
    );

    // Per building: 14 lies in b2 through its unit, 15 names its own; ties by bytes.
    let contacts = vec![
        BuildingCount {
            building: "hz/a/x/b1".into(),
            name: Some("1幢".into()),
            contacts: 2,
        },
        BuildingCount {
            building: "7幢".into(),
            name: None,
            contacts: 1,
        },
        BuildingCount {
            building: "hz/a/x/b2".into(),
            name: Some("2幢".into()),
            contacts: 1,
        },
    ];
    assert_eq!(s.office_contacts_per_building(&a).await.unwrap(), contacts);
    let early = StatsFilter {
        date_to: Some("2026-01-21".into()),
        ..a.clone()
    };
    assert_eq!(
        s.office_contacts_per_building(&early).await.unwrap(),
        contacts[..1]
    );

    let volunteering = vec![
        VolunteerStat {
            activity_type: "health".into(),
            activities: 2,
            hours: 4.0,
            residents_served: 45,
        },
        VolunteerStat {
            activity_type: "other".into(),
            activities: 1,
            hours: 3.0,
            residents_served: 10,
        },
    ];
    assert_eq!(s.office_volunteering(&a).await.unwrap(), volunteering);
    assert_eq!(
        s.office_volunteering(&stats(&["hz/a/x/b1"])).await.unwrap(),
        [VolunteerStat {
            activity_type: "health".into(),
            activities: 1,
            hours: 1.5,
            residents_served: 5,
        }]
    );

    assert_eq!(
        s.office_stats(&a).await.unwrap(),
        OfficeStats {
            sessions: vec![run_1801(2)],
            resolved: Share { part: 2, total: 4 },
            per_month: a_months,
            replied: Share { part: 3, total: 4 },
            satisfaction: vec![code("satisfied", 1), code("very_satisfied", 1)],
            contacts,
            volunteering,
        }
    );
    assert_eq!(
        s.office_stats(&stats(&[])).await.unwrap(),
        OfficeStats {
            sessions: vec![],
            resolved: Share { part: 0, total: 0 },
            per_month: vec![],
            replied: Share { part: 0, total: 0 },
            satisfaction: vec![],
            contacts: vec![],
            volunteering: vec![],
        }
    );
    s.finish().await;
}

macro_rules! office_store_conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[tokio::test]
            async fn filters_select_the_records_by_hand() {
                super::filters_select_the_records_by_hand($open.await).await;
            }

            #[tokio::test]
            async fn search_finds_chinese_words_characters_and_mixed_terms() {
                super::search_finds_chinese_words_characters_and_mixed_terms($open.await).await;
            }

            #[tokio::test]
            async fn pages_walk_every_order_without_skips_or_repeats() {
                super::pages_walk_every_order_without_skips_or_repeats($open.await).await;
            }

            #[tokio::test]
            async fn counts_cap_and_the_stream_lists_every_match() {
                super::counts_cap_and_the_stream_lists_every_match($open.await).await;
            }

            #[tokio::test]
            async fn rows_and_lists_read_the_projection() {
                super::rows_and_lists_read_the_projection($open.await).await;
            }

            #[tokio::test]
            async fn statistics_are_the_hand_counted_figures() {
                super::statistics_are_the_hand_counted_figures($open.await).await;
            }
        }
    };
}

office_store_conformance!(sqlite, super::sqlite_store());
office_store_conformance!(postgres, super::PgTest::create());
