//! The back-office data layer over the demo records (`serve --demo`): queue filters checked
//! against the records' own values, keyset pages in every order, Chinese search, scopes, and
//! statistics that move when a record changes through the sync path.

use linli_server::store::prelude::*;
use std::collections::HashSet;

use axum::http::StatusCode;
use futures_util::TryStreamExt;
use linli_server::store::{OfficeFilter, RecordRow, Sort, StatsFilter};
use linli_sync_core::{PlaceId, RecordDoc, RecordId, RecordKind};
use serde_json::Value;

use crate::common::{TestApp, push};

fn p(s: &str) -> PlaceId {
    s.parse().unwrap()
}

fn street() -> OfficeFilter {
    OfficeFilter {
        scopes: vec![p("hz/baiyang")],
        limit: 50,
        ..Default::default()
    }
}

fn stats_street() -> StatsFilter {
    StatsFilter {
        scopes: vec![p("hz/baiyang")],
        ..Default::default()
    }
}

/// Every row the filter matches, through the export stream.
async fn all(app: &TestApp, f: &OfficeFilter) -> Vec<RecordRow> {
    app.state
        .store
        .office_stream(f)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
}

/// Walks every page of the filter and checks each id comes once.
async fn walk(app: &TestApp, f: &OfficeFilter) -> Vec<RecordRow> {
    let mut f = f.clone();
    let mut out: Vec<RecordRow> = Vec::new();
    loop {
        let (rows, next) = app.state.store.office_page(&f).await.unwrap();
        assert!(rows.len() <= f.limit as usize);
        out.extend(rows);
        match next {
            Some(n) => f.after = Some(n),
            None => break,
        }
    }
    let ids: HashSet<&str> = out.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), out.len(), "a row came twice");
    out
}

fn json(row: &RecordRow) -> Value {
    serde_json::from_str(&row.value).unwrap()
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

/// The id of the demo's open (overdue) case.
async fn open_case(app: &TestApp) -> RecordRow {
    let mut f = street();
    f.kind = Some(RecordKind::Case);
    f.status = Some("in_progress".into());
    let rows = all(app, &f).await;
    assert_eq!(rows.len(), 1, "one open case in the demo");
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn demo_statistics_are_computed_from_records_and_move_with_them() {
    let app = TestApp::demo_records().await;
    let store = &app.state.store;

    // Step 1: run 1801 as the two bus phones tallied it, and the problem list's share.
    let stats = store.office_stats(&stats_street()).await.unwrap();
    let run = stats
        .sessions
        .iter()
        .find(|s| s.run_number.as_deref() == Some("1801"))
        .expect("run 1801");
    assert_eq!(
        (run.consultations, run.answered, run.leaflets, run.cases),
        (82, 79, 630, 12)
    );
    assert_eq!(run.session_type.as_deref(), Some("service_bus"));
    assert_eq!(run.place, "hz/baiyang/haitian/haitiancheng");
    assert_eq!((stats.resolved.part, stats.resolved.total), (706, 707));
    assert_eq!((stats.replied.part, stats.replied.total), (706, 707));
    let evaluated = all(
        &app,
        &OfficeFilter {
            status: Some("evaluated".into()),
            ..street()
        },
    )
    .await
    .len() as i64;
    assert!(evaluated > 300, "{evaluated}");
    assert_eq!(
        stats.satisfaction.iter().map(|c| c.count).sum::<i64>(),
        evaluated
    );
    // Every case, withdrawn ones too, falls in some month; months follow each other.
    assert_eq!(stats.per_month.iter().map(|m| m.count).sum::<i64>(), 709);
    assert!(stats.per_month.len() >= 6, "{:?}", stats.per_month);
    for pair in stats.per_month.windows(2) {
        assert_eq!(pair[1].change, Some(pair[1].count - pair[0].count));
        assert!(pair[0].month < pair[1].month);
    }
    assert_eq!(stats.contacts.len(), 13, "every building has contacts");
    let b3 = stats
        .contacts
        .iter()
        .find(|b| b.building == "hz/baiyang/haitian/haitiancheng/b3")
        .unwrap();
    assert_eq!(b3.name.as_deref(), Some("3幢"));
    assert_eq!(
        stats.volunteering.iter().map(|v| v.activities).sum::<i64>(),
        6
    );
    assert_eq!(
        stats.volunteering.iter().map(|v| v.hours).sum::<f64>(),
        16.0
    );
    assert_eq!(
        stats
            .volunteering
            .iter()
            .map(|v| v.residents_served)
            .sum::<i64>(),
        330
    );

    // A period and a place narrow the figures.
    let dabei = StatsFilter {
        place: Some(p("hz/baiyang/dabei")),
        ..stats_street()
    };
    let narrowed = store.office_stats(&dabei).await.unwrap();
    assert!(
        narrowed
            .sessions
            .iter()
            .all(|s| s.run_number.as_deref() == Some("1802"))
    );
    assert!(narrowed.resolved.total < 707 && narrowed.resolved.total > 0);
    let last_month = StatsFilter {
        date_from: Some(stats.per_month.last().unwrap().month.clone() + "-01"),
        ..stats_street()
    };
    let recent = store.office_cases_per_month(&last_month).await.unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].count, stats.per_month.last().unwrap().count);
    // Nothing outside the caller's places.
    let elsewhere = StatsFilter {
        scopes: vec![p("hz/baiyang/haitian/tianyuan")],
        ..Default::default()
    };
    assert!(store.office_sessions(&elsewhere).await.unwrap().is_empty());

    // Step 2: the office resolves the open case from a phone-like client, through /v1/sync.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let overdue = OfficeFilter {
        overdue_on: Some(today.clone()),
        ..street()
    };
    assert_eq!(store.office_count(&overdue).await.unwrap(), 1);
    let case = open_case(&app).await;
    assert!(case.deadline.as_deref().unwrap() < today.as_str());
    let id: RecordId = case.id.parse().unwrap();
    let mut doc = RecordDoc::load(id, &store.record_doc(id).await.unwrap().unwrap()).unwrap();
    let mut office = app.login("office1").await;
    let change = office.set(
        &mut doc,
        &[
            ("status", "resolved"),
            ("resolution", "消防大队清理占道车辆并施划禁停标线"),
            ("departments", "fire_brigade,enforcement"),
        ],
    );
    let (status, resp) = app
        .sync(&mut office, vec![push(&doc, RecordKind::Case, &change)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);

    // Step 3: the figures moved, because they are computed, not stored.
    let after = store.office_stats(&stats_street()).await.unwrap();
    assert_eq!((after.resolved.part, after.resolved.total), (707, 707));
    assert_eq!(store.office_count(&overdue).await.unwrap(), 0);
    let row = store.record_row(id).await.unwrap().unwrap();
    assert_eq!(row.status.as_deref(), Some("resolved"));
    assert_eq!(row.departments, vec!["fire_brigade", "enforcement"]);
    let found = all(
        &app,
        &OfficeFilter {
            text: Some("禁停标线".into()),
            department: Some("enforcement".into()),
            ..street()
        },
    )
    .await;
    assert!(found.iter().any(|r| r.id == case.id));

    // Seeding again changes nothing.
    assert_eq!(
        linli_server::demo_records::seed_records(&app.state)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn filters_narrow_as_the_records_say() {
    let app = TestApp::demo_records().await;
    let store = &app.state.store;
    let everything = all(&app, &street()).await;
    assert_eq!(
        store.office_count(&street()).await.unwrap(),
        everything.len() as i64
    );
    assert!(everything.len() > 750, "{}", everything.len());
    let run = everything
        .iter()
        .find(|r| r.kind == "bus" && json(r)["run_number"] == "1801")
        .unwrap()
        .clone();

    // Each filter against a predicate on the records' own JSON values.
    type Check = Box<dyn Fn(&RecordRow, &Value) -> bool>;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let t = today.clone();
    let run_id = run.id.clone();
    let runs_1801: Vec<String> = everything
        .iter()
        .filter(|r| r.kind == "bus" && json(r)["run_number"] == "1801")
        .map(|r| r.id.clone())
        .collect();
    let cases: Vec<(OfficeFilter, Check)> = vec![
        (
            OfficeFilter {
                kind: Some(RecordKind::Contact),
                ..street()
            },
            Box::new(|r, _| r.kind == "contact"),
        ),
        (
            OfficeFilter {
                category: Some("fire_safety".into()),
                ..street()
            },
            Box::new(|_, v| s(v, "category") == "fire_safety"),
        ),
        (
            OfficeFilter {
                status: Some("evaluated".into()),
                ..street()
            },
            Box::new(|_, v| s(v, "status") == "evaluated"),
        ),
        (
            OfficeFilter {
                source: Some("hotline".into()),
                ..street()
            },
            Box::new(|_, v| s(v, "source") == "hotline"),
        ),
        (
            OfficeFilter {
                department: Some("fire_brigade".into()),
                ..street()
            },
            Box::new(|_, v| {
                v["departments"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|d| d == "fire_brigade"))
            }),
        ),
        (
            OfficeFilter {
                session_id: Some(run.id.clone()),
                ..street()
            },
            Box::new(move |r, v| r.kind == "case" && s(v, "session_id") == run_id),
        ),
        (
            // Staff know the run by its number; the cases name it by its record id.
            OfficeFilter {
                session_id: Some("1801".into()),
                ..street()
            },
            Box::new(move |r, v| {
                r.kind == "case"
                    && (s(v, "session_id") == "1801"
                        || runs_1801.iter().any(|id| id == s(v, "session_id")))
            }),
        ),
        (
            OfficeFilter {
                place: Some(p("hz/baiyang/haitian/tianyuan")),
                ..street()
            },
            Box::new(|r, _| r.place.starts_with("hz/baiyang/haitian/tianyuan")),
        ),
        (
            OfficeFilter {
                date_from: Some("2000-01-01".into()),
                date_to: Some(today.clone()),
                kind: Some(RecordKind::Case),
                ..street()
            },
            Box::new(|r, _| r.kind == "case"),
        ),
        (
            OfficeFilter {
                overdue_on: Some(today.clone()),
                ..street()
            },
            Box::new(move |_, v| {
                let d = s(v, "deadline");
                !d.is_empty()
                    && d < t.as_str()
                    && !["resolved", "evaluated", "withdrawn"].contains(&s(v, "status"))
            }),
        ),
        (
            OfficeFilter {
                has_conflicts: true,
                ..street()
            },
            Box::new(|r, _| r.kind == "case" && r.session_id.is_some()),
        ),
        (
            OfficeFilter {
                text: Some("消防".into()),
                ..street()
            },
            Box::new(|_, v| {
                ["summary", "details", "resolution", "needs", "activity"]
                    .iter()
                    .any(|f| s(v, f).contains("消防"))
            }),
        ),
        (
            OfficeFilter {
                text: Some("飞线充电".into()),
                ..street()
            },
            Box::new(|_, v| s(v, "details").contains("飞线充电")),
        ),
    ];
    for (i, (filter, check)) in cases.iter().enumerate() {
        let want: HashSet<&str> = everything
            .iter()
            .filter(|r| check(r, &json(r)))
            .map(|r| r.id.as_str())
            .collect();
        let got = walk(&app, filter).await;
        let got_ids: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
        assert!(!want.is_empty(), "filter {i} matches nothing in the demo");
        if filter.has_conflicts {
            // Only the case two bus phones classified differently.
            assert_eq!(got.len(), 1, "filter {i}");
            assert!(want.contains(got[0].id.as_str()));
            assert!(got[0].has_conflicts);
            continue;
        }
        assert!(
            got_ids.len() < everything.len(),
            "filter {i} narrows nothing"
        );
        assert_eq!(got_ids, want, "filter {i}: {filter:?}");
        assert_eq!(
            store.office_count(filter).await.unwrap(),
            want.len() as i64,
            "filter {i}"
        );
    }
    // The run's cases: 12, also found by the run number when cases store that.
    let by_run = OfficeFilter {
        session_id: Some(run.id.clone()),
        ..street()
    };
    assert_eq!(store.office_count(&by_run).await.unwrap(), 12);
    // Filters combine.
    let both = OfficeFilter {
        category: Some("fire_safety".into()),
        place: Some(p("hz/baiyang/dabei")),
        status: Some("resolved".into()),
        ..street()
    };
    for r in walk(&app, &both).await {
        let v = json(&r);
        assert_eq!(
            (s(&v, "category"), s(&v, "status")),
            ("fire_safety", "resolved")
        );
        assert!(r.place.starts_with("hz/baiyang/dabei"));
    }
    // A bad cursor is the caller's error, not a server fault.
    let bad = OfficeFilter {
        after: Some("x.1".into()),
        ..street()
    };
    assert!(matches!(
        store.office_page(&bad).await,
        Err(linli_server::store::StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn keyset_pages_cover_every_row_once_in_every_order() {
    let app = TestApp::demo_records().await;
    let total = app.state.store.office_count(&street()).await.unwrap() as usize;
    for sort in [Sort::Updated, Sort::Created, Sort::Deadline] {
        let f = OfficeFilter {
            sort,
            limit: 37,
            ..street()
        };
        let rows = walk(&app, &f).await;
        assert_eq!(rows.len(), total, "{sort:?}");
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let ordered = match sort {
                Sort::Updated => (b.updated_at, &b.id) < (a.updated_at, &a.id),
                Sort::Created => (b.created_at, &b.id) < (a.created_at, &a.id),
                Sort::Deadline => match (&a.deadline, &b.deadline) {
                    (Some(x), Some(y)) => (x, &a.id) < (y, &b.id),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => a.id < b.id,
                },
            };
            assert!(ordered, "{sort:?}: {a:?} then {b:?}");
        }
        // The stream reads the same rows in the same order.
        let streamed: Vec<String> = all(&app, &f).await.into_iter().map(|r| r.id).collect();
        let walked: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        assert_eq!(streamed, walked, "{sort:?}");
    }
}

#[tokio::test]
async fn chinese_search_finds_short_and_long_terms_in_summary_details_and_notes() {
    let app = TestApp::demo_records().await;
    let store = &app.state.store;
    let search = |text: &str| OfficeFilter {
        text: Some(text.into()),
        ..street()
    };
    let mut office = app.login("office1").await;
    let (mut doc, c) = office.create(
        RecordKind::Case,
        "hz/baiyang/dabei/wenhuiyuan/b2",
        &[
            ("summary", "地下车库渗水"),
            ("details", "雨后车库墙面大面积渗水发霉"),
            ("category", "facilities"),
            ("source", "hotline"),
        ],
    );
    let (status, resp) = app
        .sync(&mut office, vec![push(&doc, RecordKind::Case, &c)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);
    let id = doc.id().to_string();
    let finds = |rows: &[RecordRow]| rows.iter().any(|r| r.id == id);
    for term in ["车库渗水", "渗水", "墙面大面积", "发霉", "车库 渗水"] {
        assert!(finds(&all(&app, &search(term)).await), "{term}");
    }
    assert!(!finds(&all(&app, &search("消防")).await));

    // A note is searchable as soon as it is committed.
    let note = doc
        .add_note(&office.ctx(), "已联系物业安排防水维修")
        .unwrap();
    let (status, resp) = app
        .sync(&mut office, vec![push(&doc, RecordKind::Case, &note)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);
    for term in ["防水维修", "防水", "物业安排"] {
        assert!(finds(&all(&app, &search(term)).await), "{term}");
    }
    // The text moves with the record: an old summary is no longer found.
    let change = office.set(&mut doc, &[("summary", "地下室积水")]);
    app.sync(&mut office, vec![push(&doc, RecordKind::Case, &change)], 0)
        .await;
    assert!(!finds(&all(&app, &search("车库渗水")).await));
    assert!(finds(&all(&app, &search("积水")).await));
    let row = store.record_row(doc.id()).await.unwrap().unwrap();
    assert_eq!(row.summary.as_deref(), Some("地下室积水"));
    assert_eq!(
        row.building.as_deref(),
        Some("hz/baiyang/dabei/wenhuiyuan/b2")
    );

    // FTS syntax and LIKE wildcards in the user's text are only text.
    for term in ["\"", "a\" OR \"b", "%", "_", "NEAR(x y)", "车库*", "\\"] {
        store.office_page(&search(term)).await.unwrap();
    }
    assert!(all(&app, &search("%%")).await.is_empty());
    assert!(all(&app, &search("__")).await.is_empty());
}

#[tokio::test]
async fn scopes_keep_other_streets_out() {
    let app = TestApp::demo_records().await;
    let store = &app.state.store;
    // Another street with a case the admin records there.
    for (id, name, level) in [
        (
            "hz/xiasha",
            "下沙街道",
            linli_server::model::PlaceLevel::Street,
        ),
        (
            "hz/xiasha/yuan",
            "元成社区",
            linli_server::model::PlaceLevel::Community,
        ),
    ] {
        let id = p(id);
        store
            .upsert_place(&linli_server::model::Place {
                parent: id.parent(),
                id,
                name: name.into(),
                level,
            })
            .await
            .unwrap();
    }
    let mut admin = app.login("admin").await;
    let (doc, c) = admin.create(
        RecordKind::Case,
        "hz/xiasha/yuan",
        &[
            ("summary", "消防通道占用（下沙）"),
            ("category", "fire_safety"),
            ("source", "hotline"),
        ],
    );
    let (status, resp) = app
        .sync(&mut admin, vec![push(&doc, RecordKind::Case, &c)], 0)
        .await;
    assert_eq!(status, StatusCode::OK, "{:?}", resp.rejected);
    let id = doc.id().to_string();

    let text = |scopes: Vec<PlaceId>, t: &str| OfficeFilter {
        scopes,
        text: Some(t.into()),
        limit: 1000,
        ..Default::default()
    };
    for t in ["消防通道", "消防", "下沙"] {
        let (rows, _) = store
            .office_page(&text(vec![p("hz/baiyang")], t))
            .await
            .unwrap();
        assert!(
            rows.iter().all(|r| r.place.starts_with("hz/baiyang/")),
            "{t}"
        );
        assert!(!rows.iter().any(|r| r.id == id), "{t}");
        let (rows, _) = store.office_page(&text(vec![p("hz")], t)).await.unwrap();
        assert!(rows.iter().any(|r| r.id == id), "{t}");
    }
    // A place filter outside the scopes finds nothing; no scopes find nothing.
    let outside = OfficeFilter {
        place: Some(p("hz/xiasha")),
        ..street()
    };
    assert_eq!(store.office_count(&outside).await.unwrap(), 0);
    let none = OfficeFilter {
        scopes: vec![],
        ..street()
    };
    assert_eq!(store.office_count(&none).await.unwrap(), 0);
    let baiyang = store.office_stats(&stats_street()).await.unwrap();
    assert_eq!(baiyang.resolved.total, 707);
    let district = store
        .office_stats(&StatsFilter {
            scopes: vec![p("hz")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(district.resolved.total, 708);
}
